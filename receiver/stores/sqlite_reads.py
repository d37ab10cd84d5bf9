"""The ``ReadModel`` port on SQLite, and the notices' reads: on a reader connection beside the writer."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable, Collection
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from receiver.errors import StoreUnavailableError
from receiver.ports import (
    Attempt,
    DeliveryQuery,
    DeliveryRow,
    EventQuery,
    EventRecord,
    OperatorEvent,
    Page,
    Quarantined,
    SinkBacklog,
    SinkStats,
    TimelineEvent,
)
from receiver.stores import reads, rows
from receiver.stores.rows import (
    DELIVERIES_WITH_EVENTS,
    EVENT_COLUMNS,
    delivery_filter,
    delivery_row,
    event_record,
)
from receiver.stores.task_rows import TASK_COLUMNS, task_columns, task_from_row
from receiver.tasks import Task, TaskState

R = TypeVar("R")


class SqliteReadModel:
    """Reads on their own connection and thread, which WAL lets run beside the writer."""

    _rcon: sqlite3.Connection | None
    _reader: ThreadPoolExecutor

    async def _read(self, fn: Callable[[], R]) -> R:
        return await asyncio.get_running_loop().run_in_executor(self._reader, fn)

    async def _read_safely(self, fn: Callable[[], R]) -> R:
        if self._rcon is None:
            raise StoreUnavailableError("the store is closed")
        try:
            return await self._read(fn)
        except sqlite3.Error as exc:
            raise StoreUnavailableError(f"sqlite: {exc}") from exc

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
            n = query.limit + 1
            parts = [
                self._rcon.execute(sql, [*args, n]).fetchall()
                for sql, args in reads.event_statements(query, EVENT_COLUMNS, "sqlite", window)
            ]
            found = [event_record(r) for r in reads.merge_pages(query, parts, rows.row_seq, n)]
            return reads.event_page(query, found, window, top)

        return await self._read_safely(run)

    async def task_timeline(self, task_ref: str, *, after: int, limit: int) -> list[TimelineEvent]:
        def run() -> list[TimelineEvent]:
            assert self._rcon is not None
            found = self._rcon.execute(reads.TIMELINE, (task_ref, after, limit)).fetchall()
            return [reads.timeline_event(r) for r in found]

        return await self._read_safely(run)

    async def task_counts(self) -> dict[str, int]:
        def run() -> dict[str, int]:
            assert self._rcon is not None
            return dict(self._rcon.execute("SELECT state, count(*) FROM tasks GROUP BY state").fetchall())

        return await self._read_safely(run)

    async def list_quarantine(self, *, after: int, limit: int) -> Page[Quarantined]:
        def run() -> Page[Quarantined]:
            assert self._rcon is not None
            found = self._rcon.execute(rows.QUARANTINE_PAGE, (after, limit + 1)).fetchall()
            items = [rows.quarantine_record(r) for r in found[:limit]]
            return Page(items, str(items[-1].id) if len(found) > limit else None)

        return await self._read_safely(run)

    async def quarantine_count(self) -> int:
        def run() -> int:
            assert self._rcon is not None
            return int(self._rcon.execute(reads.QUARANTINE_COUNT).fetchone()[0])

        return await self._read_safely(run)

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
            items = [delivery_row(r) for r in rows[: query.limit]]
            return Page(items, str(items[-1].id) if len(rows) > query.limit else None)

        return await self._read_safely(run)

    async def list_attempts(self, delivery_id: int) -> list[Attempt]:
        def run() -> list[Attempt]:
            assert self._rcon is not None
            con = self._rcon
            attempts = [Attempt(*r) for r in con.execute(reads.ATTEMPTS_OF, (delivery_id,)).fetchall()]
            return reads.history(attempts, con.execute(reads.DELIVERED_ATTEMPT, (delivery_id,)).fetchone())

        return await self._read_safely(run)

    async def sink_stats(self) -> list[SinkStats]:
        def run() -> list[SinkStats]:
            assert self._rcon is not None
            return rows.sink_stats(
                self._rcon.execute(rows.SINK_COUNTS).fetchall(),
                self._rcon.execute(rows.SINKS_DISABLED).fetchall(),
            )

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

    async def ingest_counts(self, since_minute: int) -> list[tuple[int, str, int]]:
        def run() -> list[tuple[int, str, int]]:
            assert self._rcon is not None
            return [
                tuple(r) for r in self._rcon.execute(reads.INGEST_COUNTS_SINCE, (since_minute,)).fetchall()
            ]

        return await self._read_safely(run)

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

    async def lease_holder(self, name: str) -> tuple[str, float] | None:
        def run() -> tuple[str, float] | None:
            assert self._rcon is not None
            row = self._rcon.execute(rows.LEASE_HOLDER, (name,)).fetchone()
            return None if row is None else (row[0], float(row[1]))

        return await self._read_safely(run)
