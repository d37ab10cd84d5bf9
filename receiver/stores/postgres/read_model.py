"""The ``ReadModel`` port on PostgreSQL: tasks, events, the quarantine, the outbox and the counts, read."""

from __future__ import annotations

from collections.abc import Collection

import asyncpg

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
from receiver.stores.postgres.connection import PostgresConnection, pg
from receiver.stores.rows import (
    DELIVERIES_WITH_EVENTS,
    EVENT_COLUMNS,
    delivery_filter,
    delivery_row,
    event_record,
)
from receiver.stores.task_rows import TASK_COLUMNS, task_from_row
from receiver.tasks import Task, TaskState


class PostgresReadModel(PostgresConnection):
    """Reads, outside any transaction."""

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
            "postgres",
            state=state.value if state else None,
            after=int(after) if after else 0,
            label=label,
            search=search,
            newest_first=newest_first,
        )
        sql = pg(sql)

        async def body(con: asyncpg.Connection) -> Page[Task]:
            rows = await con.fetch(sql, *args, limit + 1)
            items = [task_from_row(tuple(r)[1:]) for r in rows[:limit]]
            return Page(items, str(rows[limit - 1][0]) if len(rows) > limit else None)

        return await self._run(body, write=False)

    async def list_events(self, query: EventQuery) -> Page[EventRecord]:
        if reads.unanswerable(query.task_id, query.task_ref, query.notification_type):
            return Page([], None)

        async def body(con: asyncpg.Connection) -> Page[EventRecord]:
            window, top = None, 0
            if query.searches:
                top = int(await con.fetchval(reads.SEARCH_TOP))
                if (window := reads.search_window(query, top)) is None:
                    return Page([], None)
            n = query.limit + 1
            parts = [
                [tuple(r) for r in await con.fetch(pg(sql), *args, n)]
                for sql, args in reads.event_statements(query, EVENT_COLUMNS, "postgres", window)
            ]
            found = [event_record(r) for r in reads.merge_pages(query, parts, rows.row_seq, n)]
            return reads.event_page(query, found, window, top)

        return await self._run(body, write=False)

    async def task_timeline(self, task_ref: str, *, after: int, limit: int) -> list[TimelineEvent]:
        sql = pg(reads.TIMELINE)

        async def body(con: asyncpg.Connection) -> list[TimelineEvent]:
            return [reads.timeline_event(tuple(r)) for r in await con.fetch(sql, task_ref, after, limit)]

        return await self._run(body, write=False)

    async def task_counts(self) -> dict[str, int]:
        async def body(con: asyncpg.Connection) -> dict[str, int]:
            return {r[0]: r[1] for r in await con.fetch("SELECT state, count(*) FROM tasks GROUP BY state")}

        return await self._run(body, write=False)

    async def list_quarantine(self, *, after: int, limit: int) -> Page[Quarantined]:
        async def body(con: asyncpg.Connection) -> Page[Quarantined]:
            found = await con.fetch(pg(rows.QUARANTINE_PAGE), after, limit + 1)
            items = [rows.quarantine_record(tuple(r)) for r in found[:limit]]
            return Page(items, str(items[-1].id) if len(found) > limit else None)

        return await self._run(body, write=False)

    async def quarantine_count(self) -> int:
        return int(await self._run(lambda con: con.fetchval(reads.QUARANTINE_COUNT), write=False))

    async def list_deliveries(self, query: DeliveryQuery) -> Page[DeliveryRow]:
        where, args = delivery_filter(query)
        sql = pg(
            "SELECT d.id, d.sink, d.state, d.attempts, d.next_attempt_at, d.last_error, d.created_at,"
            f" d.delivered_at, e.event_id, e.task_id, e.notification_type {DELIVERIES_WITH_EVENTS}"
            f" WHERE {where} AND d.id > ? ORDER BY d.id LIMIT ?"
        )

        async def body(con: asyncpg.Connection) -> Page[DeliveryRow]:
            rows = await con.fetch(sql, *args, query.after, query.limit + 1)
            items = [delivery_row(tuple(r)) for r in rows[: query.limit]]
            return Page(items, str(items[-1].id) if len(rows) > query.limit else None)

        return await self._run(body, write=False)

    async def list_attempts(self, delivery_id: int) -> list[Attempt]:
        async def body(con: asyncpg.Connection) -> list[Attempt]:
            attempts = [Attempt(*tuple(r)) for r in await con.fetch(pg(reads.ATTEMPTS_OF), delivery_id)]
            delivered = await con.fetchrow(pg(reads.DELIVERED_ATTEMPT), delivery_id)
            return reads.history(attempts, tuple(delivered) if delivered is not None else None)

        return await self._run(body, write=False)

    async def sink_stats(self) -> list[SinkStats]:
        async def body(con: asyncpg.Connection) -> list[SinkStats]:
            return rows.sink_stats(await con.fetch(rows.SINK_COUNTS), await con.fetch(rows.SINKS_DISABLED))

        return await self._run(body, write=False)

    async def sink_backlog(self, sinks: Collection[str]) -> list[SinkBacklog]:
        async def body(con: asyncpg.Connection) -> list[SinkBacklog]:
            disabled = {r[0]: r[1] for r in await con.fetch(rows.SINKS_DISABLED)}
            out = []
            for sink in sorted(set(sinks) | set(disabled)):
                pending, first = await con.fetchrow(pg(reads.SINK_PENDING), sink)
                dead = await con.fetchval(pg(reads.SINK_DEAD), sink)
                oldest = await con.fetchval(pg(reads.CREATED_AT), first) if first is not None else None
                out.append(SinkBacklog(sink, pending, dead, oldest, disabled.get(sink)))
            return out

        return await self._run(body, write=False)

    async def task_delivery_counts(self, task_id: str) -> list[tuple[str, str, int]]:
        if reads.unanswerable(task_id):
            return []

        async def body(con: asyncpg.Connection) -> list[tuple[str, str, int]]:
            return [(r[0], r[1], r[2]) for r in await con.fetch(pg(reads.TASK_DELIVERY_COUNTS), task_id)]

        return await self._run(body, write=False)

    async def ingest_counts(self, since_minute: int) -> list[tuple[int, str, int]]:
        async def body(con: asyncpg.Connection) -> list[tuple[int, str, int]]:
            return [(r[0], r[1], r[2]) for r in await con.fetch(pg(reads.INGEST_COUNTS_SINCE), since_minute)]

        return await self._run(body, write=False)

    async def list_operator_events(self, *, kind: str | None, after: int, limit: int) -> Page[OperatorEvent]:
        sql = pg(
            rows.OPERATOR_EVENTS_PAGE.replace("(? IS NULL OR o.kind = ?)", "(?::text IS NULL OR o.kind = ?)")
        )

        async def body(con: asyncpg.Connection) -> Page[OperatorEvent]:
            found = await con.fetch(sql, after, kind, kind, limit + 1)
            items = [rows.operator_event(tuple(r)) for r in found[:limit]]
            return Page(items, str(items[-1].id) if len(found) > limit else None)

        return await self._run(body, write=False)

    async def lease_holder(self, name: str) -> tuple[str, float] | None:
        row = await self._run(lambda con: con.fetchrow(pg(rows.LEASE_HOLDER), name), write=False)
        return None if row is None else (row[0], float(row[1]))
