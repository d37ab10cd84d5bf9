"""The contracts between the use cases and the adapters: the store's slices by user, sinks, the MPS client.

The records they exchange live in ``receiver.records``; they are re-exported here, where the
adapters and the tests have always found them.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from typing import Any, Protocol

from receiver.events import Event
from receiver.records import (
    MIN_TEXT,
    QUARANTINE_BODY_BYTES,
    SNIPPET_CHARS,
    UNSET_TIME,
    Attempt,
    Batch,
    Delivery,
    DeliveryQuery,
    DeliveryRow,
    DeliveryState,
    EventQuery,
    EventRecord,
    MpsTaskInfo,
    MpsTaskPage,
    MpsTaskSummary,
    OperatorEvent,
    OwnEvent,
    Page,
    Quarantined,
    Receipt,
    ReconcileQuery,
    Recorded,
    Settlement,
    SinkBacklog,
    SinkStats,
    TimelineEvent,
)
from receiver.tasks import MpsCheck, Task, TaskState

__all__ = [
    "MIN_TEXT",
    "QUARANTINE_BODY_BYTES",
    "SNIPPET_CHARS",
    "UNSET_TIME",
    "Attempt",
    "Batch",
    "BatchSink",
    "Delivery",
    "DeliveryQuery",
    "DeliveryRow",
    "DeliveryState",
    "EventLog",
    "EventQuery",
    "EventRecord",
    "IngestCountBook",
    "Leases",
    "MpsTaskInfo",
    "MpsTaskPage",
    "MpsTaskSummary",
    "MpsTasks",
    "NoticeBook",
    "OperatorEvent",
    "Outbox",
    "OwnEvent",
    "Page",
    "Quarantined",
    "ReadModel",
    "Receipt",
    "ReconcileBook",
    "ReconcileQuery",
    "Recorded",
    "Router",
    "Settlement",
    "Sink",
    "SinkBacklog",
    "SinkStats",
    "Store",
    "TaskBook",
    "TimelineEvent",
    "Upkeep",
]

# Which sinks an event goes to, decided at ingest (inside the transaction, once its task is known).
Router = Callable[[Event, Task | None], Sequence[str]]


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


class BatchSink(Sink, Protocol):
    """A sink that can also take several events at once (``max_batch`` above 1)."""

    def encode(self, document: dict[str, Any]) -> tuple[bytes, str]:
        """One member's body and its group; ``UndeliverableError`` if it can never be sent."""
        ...

    async def deliver_batch(self, batch: Batch) -> Receipt | None:
        """Send them all at once; returns once the target has them all, raises as ``deliver``."""
        ...


class EventLog(Protocol):
    """What takes notifications in needs (ingest, the webhook, the AMQP consumer): events recorded
    with their tasks and outbox rows in one commit, messages that can never be events kept aside."""

    async def record_events(self, events: Sequence[Event], route: Router | None = None) -> list[Recorded]:
        """In ONE transaction: store each event (or count it as a duplicate), match it, update its task,
        and add one pending delivery for each sink ``route`` names.

        Returns one ``Recorded`` per event, in order, only once the transaction is committed.
        Raises ``StoreUnavailableError`` if it could not commit.
        """
        ...

    async def quarantine(self, entry: Quarantined) -> None:
        """Keep a message that can never become an event (committed before the message is dropped)."""
        ...

    async def ping(self) -> None:
        """Return if the store can take a write now; raise ``StoreUnavailableError`` if not."""
        ...


class TaskBook(Protocol):
    """What registering, submitting, reconciling and aborting tasks needs: the tasks' own changes."""

    async def get_task(self, task_id: str) -> Task | None:
        """The task with this MPS ``TaskId`` or, failing that, this id of ours."""
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

    async def reconcile_candidates(self, query: ReconcileQuery) -> list[Task]:
        """The tasks to ask MPS about (see ``ReconcileQuery``), at most ``query.limit``."""
        ...

    async def record_check(self, ref: str, check: MpsCheck) -> Task:
        """Keep what MPS answered about the task (our id ``ref``): ``tasks.checked``, in one transaction."""
        ...

    async def mark_aborting(self, ref: str, *, now: float) -> Task:
        """The task's abort was accepted by MPS: ``tasks.aborting``, in one transaction."""
        ...


class Outbox(Protocol):
    """What moves deliveries along (the dispatcher, redrive): claims, settlements, the sinks' switches."""

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

    def handoff_epoch(self) -> int | None:
        """A number that moves on whenever a delivery may be pending that this process's ingest
        did not hand to its dispatcher (``Recorded.outbox``): another process wrote the store, or a
        delivery was made pending otherwise (redrive, receiver's own events, an adopted orphan).
        While it stands, the dispatcher may send from memory what it is handed. None: the store
        cannot tell, and every delivery is claimed."""
        ...

    async def has_pending(self, sink: str) -> bool:
        """Whether the sink has a pending delivery, due or not."""
        ...

    async def settle_deliveries(self, settlements: Sequence[Settlement]) -> None: ...

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

    async def set_sink_disabled(self, sink: str, reason: str | None, *, now: float) -> None:
        """Switch a sink off (with the reason) or, with ``None``, back on."""
        ...

    async def disabled_sinks(self) -> dict[str, str]:
        """The sinks switched off, each with its reason: the truth every dispatcher follows."""
        ...


class Upkeep(Protocol):
    """What the maintenance loop needs: quiet tasks marked, retention, search rows derived late."""

    async def mark_stalled(self, before: float, *, now: float) -> int:
        """``submitted``/``running`` tasks with no notification since ``before`` become ``stalled``."""
        ...

    async def purge(self, before: float) -> tuple[int, int]:
        """Drop raw payloads and delivered outbox rows older than ``before``; returns both counts.

        A payload a pending or dead delivery still needs stays until that delivery is delivered.
        """
        ...

    async def purge_quarantine(self, before: float) -> int:
        """Delete quarantine rows received before ``before``; returns how many."""
        ...

    async def purge_ingest_counts(self, before: float) -> int:
        """Delete the counts of minutes before ``before``; returns how many rows."""
        ...

    async def backfill_search(self, limit: int) -> int:
        """Derive the search rows of up to ``limit`` events stored before the search existed (newest
        first); returns how many seqs it went through, 0 once every event has been through."""
        ...


class Leases(Protocol):
    """What a job that runs in one process per store needs of it (``leases.LeasedJob``, reconcile)."""

    async def hold_lease(self, name: str, holder: str, *, ttl: float, now: float) -> bool:
        """Take the lease ``name`` for ``holder`` until ``now + ttl``, or renew it; True if ``holder``
        holds it now. Free, expired (``expires_at <= now``) or already ``holder``'s: taken."""
        ...

    async def release_lease(self, name: str, holder: str) -> None:
        """Give the lease up, if ``holder`` holds it (another may take it at once)."""
        ...


class IngestCountBook(Protocol):
    """What the console's ingest counts need to share their minutes among processes."""

    async def add_ingest_counts(self, counts: Sequence[tuple[int, str, int]]) -> None:
        """Add (minute, outcome, n) to the counts every process shares."""
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


class ReadModel(Protocol):
    """What the API, the console and the CLI read: tasks, events, the quarantine, the outbox, counts,
    leases."""

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

    async def task_counts(self) -> dict[str, int]: ...

    async def list_quarantine(self, *, after: int, limit: int) -> Page[Quarantined]: ...

    async def quarantine_count(self) -> int: ...

    async def list_deliveries(self, query: DeliveryQuery) -> Page[DeliveryRow]: ...

    async def list_attempts(self, delivery_id: int) -> list[Attempt]:
        """A delivery's attempts, oldest first."""
        ...

    async def sink_stats(self) -> list[SinkStats]: ...

    async def sink_backlog(self, sinks: Collection[str]) -> list[SinkBacklog]:
        """Per sink named (and per sink switched off): pending, dead, the oldest pending's age."""
        ...

    async def task_delivery_counts(self, task_id: str) -> list[tuple[str, str, int]]:
        """(sink, state, count) of the deliveries of the events carrying this MPS TaskId."""
        ...

    async def ingest_counts(self, since_minute: int) -> list[tuple[int, str, int]]:
        """(minute, outcome, n) from ``since_minute`` on."""
        ...

    async def list_operator_events(
        self, *, kind: str | None, after: int, limit: int
    ) -> Page[OperatorEvent]: ...

    async def lease_holder(self, name: str) -> tuple[str, float] | None:
        """Who holds the lease and until when (expired or not), or None."""
        ...


class ReconcileBook(TaskBook, EventLog, Leases, Protocol):
    """What asking MPS about tasks needs (``Reconciler``): the tasks, the event log (an end MPS
    reports becomes an event) and the lease that keeps it to one pass at a time."""


class Store(EventLog, TaskBook, Outbox, Upkeep, Leases, IngestCountBook, NoticeBook, ReadModel, Protocol):
    """Durable state: events (deduplicated by ``event_id``) and tasks, changed together; every slice
    above, which the concrete stores implement and the composition root hands out."""

    async def aclose(self) -> None: ...
