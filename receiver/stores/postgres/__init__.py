"""``PostgresStore``: the ``Store`` port on PostgreSQL, for production and for several replicas.

The same rules as the SQLite store, with the database doing what one process did there: event
dedup by the unique ``event_id`` under concurrency (``ON CONFLICT DO NOTHING``), the tasks an ingest
batch touches locked up front in one order (``FOR UPDATE``, so replicas never deadlock on them),
and outbox rows claimed with ``FOR UPDATE SKIP LOCKED`` plus a lease, so N dispatchers share the
work and a task's deliveries still go out one at a time, in order.
"""

from __future__ import annotations

import asyncio

import asyncpg

from receiver.errors import StoreUnavailableError
from receiver.group_commit import RideAlong
from receiver.ports import Settlement
from receiver.stores.postgres.connection import TRANSIENT, migrate
from receiver.stores.postgres.events import PostgresEventLog
from receiver.stores.postgres.notices import PostgresNotices
from receiver.stores.postgres.outbox import PostgresOutbox
from receiver.stores.postgres.read_model import PostgresReadModel
from receiver.stores.postgres.tasks import PostgresTaskBook
from receiver.stores.postgres.upkeep import PostgresUpkeep

__all__ = ["PostgresStore"]


class PostgresStore(
    PostgresEventLog, PostgresTaskBook, PostgresOutbox, PostgresUpkeep, PostgresNotices, PostgresReadModel
):
    """The ``Store`` port on PostgreSQL: every slice, on one pool."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool
        # The dispatcher's settlements ride with the next ingest transaction of this process.
        self._riders: RideAlong[Settlement] = RideAlong(self._settle_alone)

    @classmethod
    async def open(cls, url: str, *, min_size: int = 2, max_size: int = 10) -> PostgresStore:
        try:
            pool = await asyncpg.create_pool(
                url,
                min_size=min_size,
                max_size=max_size,
                command_timeout=30,
                # asyncpg prepares every statement; after five runs PostgreSQL may keep a generic
                # plan made while the tables were young (nearly empty), such as a sequential scan
                # of events for ``event_id = ANY($1)``, and run it ever after: quadratic ingest.
                # Planned with each run's arguments, a statement follows the tables as they grow.
                server_settings={"plan_cache_mode": "force_custom_plan"},
            )
        except TRANSIENT as exc:
            raise StoreUnavailableError(f"postgres: {exc}") from exc
        async with pool.acquire() as con:
            await migrate(con)
        return cls(pool)

    async def aclose(self) -> None:
        try:
            await asyncio.wait_for(self._pool.close(), timeout=10)
        except Exception:  # a query cancelled at shutdown can leave a connection mid-operation
            self._pool.terminate()
