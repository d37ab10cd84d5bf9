"""The contracts between the use cases and the adapters: the ``Store`` protocol and its records."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from receiver.events import Event
from receiver.tasks import MatchedBy, Task, TaskState

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Recorded:
    """What the store did with one event inside the ingest transaction."""

    event_id: str
    seq: int  # the event's position in the order received
    duplicate: bool  # already stored: counted on the existing row, nothing else changed
    task: Task | None  # the task it matched, as it is after the event; None for an orphan
    matched_by: MatchedBy | None
    late: bool  # arrived after its task had ended


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
    raw: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Quarantined:
    """A message that can never be stored as an event, kept with the reason why."""

    channel: str
    received_at: float
    reason: str
    detail: str
    field: str | None
    body: bytes
    meta: dict[str, Any]
    id: int | None = None


@dataclass(frozen=True, slots=True)
class EventQuery:
    task_id: str | None = None  # MPS TaskId carried by the event
    task_ref: str | None = None  # our task id the event is attached to
    notification_type: str | None = None
    since: float | None = None  # received at or after, unix seconds
    orphan: bool | None = None
    after: int = 0  # seq cursor: events strictly after it
    limit: int = 100


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    items: list[T]
    next: str | None  # opaque cursor for the following page, None at the end


class Store(Protocol):
    """Durable state: events (deduplicated by ``event_id``) and tasks, changed together."""

    async def record_events(self, events: Sequence[Event]) -> list[Recorded]:
        """In ONE transaction: store each event (or count it as a duplicate), match it, update its task.

        Returns one ``Recorded`` per event, in order, only once the transaction is committed.
        Raises ``StoreUnavailableError`` if it could not commit.
        """
        ...

    async def register_task(self, task: Task) -> tuple[Task, int]:
        """Insert a task and adopt the orphan events that match it; returns it and the adopted count.

        Raises ``ConflictError`` if its ``task_id`` is already registered.
        """
        ...

    async def get_task(self, task_id: str) -> Task | None:
        """The task with this MPS ``TaskId`` or, failing that, this id of ours."""
        ...

    async def list_tasks(self, *, state: TaskState | None, after: str | None, limit: int) -> Page[Task]: ...

    async def list_events(self, query: EventQuery) -> Page[EventRecord]: ...

    async def quarantine(self, entry: Quarantined) -> None:
        """Keep a message that can never become an event (committed before the message is dropped)."""
        ...

    async def list_quarantine(self, *, after: int, limit: int) -> Page[Quarantined]: ...

    async def ping(self) -> None:
        """Return if the store can take a write now; raise ``StoreUnavailableError`` if not."""
        ...

    async def aclose(self) -> None: ...
