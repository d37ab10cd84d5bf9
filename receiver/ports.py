"""The contracts between the use cases and the adapters: the ``Store`` protocol and its records."""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

import orjson

from receiver.events import Event
from receiver.tasks import MatchedBy, MpsCheck, Task, TaskState
from receiver.tasks import Recorded as Recorded  # where the stores and ingest have always found it

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class EventRecord:
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


# Which sinks an event goes to, decided at ingest (inside the transaction, once its task is known).
Router = Callable[[Event, Task | None], Sequence[str]]


class DeliveryState:
    PENDING = "pending"
    DELIVERED = "delivered"
    DEAD = "dead"
    ALL = (PENDING, DELIVERED, DEAD)


@dataclass(frozen=True, slots=True)
class Delivery:
    """One event to hand to one sink, as the dispatcher claims it."""

    id: int
    sink: str
    task_key: str  # deliveries with the same key go out one at a time, in order
    attempts: int  # made so far
    event: EventRecord
    # The batch it failed in, and that batch's size: it is retried in that batch, whole.
    batch_id: str | None = None
    batch_size: int | None = None


@dataclass(frozen=True, slots=True)
class Settlement:
    """What became of one delivery attempt (kept in its delivery's attempt history too)."""

    id: int
    state: str  # DeliveryState
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
    state: str
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
    state: str | None = None
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


class MpsTasks(Protocol):
    """The task APIs of MPS that receiver calls besides ProcessLiveStream; ``MpsError`` on failure."""

    async def describe_task(self, task_id: str) -> MpsTaskInfo | None:
        """``DescribeTaskDetail``; None when MPS does not know the TaskId."""
        ...

    async def list_tasks(
        self, *, status: str, start: float, end: float, limit: int, scroll_token: str
    ) -> MpsTaskPage:
        """``DescribeTasks``: one page."""
        ...

    async def abort_task(self, task_id: str) -> str:
        """``ManageTask`` with ``OperationType=Abort``; returns the RequestId."""
        ...


class Sink(Protocol):
    """Somewhere events go. ``deliver`` returns once the target has it (durably, as far as the
    target can say); it raises ``SinkError`` to retry later, ``SinkGoneError`` to be switched off.

    A sink whose class sets ``splices_payload = True`` gets the document's ``payload`` as an
    ``orjson.Fragment`` of the stored JSON instead of a dict: for a sink that only encodes the
    document with ``orjson.dumps`` (or never reads the payload), which then costs no decode."""

    name: str

    async def deliver(self, delivery: Delivery, document: dict[str, Any]) -> Receipt | None: ...

    async def aclose(self) -> None: ...


@dataclass(frozen=True, slots=True)
class Batch:
    """Events going to one sink in one request or message: a JSON array of their documents."""

    id: str  # the batch's own id (``webhook-id``, the message id); kept when it is retried
    group: str  # what its members share (the amqp routing key; "" where nothing need be shared)
    deliveries: Sequence[Delivery]
    bodies: Sequence[bytes]  # each member's document as the sink encoded it, in order


class BatchSink(Sink, Protocol):
    """A sink that can also take several events at once (``max_batch`` above 1)."""

    def encode(self, document: dict[str, Any]) -> tuple[bytes, str]:
        """One member's body and its group; ``UndeliverableError`` if it can never be sent."""
        ...

    async def deliver_batch(self, batch: Batch) -> Receipt | None:
        """Send them all at once; returns once the target has them all, raises as ``deliver``."""
        ...


class NoticeBook(Protocol):
    """What ``Notices`` (operator events, task digests) needs of the store."""

    async def record_own_event(
        self, event: OwnEvent, sinks: Sequence[str], operator: OperatorEvent | None = None
    ) -> bool:
        """In one transaction: the operator event (unless its kind, subject and window are stored
        already) and, for ``sinks``, ``event`` with a pending delivery to each (unless its id is
        stored already). True if it was new."""
        ...

    async def count_up(self, name: str, window_start: float, n: int) -> int:
        """Add ``n`` to the counter ``name`` of that window (shared by every process); its total."""
        ...

    async def list_operator_events(
        self, *, kind: str | None, after: int, limit: int
    ) -> Page[OperatorEvent]: ...

    async def undigested_tasks(self, since: float, limit: int) -> list[Task]:
        """Tasks that ended at or after ``since`` and have no digest yet, oldest end first."""
        ...

    async def tasks_to_alert(
        self, since: float, started: tuple[float, float] | None, limit: int
    ) -> list[Task]:
        """Tasks failed or stalled at or after ``since``, and, with ``started``, the tasks not ended
        that started in that range (those that went overdue lately)."""
        ...

    async def get_task(self, task_id: str) -> Task | None: ...

    async def list_events(self, query: EventQuery) -> Page[EventRecord]: ...


class Store(NoticeBook, Protocol):
    """Durable state: events (deduplicated by ``event_id``) and tasks, changed together."""

    async def record_events(self, events: Sequence[Event], route: Router | None = None) -> list[Recorded]:
        """In ONE transaction: store each event (or count it as a duplicate), match it, update its task,
        and add one pending delivery for each sink ``route`` names.

        Returns one ``Recorded`` per event, in order, only once the transaction is committed.
        Raises ``StoreUnavailableError`` if it could not commit.
        """
        ...

    async def register_task(self, task: Task, route: Router | None = None) -> tuple[Task, int]:
        """Insert a task and adopt the orphan events that match it; returns it and the adopted count.

        Each adopted event is routed again with the task known (a ``task_labels`` filter can match
        it now): a pending delivery is added for each sink ``route`` names that has none for it.
        Raises ``ConflictError`` if its ``task_id`` is already registered.
        """
        ...

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
        """How the ProcessLiveStream call of a ``submitting`` task (our id ``ref``) ended: its TaskId
        and RequestId (then ``submitted``, unless events already moved it on; orphans adopted and
        routed as ``register_task`` does), or the error (then ``failed``)."""
        ...

    async def mark_stalled(self, before: float, *, now: float) -> int:
        """``submitted``/``running`` tasks with no notification since ``before`` become ``stalled``."""
        ...

    async def reconcile_candidates(self, query: ReconcileQuery) -> list[Task]:
        """The tasks to ask MPS about (see ``ReconcileQuery``), at most ``query.limit``."""
        ...

    async def record_check(self, ref: str, check: MpsCheck) -> Task:
        """Keep what MPS answered about the task (our id ``ref``): ``tasks.checked``, in one transaction."""
        ...

    async def mark_aborting(self, ref: str, *, now: float) -> Task:
        """The task's abort was accepted by MPS: ``tasks.aborting``, in one transaction."""
        ...

    async def purge(self, before: float) -> tuple[int, int]:
        """Drop raw payloads and delivered outbox rows older than ``before``; returns both counts.

        A payload a pending or dead delivery still needs stays until that delivery is delivered.
        """
        ...

    async def purge_quarantine(self, before: float) -> int:
        """Delete quarantine rows received before ``before``; returns how many."""
        ...

    async def task_counts(self) -> dict[str, int]: ...

    async def get_task(self, task_id: str) -> Task | None:
        """The task with this MPS ``TaskId`` or, failing that, this id of ours."""
        ...

    async def list_tasks(
        self,
        *,
        state: TaskState | None,
        after: str | None,
        limit: int,
        label: tuple[str, str] | None = None,
        search: str | None = None,
        newest_first: bool = False,
    ) -> Page[Task]:
        """Tasks in the order registered (or newest first); ``label`` is a (key, value) they carry,
        ``search`` a TaskId, SessionId or SessionContext, or a part of one."""
        ...

    async def list_events(self, query: EventQuery) -> Page[EventRecord]: ...

    async def task_timeline(self, task_ref: str, *, after: int, limit: int) -> list[TimelineEvent]:
        """Up to ``limit`` events of our task ``task_ref`` after seq ``after``, in order, with their
        findings only: what a timeline and a transcript are drawn from."""
        ...

    async def quarantine(self, entry: Quarantined) -> None:
        """Keep a message that can never become an event (committed before the message is dropped)."""
        ...

    async def list_quarantine(self, *, after: int, limit: int) -> Page[Quarantined]: ...

    # --- the outbox ---------------------------------------------------------------------------

    async def claim_deliveries(
        self,
        sink: str,
        *,
        now: float,
        limit: int,
        busy_keys: Collection[str],
        per_key: int = 1,
        known: Callable[[int], EventRecord | None] | None = None,
    ) -> list[Delivery]:
        """The lines of up to ``limit`` task keys (skipping the keys already in flight) whose oldest
        pending delivery is due by ``now``: each line that delivery and the pending ones after it
        of the same key, oldest first, at most ``per_key``, up to the first one not due.

        ``known`` gives the events the caller holds already, by seq (None: read it from the store)."""
        ...

    async def settle_deliveries(self, settlements: Sequence[Settlement]) -> None: ...

    async def list_deliveries(self, query: DeliveryQuery) -> Page[DeliveryRow]: ...

    async def redrive(
        self,
        query: DeliveryQuery,
        *,
        now: float,
        dry_run: bool = False,
        progress: Callable[[int], None] | None = None,
    ) -> int:
        """Make the matching deliveries pending again, due now, attempts reset; returns how many
        (with ``dry_run``, only counts them). ``progress`` hears the running total."""
        ...

    async def sink_stats(self) -> list[SinkStats]: ...

    async def list_attempts(self, delivery_id: int) -> list[Attempt]:
        """A delivery's attempts, oldest first."""
        ...

    async def sink_backlog(self, sinks: Collection[str]) -> list[SinkBacklog]:
        """Per sink named (and per sink switched off): pending, dead, the oldest pending's age."""
        ...

    async def task_delivery_counts(self, task_id: str) -> list[tuple[str, str, int]]:
        """(sink, state, count) of the deliveries of the events carrying this MPS TaskId."""
        ...

    # --- the console's counts -----------------------------------------------------------------

    async def add_ingest_counts(self, counts: Sequence[tuple[int, str, int]]) -> None:
        """Add (minute, outcome, n) to the counts every process shares."""
        ...

    async def ingest_counts(self, since_minute: int) -> list[tuple[int, str, int]]:
        """(minute, outcome, n) from ``since_minute`` on."""
        ...

    async def purge_ingest_counts(self, before: float) -> int:
        """Delete the counts of minutes before ``before``; returns how many rows."""
        ...

    async def quarantine_count(self) -> int: ...

    async def backfill_search(self, limit: int) -> int:
        """Derive the search rows of up to ``limit`` events stored before the search existed (newest
        first); returns how many seqs it went through, 0 once every event has been through."""
        ...

    async def set_sink_disabled(self, sink: str, reason: str | None, *, now: float) -> None:
        """Switch a sink off (with the reason) or, with ``None``, back on."""
        ...

    async def disabled_sinks(self) -> dict[str, str]:
        """The sinks switched off, each with its reason: the truth every dispatcher follows."""
        ...

    # --- leases -------------------------------------------------------------------------------

    async def hold_lease(self, name: str, holder: str, *, ttl: float, now: float) -> bool:
        """Take the lease ``name`` for ``holder`` until ``now + ttl``, or renew it; True if ``holder``
        holds it now. Free, expired (``expires_at <= now``) or already ``holder``'s: taken."""
        ...

    async def release_lease(self, name: str, holder: str) -> None:
        """Give the lease up, if ``holder`` holds it (another may take it at once)."""
        ...

    async def lease_holder(self, name: str) -> tuple[str, float] | None:
        """Who holds the lease and until when (expired or not), or None."""
        ...

    async def ping(self) -> None:
        """Return if the store can take a write now; raise ``StoreUnavailableError`` if not."""
        ...

    async def aclose(self) -> None: ...


class TaskBook(Protocol):
    """What asking MPS about tasks needs of the store (reconcile, discover, abort): a part of ``Store``."""

    async def record_events(self, events: Sequence[Event], route: Router | None = None) -> list[Recorded]: ...
    async def register_task(self, task: Task, route: Router | None = None) -> tuple[Task, int]: ...
    async def finish_submission(
        self,
        ref: str,
        *,
        task_id: str | None,
        request_id: str | None,
        error: str | None,
        now: float,
        route: Router | None = None,
    ) -> tuple[Task, int]: ...
    async def get_task(self, task_id: str) -> Task | None: ...
    async def reconcile_candidates(self, query: ReconcileQuery) -> list[Task]: ...
    async def record_check(self, ref: str, check: MpsCheck) -> Task: ...
    async def mark_aborting(self, ref: str, *, now: float) -> Task: ...
    async def hold_lease(self, name: str, holder: str, *, ttl: float, now: float) -> bool: ...
    async def release_lease(self, name: str, holder: str) -> None: ...


class Leases(Protocol):
    """What a job that runs in one process per store needs of it (``leases.LeasedJob``)."""

    async def hold_lease(self, name: str, holder: str, *, ttl: float, now: float) -> bool: ...

    async def release_lease(self, name: str, holder: str) -> None: ...
