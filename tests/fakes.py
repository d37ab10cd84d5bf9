"""In-memory fakes of the ports, for unit tests of the use cases (adapters are tested for real)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import TYPE_CHECKING

from receiver import tasks
from receiver.errors import StoreUnavailableError
from receiver.events import Event
from receiver.ports import EventLog, Leases, Quarantined, Recorded, Router
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
        self.quarantined: list[Quarantined] = []
        self.routed: dict[str, list[str]] = {}

    async def record_events(self, events: Sequence[Event], route: Router | None = None) -> list[Recorded]:
        """The stores' recording algorithm, on dicts: load what the plan needs, run it, write it."""
        if self.gate is not None:
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


if TYPE_CHECKING:  # each fake is the whole port it stands for: mypy says so
    _event_log: EventLog = MemoryEventLog()
    _leases: Leases = MemoryLeases()
