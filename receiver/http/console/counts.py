"""``IngestCounts``: the outcome of every notification, per minute, added up where every process and
replica can read it (the console's overview), at the cost of a dict increment on the hot path.

Each process counts in memory and flushes every few seconds: one upsert per (minute, outcome) that
changed, adding its counts to the store's. A flush the store refuses is kept and added to the next.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import Callable

import structlog

from receiver.errors import StoreUnavailableError
from receiver.ports import IngestCountBook

log = structlog.get_logger("receiver.console")

FLUSH_SECONDS = 2.0


class IngestCounts:
    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._counts: Counter[tuple[int, str]] = Counter()

    def add(self, outcome: str) -> None:
        """One notification's outcome (``stored``, ``duplicate``, ``invalid``, ...)."""
        self._counts[(int(self._clock() // 60), outcome)] += 1

    async def flush(self, store: IngestCountBook) -> int:
        """Add what was counted since the last flush to the store's counts; returns how many rows."""
        counts, self._counts = self._counts, Counter()
        if not counts:
            return 0
        try:
            await store.add_ingest_counts([(minute, outcome, n) for (minute, outcome), n in counts.items()])
        except StoreUnavailableError:
            self._counts.update(counts)  # next time, with whatever came meanwhile
            raise
        return len(counts)

    async def run(self, store: IngestCountBook, stop: asyncio.Event, interval: float = FLUSH_SECONDS) -> None:
        """Flush every ``interval`` until ``stop`` is set, then once more. Never raises."""
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=interval)
            try:
                await self.flush(store)
            except StoreUnavailableError as exc:
                log.warning("ingest counts not flushed; kept for the next flush", error=str(exc))
            if stop.is_set():
                return
