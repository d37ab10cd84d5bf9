"""The PostgreSQL store's connection: its pool, one transaction per call, migrations, placeholders."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from importlib import resources
from typing import Any, TypeVar

import asyncpg
import orjson

from receiver.errors import StoreUnavailableError
from receiver.group_commit import RideAlong
from receiver.ports import Settlement
from receiver.stores.task_rows import checks_json
from receiver.tasks import Task

R = TypeVar("R")


TRANSIENT = (OSError, asyncpg.PostgresConnectionError, asyncpg.InterfaceError, asyncpg.CannotConnectNowError,
              asyncpg.TooManyConnectionsError, asyncpg.DeadlockDetectedError, asyncpg.SerializationError)  # fmt: skip


def pg(sql: str) -> str:
    """``?`` placeholders (shared with the SQLite SQL) as ``$1, $2, ...``."""
    parts = sql.split("?")
    return "".join(f"{p}${i}" if i < len(parts) else p for i, p in enumerate(parts, start=1))


def task_row(t: Task) -> tuple[Any, ...]:
    """A task as ``INSERT INTO tasks ({TASK_COLUMNS})`` and ``UPDATE_TASK`` take it."""
    return (t.id, t.task_id, t.session_id, t.session_context, t.url, orjson.dumps(t.labels).decode(), t.state.value,
            t.err_code, t.err_message, t.event_count, t.late_count, t.created_at, t.updated_at, t.first_event_at,
            t.last_event_at, t.ended_at, t.request_id, checks_json(t.checks), t.checked_at, t.live_at,
            t.reconciled_at)  # fmt: skip


UPDATE_TASK = (
    "UPDATE tasks SET task_id = $2, state = $7, err_code = $8, err_message = $9, event_count = $10,"
    " late_count = $11, updated_at = $13, first_event_at = $14, last_event_at = $15, ended_at = $16,"
    " request_id = $17, session_id = $3, session_context = $4, url = $5, labels = $6, created_at = $12,"
    " checks = $18, checked_at = $19, live_at = $20, reconciled_at = $21 WHERE id = $1"
)

# ``UPDATE_TASK`` for a batch's tasks at once (``task_row`` tuples, transposed: one array a column),
# one statement however many tasks the batch changed.
UPDATE_TASKS = (
    "UPDATE tasks SET task_id = b.task_id, state = b.state, err_code = b.err_code, err_message = b.err_message,"
    " event_count = b.event_count, late_count = b.late_count, updated_at = b.updated_at,"
    " first_event_at = b.first_event_at, last_event_at = b.last_event_at, ended_at = b.ended_at,"
    " request_id = b.request_id, session_id = b.session_id, session_context = b.session_context, url = b.url,"
    " labels = b.labels, created_at = b.created_at, checks = b.checks, checked_at = b.checked_at,"
    " live_at = b.live_at, reconciled_at = b.reconciled_at"
    " FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[],"
    " $8::bigint[], $9::text[], $10::bigint[], $11::bigint[], $12::float8[], $13::float8[], $14::float8[],"
    " $15::float8[], $16::float8[], $17::text[], $18::text[], $19::float8[], $20::float8[], $21::float8[])"
    " AS b(id, task_id, session_id, session_context, url, labels, state, err_code, err_message, event_count,"
    " late_count, created_at, updated_at, first_event_at, last_event_at, ended_at, request_id, checks,"
    " checked_at, live_at, reconciled_at) WHERE tasks.id = b.id"
)


async def lock_task_id(con: asyncpg.Connection, task_id: str | None) -> None:
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


class PostgresConnection:
    """The pool every slice of the store runs its transactions on."""

    _pool: asyncpg.Pool
    # The dispatcher's settlements ride with the next ingest transaction of this process.
    _riders: RideAlong[Settlement]

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
        except TRANSIENT as exc:
            raise StoreUnavailableError(f"postgres: {exc!r}") from exc
        return result

    async def ping(self) -> None:
        await self._run(lambda con: con.execute("SELECT 1"), write=False)
