"""Task records, their state machine, the rules that match an event to a task, and the batch plan.

The plan applies those rules to a whole batch of new events, for every store. Pure, no I/O.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any, Protocol

from receiver.events import OWN_CONTEXT_PREFIX, Channel, Event
from receiver.wire import PROCESS_EOF


class TaskState(StrEnum):
    SUBMITTING = "submitting"  # recorded, ProcessLiveStream call not yet answered
    SUBMITTED = "submitted"  # MPS accepted it (or it was registered); no event yet
    RUNNING = "running"  # at least one event arrived
    STALLED = "stalled"  # no sign of life for longer than configured; the next one makes it running
    ABORTING = "aborting"  # ManageTask Abort accepted; until a ProcessEof or a reconcile says it ended
    FINISHED = "finished"  # ProcessEof (or MPS's answer to a reconcile) with ErrCode 0
    FAILED = "failed"  # ProcessEof (or MPS's answer to a reconcile) with any other ErrCode

    @property
    def ended(self) -> bool:
        return self in (TaskState.FINISHED, TaskState.FAILED)


# receiver's own event for a task that MPS says has ended (DescribeTaskDetail: FINISH) while no
# ProcessEof came: it ends the task as a ProcessEof would. Only from the reconcile channel: a
# notification of that name from outside is a generic event like any unknown type.
RECONCILE_END = "ReconcileEnd"
CHECKS_KEPT = 20  # the answers MPS gave about a task that are kept on it


class Answer(StrEnum):
    """What asking MPS about a task (``DescribeTaskDetail``) gave."""

    WAITING = "WAITING"  # MPS's own Status values
    PROCESSING = "PROCESSING"
    FINISH = "FINISH"
    NOT_FOUND = "NOT_FOUND"  # MPS does not know the TaskId (wrong, or older than its 7 days)
    ERROR = "ERROR"  # the call failed (the code says why)

    @property
    def live(self) -> bool:
        return self in (Answer.WAITING, Answer.PROCESSING)


@dataclass(frozen=True, slots=True)
class MpsCheck:
    """One answer MPS gave about a task, and when."""

    at: float
    answer: Answer
    err_code: int | None = None  # FINISH: MPS's ErrCode
    message: str | None = None  # FINISH: MPS's Message; ERROR: the error's
    code: str | None = None  # NOT_FOUND, ERROR: the MPS error code


class MatchedBy(StrEnum):
    SESSION_CONTEXT = "session_context"
    TASK_ID = "task_id"


class Occurrence(Protocol):
    """What the task rules need of an event: a new ``Event`` or one read back from the store."""

    @property
    def task_id(self) -> str: ...
    @property
    def session_context(self) -> str: ...
    @property
    def notification_type(self) -> str: ...
    @property
    def received_at(self) -> float: ...
    @property
    def err_code(self) -> int | None: ...
    @property
    def err_message(self) -> str | None: ...
    @property
    def channel(self) -> str: ...


@dataclass(slots=True)
class Task:
    id: str  # our own id: a task being submitted has no MPS TaskId yet
    task_id: str | None
    session_id: str
    session_context: str
    url: str
    labels: dict[str, str]
    state: TaskState
    created_at: float
    updated_at: float
    err_code: int | None = None
    err_message: str | None = None
    event_count: int = 0
    late_count: int = 0
    first_event_at: float | None = None
    last_event_at: float | None = None
    ended_at: float | None = None
    request_id: str | None = None  # of the ProcessLiveStream call, when receiver submitted it
    checks: tuple[MpsCheck, ...] = ()  # the last CHECKS_KEPT answers of MPS about it, oldest first
    checked_at: float | None = None  # when MPS was last asked about it
    live_at: float | None = None  # when MPS last said it is live: a sign of life, as an event is
    reconciled_at: float | None = None  # ended by a reconcile: MPS said FINISH, no ProcessEof had come


@dataclass(frozen=True, slots=True)
class Transition:
    """What one event does to its task: the task as it is after, and whether the event came late."""

    task: Task
    late: bool


def match(
    event: Occurrence,
    by_context: Sequence[Task],
    by_task_id: Task | None,
) -> tuple[Task, MatchedBy] | None:
    """Pick the task an event belongs to: ``SessionContext`` first, then ``TaskId``.

    ``by_context`` are the tasks registered with the event's (non-empty) ``SessionContext``. When
    several share it, the one with the event's ``TaskId`` wins; if none has it, the context is
    ambiguous and the ``TaskId`` decides.
    """
    if len(by_context) == 1:
        return by_context[0], MatchedBy.SESSION_CONTEXT
    for task in by_context:
        if task.task_id == event.task_id:
            return task, MatchedBy.SESSION_CONTEXT
    if by_task_id is not None and adoptable(by_task_id, event.session_context):
        return by_task_id, MatchedBy.TASK_ID
    return None


def adoptable(task: Task, event_session_context: str) -> bool:
    """Whether an event may belong to ``task`` at all.

    A task receiver submitted has a SessionContext of receiver's own form, which MPS echoes in
    every notification and from which its own NotifyKey is derived: an event without that context
    is not this task's, whatever TaskId it names (a pair signed with a static key must not reach
    a task whose notifications are signed with its own key).
    """
    if task.session_context.startswith(OWN_CONTEXT_PREFIX):
        return event_session_context == task.session_context
    return True


class StoredOrphan(Occurrence, Protocol):
    """An orphan event as a store reads it back: the task rules' part, and its place in the log."""

    @property
    def seq(self) -> int: ...


@dataclass(frozen=True, slots=True)
class Adopted:
    """One orphan a task takes: how it matched, whether it came late, and the task after it."""

    seq: int
    matched_by: MatchedBy
    late: bool
    task: Task


def adopt(task: Task, orphans: Sequence[StoredOrphan], now: float) -> tuple[Task, list[Adopted]]:
    """Which of the orphans naming a task (its TaskId or SessionContext; in the order received) it
    takes, each applied in turn; and the task after them, changed ``now`` (not when they came)."""
    taken = [o for o in orphans if adoptable(task, o.session_context)]
    adopted = []
    for orphan in taken:
        matched_by = adoption_match(task, orphan.session_context)
        transition = apply(task, orphan)
        task = transition.task
        adopted.append(Adopted(orphan.seq, matched_by, transition.late, task))
    if adopted:
        task = replace(task, updated_at=max(task.updated_at, now))
    return task, adopted


def ends(event: Occurrence) -> bool:
    """Whether the event is the end of its task: a ProcessEof, or receiver's own reconcile end."""
    kind = event.notification_type
    return kind == PROCESS_EOF or (kind == RECONCILE_END and event.channel == Channel.RECONCILE)


def apply(task: Task, event: Occurrence) -> Transition:
    """Advance a task by one event, in the order events were received. The end (a ProcessEof or a
    reconcile end) is the last: whatever comes after it is late and changes nothing but the count."""
    at = event.received_at
    if task.state.ended:
        return Transition(replace(task, late_count=task.late_count + 1, updated_at=at), late=True)
    state, err_code, err_message, ended_at = task.state, task.err_code, task.err_message, task.ended_at
    reconciled_at = task.reconciled_at
    if ends(event):
        err_code = event.err_code
        state = TaskState.FINISHED if err_code == 0 else TaskState.FAILED
        missing = (
            "ProcessEof carried no ProcessEofInfo.ErrCode"
            if event.notification_type == PROCESS_EOF
            else "MPS said FINISH without an ErrCode"
        )
        err_message = event.err_message if err_code is not None else missing
        ended_at = at
        if event.notification_type == RECONCILE_END:
            reconciled_at = at
    else:
        # Results still arrive while an abort takes effect: the task stays aborting until its end.
        state = TaskState.ABORTING if task.state is TaskState.ABORTING else TaskState.RUNNING
    # Built field by field (dataclasses.replace costs more than the rest of the step: this runs
    # once per event).
    advanced = Task(
        id=task.id,
        # A task recorded before its ProcessLiveStream call returned learns its TaskId here.
        task_id=task.task_id or event.task_id,
        session_id=task.session_id,
        session_context=task.session_context,
        url=task.url,
        labels=task.labels,
        state=state,
        created_at=task.created_at,
        updated_at=at,
        err_code=err_code,
        err_message=err_message,
        event_count=task.event_count + 1,
        late_count=task.late_count,
        first_event_at=task.first_event_at if task.first_event_at is not None else at,
        last_event_at=at,
        ended_at=ended_at,
        request_id=task.request_id,
        checks=task.checks,
        checked_at=task.checked_at,
        live_at=task.live_at,
        reconciled_at=reconciled_at,
    )
    return Transition(advanced, late=False)


def checked(task: Task, check: MpsCheck) -> Task:
    """A task after MPS answered about it: the answer kept (the last ``CHECKS_KEPT``), and a live
    answer taken as a sign of life: a ``stalled`` task was only silent, it is ``running`` again
    (``submitted`` if no event ever came), and it stalls again only after as long a silence as
    before (``live_at`` counts as its last sign of life). An end (FINISH) is not made here: it is
    an event of its own (``RECONCILE_END``), recorded as any other."""
    changes: dict[str, Any] = {
        "checks": (*task.checks, check)[-CHECKS_KEPT:],
        "checked_at": check.at,
        "updated_at": max(task.updated_at, check.at),
    }
    if check.answer.live:
        changes["live_at"] = check.at
        if task.state is TaskState.STALLED:
            changes["state"] = TaskState.RUNNING if task.first_event_at is not None else TaskState.SUBMITTED
    return replace(task, **changes)


def aborting(task: Task, now: float) -> Task:
    """A task whose abort MPS accepted: ``aborting`` until its end is known (unless it has ended)."""
    if task.state.ended or task.state is TaskState.ABORTING:
        return task
    return replace(task, state=TaskState.ABORTING, updated_at=now)


def adoption_match(task: Task, event_session_context: str) -> MatchedBy:
    """How an orphan is said to match the task that adopts it (the rule ``match`` applies)."""
    if task.session_context and event_session_context == task.session_context:
        return MatchedBy.SESSION_CONTEXT
    return MatchedBy.TASK_ID


def submission_failed(task: Task, error: str, now: float) -> Task:
    """A ``submitting`` task whose ProcessLiveStream call failed: ``failed``, with the error."""
    if task.state is not TaskState.SUBMITTING:
        return task  # events arrived first: they, not the failed answer, say where it is
    return replace(task, state=TaskState.FAILED, err_message=error, updated_at=now, ended_at=now)


def submitted(task: Task, task_id: str | None, request_id: str | None, now: float) -> Task:
    """A task whose ProcessLiveStream call answered: its TaskId and RequestId, and ``submitted``
    unless its events have moved it on already."""
    state = TaskState.SUBMITTED if task.state is TaskState.SUBMITTING else task.state
    return replace(task, task_id=task.task_id or task_id, request_id=request_id, state=state, updated_at=now)


def new_id() -> str:
    """A fresh id of ours for a task record."""
    return uuid.uuid4().hex


# --- the batch plan: what a batch of new events does, decided once for every store ------------------


@dataclass(frozen=True, slots=True)
class Recorded:
    """What the store did with one event inside the ingest transaction."""

    event_id: str
    seq: int  # the event's position in the order received
    duplicate: bool  # already stored: counted on the existing row, nothing else changed
    task: Task | None  # the task it matched, as it is after the event; None for an orphan
    matched_by: MatchedBy | None
    late: bool  # arrived after its task had ended
    sinks: tuple[str, ...] = ()  # a new event's routed sinks, one outbox row each
    # Those rows' ids, in ``sinks``' order, when the store tells them (then the dispatcher may send
    # them from memory); () when it does not.
    outbox: tuple[int, ...] = ()


def outbox_key(event: Event) -> str:
    """The line an event's deliveries wait in: one task's deliveries go out one at a time, in order."""
    return event.task_id


@dataclass(frozen=True, slots=True)
class StoredEvent:
    """Where an event of the batch stands that the store holds already."""

    seq: int
    task_ref: str | None
    matched_by: MatchedBy | None
    late: bool


@dataclass(slots=True)
class Known:
    """What a store loads for a batch before planning it: every task its events may match (by
    their SessionContexts and TaskIds, and the tasks of the events already stored), and which of
    its event ids are stored already."""

    tasks: dict[str, Task]  # by our id
    stored: dict[str, StoredEvent]  # by event id


@dataclass(frozen=True, slots=True)
class Step:
    """What one event of the batch does: a new row (with its outbox rows), or a repeat counted on
    the row that holds its event id (stored before, or new earlier in this batch)."""

    event: Event
    duplicate: bool
    task: Task | None  # the task it matched, as it is after the event
    matched_by: MatchedBy | None
    late: bool
    sinks: tuple[str, ...] = ()  # new events only: the sinks whose filters match

    def recorded(self, seq: int, outbox: tuple[int, ...] = ()) -> Recorded:
        e = self.event
        return Recorded(
            e.event_id, seq, self.duplicate, self.task, self.matched_by, self.late, self.sinks, outbox
        )


@dataclass(slots=True)
class Plan:
    steps: list[Step]  # one per event, in the batch's order
    tasks: dict[str, Task]  # the tasks the batch changed, as they end it

    @property
    def new(self) -> list[Step]:
        return [s for s in self.steps if not s.duplicate]

    def recorded(self, seqs: Mapping[str, int], outbox_from: int | None = None) -> list[Recorded]:
        """The answer for each event, once the store knows the seq of every event id; with
        ``outbox_from``, the id of the batch's first outbox row, when the store wrote them with
        consecutive ids in the plan's order (new steps, each one's sinks in order)."""
        answers = []
        next_id = outbox_from
        for s in self.steps:
            ids: tuple[int, ...] = ()
            if next_id is not None and s.sinks and not s.duplicate:
                ids = tuple(range(next_id, next_id + len(s.sinks)))
                next_id += len(s.sinks)
            answers.append(s.recorded(seqs[s.event.event_id], ids))
        return answers


Route = Callable[[Event, Task | None], Sequence[str]]

_CONTEXT_CANDIDATES = 16  # tasks sharing one SessionContext that are looked at


def plan(events: Sequence[Event], known: Known, route: Route | None = None) -> Plan:
    """Match, advance and route a batch of events in the order received. Pure: every store runs
    the plan it gets; nothing about matching, states or routing is written in a store."""
    current = dict(known.tasks)
    by_task_id = {t.task_id: t.id for t in current.values() if t.task_id is not None}
    by_context: dict[str, list[str]] = {}
    for t in sorted(current.values(), key=lambda t: t.created_at):
        if t.session_context:
            by_context.setdefault(t.session_context, []).append(t.id)
    changed: dict[str, Task] = {}
    first: dict[str, Step] = {}  # event id -> its new step in this batch
    steps: list[Step] = []
    for e in events:
        stored = known.stored.get(e.event_id)
        if stored is not None:
            holder = current.get(stored.task_ref) if stored.task_ref else None
            steps.append(Step(e, True, holder, stored.matched_by, stored.late))
            continue
        earlier = first.get(e.event_id)
        if earlier is not None:
            holder = current.get(earlier.task.id) if earlier.task else None
            steps.append(Step(e, True, holder, earlier.matched_by, earlier.late))
            continue
        with_context = (
            [current[ref] for ref in by_context.get(e.session_context, ())[:_CONTEXT_CANDIDATES]]
            if e.session_context
            else []
        )
        ref = by_task_id.get(e.task_id)
        candidate = current[ref] if ref is not None and len(with_context) != 1 else None
        found = match(e, with_context, candidate)
        task: Task | None = None
        matched_by: MatchedBy | None = None
        late = False
        if found is not None:
            transition = apply(found[0], e)
            task, matched_by, late = transition.task, found[1], transition.late
            current[task.id] = changed[task.id] = task
            if task.task_id is not None:
                by_task_id.setdefault(task.task_id, task.id)
        sinks = tuple(route(e, task)) if route is not None else ()
        step = Step(e, False, task, matched_by, late, sinks)
        first[e.event_id] = step
        steps.append(step)
    return Plan(steps, changed)
