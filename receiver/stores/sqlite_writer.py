"""``SqliteWriter``: the write side of the SQLite store, one connection, synchronous calls.

Each call is one ``BEGIN IMMEDIATE`` transaction, run on the store's writer thread. Tasks are cached in
memory (this connection is the only writer); ``PRAGMA data_version`` tells us if another
connection committed in between, and then the cache is dropped. Changes to tasks are staged
during a transaction, written once per task at its end, and reach the cache only after the commit.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from typing import Any, TypeVar

from receiver import tasks
from receiver.errors import ConflictError, StoreUnavailableError
from receiver.events import Event
from receiver.ports import Recorded, Router, Settlement
from receiver.stores import reads, rows
from receiver.stores.rows import ADOPT, ORPHANS_OF, Orphan
from receiver.stores.sqlite_rows import (
    COUNT_TASK,
    INSERT_EVENT,
    INSERT_TASK,
    UPDATE_TASK,
    counted_only,
    event_row,
    task_count,
    task_insert,
    task_update,
)
from receiver.stores.task_rows import TASK_COLUMNS, task_from_row
from receiver.tasks import MatchedBy, Task, outbox_key

R = TypeVar("R")

_CACHE_LIMIT = 100_000  # cached lookups; past it the cache starts over


class SqliteWriter:
    def __init__(self, con: sqlite3.Connection, lock: AbstractContextManager[None] | None = None) -> None:
        self.con = con
        self._lock = lock or contextlib.nullcontext()  # the file's WriteLock: taken around each transaction
        self._data_version = -1
        # Moves on whenever pending deliveries may exist that ingest here did not hand to this
        # process's dispatcher: another connection wrote the file, or a delivery was made pending
        # some other way (``outbox_changed``). The dispatcher sends from memory only while it stands.
        self.handoff_epoch = 0
        # Committed state: task by our id; our id (or None: no such task) by TaskId and by context.
        self._tasks: dict[str, Task] = {}
        self._by_task_id: dict[str, str | None] = {}
        self._by_context: dict[str, list[str]] = {}
        # The transaction in progress: tasks changed (by our id) and tasks added.
        self._staged: dict[str, Task] = {}
        self._added: list[Task] = []
        self._stored_now: dict[str, tasks.StoredEvent] = {}  # of the batch being recorded

    # --- transactions -----------------------------------------------------------------------------

    def transaction(self, body: Callable[[], R]) -> R:
        """Run ``body`` in one ``BEGIN IMMEDIATE`` transaction; ``OperationalError`` = unavailable.

        Other writers of the file (other processes) queue on the write lock first, so that
        ``BEGIN IMMEDIATE`` finds SQLite's own lock free instead of polling for it."""
        with self._lock:
            return self._transaction(body)

    def _transaction(self, body: Callable[[], R]) -> R:
        con = self.con
        try:
            con.execute("BEGIN IMMEDIATE")  # waits up to the busy timeout for the write lock
        except sqlite3.Error as exc:
            raise StoreUnavailableError(f"sqlite: {exc}") from exc
        try:
            version = con.execute("PRAGMA data_version").fetchone()[0]
        except sqlite3.Error as exc:
            con.execute("ROLLBACK")
            raise StoreUnavailableError(f"sqlite: {exc}") from exc
        if version != self._data_version:  # someone else wrote: what we cached may be stale
            self._forget()
            self._data_version = version
            self.handoff_epoch += 1
        try:
            result = body()
            if self._staged:
                self._write_staged()
            con.execute("COMMIT")
        except BaseException as exc:
            self._staged.clear()
            self._added.clear()
            if con.in_transaction:
                con.execute("ROLLBACK")
            if isinstance(exc, sqlite3.OperationalError):
                raise StoreUnavailableError(f"sqlite: {exc}") from exc
            raise
        self._publish()
        return result

    def outbox_changed(self) -> None:
        """A delivery was made pending other than by ``record`` (redrive, receiver's own events, an
        adopted orphan routed again): the dispatcher must claim to find it, in its task's order."""
        self.handoff_epoch += 1

    def _write_staged(self) -> None:
        """Each changed task, as one of two statements: most events change only counts and times."""
        counted, changed = [], []
        for task in self._staged.values():
            stored = self._tasks.get(task.id)  # as committed (a task added now is not there yet)
            if stored is not None and counted_only(stored, task):
                counted.append(task_count(task))
            else:
                changed.append(task_update(task))
        if counted:
            self.con.executemany(COUNT_TASK, counted)
        if changed:
            self.con.executemany(UPDATE_TASK, changed)

    def _forget(self) -> None:
        self._tasks.clear()
        self._by_task_id.clear()
        self._by_context.clear()

    def _publish(self) -> None:
        if len(self._tasks) + len(self._by_task_id) + len(self._by_context) > _CACHE_LIMIT:
            self._forget()
        for task in self._added:
            self._by_context.pop(task.session_context, None)  # reloaded with the newcomer next time
        for task in (*self._added, *self._staged.values()):
            self._tasks[task.id] = task
            if task.task_id is not None:
                self._by_task_id[task.task_id] = task.id
        self._staged.clear()
        self._added.clear()

    # --- task lookups (staged first, then the cache, then the database) ---------------------------

    def _task(self, task_ref: str) -> Task:
        staged = self._staged.get(task_ref)
        if staged is not None:
            return staged
        cached = self._tasks.get(task_ref)
        if cached is None:
            row = self.con.execute(f"SELECT {TASK_COLUMNS} FROM tasks WHERE id = ?", (task_ref,)).fetchone()
            cached = self._tasks[task_ref] = task_from_row(row)
        return cached

    def _by_mps_task_id(self, task_id: str) -> Task | None:
        if task_id in self._by_task_id:
            ref = self._by_task_id[task_id]
        else:
            row = self.con.execute(
                f"SELECT {TASK_COLUMNS} FROM tasks WHERE task_id = ?", (task_id,)
            ).fetchone()
            ref = None
            if row is not None:
                task = task_from_row(row)
                ref = task.id
                self._tasks.setdefault(ref, task)
            self._by_task_id[task_id] = ref
        return None if ref is None else self._task(ref)

    def _with_context(self, context: str) -> list[Task]:
        refs = self._by_context.get(context)
        if refs is None:
            rows = self.con.execute(
                f"SELECT {TASK_COLUMNS} FROM tasks WHERE session_context = ? LIMIT 16", (context,)
            ).fetchall()
            refs = []
            for row in rows:
                task = task_from_row(row)
                self._tasks.setdefault(task.id, task)
                refs.append(task.id)
            self._by_context[context] = refs
        return [self._task(ref) for ref in refs]

    # --- ingest -----------------------------------------------------------------------------------

    def record(
        self, events: Sequence[Event], route: Router | None = None, settlements: Sequence[Settlement] = ()
    ) -> list[Recorded]:
        """Record a batch of events; the dispatcher's settlements waiting for the writer ride along."""

        def run() -> list[Recorded]:
            if settlements:
                self._settle(settlements)
            return self._record(events, route)

        return self.transaction(run)

    def _record(self, events: Sequence[Event], route: Router | None) -> list[Recorded]:
        """Load what the plan needs, plan the batch in the core, write the plan in a few statements.

        The write lock is held (``BEGIN IMMEDIATE``): which ids are stored cannot change under us."""
        plan = tasks.plan(events, self._known(events), route)
        seqs = {eid: row.seq for eid, row in self._stored_now.items()}
        new = plan.new
        outbox_from: int | None = None
        if new:
            # AUTOINCREMENT under the write lock: each table's next ids follow its sequence, in the
            # order inserted (the dispatcher is told the outbox ids, and sends from memory).
            last, last_delivery = self.con.execute(
                "SELECT coalesce((SELECT seq FROM sqlite_sequence WHERE name = 'events'), 0),"
                " coalesce((SELECT seq FROM sqlite_sequence WHERE name = 'deliveries'), 0)"
            ).fetchone()
            outbox_from = last_delivery + 1
            rows: list[tuple[Any, ...]] = []
            deliveries: list[tuple[Any, ...]] = []
            searched: list[tuple[Any, ...]] = []
            for offset, step in enumerate(new, start=1):
                e, seq = step.event, last + offset
                seqs[e.event_id] = seq
                rows.append(event_row(seq, step))
                if (
                    found := reads.search_row(seq, e.notification_type, e.received_at, e.findings)
                ) is not None:
                    searched.append(found)
                key = outbox_key(e)
                deliveries.extend(
                    (sink, seq, key, e.received_at, e.received_at, e.received_at) for sink in step.sinks
                )
            self.con.executemany(INSERT_EVENT, rows)
            self.con.executemany(reads.SEARCH_INSERT, searched)
            if deliveries:
                self.con.executemany(
                    "INSERT INTO deliveries (sink, event_seq, task_key, state, next_attempt_at, created_at,"
                    " updated_at) VALUES (?, ?, ?, 'pending', ?, ?, ?)",
                    deliveries,
                )
        repeats = [(s.event.received_at, s.event.event_id) for s in plan.steps if s.duplicate]
        if repeats:
            self.con.executemany(
                "UPDATE events SET duplicates = duplicates + 1, last_duplicate_at = ? WHERE event_id = ?",
                repeats,
            )
        self._staged.update(plan.tasks)
        return plan.recorded(seqs, outbox_from)

    def _known(self, events: Sequence[Event]) -> tasks.Known:
        """Every task the batch's events may match, and which of its ids are stored already."""
        ids = list({e.event_id for e in events})
        stored: dict[str, tasks.StoredEvent] = {}
        for chunk in range(0, len(ids), 500):  # well under SQLite's limit of bound parameters
            part = ids[chunk : chunk + 500]
            for event_id, seq, task_ref, matched_by, late in self.con.execute(
                "SELECT event_id, seq, task_ref, matched_by, late FROM events"
                f" WHERE event_id IN ({', '.join('?' * len(part))})",
                part,
            ):
                stored[event_id] = tasks.StoredEvent(
                    seq, task_ref, MatchedBy(matched_by) if matched_by else None, bool(late)
                )
        self._stored_now = stored
        known: dict[str, Task] = {}
        for e in events:
            for t in self._with_context(e.session_context) if e.session_context else ():
                known[t.id] = t
            found = self._by_mps_task_id(e.task_id)
            if found is not None:
                known[found.id] = found
        for row in stored.values():
            if row.task_ref is not None:
                known.setdefault(row.task_ref, self._task(row.task_ref))
        return tasks.Known(known, stored)

    # --- the outbox -------------------------------------------------------------------------------

    def settle(self, settlements: Sequence[Settlement]) -> None:
        self.transaction(lambda: self._settle(settlements))

    def _settle(self, settlements: Sequence[Settlement]) -> None:
        self.con.executemany(
            "UPDATE deliveries SET state = ?, attempts = ?, next_attempt_at = ?, last_error = ?,"
            " updated_at = ?, delivered_at = CASE WHEN ? = 'delivered' THEN ? ELSE delivered_at END,"
            " batch_id = ?, batch_size = ?, last_status = ?, last_latency_ms = ?, last_snippet = ?"
            " WHERE id = ?",
            [
                (
                    x.state,
                    x.attempts,
                    x.next_attempt_at,
                    x.error,
                    x.at,
                    x.state,
                    x.at,
                    x.batch_id,
                    x.batch_size,
                    x.status,
                    x.latency_ms,
                    x.snippet,
                    x.id,
                )
                for x in settlements
            ],
        )
        failed = reads.attempt_rows(settlements)  # a delivery's attempt stays on its row
        if failed:
            self.con.executemany(reads.ATTEMPT_INSERT, failed)

    # --- receiver's own events ---------------------------------------------------------------

    # --- leases -------------------------------------------------------------------------------

    # --- maintenance ------------------------------------------------------------------------------

    def mark_stalled(self, before: float, now: float) -> int:
        def run() -> int:
            # A live answer from MPS is a sign of life as much as a notification is.
            cur = self.con.execute(
                "UPDATE tasks SET state = 'stalled', updated_at = ? WHERE state IN ('submitted', 'running')"
                " AND max(coalesce(last_event_at, created_at), coalesce(live_at, 0)) < ?",
                (now, before),
            )
            return int(cur.rowcount)

        n = self.transaction(run)
        if n:
            self._forget()  # the cached copies are stale now
        return n

    def change_task(self, ref: str, change: Callable[[Task], Task]) -> Task:
        """One task read, changed by a pure rule (``tasks.checked``, ``tasks.aborting``) and written."""

        def run() -> Task:
            known = ref in self._tasks or ref in self._staged
            if not known and self.con.execute("SELECT 1 FROM tasks WHERE id = ?", (ref,)).fetchone() is None:
                raise ConflictError(f"no task {ref!r}")
            task = self._staged[ref] = change(self._task(ref))
            return task

        return self.transaction(run)

    # --- quarantine -------------------------------------------------------------------------------

    # --- submissions ------------------------------------------------------------------------------

    def finish_submission(
        self,
        ref: str,
        *,
        task_id: str | None,
        request_id: str | None,
        error: str | None,
        now: float,
        route: Router | None = None,
    ) -> tuple[Task, int]:
        """Record how a ``submitting`` task's ProcessLiveStream call ended, and adopt its orphans."""

        def run() -> tuple[Task, int]:
            task = self._task(ref)
            if error is not None:
                task = self._staged[task.id] = tasks.submission_failed(task, error, now)
                return task, 0
            if task_id is not None and task.task_id is None:
                other = self._by_mps_task_id(task_id)
                if other is not None and other.id != task.id:
                    raise ConflictError(f"task_id {task_id!r} is already registered")
            task = self._staged[task.id] = tasks.submitted(task, task_id, request_id, now)
            return self._adopt(task, now, route)

        return self.transaction(run)

    # --- registration -----------------------------------------------------------------------------

    def register(self, task: Task, route: Router | None = None) -> tuple[Task, int]:
        return self.transaction(lambda: self._register(task, route))

    def _register(self, task: Task, route: Router | None) -> tuple[Task, int]:
        if task.task_id is not None and self._by_mps_task_id(task.task_id) is not None:
            raise ConflictError(f"task_id {task.task_id!r} is already registered")
        self.con.execute(INSERT_TASK, task_insert(task))
        self._added.append(task)
        return self._adopt(task, task.updated_at, route)

    def _adopt(self, task: Task, now: float, route: Router | None) -> tuple[Task, int]:
        """Attach the task's orphans (in the order received) and route each again, task known."""
        found = self.con.execute(ORPHANS_OF, (task.task_id or "", task.session_context))
        task, adopted = tasks.adopt(task, [Orphan(*r) for r in found], now)
        for a in adopted:
            self.con.execute(ADOPT, (task.id, a.matched_by.value, a.late, a.seq))
            if route is not None:
                row = self.con.execute(rows.EVENT_BY_SEQ, (a.seq,)).fetchone()
                self.con.executemany(
                    rows.ROUTE_AGAIN, rows.routed_again(rows.event_record(row), a.task, route, now)
                )
                self.outbox_changed()
        self._staged[task.id] = task
        return task, len(adopted)
