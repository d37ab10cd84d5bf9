"""The maintenance use case: now and then mark quiet tasks stalled, derive missing search rows, and
purge what retention allows."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

import structlog

from receiver.errors import ReceiverError
from receiver.ports import Upkeep
from receiver.settings import MaintenanceSettings

log = structlog.get_logger("receiver.app")


async def maintain(
    store: Upkeep, settings: MaintenanceSettings, clock: Callable[[], float], stop: asyncio.Event
) -> None:
    """Now and then: mark quiet tasks stalled, purge what retention allows (payloads no delivery
    still needs, delivered outbox rows, quarantine rows). Never raises; returns
    between passes once ``stop`` is set (never cancelled in the middle of one)."""
    while not stop.is_set():
        now = clock()
        try:
            if settings.stall_after:
                stalled = await store.mark_stalled(now - settings.stall_after, now=now)
                if stalled:
                    log.warning("tasks stalled: no notification for too long", count=stalled)
            backfilled = 0
            while backfilled < 100_000 and (n := await store.backfill_search(2_000)):
                backfilled += n  # events stored before the search existed; the rest next pass
            if backfilled:
                log.info("search rows derived for events stored before", events=backfilled)
            if settings.retention_days:
                before = now - settings.retention_days * 86400
                payloads, deliveries = await store.purge(before)
                quarantined = await store.purge_quarantine(before)
                counts = await store.purge_ingest_counts(before)
                if payloads or deliveries or quarantined or counts:
                    log.info(
                        "retention",
                        payloads_dropped=payloads,
                        deliveries_deleted=deliveries,
                        quarantine_deleted=quarantined,
                        ingest_counts_deleted=counts,
                    )
        except ReceiverError as exc:
            log.warning("maintenance pass failed; next pass retries", error=str(exc))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=settings.interval)
