"""The ingest use case both channels share: bytes -> parse -> verify -> normalize -> one commit.

Concurrent notifications are grouped into one store transaction (group commit); each caller still
returns only once its own event is committed, so an answer of 200 or an AMQP ack means "stored".
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import structlog

from receiver import events
from receiver.errors import InvalidNotificationError, SignatureError, StoreUnavailableError
from receiver.events import Channel, Event, SignPolicy
from receiver.ports import Recorded, Store

log = structlog.get_logger("receiver.ingest")


@dataclass(frozen=True, slots=True)
class IngestResult:
    event: Event
    recorded: Recorded

    @property
    def outcome(self) -> str:
        return "duplicate" if self.recorded.duplicate else "stored"


def _fail(batch: list[tuple[Event, asyncio.Future[Recorded]]], error: Exception) -> None:
    for _, future in batch:
        if not future.done():
            future.set_exception(error)


class GroupCommit:
    """Batches concurrent ``record_events`` calls: whoever arrives while a commit runs joins the next.

    No timer and no added latency: a lone event is committed at once; under load, batches grow to
    what arrived during the previous commit (at most ``max_batch``).
    """

    def __init__(
        self, commit: Callable[[Sequence[Event]], Awaitable[list[Recorded]]], max_batch: int
    ) -> None:
        self._commit = commit
        self._max_batch = max_batch
        self._pending: list[tuple[Event, asyncio.Future[Recorded]]] = []
        self._flusher: asyncio.Task[None] | None = None

    async def submit(self, event: Event) -> Recorded:
        future: asyncio.Future[Recorded] = asyncio.get_running_loop().create_future()
        self._pending.append((event, future))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush())
        return await future

    async def _flush(self) -> None:
        while self._pending:
            batch = self._pending[: self._max_batch]
            del self._pending[: self._max_batch]
            await self._commit_batch(batch)

    async def _commit_batch(self, batch: list[tuple[Event, asyncio.Future[Recorded]]]) -> None:
        try:
            results = await self._commit([event for event, _ in batch])
        except StoreUnavailableError as exc:
            _fail(batch, exc)
        except Exception as exc:
            if len(batch) == 1:
                log.exception("commit failed", event_id=batch[0][0].event_id)
                _fail(batch, StoreUnavailableError(f"commit failed: {exc!r}"))
                return
            # Something in this batch cannot be stored: commit one by one, so that only it fails.
            for one in batch:
                await self._commit_batch([one])
        except BaseException as exc:  # cancelled: every waiter must still hear about it
            _fail(batch, StoreUnavailableError(repr(exc)))
            raise
        else:
            for (_, future), result in zip(batch, results, strict=True):
                if not future.done():
                    future.set_result(result)

    async def drain(self) -> None:
        """Wait for the commit in progress and everything queued behind it."""
        while self._flusher is not None and not self._flusher.done():
            await asyncio.shield(self._flusher)


class Ingestor:
    """Turns the bytes of one notification, from either channel, into a stored event."""

    def __init__(
        self,
        store: Store,
        *,
        keys: Sequence[str],
        policies: Mapping[Channel, SignPolicy],
        skew_seconds: float = 60.0,
        max_batch: int = 256,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._keys = tuple(keys)
        self._policies = dict(policies)
        self._skew = skew_seconds
        self._clock = clock
        self._group = GroupCommit(store.record_events, max_batch)

    async def ingest(self, raw: bytes | str, channel: Channel) -> IngestResult:
        """Store one notification; returns once committed. Logs one summary line whatever happens.

        Raises ``InvalidNotificationError`` (never retry), ``SignatureError`` (never retry) or
        ``StoreUnavailableError`` (retry later).
        """
        started = time.perf_counter()
        summary: dict[str, Any] = {"channel": channel.value}
        outcome = "error"
        try:
            received_at = self._clock()
            document, notification = events.parse(raw)
            summary["task_id"] = notification.task_id
            summary["notification_type"] = notification.notification_type
            verdict = events.verify_sign(
                notification,
                keys=self._keys,
                policy=self._policies[channel],
                now=received_at,
                skew=self._skew,
            )
            event = events.normalize(
                document, notification, channel=channel, received_at=received_at, verdict=verdict
            )
            summary["event_id"] = event.event_id
            summary["verdict"] = verdict.value
            recorded = await self._group.submit(event)
            outcome = "duplicate" if recorded.duplicate else "stored"
            summary["orphan"] = recorded.task is None
            summary["late"] = recorded.late
            summary["findings"] = len(event.findings)
            return IngestResult(event, recorded)
        except InvalidNotificationError as exc:
            outcome = "invalid"
            summary["error"] = str(exc)
            raise
        except SignatureError as exc:
            outcome = "unauthorized"
            summary["error"] = exc.reason
            raise
        except StoreUnavailableError as exc:
            outcome = "unavailable"
            summary["error"] = str(exc)
            raise
        finally:
            summary["outcome"] = outcome
            summary["duration_ms"] = round((time.perf_counter() - started) * 1000, 3)
            if outcome in ("stored", "duplicate"):
                log.info("notification", **summary)
            elif outcome in ("invalid", "unauthorized"):
                log.warning("notification", **summary)
            else:
                log.error("notification", **summary)

    async def drain(self) -> None:
        await self._group.drain()
