"""The ingest use case both channels share: bytes -> parse -> verify -> normalize -> one commit.

Concurrent notifications are grouped into one store transaction (group commit); each caller still
returns only once its own event is committed, so an answer of 200 or an AMQP ack means "stored".
The outbox rows for the sinks whose filters match are written in that same transaction.
"""

from __future__ import annotations

import contextvars
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import structlog

from receiver import decoder, events, logs, wire
from receiver.errors import (
    InvalidNotificationError,
    NotLiveError,
    SignatureError,
    StoreUnavailableError,
    UnstorableError,
)
from receiver.events import Channel, Event, NotifyKeys, SignPolicy
from receiver.group_commit import GroupCommit
from receiver.ports import EventLog, Recorded, Router

log = structlog.get_logger("receiver.ingest")
# The summary line's outcome for each way a notification is refused; any other exception: "error".
_REFUSED: dict[type[Exception], str] = {
    InvalidNotificationError: "invalid",
    NotLiveError: "not_live",
    SignatureError: "unauthorized",
    StoreUnavailableError: "unavailable",
    UnstorableError: "unstorable",
}
# The summary line's level by outcome; any other outcome is an error.
_LEVEL = {
    "stored": "info",
    "duplicate": "info",
    "not_live": "info",
    "invalid": "warning",
    "unauthorized": "warning",
}


@dataclass(frozen=True, slots=True)
class IngestResult:
    event: Event
    recorded: Recorded


class Ingestor:
    """Turns the bytes of one notification, from either channel, into a stored event."""

    def __init__(
        self,
        store: EventLog,
        *,
        keys: NotifyKeys,
        policies: Mapping[Channel, SignPolicy],
        skew_seconds: float = 60.0,
        max_ahead_seconds: float = 600.0,
        keep_file_tasks: bool = True,
        max_batch: int = 256,
        commits_in_flight: int = 1,
        clock: Callable[[], float] = time.time,
        route: Router | None = None,
        on_recorded: Callable[[Sequence[Event], Sequence[Recorded]], None] | None = None,
        observe: Callable[[str, str, float], None] | None = None,
        observe_key: Callable[[str], None] | None = None,
        on_signature_failure: Callable[[Channel], None] | None = None,
    ) -> None:
        self._keys = keys
        self._policies = dict(policies)
        self._skew = skew_seconds
        self._max_ahead = max_ahead_seconds
        self._keep_file_tasks = keep_file_tasks
        self._observe_key = observe_key
        self._clock = clock
        self._route = route
        self._observe = observe
        self._on_recorded = on_recorded
        self._on_signature_failure = on_signature_failure  # counted for the operator events
        self._group: GroupCommit[Event, Recorded] = GroupCommit(self._commit, max_batch, commits_in_flight)
        self._store = store

    async def _commit(self, events: Sequence[Event]) -> list[Recorded]:
        recorded = await self._store.record_events(events, self._route)
        if self._on_recorded is not None:
            # New outbox rows: the dispatcher need not wait for its next poll, nor read them back.
            self._on_recorded(events, recorded)
        return recorded

    async def ingest(
        self, raw: bytes | str, channel: Channel, traceparent: str | None = None
    ) -> IngestResult:
        """Store one notification; returns once committed. Logs one summary line whatever happens.
        ``traceparent``: the trace it came in (with tracing on), stored with the event.

        Raises ``InvalidNotificationError`` (never retry), ``SignatureError`` (never retry) or
        ``StoreUnavailableError`` (retry later).
        """
        started = time.perf_counter()
        summary: dict[str, Any] = {"channel": channel.value}
        outcome = "error"
        bound: contextvars.Token[Mapping[str, Any]] | None = None
        try:
            received_at = self._clock()
            body, head = decoder.read(raw)
            summary["task_id"] = task_id = head.task_id.strip()
            # The adapter bound the channel and message id; only this knows the task. Every line
            # logged while the notification is ingested carries it.
            bound = logs.bind(task_id=task_id)
            summary["notification_type"] = head.notification_type.strip()
            # The Sign first: a body nobody signed is refused before it costs a full validation.
            check = events.verify_sign(
                head,
                keys=self._keys,
                policy=self._policies[channel],
                now=received_at,
                skew=self._skew,
                max_ahead=self._max_ahead,
            )
            if check.key is not None and self._observe_key is not None:
                self._observe_key(check.key)
            if isinstance(head, wire.FileTaskHead) and not self._keep_file_tasks:
                raise NotLiveError(head.notification_type)
            try:
                notification = decoder.read_notification(body, head)
            except InvalidNotificationError as exc:
                exc.signed = True
                raise
            event = events.normalize(
                decoder.strip_sign(body, head=head),
                notification,
                channel=channel,
                received_at=received_at,
                check=check,
            )
            if traceparent is not None:
                event.traceparent = traceparent
            summary["event_id"] = event.event_id
            summary["verdict"] = check.verdict.value
            if check.key is not None:
                summary["key"] = check.key
            recorded = await self._group.submit(event)
            outcome = "duplicate" if recorded.duplicate else "stored"
            summary["orphan"] = recorded.task is None
            summary["late"] = recorded.late
            summary["findings"] = len(event.findings)
            return IngestResult(event, recorded)
        except Exception as exc:
            outcome = next((_REFUSED[t] for t in type(exc).__mro__ if t in _REFUSED), "error")
            if outcome != "error":
                summary["error"] = str(exc)  # (a SignatureError's is its reason)
            if outcome == "unauthorized" and self._on_signature_failure is not None:
                self._on_signature_failure(channel)
            raise
        finally:
            summary["outcome"] = outcome
            elapsed = time.perf_counter() - started
            summary["duration_ms"] = round(elapsed * 1000, 3)
            if self._observe is not None:
                self._observe(channel.value, outcome, elapsed)
            logs.line(log, "receiver.ingest", _LEVEL.get(outcome, "error"), "notification", summary)
            if bound is not None:
                logs.unbind(bound)

    async def drain(self) -> None:
        await self._group.drain()
