"""In-memory fakes of the ports, for unit tests of the use cases (adapters are tested for real)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from receiver import tasks
from receiver.errors import SinkError, StoreUnavailableError
from receiver.events import Event
from receiver.ports import (
    Delivery,
    DeliveryQuery,
    DeliveryState,
    EventLog,
    EventRecord,
    Leases,
    Outbox,
    Quarantined,
    Recorded,
    Router,
    Settlement,
)
from receiver.tasks import Task


class MemoryEventLog:
    """The ``EventLog`` port in dicts, all of it; records every batch it was asked to commit."""

    def __init__(self) -> None:
        self.events: dict[str, tuple[int, Event]] = {}
        self.stored: dict[str, tasks.StoredEvent] = {}
        self.duplicates: dict[str, int] = {}
        self.tasks: dict[str, Task] = {}
        self.batches: list[list[str]] = []
        self.down = False
        self.gate: asyncio.Event | None = None  # when set, commits wait for it
        self.at_gate = asyncio.Event()  # set once a commit waits for the gate
        self.quarantined: list[Quarantined] = []
        self.routed: dict[str, list[str]] = {}

    async def record_events(self, events: Sequence[Event], route: Router | None = None) -> list[Recorded]:
        """The stores' recording algorithm, on dicts: load what the plan needs, run it, write it."""
        if self.gate is not None:
            self.at_gate.set()
            await self.gate.wait()
        if self.down:
            raise StoreUnavailableError("the fake store is down")
        self.batches.append([e.event_id for e in events])
        stored = {e.event_id: self.stored[e.event_id] for e in events if e.event_id in self.stored}
        plan = tasks.plan(events, tasks.Known(dict(self.tasks), stored), route)
        seqs = {eid: row.seq for eid, row in stored.items()}
        for step in plan.steps:
            e = step.event
            if step.duplicate:
                self.duplicates[e.event_id] = self.duplicates.get(e.event_id, 0) + 1
                continue
            seq = len(self.events) + 1
            self.events[e.event_id] = (seq, e)
            self.stored[e.event_id] = tasks.StoredEvent(
                seq, step.task.id if step.task else None, step.matched_by, step.late
            )
            self.routed[e.event_id] = list(step.sinks)
            seqs[e.event_id] = seq
        self.tasks.update(plan.tasks)
        return plan.recorded(seqs)

    async def quarantine(self, entry: Quarantined) -> None:
        if self.down:
            raise StoreUnavailableError("the fake store is down")
        self.quarantined.append(entry)

    async def ping(self) -> None:
        if self.down:
            raise StoreUnavailableError("the fake store is down")


class MemoryLeases:
    """The ``Leases`` port in a dict, with the stores' rule; ``down`` makes every call unavailable."""

    def __init__(self) -> None:
        self.held: dict[str, tuple[str, float]] = {}
        self.down = False

    async def hold_lease(self, name: str, holder: str, *, ttl: float, now: float) -> bool:
        if self.down:
            raise StoreUnavailableError("store down (fake)")
        current = self.held.get(name)
        if current is None or current[0] == holder or current[1] <= now:
            self.held[name] = (holder, now + ttl)
            return True
        return False

    async def release_lease(self, name: str, holder: str) -> None:
        if self.down:
            raise StoreUnavailableError("store down (fake)")
        if self.held.get(name, ("", 0.0))[0] == holder:
            del self.held[name]


@dataclass(slots=True)
class OutboxRow:
    """One delivery as the in-memory outbox keeps it."""

    id: int
    sink: str
    task_key: str
    event: EventRecord
    state: str = DeliveryState.PENDING
    attempts: int = 0
    next_attempt_at: float = 0.0
    error: str | None = None
    batch_id: str | None = None
    batch_size: int | None = None


class MemoryOutbox:
    """The ``Outbox`` port in a list, all of it, with the stores' claim and redrive rules; it keeps
    every settlement and every switch of a sink, in order."""

    def __init__(self) -> None:
        self.rows: list[OutboxRow] = []
        self.disabled: dict[str, str] = {}
        self.settled: list[Settlement] = []
        self.switches: list[tuple[str, str | None]] = []  # (sink, reason), None: re-enabled

    def add(self, sink: str, event: EventRecord, *, due: float = 0.0) -> OutboxRow:
        row = OutboxRow(
            len(self.rows) + 1, sink, event.task_id, event, next_attempt_at=due
        )  # tasks.outbox_key
        self.rows.append(row)
        return row

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
        lines: dict[str, list[OutboxRow]] = {}
        stopped: set[str] = set()
        for row in self.rows:  # oldest first
            key = row.task_key
            if row.sink != sink or row.state != DeliveryState.PENDING or key in busy_keys or key in stopped:
                continue
            if row.next_attempt_at > now:
                stopped.add(key)  # a line stops at the first delivery not due: the rest wait behind it
                continue
            if key not in lines and len(lines) == limit:
                continue
            line = lines.setdefault(key, [])
            if len(line) < per_key:
                line.append(row)
        return [
            Delivery(r.id, r.sink, r.task_key, r.attempts, r.event, r.batch_id, r.batch_size)
            for line in lines.values()
            for r in line
        ]

    def handoff_epoch(self) -> int | None:
        return None  # its rows are added by hand, never handed over by an ingest: all are claimed

    async def has_pending(self, sink: str) -> bool:
        return any(row.sink == sink and row.state == DeliveryState.PENDING for row in self.rows)

    async def settle_deliveries(self, settlements: Sequence[Settlement]) -> None:
        by_id = {row.id: row for row in self.rows}
        for s in settlements:
            row = by_id[s.id]
            row.state, row.attempts, row.next_attempt_at, row.error = (
                s.state,
                s.attempts,
                s.next_attempt_at,
                s.error,
            )
            row.batch_id, row.batch_size = s.batch_id, s.batch_size
            self.settled.append(s)

    async def redrive(
        self,
        query: DeliveryQuery,
        *,
        now: float,
        dry_run: bool = False,
        progress: Callable[[int], None] | None = None,
    ) -> int:
        """As the stores do: the rows that meet every condition given, oldest first, pending again."""
        chosen = [
            row
            for row in self.rows
            if all(
                want is None or have == want
                for have, want in (
                    (row.id, query.id),
                    (row.sink, query.sink),
                    (row.state, query.state),
                    (row.task_key, query.task_id),
                    (row.event.notification_type, query.notification_type),
                )
            )
            and (query.since is None or row.event.received_at >= query.since)
            and (query.until is None or row.event.received_at < query.until)
        ]
        if dry_run:
            return len(chosen)
        for n, row in enumerate(chosen, start=1):
            row.state, row.attempts, row.next_attempt_at, row.error = DeliveryState.PENDING, 0, now, None
            row.batch_id = row.batch_size = None
            if progress is not None:
                progress(n)
        return len(chosen)

    async def set_sink_disabled(self, sink: str, reason: str | None, *, now: float) -> None:
        self.switches.append((sink, reason))
        if reason is None:
            self.disabled.pop(sink, None)
        else:
            self.disabled[sink] = reason

    async def disabled_sinks(self) -> dict[str, str]:
        return dict(self.disabled)


class ScriptedSink:
    """A ``Sink`` that raises, for each event (by session id), the errors it was given, one per
    attempt and in order, then takes it; it keeps every attempt and every event it took, in order."""

    def __init__(self, name: str, script: Mapping[str, Sequence[SinkError]] | None = None) -> None:
        self.name = name
        self.script = {session: list(errors) for session, errors in (script or {}).items()}
        self.attempts: list[str] = []  # session ids, one per attempt
        self.received: list[str] = []  # session ids taken
        self.closed = False

    async def deliver(self, delivery: Delivery, document: dict[str, Any]) -> None:
        session = str(document["session_id"])
        self.attempts.append(session)
        errors = self.script.get(session)
        if errors:
            raise errors.pop(0)
        self.received.append(session)

    async def aclose(self) -> None:
        self.closed = True


class StepClock:
    """A clock that moves only when told to (``clock.now = ...`` or ``advance``); it counts its reads,
    so a test can see that the code under test has looked at the time since."""

    def __init__(self, now: float) -> None:
        self.now = now
        self.reads = 0

    def __call__(self) -> float:
        self.reads += 1
        return self.now

    def advance(self, seconds: float) -> float:
        self.now += seconds
        return self.now


if TYPE_CHECKING:  # each fake is the whole port it stands for: mypy says so
    _event_log: EventLog = MemoryEventLog()
    _leases: Leases = MemoryLeases()
    _outbox: Outbox = MemoryOutbox()
