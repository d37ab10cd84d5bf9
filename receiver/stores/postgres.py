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
    LINE_COLUMNS,
    Known,
    claimed,
    delivery_filter,
    due_line,
    encode_findings,
    event_record,
)
from receiver.stores.sqlite_writer import TASK_COLUMN_COUNT, TASK_COLUMNS, task_columns, task_from_row
from receiver.tasks import MatchedBy, MpsCheck, Task, TaskState

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
            t.last_event_at, t.ended_at, t.request_id, rows.checks_json(t.checks), t.checked_at, t.live_at,
            t.reconciled_at)  # fmt: skip


_UPDATE_TASK = (
    "UPDATE tasks SET task_id = $2, state = $7, err_code = $8, err_message = $9, event_count = $10,"
    " late_count = $11, updated_at = $13, first_event_at = $14, last_event_at = $15, ended_at = $16,"
    " request_id = $17, session_id = $3, session_context = $4, url = $5, labels = $6, created_at = $12,"
    " checks = $18, checked_at = $19, live_at = $20, reconciled_at = $21 WHERE id = $1"
)


# A batch's new events, in the batch's order (their seqs follow it), in one statement.
_INSERT_EVENTS = (
    "INSERT INTO events (event_id, task_id, task_ref, matched_by, notification_type, session_id, session_context,"
    " channel, received_at, verdict, late, err_code, err_message, findings, raw, sign_key, traceparent)"
    " SELECT event_id, task_id, task_ref, matched_by, notification_type, session_id, session_context, channel,"
    " received_at, verdict, late, err_code, err_message, findings, raw, sign_key, traceparent FROM unnest($1::text[],"
    " $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[], $9::float8[],"
    " $10::text[], $11::bool[], $12::bigint[], $13::text[], $14::text[], $15::text[], $16::text[], $17::text[])"
    " WITH ORDINALITY AS b(event_id, task_id, task_ref, matched_by, notification_type, session_id,"
    " session_context, channel, received_at, verdict, late, err_code, err_message, findings, raw, sign_key,"
    " traceparent, n) ORDER BY n ON CONFLICT (event_id) DO NOTHING RETURNING event_id, seq"
)
_INSERT_DELIVERIES = (
    "INSERT INTO deliveries (sink, event_seq, task_key, state, next_attempt_at, created_at, updated_at)"
    " SELECT sink, seq, key, 'pending', at, at, at FROM unnest($1::text[], $2::bigint[], $3::text[],"
    " $4::float8[]) WITH ORDINALITY AS b(sink, seq, key, at, n) ORDER BY n"
)
_COUNT_REPEATS = (
    "UPDATE events SET duplicates = events.duplicates + r.n, last_duplicate_at = r.at FROM (SELECT event_id,"
    " count(*) AS n, max(at) AS at FROM unnest($1::text[], $2::float8[]) AS b(event_id, at) GROUP BY event_id) r"
    " WHERE events.event_id = r.event_id"
)


def _event_values(step: tasks.Step) -> tuple[Any, ...]:
    e = step.event
    return (
        e.event_id, e.task_id, step.task.id if step.task else None,
        step.matched_by.value if step.matched_by else None, e.notification_type, e.session_id,
        e.session_context, e.channel.value, e.received_at, e.verdict.value, step.late, e.err_code,
        e.err_message, encode_findings(e.findings).decode(), e.body.decode(), e.sign_key, e.traceparent,
    )  # fmt: skip


async def _settle(con: asyncpg.Connection, settlements: Sequence[Settlement]) -> None:
    await con.executemany(
        "UPDATE deliveries SET state = $1, attempts = $2, next_attempt_at = $3, last_error = $4,"
        " updated_at = $5, lease_until = NULL, batch_id = $7, batch_size = $8,"
        " delivered_at = CASE WHEN $1 = 'delivered' THEN $5 ELSE delivered_at END WHERE id = $6",
        [
            (x.state, x.attempts, x.next_attempt_at, x.error, x.at, x.id, x.batch_id, x.batch_size)
            for x in settlements
        ],
    )
    await con.executemany(pg(reads.ATTEMPT_INSERT), reads.attempt_rows(settlements))  # the history


async def _lock_task_id(con: asyncpg.Connection, task_id: str | None) -> None:
    """The lock ingest takes per TaskId, taken first as ingest does (then rows): an event of this
    task committing meanwhile waits, then sees the task, so its outbox rows follow the adopted ones."""
    if task_id is not None:
        await con.execute("SELECT pg_advisory_xact_lock(hashtext($1))", task_id)


async def migrate(con: asyncpg.Connection) -> int:
    await con.execute("CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY)")
    async with con.transaction():
        await con.execute("LOCK TABLE schema_migrations IN EXCLUSIVE MODE")  # replicas starting together
        # Each version not applied yet, even below the newest applied (branches number in parallel).
        applied = {r[0] for r in await con.fetch("SELECT version FROM schema_migrations")}
        folder = resources.files("receiver.stores") / "migrations" / "postgres"
        for script in sorted((p for p in folder.iterdir() if p.name.endswith(".sql")), key=lambda p: p.name):
            version = int(script.name.split("_", 1)[0])
            if version not in applied:
                await con.execute(script.read_text())
                await con.execute("INSERT INTO schema_migrations (version) VALUES ($1)", version)
                applied.add(version)
    return max(applied, default=0)


class PostgresStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool
        # The dispatcher's settlements ride with the next ingest transaction of this process.
        self._riders: RideAlong[Settlement] = RideAlong(self._settle_alone)

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
        """Load what the plan needs in a few queries, plan the batch in the core, and write the plan
        with one statement per kind of row (events, deliveries, repeats, tasks)."""

        riders = self._riders
        taken: list[tuple[Sequence[Settlement], asyncio.Future[None]]] = []

        async def body(con: asyncpg.Connection) -> list[Recorded]:
            taken.extend(riders.take())
            if taken:
                await _settle(con, riders.items(taken))
            contexts = sorted({e.session_context for e in events if e.session_context})
            task_ids = sorted({e.task_id for e in events})
            # One writer at a time per TaskId (registered or not), taken in one order: events of a
            # task then get their seq and outbox ids in commit order, which is what keeps a task's
            # deliveries in the order received when several replicas ingest it. Holding them, we
            # also know which of the batch's event ids are stored: an event id names its TaskId.
            await con.execute(
                "SELECT count(pg_advisory_xact_lock(hashtext(t))) FROM (SELECT t FROM unnest($1::text[]) AS t ORDER BY t) AS keys",
                task_ids,
            )  # fmt: skip
            rows = await con.fetch(
                f"SELECT {TASK_COLUMNS} FROM tasks WHERE session_context = ANY($1::text[])"
                " OR task_id = ANY($2::text[]) ORDER BY id FOR UPDATE",
                contexts,
                task_ids,
            )
            known = {r[0]: task_from_row(r) for r in rows}
            stored = {
                r[0]: tasks.StoredEvent(r[1], r[2], MatchedBy(r[3]) if r[3] else None, r[4])
                for r in await con.fetch(
                    "SELECT event_id, seq, task_ref, matched_by, late FROM events WHERE event_id = ANY($1::text[])",
                    list({e.event_id for e in events}),
                )
            }
            holders = {s.task_ref for s in stored.values() if s.task_ref and s.task_ref not in known}
            if holders:
                for r in await con.fetch(
                    f"SELECT {TASK_COLUMNS} FROM tasks WHERE id = ANY($1::text[])", list(holders)
                ):
                    known[r[0]] = task_from_row(r)
            plan = tasks.plan(events, tasks.Known(known, stored), route)
            seqs = {event_id: s.seq for event_id, s in stored.items()}
            new = plan.new
            if new:
                columns = list(zip(*(_event_values(step) for step in new), strict=True))
                inserted = await con.fetch(_INSERT_EVENTS, *columns)
                seqs.update((r[0], r[1]) for r in inserted)
                if len(inserted) != len(new):  # not reached: the locks above keep other writers out
                    raise StoreUnavailableError("postgres: an event of the batch was stored meanwhile")
                deliveries = [
                    (sink, seqs[step.event.event_id], step.event.task_id, step.event.received_at)
                    for step in new
                    for sink in step.sinks
                ]
                if deliveries:
                    await con.execute(_INSERT_DELIVERIES, *zip(*deliveries, strict=True))
                searched = [
                    row
                    for step in new
                    if (
                        row := reads.search_row(
                            seqs[step.event.event_id],
                            step.event.notification_type,
                            step.event.received_at,
                            step.event.findings,
                        )
                    )
                    is not None
                ]
                if searched:
                    await con.executemany(pg(reads.SEARCH_INSERT), searched)
            repeats = [(s.event.event_id, s.event.received_at) for s in plan.steps if s.duplicate]
            if repeats:
                await con.execute(_COUNT_REPEATS, *zip(*repeats, strict=True))
            if plan.tasks:
                await con.executemany(_UPDATE_TASK, [_task_row(t) for t in plan.tasks.values()])
            return plan.recorded(seqs)

        with riders.carrying():
            try:
                result = await self._run(body)
            except BaseException:
                riders.undone(taken)
                raise
        riders.done(taken)
        return result

    # --- tasks ----------------------------------------------------------------------------------

    async def register_task(self, task: Task, route: Router | None = None) -> tuple[Task, int]:
        async def body(con: asyncpg.Connection) -> tuple[Task, int]:
            await _lock_task_id(con, task.task_id)
            try:
                await con.execute(
                    f"INSERT INTO tasks ({TASK_COLUMNS}) VALUES ({', '.join(f'${i}' for i in range(1, TASK_COLUMN_COUNT + 1))})",
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
        self,
        sink: str,
        *,
        now: float,
        limit: int,
        busy_keys: Collection[str],
        per_key: int = 1,
        known: Known | None = None,
    ) -> list[Delivery]:
        async def body(con: asyncpg.Connection) -> list[Delivery]:
            # Leasing a line's head leases the line: no other dispatcher can claim a delivery of
            # that key until the head is settled (it alone is a head) or the lease runs out.
            heads = await con.fetch(
                "UPDATE deliveries SET lease_until = $2 + $4 WHERE id IN (SELECT d.id FROM deliveries d"
                " WHERE d.sink = $1 AND d.state = 'pending' AND d.next_attempt_at <= $2"
                " AND (d.lease_until IS NULL OR d.lease_until < $2) AND d.task_key <> ALL($5::text[])"
                # The head of its task's line: one index probe per candidate. (A NOT EXISTS over earlier
                # pending rows was planned as a scan of the sink's whole backlog per candidate while the
                # table's statistics were young: quadratic, and the soak's dispatchers fell minutes behind.)
                " AND d.id = (SELECT min(p.id) FROM deliveries p WHERE p.sink = d.sink AND p.task_key = d.task_key"
                " AND p.state = 'pending')"
                " ORDER BY d.id LIMIT $3 FOR UPDATE SKIP LOCKED) RETURNING id, task_key",
                sink, now, limit, LEASE_SECONDS, list(busy_keys),
            )  # fmt: skip
            if not heads:
                return []
            lines = await con.fetch(
                f"SELECT {LINE_COLUMNS} FROM unnest($2::bigint[], $3::text[]) AS h(head, key)"
                " CROSS JOIN LATERAL (SELECT * FROM deliveries p WHERE p.sink = $1 AND p.task_key = h.key"
                " AND p.state = 'pending' AND p.id >= h.head ORDER BY p.id LIMIT $4) d"
                " ORDER BY d.task_key, d.id",
                sink, [h[0] for h in heads], [h[1] for h in heads], per_key,
            )  # fmt: skip
            due: list[Sequence[Any]] = []
            line: list[Any] = []
            for r in [*lines, None]:
                if line and (r is None or r[1] != line[0][1]):
                    due.extend(due_line(line, now))
                    line = []
                if r is not None:
                    line.append(tuple(r))
            found: dict[int, EventRecord] = {}
            for r in due:
                record = known(r[4]) if known is not None else None
                if record is not None:
                    found[r[4]] = record
            missing = [r[4] for r in due if r[4] not in found]
            if missing:
                for row in await con.fetch(
                    f"SELECT {EVENT_COLUMNS} FROM events WHERE seq = ANY($1::bigint[])", missing
                ):
                    found[row[0]] = event_record(tuple(row))
            return claimed(sink, due, found.__getitem__)

        return await self._run(body)

    async def settle_deliveries(self, settlements: Sequence[Settlement]) -> None:
        """Committed with an ingest transaction of this process running or waiting, if there is
        one (one commit instead of two); else at once."""
        await self._riders.submit(settlements)

    async def _settle_alone(self, settlements: list[Settlement]) -> None:
        await self._run(lambda con: _settle(con, settlements))

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
            f" updated_at = ?, lease_until = NULL, batch_id = NULL, batch_size = NULL WHERE id IN (SELECT d.id {DELIVERIES_WITH_EVENTS}"
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

    async def reconcile_candidates(self, query: ReconcileQuery) -> list[Task]:
        sql = pg(rows.RECONCILE_CANDIDATES.format(columns=TASK_COLUMNS))
        found = await self._run(lambda con: con.fetch(sql, *rows.reconcile_arguments(query)), write=False)
        return [task_from_row(tuple(r)) for r in found]

    async def _change_task(self, ref: str, change: Callable[[Task], Task]) -> Task:
        """One task read under its row lock, changed by a pure rule, written, in one transaction."""

        async def body(con: asyncpg.Connection) -> Task:
            row = await con.fetchrow(f"SELECT {TASK_COLUMNS} FROM tasks WHERE id = $1 FOR UPDATE", ref)
            if row is None:
                raise ConflictError(f"no task {ref!r}")
            task = change(task_from_row(tuple(row)))
            await con.execute(_UPDATE_TASK, *_task_row(task))
            return task

        return await self._run(body)

    async def record_check(self, ref: str, check: MpsCheck) -> Task:
        return await self._change_task(ref, lambda t: tasks.checked(t, check))

    async def mark_aborting(self, ref: str, *, now: float) -> Task:
        return await self._change_task(ref, lambda t: tasks.aborting(t, now))

    async def mark_stalled(self, before: float, *, now: float) -> int:
        # A live answer from MPS is a sign of life as much as a notification is.
        result = await self._run(
            lambda con: con.execute(
                "UPDATE tasks SET state = 'stalled', updated_at = $1 WHERE state IN ('submitted', 'running')"
                " AND greatest(coalesce(last_event_at, created_at), coalesce(live_at, 0)) < $2",
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

    # --- receiver's own events ---------------------------------------------------------------

    async def record_own_event(
        self, event: OwnEvent, sinks: Sequence[str], operator: OperatorEvent | None = None
    ) -> bool:
        async def body(con: asyncpg.Connection) -> bool:
            op_id = None
            if operator is not None:
                op_id = await con.fetchval(
                    pg(rows.OPERATOR_EVENT_INSERT), operator.kind, operator.subject, operator.window_start,
                    operator.at, orjson.dumps(operator.detail).decode(),
                )  # fmt: skip
                if op_id is None:
                    return False  # this kind, subject and window are told already
            if not sinks:
                return operator is not None
            seq = await con.fetchval(pg(rows.OWN_EVENT_INSERT), *rows.own_event_values(event))
            if seq is None:
                return False
            at = event.at
            await con.executemany(
                pg(rows.OWN_DELIVERY_INSERT), [(sink, seq, event.task_key, at, at, at) for sink in sinks]
            )
            if op_id is not None:
                await con.execute(pg(rows.OPERATOR_EVENT_LINK), seq, op_id)
            return True

        return await self._run(body)

    async def count_up(self, name: str, window_start: float, n: int) -> int:
        async def body(con: asyncpg.Connection) -> int:
            total = await con.fetchval(pg(rows.COUNT_UP), name, window_start, n)
            await con.execute(pg(rows.COUNTERS_PURGE), window_start - 86400)  # old windows: nobody asks
            return int(total)

        return await self._run(body)

    async def list_operator_events(self, *, kind: str | None, after: int, limit: int) -> Page[OperatorEvent]:
        sql = pg(
            rows.OPERATOR_EVENTS_PAGE.replace("(? IS NULL OR o.kind = ?)", "(?::text IS NULL OR o.kind = ?)")
        )

        async def body(con: asyncpg.Connection) -> Page[OperatorEvent]:
            found = await con.fetch(sql, after, kind, kind, limit + 1)
            items = [rows.operator_event(tuple(r)) for r in found[:limit]]
            return Page(items, str(items[-1].id) if len(found) > limit else None)

        return await self._run(body, write=False)

    async def undigested_tasks(self, since: float, limit: int) -> list[Task]:
        sql = pg(rows.UNDIGESTED.format(columns=task_columns("t")))
        found = await self._run(lambda con: con.fetch(sql, since, limit), write=False)
        return [task_from_row(tuple(r)) for r in found]

    async def tasks_to_alert(
        self, since: float, started: tuple[float, float] | None, limit: int
    ) -> list[Task]:
        sql = pg(rows.TO_ALERT.format(columns=task_columns("t")))
        low, high = started or (0.0, 0.0)
        found = await self._run(lambda con: con.fetch(sql, since, since, low, high, limit), write=False)
        return [task_from_row(tuple(r)) for r in found]

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
