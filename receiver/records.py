"""The records the use cases and the adapters exchange: stored events, tasks' reads, outbox rows, queries."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Generic, TypeVar

import msgspec
import orjson

from receiver.tasks import MatchedBy
from receiver.tasks import Recorded as Recorded  # where the stores and ingest have always found it

T = TypeVar("T")


# The three records built once per delivery (or per event read) are msgspec Structs: immutable
# as the dataclasses around them, and built in a sixth of the time a frozen dataclass takes.


class EventRecord(msgspec.Struct, frozen=True):
    """A stored event as the read side sees it."""

    seq: int
    event_id: str
    task_id: str
    task_ref: str | None  # our task's id; None while the event is an orphan
    matched_by: MatchedBy | None
    notification_type: str
    session_id: str
    session_context: str
    channel: str
    received_at: float
    verdict: str
    late: bool
    duplicates: int
    err_code: int | None
    err_message: str | None
    findings: list[dict[str, Any]]
    # The notification as stored (unwrapped, Timestamp and Sign cut out): JSON text, decoded only
    # when something reads ``raw`` (a sink that encodes it splices these bytes as they are).
    body: bytes
    sign_key: str | None = None  # which key verified the Sign: derived:N or static:N
    traceparent: str | None = None  # the trace it came in with (W3C traceparent), with tracing on

    @property
    def raw(self) -> dict[str, Any]:
        """The stored notification, decoded (each time: keep it if you read it twice)."""
        decoded: dict[str, Any] = orjson.loads(self.body)
        return decoded


@dataclass(frozen=True, slots=True)
class OwnEvent:
    """An event receiver makes itself (a task's digest, an operator event), stored beside the MPS
    events (channel ``receiver``) and delivered through the same outbox."""

    event_id: str  # stable: the same digest or operator event twice is one event
    notification_type: str  # TaskDigest | OperatorEvent
    task_id: str  # the MPS TaskId it is about, or ""
    task_ref: str | None  # our task it is about
    task_key: str  # its line in the outbox: a digest goes after its task's events
    at: float
    document: dict[str, Any]  # what sinks get as its payload
    session_id: str = ""
    session_context: str = ""


@dataclass(frozen=True, slots=True)
class OperatorEvent:
    """Something an operator should hear of; one of a kind and subject per window."""

    kind: str
    subject: str
    window_start: float
    at: float
    detail: dict[str, Any]
    id: int | None = None
    event_id: str | None = None  # its event, when operator sinks take it


@dataclass(frozen=True, slots=True)
class Quarantined:
    """A message that can never be stored as an event, kept with the reason why."""

    channel: str
    received_at: float
    reason: str
    detail: str
    field: str | None
    body: bytes  # as received less its Sign pair; read back, its first ``QUARANTINE_BODY_BYTES`` only
    meta: dict[str, Any]
    id: int | None = None
    body_sha256: str | None = None  # of the whole body as kept (set by the store)
    body_size: int | None = None  # bytes received (set by the store)


# What the quarantine keeps of a body: enough to see what it was; anyone who can publish can fill it.
QUARANTINE_BODY_BYTES = 64 * 1024


MIN_TEXT = 2  # characters a free-text search of events needs


@dataclass(frozen=True, slots=True)
class TimelineEvent:
    """What a task's timeline needs of one of its events (read without the payload)."""

    seq: int
    notification_type: str
    err_code: int | None
    err_message: str | None
    findings: list[dict[str, Any]]


@dataclass(frozen=True, slots=True)
class EventQuery:
    task_id: str | None = None  # MPS TaskId carried by the event
    task_ref: str | None = None  # our task id the event is attached to
    notification_type: str | None = None
    since: float | None = None  # received at or after, unix seconds
    orphan: bool | None = None
    after: int = 0  # seq cursor: events strictly after it (strictly before it when descending)
    limit: int = 100
    until: float | None = None  # received before, unix seconds
    # Finding conditions, met together by one finding of the event (as sink filters have them):
    kind: str | None = None
    label: str | None = None
    suggestion: str | None = None
    min_confidence: float | None = None
    text: str | None = None  # a case-insensitive substring of the recognized text (ASR, OCR, subtitles)
    descending: bool = False  # newest first; ``after`` 0 then means from the newest

    @property
    def searches(self) -> bool:
        """Whether it asks about findings (then only events with findings can match)."""
        return any(
            v is not None for v in (self.kind, self.label, self.suggestion, self.min_confidence, self.text)
        )


class DeliveryState(StrEnum):
    """Where a delivery stands in the outbox."""

    PENDING = "pending"
    DELIVERED = "delivered"
    DEAD = "dead"


class Delivery(msgspec.Struct, frozen=True):
    """One event to hand to one sink, as the dispatcher claims it."""

    id: int
    sink: str
    task_key: str  # deliveries with the same key go out one at a time, in order
    attempts: int  # made so far
    event: EventRecord
    # The batch it failed in, and that batch's size: it is retried in that batch, whole.
    batch_id: str | None = None
    batch_size: int | None = None


class Settlement(msgspec.Struct, frozen=True):
    """What became of one delivery attempt (kept in its delivery's attempt history too)."""

    id: int
    state: DeliveryState
    attempts: int
    next_attempt_at: float
    error: str | None
    at: float
    batch_id: str | None = None  # pending again with its batch: retried in it, with these members
    batch_size: int | None = None
    status: int | None = None  # the target's HTTP status, when it answered one
    latency_ms: float | None = None  # how long the sink took
    snippet: str | None = None  # the first bytes of the target's answer (``SNIPPET_CHARS`` at most)


# What an attempt keeps of the target's answer: enough to see why, never a whole body.
SNIPPET_CHARS = 512


@dataclass(frozen=True, slots=True)
class Receipt:
    """What a sink may say about a delivery the target took: its answer's status and first bytes."""

    status: int | None = None
    snippet: str | None = None


@dataclass(frozen=True, slots=True)
class Attempt:
    """One attempt at one delivery, as its history lists it."""

    delivery_id: int
    attempt: int
    at: float
    outcome: str  # delivered | failed | dead
    error: str | None
    status: int | None
    latency_ms: float | None
    snippet: str | None


@dataclass(frozen=True, slots=True)
class DeliveryRow:
    """A delivery as the management API and ``receiver replay`` list it."""

    id: int
    sink: str
    state: DeliveryState
    attempts: int
    next_attempt_at: float
    last_error: str | None
    created_at: float
    delivered_at: float | None
    event_id: str
    task_id: str
    notification_type: str


@dataclass(frozen=True, slots=True)
class DeliveryQuery:
    sink: str | None = None
    state: DeliveryState | None = None
    task_id: str | None = None  # MPS TaskId
    notification_type: str | None = None
    since: float | None = None  # event received at or after
    until: float | None = None  # event received before
    after: int = 0
    limit: int = 100
    id: int | None = None  # this one delivery


@dataclass(frozen=True, slots=True)
class SinkStats:
    sink: str
    pending: int
    delivered: int
    dead: int
    oldest_pending_at: float | None
    disabled: str | None  # why, when the sink's target switched it off


@dataclass(frozen=True, slots=True)
class SinkBacklog:
    """What waits for a sink: read from indexes only, so it costs little however large the outbox."""

    sink: str
    pending: int
    dead: int
    oldest_pending_at: float | None  # of the first delivery in line
    disabled: str | None


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    items: list[T]
    next: str | None  # opaque cursor for the following page, None at the end


@dataclass(frozen=True, slots=True)
class ReconcileQuery:
    """Which tasks to ask MPS about: not ended, with a TaskId, created at or after ``since`` (MPS
    answers about the last 7 days only), not asked since ``checked_before``, and ``stalled``,
    ``aborting``, created before ``overdue_before`` (0: none is overdue), or ``submitted`` with no
    event yet and created before ``silent_before``. Never asked first, then the longest unasked."""

    since: float
    checked_before: float
    silent_before: float
    overdue_before: float
    limit: int


UNSET_TIME = "0000-00-00T00:00:00Z"  # how MPS writes a time not set yet


@dataclass(frozen=True, slots=True)
class MpsTaskInfo:
    """What ``DescribeTaskDetail`` says of a live-stream task, in receiver's terms: a
    ``LiveStreamProcessTask``, or a ``LiveScheduleTask`` (submitted with a ScheduleId)."""

    task_id: str
    task_type: str
    status: str  # WAITING | PROCESSING | FINISH
    err_code: int | None  # the task's ErrCode (a schedule's: its own, else its first failed activity's)
    message: str | None
    url: str
    session_id: str
    session_context: str
    create_time: str  # as MPS wrote them (ISO 8601; "0000-00-00T00:00:00Z" when not yet set)
    finish_time: str
    request_id: str | None = None


@dataclass(frozen=True, slots=True)
class MpsTaskSummary:
    """One row of ``DescribeTasks``."""

    task_id: str
    task_type: str  # live tasks are "LiveProcessTask" here
    create_time: str


@dataclass(frozen=True, slots=True)
class MpsTaskPage:
    items: list[MpsTaskSummary]
    scroll_token: str  # "" at the end
    total: int


@dataclass(frozen=True, slots=True)
class Batch:
    """Events going to one sink in one request or message: a JSON array of their documents."""

    id: str  # the batch's own id (``webhook-id``, the message id); kept when it is retried
    group: str  # what its members share (the amqp routing key; "" where nothing need be shared)
    deliveries: Sequence[Delivery]
    bodies: Sequence[bytes]  # each member's document as the sink encoded it, in order
