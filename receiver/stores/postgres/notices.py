"""The ``NoticeBook`` port's own part on PostgreSQL: receiver's own events, counters, tasks to tell of."""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg
import orjson

from receiver.ports import OperatorEvent, OwnEvent
from receiver.stores import rows
from receiver.stores.postgres.connection import PostgresConnection, pg
from receiver.stores.task_rows import task_columns, task_from_row
from receiver.tasks import Task


class PostgresNotices(PostgresConnection):
    """Receiver's own events (digests, operator events) and what they are drawn from."""

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
