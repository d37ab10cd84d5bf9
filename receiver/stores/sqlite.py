"""``SqliteStore``: the embedded default store, one SQLite file in WAL mode.

Writes: one connection on one thread (SQLite has one writer anyway), one transaction per group
commit, each under the file's ``WriteLock`` (other processes writing the file queue on it). Reads:
a second connection on its own thread, which WAL lets run beside the writer.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable, Collection, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any, Literal, TypeVar

from receiver import tasks
from receiver.errors import StoreUnavailableError
from receiver.events import Event
from receiver.group_commit import RideAlong
from receiver.ports import (
    Attempt,
    Delivery,
    DeliveryQuery,
    DeliveryRow,
    EventQuery,
    EventRecord,
    OperatorEvent,
    OwnEvent,
    Page,
    Quarantined,
    ReconcileQuery,
    Recorded,
    Router,
    Settlement,
    SinkBacklog,
    SinkStats,
    TimelineEvent,
)
from receiver.stores import reads, rows
from receiver.stores.rows import (
    DELIVERIES_WITH_EVENTS,
    EVENT_COLUMNS,
    Known,
    delivery_filter,
    event_record,
    migrate,
)
from receiver.stores.sqlite_lock import WriteLock
from receiver.stores.sqlite_writer import TASK_COLUMNS, SqliteWriter, task_columns, task_from_row
from receiver.tasks import MpsCheck, Task, TaskState

R = TypeVar("R")


class SqliteStore:
    """The ``Store`` port on one SQLite file."""

    def __init__(
        self,
        path: Path,
        *,
        synchronous: Literal["FULL", "NORMAL"] = "FULL",
        busy_timeout_ms: int = 5000,
    ) -> None:
        self.path = path
        self._lock = WriteLock(path)  # other processes writing the file queue on it, and we on theirs
        self._synchronous = synchronous
        self._busy_timeout = busy_timeout_ms / 1000
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="sqlite-writer")
        self._reader = ThreadPoolExecutor(1, thread_name_prefix="sqlite-reader")
        self._writer_side: SqliteWriter | None = None
        self._rcon: sqlite3.Connection | None = None
        # Settlements wait here for the next ingest transaction, rather than pay for one of their
        # own (and its fsync) while ingest keeps the writer busy.
        self._riders: RideAlong[Settlement] = RideAlong(self._settle_alone)

    # --- lifecycle ----------------------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        con = sqlite3.connect(
            self.path,
            isolation_level=None,  # we issue BEGIN/COMMIT ourselves
            check_same_thread=False,
            timeout=self._busy_timeout,
        )
        con.execute("PRAGMA journal_mode = WAL")
        # FULL: a commit is on disk before we answer 200, even across a power cut. NORMAL: it
        # survives a crash of the process (kill -9), not of the machine.
        con.execute(f"PRAGMA synchronous = {self._synchronous}")
        con.execute("PRAGMA foreign_keys = ON")
        con.execute("PRAGMA journal_size_limit = 67108864")
        return con

    def _open_writer(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._lock:  # workers starting together: one creates the file and migrates, the rest wait
            con = self._connect()
            migrate(con)
        self._writer_side = SqliteWriter(con, self._lock)

    def _open_reader(self) -> None:
        self._rcon = self._connect()
        self._rcon.execute("PRAGMA query_only = ON")

    @classmethod
    async def open(
        cls,
        path: Path,
        *,
        synchronous: Literal["FULL", "NORMAL"] = "FULL",
        busy_timeout_ms: int = 5000,
    ) -> SqliteStore:
        store = cls(path, synchronous=synchronous, busy_timeout_ms=busy_timeout_ms)
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(store._writer, store._open_writer)
            await loop.run_in_executor(store._reader, store._open_reader)
        except BaseException:
            await store.aclose()
            raise
        return store

    async def aclose(self) -> None:
        def close(con: sqlite3.Connection | None) -> None:
            if con is not None:
                con.close()

        loop = asyncio.get_running_loop()
        writer, self._writer_side = self._writer_side, None
        await loop.run_in_executor(self._writer, close, writer.con if writer else None)
        await loop.run_in_executor(self._reader, close, self._rcon)
        self._rcon = None
        self._lock.close()
        self._writer.shutdown(wait=True)
        self._reader.shutdown(wait=True)

    async def _read(self, fn: Callable[[], R]) -> R:
        return await asyncio.get_running_loop().run_in_executor(self._reader, fn)

    async def _write_with(self, fn: Callable[[SqliteWriter], R]) -> R:
        """Run one write transaction on the writer thread (SQLite has one writer anyway)."""

        def run() -> R:
            if self._writer_side is None:
                raise StoreUnavailableError("the store is closed")
            return fn(self._writer_side)

        if self._writer_side is None:  # closed, its thread too: nothing can be scheduled there
            raise StoreUnavailableError("the store is closed")
        return await asyncio.get_running_loop().run_in_executor(self._writer, run)

    # --- ingest ---------------------------------------------------------------------------------

    async def record_events(self, events: Sequence[Event], route: Router | None = None) -> list[Recorded]:
        riders = self._riders
        taken: list[tuple[Sequence[Settlement], asyncio.Future[None]]] = []

        def run(w: SqliteWriter) -> list[Recorded]:
            taken.extend(riders.take())
            return w.record(events, route, riders.items(taken))

        with riders.carrying():
            try:
                result = await self._write_with(run)
            except BaseException:
                riders.undone(taken)
                raise
        riders.done(taken)
        return result

    # --- the outbox -----------------------------------------------------------------------------

    async def claim_deliveries(
        self,
        sink: str,
        *,
        now: float,
        limit: int,
        busy_keys: Collection[str],
        per_key: int = 1,
        known: Known | None = None,
    ) -> list[Delivery]:
        def run() -> list[Delivery]:
            assert self._rcon is not None
            con = self._rcon
            heads = con.execute(rows.CLAIM_HEADS, (sink, now, limit + len(busy_keys))).fetchall()
            lines: list[Sequence[Any]] = []
            taken = 0
            for head, key in heads:
                if key in busy_keys:
                    continue
                lines.extend(
                    rows.due_line(con.execute(rows.CLAIM_LINE, (sink, key, head, per_key)).fetchall(), now)
                )
                taken += 1
                if taken == limit:
                    break
            found: dict[int, EventRecord] = {}
            missing = []
            for line in lines:
                record = known(line[4]) if known is not None else None
                if record is None:
                    missing.append(line[4])
                else:
                    found[line[4]] = record
            for chunk in range(0, len(missing), 500):
                part = missing[chunk : chunk + 500]
                sql = rows.EVENTS_BY_SEQ.format(marks=", ".join("?" * len(part)))
                for row in con.execute(sql, part):
                    found[row[0]] = event_record(row)
            return rows.claimed(sink, lines, found.__getitem__)

        return await self._read_safely(run)

    async def settle_deliveries(self, settlements: Sequence[Settlement]) -> None:
        """Committed with the ingest transaction running or waiting, if there is one; else at once."""
        await self._riders.submit(settlements)

    async def _settle_alone(self, settlements: list[Settlement]) -> None:
        await self._write_with(partial(SqliteWriter.settle, settlements=settlements))

    async def list_deliveries(self, query: DeliveryQuery) -> Page[DeliveryRow]:
        where, args = delivery_filter(query)

        def run() -> Page[DeliveryRow]:
            assert self._rcon is not None
            rows = self._rcon.execute(
                "SELECT d.id, d.sink, d.state, d.attempts, d.next_attempt_at, d.last_error, d.created_at,"
                " d.delivered_at, e.event_id, e.task_id, e.notification_type"
                f" {DELIVERIES_WITH_EVENTS} WHERE {where} AND d.id > ?"
                " ORDER BY d.id LIMIT ?",
                (*args, query.after, query.limit + 1),
            ).fetchall()
            items = [DeliveryRow(*r) for r in rows[: query.limit]]
            return Page(items, str(items[-1].id) if len(rows) > query.limit else None)

        return await self._read_safely(run)

    async def redrive(
        self,
        query: DeliveryQuery,
        *,
        now: float,
        dry_run: bool = False,
        progress: Callable[[int], None] | None = None,
    ) -> int:
        where, args = delivery_filter(query)
        if dry_run:

            def count() -> int:
                assert self._rcon is not None
                return int(
                    self._rcon.execute(
                        f"SELECT count(*) {DELIVERIES_WITH_EVENTS} WHERE {where}",
                        args,
                    ).fetchone()[0]
                )

            return await self._read_safely(count)
        total, after = 0, 0
        while True:  # in chunks: a long redrive must not hold the write lock against ingest
            n, after = await self._write_with(
                partial(SqliteWriter.redrive_chunk, where=where, args=args, now=now, after=after, limit=2000)
            )
            if n == 0:
                return total
            total += n
            if progress is not None:
                progress(total)

    async def sink_stats(self) -> list[SinkStats]:
        def run() -> list[SinkStats]:
            assert self._rcon is not None
            return rows.sink_stats(
                self._rcon.execute(rows.SINK_COUNTS).fetchall(),
                self._rcon.execute(rows.SINKS_DISABLED).fetchall(),
            )

        return await self._read_safely(run)

    async def set_sink_disabled(self, sink: str, reason: str | None, *, now: float) -> None:
        await self._write_with(lambda w: w.set_sink_disabled(sink, reason, now))

    async def list_attempts(self, delivery_id: int) -> list[Attempt]:
        def run() -> list[Attempt]:
            assert self._rcon is not None
            return [Attempt(*r) for r in self._rcon.execute(reads.ATTEMPTS_OF, (delivery_id,)).fetchall()]

        return await self._read_safely(run)

    async def sink_backlog(self, sinks: Collection[str]) -> list[SinkBacklog]:
        def run() -> list[SinkBacklog]:
            assert self._rcon is not None
            con = self._rcon
            disabled = dict(con.execute(rows.SINKS_DISABLED).fetchall())
            out = []
            for sink in sorted(set(sinks) | set(disabled)):
                pending, first = con.execute(reads.SINK_PENDING, (sink,)).fetchone()
                (dead,) = con.execute(reads.SINK_DEAD, (sink,)).fetchone()
                oldest = con.execute(reads.CREATED_AT, (first,)).fetchone() if first is not None else None
                out.append(
                    SinkBacklog(sink, pending, dead, oldest[0] if oldest else None, disabled.get(sink))
                )
            return out

        return await self._read_safely(run)

    async def task_delivery_counts(self, task_id: str) -> list[tuple[str, str, int]]:
        def run() -> list[tuple[str, str, int]]:
            assert self._rcon is not None
            return [tuple(r) for r in self._rcon.execute(reads.TASK_DELIVERY_COUNTS, (task_id,)).fetchall()]

        if reads.unanswerable(task_id):
            return []
        return await self._read_safely(run)

    # --- the console's counts -------------------------------------------------------------------

    async def add_ingest_counts(self, counts: Sequence[tuple[int, str, int]]) -> None:
        await self._write_with(
            lambda w: w.transaction(lambda: w.con.executemany(reads.INGEST_COUNTS_ADD, counts))
        )

    async def ingest_counts(self, since_minute: int) -> list[tuple[int, str, int]]:
        def run() -> list[tuple[int, str, int]]:
            assert self._rcon is not None
            return [
                tuple(r) for r in self._rcon.execute(reads.INGEST_COUNTS_SINCE, (since_minute,)).fetchall()
            ]

        return await self._read_safely(run)

    async def purge_ingest_counts(self, before: float) -> int:
        minute = int(before // 60)
        return await self._write_with(
            lambda w: w.transaction(lambda: int(w.con.execute(reads.INGEST_COUNTS_PURGE, (minute,)).rowcount))
        )

    async def backfill_search(self, limit: int) -> int:
        def run(w: SqliteWriter) -> int:
            row = w.con.execute(reads.BACKFILL_UPTO).fetchone()
            upto = row[0] if row else 0
            if upto <= 0:
                return 0
            lower = max(0, upto - limit)
            found = w.con.execute(reads.BACKFILL_EVENTS, (upto, lower)).fetchall()
            w.con.executemany(reads.BACKFILL_INSERT, reads.backfill_rows(found))
            w.con.execute(reads.BACKFILL_DONE, (lower,))
            return int(upto - lower)

        return await self._write_with(lambda w: w.transaction(lambda: run(w)))

    async def quarantine_count(self) -> int:
        def run() -> int:
            assert self._rcon is not None
            return int(self._rcon.execute(reads.QUARANTINE_COUNT).fetchone()[0])

        return await self._read_safely(run)

    async def disabled_sinks(self) -> dict[str, str]:
        def run() -> dict[str, str]:
            assert self._rcon is not None
            return dict(self._rcon.execute(rows.SINKS_DISABLED).fetchall())

        return await self._read_safely(run)

    # --- tasks ----------------------------------------------------------------------------------

    async def register_task(self, task: Task, route: Router | None = None) -> tuple[Task, int]:
        return await self._write_with(lambda w: w.register(task, route))

    async def finish_submission(
        self,
        ref: str,
        *,
        task_id: str | None,
        request_id: str | None,
        error: str | None,
        now: float,
        route: Router | None = None,
    ) -> tuple[Task, int]:
        return await self._write_with(
            lambda w: w.finish_submission(
                ref, task_id=task_id, request_id=request_id, error=error, now=now, route=route
            )
        )

    async def mark_stalled(self, before: float, *, now: float) -> int:
        return await self._write_with(lambda w: w.mark_stalled(before, now))

    async def reconcile_candidates(self, query: ReconcileQuery) -> list[Task]:
        sql = rows.RECONCILE_CANDIDATES.format(columns=TASK_COLUMNS)

        def run() -> list[Task]:
            assert self._rcon is not None
            return [task_from_row(r) for r in self._rcon.execute(sql, rows.reconcile_arguments(query))]

        return await self._read_safely(run)

    async def record_check(self, ref: str, check: MpsCheck) -> Task:
        return await self._write_with(lambda w: w.change_task(ref, lambda t: tasks.checked(t, check)))

    async def mark_aborting(self, ref: str, *, now: float) -> Task:
        return await self._write_with(lambda w: w.change_task(ref, lambda t: tasks.aborting(t, now)))

    async def purge(self, before: float) -> tuple[int, int]:
        payloads = deliveries = 0
        while True:  # in batches: a long purge must not hold the write lock against ingest
            p, d = await self._write_with(lambda w: w.purge(before, 1000))
            payloads, deliveries = payloads + p, deliveries + d
            if p < 1000 and d < 1000:
                return payloads, deliveries

    async def purge_quarantine(self, before: float) -> int:
        total = 0
        while True:  # in batches, as purge
            n = await self._write_with(lambda w: w.purge_quarantine(before, 1000))
            total += n
            if n < 1000:
                return total

    async def task_counts(self) -> dict[str, int]:
        def run() -> dict[str, int]:
            assert self._rcon is not None
            return dict(self._rcon.execute("SELECT state, count(*) FROM tasks GROUP BY state").fetchall())

        return await self._read_safely(run)

    async def get_task(self, task_id: str) -> Task | None:
        def run() -> Task | None:
            assert self._rcon is not None
            row = self._rcon.execute(
                f"SELECT {TASK_COLUMNS} FROM tasks WHERE task_id = ? UNION ALL"
                f" SELECT {TASK_COLUMNS} FROM tasks WHERE id = ? LIMIT 1",
                (task_id, task_id),
            ).fetchone()
            return task_from_row(row) if row else None

        return await self._read_safely(run)

    async def list_tasks(
        self,
        *,
        state: TaskState | None,
        after: str | None,
        limit: int,
        label: tuple[str, str] | None = None,
        search: str | None = None,
        newest_first: bool = False,
    ) -> Page[Task]:
        if reads.unanswerable(search, *(label or ())):
            return Page([], None)
        sql, args = reads.task_statement(
            TASK_COLUMNS,
            "sqlite",
            state=state.value if state else None,
            after=int(after) if after else 0,
            label=label,
            search=search,
            newest_first=newest_first,
        )

        def run() -> Page[Task]:
            assert self._rcon is not None
            rows = self._rcon.execute(sql, [*args, limit + 1]).fetchall()
            more = len(rows) > limit
            rows = rows[:limit]
            return Page([task_from_row(r[1:]) for r in rows], str(rows[-1][0]) if more else None)

        return await self._read_safely(run)

    async def list_events(self, query: EventQuery) -> Page[EventRecord]:
        if reads.unanswerable(query.task_id, query.task_ref, query.notification_type):
            return Page([], None)

        def run() -> Page[EventRecord]:
            assert self._rcon is not None
            window, top = None, 0
            if query.searches:
                top = int(self._rcon.execute(reads.SEARCH_TOP).fetchone()[0])
                if (window := reads.search_window(query, top)) is None:
                    return Page([], None)
            sql, args = reads.event_statement(query, EVENT_COLUMNS, "sqlite", window)
            found = [event_record(r) for r in self._rcon.execute(sql, [*args, query.limit + 1]).fetchall()]
            page = found[: query.limit]
            items = [r for r in page if reads.matches(query, r)]
            if len(found) > query.limit:
                return Page(items, str(page[-1].seq))
            return Page(items, None if window is None else reads.window_next(query, window, top))

        return await self._read_safely(run)

    async def task_timeline(self, task_ref: str, *, after: int, limit: int) -> list[TimelineEvent]:
        def run() -> list[TimelineEvent]:
            assert self._rcon is not None
            found = self._rcon.execute(reads.TIMELINE, (task_ref, after, limit)).fetchall()
            return [reads.timeline_event(r) for r in found]

        return await self._read_safely(run)

    async def quarantine(self, entry: Quarantined) -> None:
        await self._write_with(lambda w: w.quarantine(entry))

    async def list_quarantine(self, *, after: int, limit: int) -> Page[Quarantined]:
        def run() -> Page[Quarantined]:
            assert self._rcon is not None
            found = self._rcon.execute(rows.QUARANTINE_PAGE, (after, limit + 1)).fetchall()
            items = [rows.quarantine_record(r) for r in found[:limit]]
            return Page(items, str(items[-1].id) if len(found) > limit else None)

        return await self._read_safely(run)

    async def _read_safely(self, fn: Callable[[], R]) -> R:
        if self._rcon is None:
            raise StoreUnavailableError("the store is closed")
        try:
            return await self._read(fn)
        except sqlite3.Error as exc:
            raise StoreUnavailableError(f"sqlite: {exc}") from exc

    # --- receiver's own events ---------------------------------------------------------------

    async def record_own_event(
        self, event: OwnEvent, sinks: Sequence[str], operator: OperatorEvent | None = None
    ) -> bool:
        return await self._write_with(lambda w: w.record_own_event(event, sinks, operator))

    async def count_up(self, name: str, window_start: float, n: int) -> int:
        return await self._write_with(lambda w: w.count_up(name, window_start, n))

    async def list_operator_events(self, *, kind: str | None, after: int, limit: int) -> Page[OperatorEvent]:
        def run() -> Page[OperatorEvent]:
            assert self._rcon is not None
            found = self._rcon.execute(rows.OPERATOR_EVENTS_PAGE, (after, kind, kind, limit + 1)).fetchall()
            items = [rows.operator_event(r) for r in found[:limit]]
            return Page(items, str(items[-1].id) if len(found) > limit else None)

        return await self._read_safely(run)

    async def undigested_tasks(self, since: float, limit: int) -> list[Task]:
        sql = rows.UNDIGESTED.format(columns=task_columns("t"))

        def run() -> list[Task]:
            assert self._rcon is not None
            return [task_from_row(r) for r in self._rcon.execute(sql, (since, limit))]

        return await self._read_safely(run)

    async def tasks_to_alert(
        self, since: float, started: tuple[float, float] | None, limit: int
    ) -> list[Task]:
        sql = rows.TO_ALERT.format(columns=task_columns("t"))
        low, high = started or (0.0, 0.0)

        def run() -> list[Task]:
            assert self._rcon is not None
            return [task_from_row(r) for r in self._rcon.execute(sql, (since, since, low, high, limit))]

        return await self._read_safely(run)

    # --- leases -------------------------------------------------------------------------------

    async def hold_lease(self, name: str, holder: str, *, ttl: float, now: float) -> bool:
        return await self._write_with(lambda w: w.hold_lease(name, holder, ttl, now))

    async def release_lease(self, name: str, holder: str) -> None:
        await self._write_with(lambda w: w.release_lease(name, holder))

    async def lease_holder(self, name: str) -> tuple[str, float] | None:
        def run() -> tuple[str, float] | None:
            assert self._rcon is not None
            row = self._rcon.execute(rows.LEASE_HOLDER, (name,)).fetchone()
            return None if row is None else (row[0], float(row[1]))

        return await self._read_safely(run)

    async def ping(self) -> None:
        # Readiness means "can take a write": take the write lock and let it go.
        await self._write_with(lambda w: w.transaction(lambda: None))
