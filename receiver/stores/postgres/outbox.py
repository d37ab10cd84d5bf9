"""The ``Outbox`` port on PostgreSQL: claims leased with ``SKIP LOCKED``, settlements, redrive, switches."""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from typing import Any, Final

import asyncpg

from receiver.ports import Delivery, DeliveryQuery, Settlement
from receiver.stores import reads, rows
from receiver.stores.postgres.connection import PostgresConnection, pg
from receiver.stores.rows import (
    DELIVERIES_WITH_EVENTS,
    EVENT_COLUMNS,
    LINE_COLUMNS,
    Known,
    claimed,
    delivery_filter,
    due_line,
    event_record,
    known_events,
)

# A claimed delivery not settled by then (its replica died, or lost its connection) may be claimed
# again: at least once. Longer than a sink's timeout, short enough not to hold a task up for long.
LEASE_SECONDS = 30.0


_SETTLE: Final = (
    "UPDATE deliveries d SET state = s.state, attempts = s.attempts, next_attempt_at = s.next_at,"
    " last_error = s.error, updated_at = s.at, lease_until = NULL, batch_id = s.batch_id,"
    " batch_size = s.batch_size, last_status = s.status, last_latency_ms = s.latency_ms,"
    " last_snippet = s.snippet,"
    " delivered_at = CASE WHEN s.state = 'delivered' THEN s.at ELSE d.delivered_at END"
    " FROM unnest($1::bigint[], $2::text[], $3::int[], $4::float8[], $5::text[], $6::float8[],"
    " $7::text[], $8::int[], $9::int[], $10::float8[], $11::text[])"
    " AS s(id, state, attempts, next_at, error, at, batch_id, batch_size, status, latency_ms, snippet)"
    " WHERE d.id = s.id"
)


async def settle(con: asyncpg.Connection, settlements: Sequence[Settlement]) -> None:
    """One statement for the batch's outcomes (in id order: row locks taken in one order), and
    the failed attempts' history rows (a delivery's attempt stays on its row)."""
    ordered = sorted(settlements, key=lambda x: x.id)
    await con.execute(
        _SETTLE,
        *zip(
            *(
                (x.id, str(x.state), x.attempts, x.next_attempt_at, x.error, x.at, x.batch_id,
                 x.batch_size, x.status, x.latency_ms, x.snippet)
                for x in ordered
            ),
            strict=True,
        ),
    )  # fmt: skip
    failed = reads.attempt_rows(ordered)
    if failed:
        await con.executemany(pg(reads.ATTEMPT_INSERT), failed)


class PostgresOutbox(PostgresConnection):
    """Deliveries claimed, settled and redriven; N dispatchers share the work."""

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
            found, missing = known_events(due, known)
            if missing:
                for row in await con.fetch(
                    f"SELECT {EVENT_COLUMNS} FROM events WHERE seq = ANY($1::bigint[])", missing
                ):
                    found[row[0]] = event_record(tuple(row))
            return claimed(sink, due, found.__getitem__)

        return await self._run(body)

    def handoff_epoch(self) -> int | None:
        return None  # other dispatchers and writers cannot be seen: every delivery is claimed

    async def has_pending(self, sink: str) -> bool:
        return await self._run(lambda con: con.fetchval(pg(rows.HAS_PENDING), sink), write=False) is not None

    async def settle_deliveries(self, settlements: Sequence[Settlement]) -> None:
        """Committed with an ingest transaction of this process (one commit instead of two): one
        running or waiting, or while ingest flows the next (``RideAlong``: 250 ms at most); with
        ingest idle, at once."""
        await self._riders.submit(settlements)

    async def _settle_alone(self, settlements: list[Settlement]) -> None:
        await self._run(lambda con: settle(con, settlements))

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
        # Each chunk keeps the delivered attempts of its deliveries as history rows first (the
        # statements of one WITH see the rows as they were), then makes them pending again.
        chunk_sql = pg(
            f"WITH chosen AS (SELECT d.id {DELIVERIES_WITH_EVENTS} WHERE {where} AND d.id > ? ORDER BY d.id"
            " LIMIT 2000), kept AS (INSERT INTO delivery_attempts (delivery_id, attempt, at, outcome, error,"
            " status, latency_ms, snippet) SELECT d.id, d.attempts, d.delivered_at, 'delivered', NULL,"
            " d.last_status, d.last_latency_ms, d.last_snippet FROM deliveries d JOIN chosen USING (id)"
            " WHERE d.state = 'delivered' AND NOT EXISTS (SELECT 1 FROM delivery_attempts a"
            " WHERE a.delivery_id = d.id AND a.attempt = d.attempts AND a.at = d.delivered_at"
            " AND a.outcome = 'delivered'))"
            " UPDATE deliveries SET state = 'pending', attempts = 0, next_attempt_at = ?, last_error = NULL,"
            " updated_at = ?, lease_until = NULL, batch_id = NULL, batch_size = NULL"
            " WHERE id IN (SELECT id FROM chosen) RETURNING id"
        )
        total, after = 0, 0
        while True:
            ids = await self._run(lambda con: con.fetch(chunk_sql, *args, after, now, now))  # noqa: B023
            if not ids:
                return total
            total += len(ids)
            after = max(r[0] for r in ids)
            if progress is not None:
                progress(total)

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

    async def disabled_sinks(self) -> dict[str, str]:
        async def body(con: asyncpg.Connection) -> dict[str, str]:
            return {r[0]: r[1] for r in await con.fetch(rows.SINKS_DISABLED)}

        return await self._run(body, write=False)
