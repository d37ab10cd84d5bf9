"""``SqliteStore``: the embedded default store, one SQLite file in WAL mode.

Writes: one connection on one thread (SQLite has one writer anyway), one transaction per group
commit, each under the file's ``WriteLock`` (other processes writing the file queue on it). Reads:
a second connection on its own thread, which WAL lets run beside the writer.

The reads are ``SqliteReadModel``'s (``sqlite_reads``); the writes run on ``SqliteWriter``
(``sqlite_writer``: events and tasks, cached) or as ``sqlite_writes`` functions over it.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import sqlite3
import sys
from collections.abc import Callable, Collection, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any, Literal, TypeVar

from receiver import tasks
from receiver.errors import StoreUnavailableError
from receiver.events import Event
from receiver.group_commit import RideAlong, Rider
from receiver.ports import (
    Delivery,
    DeliveryQuery,
    OperatorEvent,
    OwnEvent,
    Quarantined,
    ReconcileQuery,
    Recorded,
    Router,
    Settlement,
)
from receiver.stores import reads, rows
from receiver.stores import sqlite_writes as writes
from receiver.stores.rows import (
    DELIVERIES_WITH_EVENTS,
    Known,
    delivery_filter,
    event_record,
)
from receiver.stores.sqlite_lock import WriteLock
from receiver.stores.sqlite_reads import SqliteReadModel
from receiver.stores.sqlite_schema import migrate
from receiver.stores.sqlite_writer import SqliteWriter
from receiver.stores.task_rows import TASK_COLUMNS, task_from_row
from receiver.tasks import MpsCheck, Task

R = TypeVar("R")


def name_os_thread(name: str) -> None:
    """Give the calling thread ``name`` where the OS shows it (``top -H``, ``/proc/<pid>/task/*/comm``),
    so an operator (and the benchmark) can tell the writer's CPU from the event loop's. Linux only;
    elsewhere a no-op."""
    if sys.platform != "linux":
        return
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).prctl(15, name.encode()[:15], 0, 0, 0)  # PR_SET_NAME, 15 bytes at most


class SqliteStore(SqliteReadModel):
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
        self._writer = ThreadPoolExecutor(
            1, thread_name_prefix="sqlite-writer", initializer=name_os_thread, initargs=("sqlite-writer",)
        )
        self._reader = ThreadPoolExecutor(
            1, thread_name_prefix="sqlite-reader", initializer=name_os_thread, initargs=("sqlite-reader",)
        )
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
        taken: list[Rider[Settlement]] = []

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
            found, missing = rows.known_events(lines, known)
            for chunk in range(0, len(missing), 500):
                part = missing[chunk : chunk + 500]
                sql = rows.EVENTS_BY_SEQ.format(marks=", ".join("?" * len(part)))
                for row in con.execute(sql, part):
                    found[row[0]] = event_record(row)
            return rows.claimed(sink, lines, found.__getitem__)

        return await self._read_safely(run)

    def handoff_epoch(self) -> int | None:
        return None if self._writer_side is None else self._writer_side.handoff_epoch

    async def has_pending(self, sink: str) -> bool:
        def run() -> bool:
            assert self._rcon is not None
            return self._rcon.execute(rows.HAS_PENDING, (sink,)).fetchone() is not None

        return await self._read_safely(run)

    async def settle_deliveries(self, settlements: Sequence[Settlement]) -> None:
        """Committed with an ingest transaction: one running or waiting, or while ingest flows the
        next (``RideAlong``: 250 ms at most); with ingest idle, at once."""
        await self._riders.submit(settlements)

    async def _settle_alone(self, settlements: list[Settlement]) -> None:
        await self._write_with(partial(SqliteWriter.settle, settlements=settlements))

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
                partial(writes.redrive_chunk, where=where, args=args, now=now, after=after, limit=2000)
            )
            if n == 0:
                return total
            total += n
            if progress is not None:
                progress(total)

    async def set_sink_disabled(self, sink: str, reason: str | None, *, now: float) -> None:
        await self._write_with(lambda w: writes.set_sink_disabled(w, sink, reason, now))

    # --- the console's counts -------------------------------------------------------------------

    async def add_ingest_counts(self, counts: Sequence[tuple[int, str, int]]) -> None:
        await self._write_with(
            lambda w: w.transaction(lambda: w.con.executemany(reads.INGEST_COUNTS_ADD, counts))
        )

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
            p, d = await self._write_with(lambda w: writes.purge(w, before, 1000))
            payloads, deliveries = payloads + p, deliveries + d
            if p < 1000 and d < 1000:
                return payloads, deliveries

    async def purge_quarantine(self, before: float) -> int:
        total = 0
        while True:  # in batches, as purge
            n = await self._write_with(lambda w: writes.purge_quarantine(w, before, 1000))
            total += n
            if n < 1000:
                return total

    async def quarantine(self, entry: Quarantined) -> None:
        await self._write_with(lambda w: writes.quarantine(w, entry))

    # --- receiver's own events ---------------------------------------------------------------

    async def record_own_event(
        self, event: OwnEvent, sinks: Sequence[str], operator: OperatorEvent | None = None
    ) -> bool:
        return await self._write_with(lambda w: writes.record_own_event(w, event, sinks, operator))

    async def count_up(self, name: str, window_start: float, n: int) -> int:
        return await self._write_with(lambda w: writes.count_up(w, name, window_start, n))

    # --- leases -------------------------------------------------------------------------------

    async def hold_lease(self, name: str, holder: str, *, ttl: float, now: float) -> bool:
        return await self._write_with(lambda w: writes.hold_lease(w, name, holder, ttl, now))

    async def release_lease(self, name: str, holder: str) -> None:
        await self._write_with(lambda w: writes.release_lease(w, name, holder))

    async def ping(self) -> None:
        # Readiness means "can take a write": take the write lock and let it go.
        await self._write_with(lambda w: w.transaction(lambda: None))
