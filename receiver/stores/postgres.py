"""``PostgresStore``: the ``Store`` port on PostgreSQL, for production and for several replicas.

The same rules as the SQLite store, with the database doing what one process did there: event
dedup by the unique ``event_id`` under concurrency (``ON CONFLICT DO NOTHING``), the tasks an ingest
batch touches locked up front in one order (``FOR UPDATE``, so replicas never deadlock on them),
and outbox rows claimed with ``FOR UPDATE SKIP LOCKED`` plus a lease, so N dispatchers share the
work and a task's deliveries still go out one at a time, in order.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Collection, Sequence
from dataclasses import replace
from importlib import resources
from typing import Any, TypeVar

import asyncpg
import orjson

from receiver import tasks
from receiver.errors import ConflictError, StoreUnavailableError
from receiver.events import Event
from receiver.ports import (
    Attempt,
    Delivery,
    DeliveryQuery,
    DeliveryRow,
    EventQuery,
    EventRecord,
    Page,
    Quarantined,
    Recorded,
    Router,
    Settlement,
    SinkBacklog,
    SinkStats,
    TimelineEvent,
)
from receiver.stores import reads, rows
from receiver.stores.rows import DELIVERIES_WITH_EVENTS, EVENT_COLUMNS, delivery_filter, event_record
from receiver.stores.sqlite_writer import TASK_COLUMNS, task_from_row
from receiver.tasks import MatchedBy, Task, TaskState

R = TypeVar("R")
# A claimed delivery not settled by then (its replica died, or lost its connection) may be claimed
# again: at least once. Longer than a sink's timeout, short enough not to hold a task up for long.
LEASE_SECONDS = 30.0
_TRANSIENT = (OSError, asyncpg.PostgresConnectionError, asyncpg.InterfaceError, asyncpg.CannotConnectNowError,
              asyncpg.TooManyConnectionsError, asyncpg.DeadlockDetectedError, asyncpg.SerializationError)  # fmt: skip


def pg(sql: str) -> str:
    """``?`` placeholders (shared with the SQLite SQL) as ``$1, $2, ...``."""
    parts = sql.split("?")
    return "".join(f"{p}${i}" if i < len(parts) else p for i, p in enumerate(parts, start=1))


def _task_row(t: Task) -> tuple[Any, ...]:
    return (t.id, t.task_id, t.session_id, t.session_context, t.url, orjson.dumps(t.labels).decode(), t.state.value,
            t.err_code, t.err_message, t.event_count, t.late_count, t.created_at, t.updated_at, t.first_event_at,
            t.last_event_at, t.ended_at, t.request_id)  # fmt: skip


_UPDATE_TASK = (
    "UPDATE tasks SET task_id = $2, state = $7, err_code = $8, err_message = $9, event_count = $10,"
    " late_count = $11, updated_at = $13, first_event_at = $14, last_event_at = $15, ended_at = $16,"
    " request_id = $17, session_id = $3, session_context = $4, url = $5, labels = $6, created_at = $12 WHERE id = $1"
)


async def _lock_task_id(con: asyncpg.Connection, task_id: str | None) -> None:
    """The lock ingest takes per TaskId, taken first as ingest does (then rows): an event of this
    task committing meanwhile waits, then sees the task, so its outbox rows follow the adopted ones."""
    if task_id is not None:
        await con.execute("SELECT pg_advisory_xact_lock(hashtext($1))", task_id)


async def migrate(con: asyncpg.Connection) -> int:
    await con.execute("CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY)")
    async with con.transaction():
        await con.execute("LOCK TABLE schema_migrations IN EXCLUSIVE MODE")  # replicas starting together
        current = await con.fetchval("SELECT coalesce(max(version), 0) FROM schema_migrations")
        folder = resources.files("receiver.stores") / "migrations" / "postgres"
        for script in sorted((p for p in folder.iterdir() if p.name.endswith(".sql")), key=lambda p: p.name):
            version = int(script.name.split("_", 1)[0])
            if version > current:
                await con.execute(script.read_text())
                await con.execute("INSERT INTO schema_migrations (version) VALUES ($1)", version)
                current = version
    return int(current)


class PostgresStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    @classmethod
    async def open(cls, url: str, *, min_size: int = 2, max_size: int = 10) -> PostgresStore:
        try:
            pool = await asyncpg.create_pool(url, min_size=min_size, max_size=max_size, command_timeout=30)
        except _TRANSIENT as exc:
            raise StoreUnavailableError(f"postgres: {exc}") from exc
        async with pool.acquire() as con:
            await migrate(con)
        return cls(pool)

    async def aclose(self) -> None:
        try:
            await asyncio.wait_for(self._pool.close(), timeout=10)
        except Exception:  # a query cancelled at shutdown can leave a connection mid-operation
            self._pool.terminate()

    async def _run(self, body: Callable[[asyncpg.Connection], Awaitable[R]], *, write: bool = True) -> R:
        # Shielded: a caller cancelled mid-transaction (shutdown) must not leave the connection
        # half-way through a protocol exchange; the transaction finishes or rolls back by itself.
        return await asyncio.shield(self._run_unshielded(body, write=write))

    async def _run_unshielded(self, body: Callable[[asyncpg.Connection], Awaitable[R]], *, write: bool) -> R:
        done = False
        try:
            async with self._pool.acquire() as con:
                if write:
                    async with con.transaction():
                        result = await body(con)
                else:
                    result = await body(con)
                done = True
        except asyncpg.InternalClientError as exc:
            if done:
                # The work is committed; only handing the connection back failed (asyncpg drops it
                # and the pool opens another), e.g. the server ended the session under us.
                return result
            raise StoreUnavailableError(f"postgres: {exc!r}") from exc
        except _TRANSIENT as exc:
            raise StoreUnavailableError(f"postgres: {exc!r}") from exc
        return result

    # --- ingest ---------------------------------------------------------------------------------

    async def record_events(self, events: Sequence[Event], route: Router | None = None) -> list[Recorded]:
        async def body(con: asyncpg.Connection) -> list[Recorded]:
            contexts = sorted({e.session_context for e in events if e.session_context})
            task_ids = sorted({e.task_id for e in events})
            # One writer at a time per TaskId (registered or not), taken in one order: events of a
            # task then get their seq and outbox ids in commit order, which is what keeps a task's
            # deliveries in the order received when several replicas ingest it.
            await con.execute(
                "SELECT count(pg_advisory_xact_lock(hashtext(t))) FROM (SELECT t FROM unnest($1::text[]) AS t ORDER BY t) AS keys",
                task_ids,
            )
            rows = await con.fetch(
                f"SELECT {TASK_COLUMNS} FROM tasks WHERE session_context = ANY($1::text[])"
                " OR task_id = ANY($2::text[]) ORDER BY id FOR UPDATE",
                contexts,
                task_ids,
            )
            known = {r[0]: task_from_row(r) for r in rows}
            changed: dict[str, Task] = {}
            out = []
            searched: list[tuple[Any, ...]] = []
            for e in events:
                current = [changed.get(ref, t) for ref, t in known.items()]
                by_context = [
                    t for t in current if e.session_context and t.session_context == e.session_context
                ]
                by_task_id = next((t for t in current if t.task_id == e.task_id), None)
                found = tasks.match(e, by_context[:16], None if len(by_context) == 1 else by_task_id)
                transition = None if found is None else tasks.apply(found[0], e)
                seq = await con.fetchval(
                    "INSERT INTO events (event_id, task_id, task_ref, matched_by, notification_type, session_id,"
                    " session_context, channel, received_at, verdict, late, err_code, err_message, findings, raw, sign_key)"
                    " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)"
                    " ON CONFLICT (event_id) DO NOTHING RETURNING seq",
                    e.event_id, e.task_id, found[0].id if found else None, found[1].value if found else None,
                    e.notification_type, e.session_id, e.session_context, e.channel.value, e.received_at,
                    e.verdict.value, transition.late if transition else False, e.err_code, e.err_message,
                    orjson.dumps(e.findings).decode(), e.body.decode(), e.sign_key,
                )  # fmt: skip
                if seq is None:  # already stored (maybe by another replica a moment ago): count it there
                    dup = await con.fetchrow(
                        "UPDATE events SET duplicates = duplicates + 1, last_duplicate_at = $1 WHERE event_id = $2"
                        " RETURNING seq, task_ref, matched_by, late",
                        e.received_at,
                        e.event_id,
                    )
                    task = None
                    if dup["task_ref"] is not None:
                        task = changed.get(dup["task_ref"]) or known.get(dup["task_ref"])
                        if task is None:
                            row = await con.fetchrow(
                                f"SELECT {TASK_COLUMNS} FROM tasks WHERE id = $1", dup["task_ref"]
                            )
                            task = task_from_row(row)
                    matched = MatchedBy(dup["matched_by"]) if dup["matched_by"] else None
                    out.append(Recorded(e.event_id, dup["seq"], True, task, matched, bool(dup["late"])))
                    continue
                if (
                    found_row := reads.search_row(seq, e.notification_type, e.received_at, e.findings)
                ) is not None:
                    searched.append(found_row)
                new_task = transition.task if transition else None
                if route is not None and (sinks := route(e, new_task)):
                    await con.executemany(
                        "INSERT INTO deliveries (sink, event_seq, task_key, state, next_attempt_at, created_at,"
                        " updated_at) VALUES ($1, $2, $3, 'pending', $4, $4, $4)",
                        [(sink, seq, e.task_id, e.received_at) for sink in sinks],
                    )
                if found is None or transition is None:
                    out.append(Recorded(e.event_id, seq, False, None, None, False))
                    continue
                changed[transition.task.id] = transition.task
                out.append(Recorded(e.event_id, seq, False, transition.task, found[1], transition.late))
            if changed:
                await con.executemany(_UPDATE_TASK, [_task_row(t) for t in changed.values()])
            if searched:
                await con.executemany(pg(reads.SEARCH_INSERT), searched)
            return out

        return await self._run(body)

    # --- tasks ----------------------------------------------------------------------------------

    async def register_task(self, task: Task, route: Router | None = None) -> tuple[Task, int]:
        async def body(con: asyncpg.Connection) -> tuple[Task, int]:
            await _lock_task_id(con, task.task_id)
            try:
                await con.execute(
                    f"INSERT INTO tasks ({TASK_COLUMNS}) VALUES ({', '.join(f'${i}' for i in range(1, 18))})",
                    *_task_row(task),
                )
            except asyncpg.UniqueViolationError:
                raise ConflictError(f"task_id {task.task_id!r} is already registered") from None
            return await self._adopt(con, task, task.updated_at, route)

        return await self._run(body)

    async def _adopt(
        self, con: asyncpg.Connection, task: Task, now: float, route: Router | None
    ) -> tuple[Task, int]:
        """Attach the task's orphans (in the order received) and route each again, task known."""
        found = await con.fetch(pg(rows.ORPHANS_OF) + " FOR UPDATE", task.task_id or "", task.session_context)
        orphans = [
            o for o in (rows.Orphan(*tuple(r)) for r in found) if tasks.adoptable(task, o.session_context)
        ]
        for orphan in orphans:
            matched_by = tasks.adoption_match(task, orphan.session_context)
            transition = tasks.apply(task, orphan)
            task = transition.task
            await con.execute(pg(rows.ADOPT), task.id, matched_by.value, transition.late, orphan.seq)
            if route is not None:
                row = await con.fetchrow(pg(rows.EVENT_BY_SEQ), orphan.seq)
                again = rows.routed_again(event_record(tuple(row)), task, route, now)
                if again:
                    await con.executemany(pg(rows.ROUTE_AGAIN), again)
        if orphans:
            # The orphans' times are older than the adoption: the task changed now, not back then.
            task = replace(task, updated_at=max(task.updated_at, now))
        await con.execute(_UPDATE_TASK, *_task_row(task))
        return task, len(orphans)

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
        async def body(con: asyncpg.Connection) -> tuple[Task, int]:
            await _lock_task_id(con, task_id)
            row = await con.fetchrow(f"SELECT {TASK_COLUMNS} FROM tasks WHERE id = $1 FOR UPDATE", ref)
            task = task_from_row(row)
            if error is not None:
                task = tasks.submission_failed(task, error, now)
                await con.execute(_UPDATE_TASK, *_task_row(task))
                return task, 0
            if task_id is not None and task.task_id is None:
                other = await con.fetchval("SELECT id FROM tasks WHERE task_id = $1", task_id)
                if other is not None and other != ref:
                    raise ConflictError(f"task_id {task_id!r} is already registered")
            return await self._adopt(con, tasks.submitted(task, task_id, request_id, now), now, route)

        return await self._run(body)

    async def get_task(self, task_id: str) -> Task | None:
        async def body(con: asyncpg.Connection) -> Task | None:
            row = await con.fetchrow(
                f"SELECT {TASK_COLUMNS} FROM tasks WHERE task_id = $1 OR id = $1 ORDER BY (task_id = $1) DESC LIMIT 1",
                task_id,
            )
            return task_from_row(row) if row else None

        return await self._run(body, write=False)

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
            sql, args = reads.event_statement(query, EVENT_COLUMNS, "postgres", window)
            found = [event_record(tuple(r)) for r in await con.fetch(pg(sql), *args, query.limit + 1)]
            page = found[: query.limit]
            items = [r for r in page if reads.matches(query, r)]
            if len(found) > query.limit:
                return Page(items, str(page[-1].seq))
            return Page(items, None if window is None else reads.window_next(query, window, top))

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

    # --- the outbox -----------------------------------------------------------------------------

    async def claim_deliveries(
        self, sink: str, *, now: float, limit: int, busy_keys: Collection[str]
    ) -> list[Delivery]:
        async def body(con: asyncpg.Connection) -> list[Delivery]:
            ids = await con.fetch(
                "UPDATE deliveries SET lease_until = $2 + $4 WHERE id IN (SELECT d.id FROM deliveries d"
                " WHERE d.sink = $1 AND d.state = 'pending' AND d.next_attempt_at <= $2"
                " AND (d.lease_until IS NULL OR d.lease_until < $2) AND d.task_key <> ALL($5::text[])"
                # The head of its task's line: one index probe per candidate. (A NOT EXISTS over earlier
                # pending rows was planned as a scan of the sink's whole backlog per candidate while the
                # table's statistics were young: quadratic, and the soak's dispatchers fell minutes behind.)
                " AND d.id = (SELECT min(p.id) FROM deliveries p WHERE p.sink = d.sink AND p.task_key = d.task_key"
                " AND p.state = 'pending')"
                " ORDER BY d.id LIMIT $3 FOR UPDATE SKIP LOCKED) RETURNING id",
                sink, now, limit, LEASE_SECONDS, list(busy_keys),
            )  # fmt: skip
            if not ids:
                return []
            rows = await con.fetch(
                "SELECT d.id, d.task_key, d.attempts, "
                + ", ".join(f"e.{c.strip()}" for c in EVENT_COLUMNS.split(","))
                + f" {DELIVERIES_WITH_EVENTS} WHERE d.id = ANY($1::bigint[]) ORDER BY d.id",
                [r[0] for r in ids],
            )
            return [Delivery(r[0], sink, r[1], r[2], event_record(tuple(r)[3:])) for r in rows]

        return await self._run(body)

    async def settle_deliveries(self, settlements: Sequence[Settlement]) -> None:
        async def body(con: asyncpg.Connection) -> None:
            await con.executemany(
                "UPDATE deliveries SET state = $1, attempts = $2, next_attempt_at = $3, last_error = $4,"
                " updated_at = $5, lease_until = NULL,"
                " delivered_at = CASE WHEN $1 = 'delivered' THEN $5 ELSE delivered_at END WHERE id = $6",
                [(x.state, x.attempts, x.next_attempt_at, x.error, x.at, x.id) for x in settlements],
            )
            await con.executemany(pg(reads.ATTEMPT_INSERT), reads.attempt_rows(settlements))

        await self._run(body)

    async def list_deliveries(self, query: DeliveryQuery) -> Page[DeliveryRow]:
        where, args = delivery_filter(query)
        sql = pg(
            "SELECT d.id, d.sink, d.state, d.attempts, d.next_attempt_at, d.last_error, d.created_at,"
            f" d.delivered_at, e.event_id, e.task_id, e.notification_type {DELIVERIES_WITH_EVENTS}"
            f" WHERE {where} AND d.id > ? ORDER BY d.id LIMIT ?"
        )

        async def body(con: asyncpg.Connection) -> Page[DeliveryRow]:
            rows = await con.fetch(sql, *args, query.after, query.limit + 1)
            items = [DeliveryRow(*tuple(r)) for r in rows[: query.limit]]
            return Page(items, str(items[-1].id) if len(rows) > query.limit else None)

        return await self._run(body, write=False)

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
            count_sql = pg(f"SELECT count(*) {DELIVERIES_WITH_EVENTS} WHERE {where}")
            return int(await self._run(lambda con: con.fetchval(count_sql, *args), write=False))
        chunk_sql = pg(
            "UPDATE deliveries SET state = 'pending', attempts = 0, next_attempt_at = ?, last_error = NULL,"
            f" updated_at = ?, lease_until = NULL WHERE id IN (SELECT d.id {DELIVERIES_WITH_EVENTS}"
            f" WHERE {where} AND d.id > ? ORDER BY d.id LIMIT 2000) RETURNING id"
        )
        total, after = 0, 0
        while True:
            ids = await self._run(lambda con: con.fetch(chunk_sql, now, now, *args, after))  # noqa: B023
            if not ids:
                return total
            total += len(ids)
            after = max(r[0] for r in ids)
            if progress is not None:
                progress(total)

    async def sink_stats(self) -> list[SinkStats]:
        async def body(con: asyncpg.Connection) -> list[SinkStats]:
            return rows.sink_stats(await con.fetch(rows.SINK_COUNTS), await con.fetch(rows.SINKS_DISABLED))

        return await self._run(body, write=False)

    async def list_attempts(self, delivery_id: int) -> list[Attempt]:
        async def body(con: asyncpg.Connection) -> list[Attempt]:
            return [Attempt(*tuple(r)) for r in await con.fetch(pg(reads.ATTEMPTS_OF), delivery_id)]

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

    async def add_ingest_counts(self, counts: Sequence[tuple[int, str, int]]) -> None:
        await self._run(lambda con: con.executemany(pg(reads.INGEST_COUNTS_ADD), counts))

    async def ingest_counts(self, since_minute: int) -> list[tuple[int, str, int]]:
        async def body(con: asyncpg.Connection) -> list[tuple[int, str, int]]:
            return [(r[0], r[1], r[2]) for r in await con.fetch(pg(reads.INGEST_COUNTS_SINCE), since_minute)]

        return await self._run(body, write=False)

    async def purge_ingest_counts(self, before: float) -> int:
        status = await self._run(lambda con: con.execute(pg(reads.INGEST_COUNTS_PURGE), int(before // 60)))
        return int(str(status).split()[-1])

    async def backfill_search(self, limit: int) -> int:
        async def body(con: asyncpg.Connection) -> int:
            upto = await con.fetchval(reads.BACKFILL_UPTO + " FOR UPDATE")  # one replica at a time
            if upto is None or upto <= 0:
                return 0
            lower = max(0, upto - limit)
            found = await con.fetch(pg(reads.BACKFILL_EVENTS), upto, lower)
            rows = reads.backfill_rows(tuple(r) for r in found)
            if rows:
                await con.executemany(pg(reads.BACKFILL_INSERT), rows)
            await con.execute(pg(reads.BACKFILL_DONE), lower)
            return int(upto - lower)

        return int(await self._run(body))

    async def quarantine_count(self) -> int:
        return int(await self._run(lambda con: con.fetchval(reads.QUARANTINE_COUNT), write=False))

    async def disabled_sinks(self) -> dict[str, str]:
        async def body(con: asyncpg.Connection) -> dict[str, str]:
            return {r[0]: r[1] for r in await con.fetch(rows.SINKS_DISABLED)}

        return await self._run(body, write=False)

    async def set_sink_disabled(self, sink: str, reason: str | None, *, now: float) -> None:
        await self._run(
            lambda con: con.execute(
                "INSERT INTO sink_state (sink, disabled_at, reason) VALUES ($1, $2, $3) ON CONFLICT (sink)"
                " DO UPDATE SET disabled_at = excluded.disabled_at, reason = excluded.reason",
                sink,
                now if reason else None,
                reason,
            )
        )

    # --- quarantine, maintenance, health ------------------------------------------------------------

    async def quarantine(self, entry: Quarantined) -> None:
        await self._run(lambda con: con.execute(pg(rows.QUARANTINE_INSERT), *rows.quarantine_values(entry)))

    async def list_quarantine(self, *, after: int, limit: int) -> Page[Quarantined]:
        async def body(con: asyncpg.Connection) -> Page[Quarantined]:
            found = await con.fetch(pg(rows.QUARANTINE_PAGE), after, limit + 1)
            items = [rows.quarantine_record(tuple(r)) for r in found[:limit]]
            return Page(items, str(items[-1].id) if len(found) > limit else None)

        return await self._run(body, write=False)

    async def mark_stalled(self, before: float, *, now: float) -> int:
        result = await self._run(
            lambda con: con.execute(
                "UPDATE tasks SET state = 'stalled', updated_at = $1 WHERE state IN ('submitted', 'running')"
                " AND coalesce(last_event_at, created_at) < $2",
                now,
                before,
            )
        )
        return int(str(result).split()[-1])

    async def purge(self, before: float) -> tuple[int, int]:
        async def body(con: asyncpg.Connection) -> tuple[int, int]:
            p = await con.execute(pg(rows.PURGE_PAYLOADS), before, 1000)
            d = await con.execute(pg(rows.PURGE_DELIVERED), before, 1000)
            return int(p.split()[-1]), int(d.split()[-1])

        payloads = deliveries = 0
        while True:
            p, d = await self._run(body)
            payloads, deliveries = payloads + p, deliveries + d
            if p < 1000 and d < 1000:
                return payloads, deliveries

    async def purge_quarantine(self, before: float) -> int:
        total = 0
        while True:
            status = await self._run(lambda con: con.execute(pg(rows.QUARANTINE_PURGE), before, 1000))
            n = int(str(status).split()[-1])
            total += n
            if n < 1000:
                return total

    # --- leases -------------------------------------------------------------------------------

    async def hold_lease(self, name: str, holder: str, *, ttl: float, now: float) -> bool:
        sql = pg(rows.HOLD_LEASE)
        row = await self._run(lambda con: con.fetchrow(sql, name, holder, now + ttl, now))
        return row is not None

    async def release_lease(self, name: str, holder: str) -> None:
        await self._run(lambda con: con.execute(pg(rows.RELEASE_LEASE), name, holder))

    async def lease_holder(self, name: str) -> tuple[str, float] | None:
        row = await self._run(lambda con: con.fetchrow(pg(rows.LEASE_HOLDER), name), write=False)
        return None if row is None else (row[0], float(row[1]))

    async def ping(self) -> None:
        await self._run(lambda con: con.execute("SELECT 1"), write=False)

    async def count_events(self) -> int:
        return int(await self._run(lambda con: con.fetchval("SELECT count(*) FROM events"), write=False))
