"""The ``TaskBook`` port on PostgreSQL: registration and adoption, submissions, checks, aborts."""

from __future__ import annotations

from collections.abc import Callable

import asyncpg

from receiver import tasks
from receiver.errors import ConflictError
from receiver.ports import ReconcileQuery, Router
from receiver.stores import rows
from receiver.stores.postgres.connection import UPDATE_TASK, PostgresConnection, lock_task_id, pg, task_row
from receiver.stores.rows import event_record
from receiver.stores.task_rows import TASK_COLUMN_COUNT, TASK_COLUMNS, task_from_row
from receiver.tasks import MpsCheck, Task


class PostgresTaskBook(PostgresConnection):
    """Each task change under the task's lock, in one transaction."""

    async def get_task(self, task_id: str) -> Task | None:
        async def body(con: asyncpg.Connection) -> Task | None:
            row = await con.fetchrow(
                f"SELECT {TASK_COLUMNS} FROM tasks WHERE task_id = $1 OR id = $1 ORDER BY (task_id = $1) DESC LIMIT 1",
                task_id,
            )
            return task_from_row(row) if row else None

        return await self._run(body, write=False)

    async def register_task(self, task: Task, route: Router | None = None) -> tuple[Task, int]:
        async def body(con: asyncpg.Connection) -> tuple[Task, int]:
            await lock_task_id(con, task.task_id)
            try:
                await con.execute(
                    f"INSERT INTO tasks ({TASK_COLUMNS}) VALUES ({', '.join(f'${i}' for i in range(1, TASK_COLUMN_COUNT + 1))})",
                    *task_row(task),
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
        task, adopted = tasks.adopt(task, [rows.Orphan(*tuple(r)) for r in found], now)
        for a in adopted:
            await con.execute(pg(rows.ADOPT), task.id, a.matched_by.value, a.late, a.seq)
            if route is not None:
                row = await con.fetchrow(pg(rows.EVENT_BY_SEQ), a.seq)
                again = rows.routed_again(event_record(tuple(row)), a.task, route, now)
                if again:
                    await con.executemany(pg(rows.ROUTE_AGAIN), again)
        await con.execute(UPDATE_TASK, *task_row(task))
        return task, len(adopted)

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
            await lock_task_id(con, task_id)
            row = await con.fetchrow(f"SELECT {TASK_COLUMNS} FROM tasks WHERE id = $1 FOR UPDATE", ref)
            task = task_from_row(row)
            if error is not None:
                task = tasks.submission_failed(task, error, now)
                await con.execute(UPDATE_TASK, *task_row(task))
                return task, 0
            if task_id is not None and task.task_id is None:
                other = await con.fetchval("SELECT id FROM tasks WHERE task_id = $1", task_id)
                if other is not None and other != ref:
                    raise ConflictError(f"task_id {task_id!r} is already registered")
            return await self._adopt(con, tasks.submitted(task, task_id, request_id, now), now, route)

        return await self._run(body)

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
            await con.execute(UPDATE_TASK, *task_row(task))
            return task

        return await self._run(body)

    async def record_check(self, ref: str, check: MpsCheck) -> Task:
        return await self._change_task(ref, lambda t: tasks.checked(t, check))

    async def mark_aborting(self, ref: str, *, now: float) -> Task:
        return await self._change_task(ref, lambda t: tasks.aborting(t, now))
