"""``RecentEvents``: the events this process just committed, kept for the dispatcher to send."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import msgspec

from receiver.events import Event
from receiver.ports import EventRecord, Recorded

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
        if found is None:
            return None
        e, r = found
        assert r.task is not None  # only matched events are kept
        return EventRecord(
            seq=seq,
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
