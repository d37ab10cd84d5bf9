"""``RecentEvents``: the events this process just committed, kept for the dispatcher to send."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import msgspec

from receiver.events import Event
from receiver.ports import EventRecord, Recorded

_builtins = msgspec.to_builtins  # findings as the store gives them back: plain dicts


class RecentEvents:
    """The events this process committed last, kept a little while so that the dispatcher sends
    them without reading them back; the outbox stays the truth (a miss reads the store).

    Only events matched to a task are kept: an orphan may be adopted meanwhile, and then its
    stored row, not the copy, says so. Each is kept compact (its bytes, not its parsed document):
    many thousands of live dicts would cost every garbage collection more than a parse costs."""

    def __init__(self, limit: int = 1024) -> None:
        self._limit = limit
        self._items: OrderedDict[int, tuple[Any, ...]] = OrderedDict()

    def add(self, events: Sequence[Event], recorded: Sequence[Recorded]) -> None:
        items = self._items
        for e, r in zip(events, recorded, strict=True):
            if not r.duplicate and r.task is not None:
                items[r.seq] = (
                    e.event_id,
                    e.task_id,
                    r.task.id,
                    r.matched_by,
                    e.notification_type,
                    e.session_id,
                    e.session_context,
                    e.channel.value,
                    e.received_at,
                    e.verdict.value,
                    r.late,
                    e.err_code,
                    e.err_message,
                    e.findings,
                    e.body,
                    e.sign_key,
                    e.traceparent,
                )
        while len(items) > self._limit:
            items.popitem(last=False)

    def get(self, seq: int) -> EventRecord | None:
        found = self._items.get(seq)
        if found is None:
            return None
        (event_id, task_id, task_ref, matched_by, kind, session_id, session_context, channel, at, verdict,
         late, err_code, err_message, findings, body, sign_key, traceparent) = found  # fmt: skip
        return EventRecord(
            seq=seq,
            event_id=event_id,
            task_id=task_id,
            task_ref=task_ref,
            matched_by=matched_by,
            notification_type=kind,
            session_id=session_id,
            session_context=session_context,
            channel=channel,
            received_at=at,
            verdict=verdict,
            late=late,
            duplicates=0,
            err_code=err_code,
            err_message=err_message,
            findings=_builtins(findings),
            body=body,
            sign_key=sign_key,
            traceparent=traceparent,
        )
