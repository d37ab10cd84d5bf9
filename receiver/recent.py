"""What ingest here hands the dispatcher: ``RecentEvents``, the events this process just committed,
kept for claims to read; ``Handoff``, a sink's deliveries sent from memory with no claim at all."""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Collection, Sequence

import msgspec

from receiver.events import Event
from receiver.ports import Delivery, EventRecord, Recorded

_builtins = msgspec.to_builtins  # findings as the store gives them back: plain dicts


class RecentEvents:
    """The events this process committed last, kept a little while so that the dispatcher sends
    them without reading them back; the outbox stays the truth (a miss reads the store).

    Only events matched to a task are kept: an orphan may be adopted meanwhile, and then its
    stored row, not the copy, says so. Each is kept as ingest made it, its parsed document
    (``Event.raw``) included, and becomes a record only when the dispatcher asks for it; at most
    ``limit`` of them, so that the live objects they hold stay few for the garbage collector."""

    def __init__(self, limit: int = 1024) -> None:
        self._limit = limit
        self._items: OrderedDict[int, tuple[Event, Recorded]] = OrderedDict()

    def add(self, events: Sequence[Event], recorded: Sequence[Recorded]) -> None:
        items = self._items
        for e, r in zip(events, recorded, strict=True):
            if not r.duplicate and r.task is not None:
                items[r.seq] = (e, r)
        while len(items) > self._limit:
            items.popitem(last=False)

    def get(self, seq: int) -> EventRecord | None:
        found = self._items.get(seq)
        return None if found is None else record_of(*found)


def record_of(e: Event, r: Recorded) -> EventRecord:
    """The record of an event ingest here matched to a task and stored, as a claim reads it back."""
    assert r.task is not None  # an orphan's record is read from the store: it may be adopted meanwhile
    return EventRecord(
        seq=r.seq,
        event_id=e.event_id,
        task_id=e.task_id,
        task_ref=r.task.id,
        matched_by=r.matched_by,
        notification_type=e.notification_type,
        session_id=e.session_id,
        session_context=e.session_context,
        channel=e.channel.value,
        received_at=e.received_at,
        verdict=e.verdict.value,
        late=r.late,
        duplicates=0,
        err_code=e.err_code,
        err_message=e.err_message,
        findings=_builtins(e.findings),
        body=e.body,
        sign_key=e.sign_key,
        traceparent=e.traceparent,
    )


class Handoff:
    """One sink's pending deliveries while this process knows every one of them: the dispatcher
    was handed each at its commit (``Recorded.outbox``) and sends it from here, with no claim.

    It holds only while the store's ``handoff_epoch`` stands at ``epoch`` and nothing of the sink
    was left pending behind this process's back (a retry, a settlement that failed, a line cut
    short): the dispatcher then drops it and claims from the store, the truth, as before. Within a
    task key the deliveries are kept in the order committed, which is the order of their ids."""

    def __init__(self, epoch: int, limit: int = 1024) -> None:
        self.epoch = epoch
        # A sink this far behind is claimed from the store, in lines (as a backlog is best sent);
        # held here, each would keep its event's body and findings alive.
        self.limit = limit
        self.size = 0
        self._lines: dict[str, deque[Delivery]] = {}  # task key -> its deliveries not yet sent

    def add(self, delivery: Delivery) -> bool:
        """Keep one to send; False when that would hold more than ``limit`` (then claim instead)."""
        if self.size >= self.limit:
            return False
        line = self._lines.get(delivery.task_key)
        if line is None:
            self._lines[delivery.task_key] = line = deque()
        line.append(delivery)
        self.size += 1
        return True

    def ready(self, busy: Collection[str]) -> list[str]:
        """The keys with deliveries waiting and none in flight, the longest waiting first."""
        return [key for key in self._lines if key not in busy]

    def take(self, key: str, n: int) -> list[Delivery]:
        """Up to ``n`` of the key's deliveries, oldest first."""
        line = self._lines[key]
        taken = [line.popleft() for _ in range(min(n, len(line)))]
        if not line:
            del self._lines[key]
        self.size -= len(taken)
        return taken
