"""The ``Upkeep``, ``Leases`` and ``IngestCountBook`` ports on PostgreSQL: stalls, retention, leases, counts."""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg

from receiver.stores import reads, rows
from receiver.stores.postgres.connection import PostgresConnection, pg


class PostgresUpkeep(PostgresConnection):
    """What the maintenance loop and the one-process jobs change."""

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

    async def hold_lease(self, name: str, holder: str, *, ttl: float, now: float) -> bool:
        sql = pg(rows.HOLD_LEASE)
        row = await self._run(lambda con: con.fetchrow(sql, name, holder, now + ttl, now))
        return row is not None

    async def release_lease(self, name: str, holder: str) -> None:
        await self._run(lambda con: con.execute(pg(rows.RELEASE_LEASE), name, holder))

    async def add_ingest_counts(self, counts: Sequence[tuple[int, str, int]]) -> None:
        await self._run(lambda con: con.executemany(pg(reads.INGEST_COUNTS_ADD), counts))
