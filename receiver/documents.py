"""The JSON shapes of tasks and events, as the API answers them and as sinks deliver them."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

import orjson

from receiver.ports import EventRecord
from receiver.stamps import second_text
from receiver.tasks import MpsCheck, Task

OWN_CHANNEL = "receiver"  # the channel of the events receiver makes itself (digests, operator events)


_EPOCH_2000 = 946_684_800.0


def iso(ts: float | None) -> str | None:
    """A unix time as ISO 8601 in UTC with ``Z``, exactly as ``datetime.fromtimestamp(ts, UTC)
    .isoformat()`` writes it (microseconds rounded half to even, left out when zero), with the
    seconds' text cached (``stamps``): a burst of events shares its seconds."""
    if ts is None:
        return None
    if not ts >= _EPOCH_2000:  # (and NaN) as datetime has it
        return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")
    frac, whole_part = math.modf(ts)
    whole, micro = int(whole_part), round(frac * 1e6)
    if micro >= 1_000_000:
        whole, micro = whole + 1, micro - 1_000_000
    text = second_text(whole)
    return f"{text}.{micro:06d}Z" if micro else f"{text}Z"


def overdue(task: Task, now: float, deadline: float) -> bool:
    """Started more than ``deadline`` seconds ago and still no ProcessEof (0: never overdue)."""
    return bool(deadline) and not task.state.ended and now - task.created_at > deadline


def task_document(task: Task, *, now: float | None = None, deadline: float = 0.0) -> dict[str, Any]:
    return {
        "id": task.id,
        "task_id": task.task_id,
        "session_id": task.session_id,
        "session_context": task.session_context,
        "url": task.url,
        "labels": task.labels,
        "state": task.state.value,
        "err_code": task.err_code,
        "err_message": task.err_message,
        "event_count": task.event_count,
        "late_count": task.late_count,
        "created_at": iso(task.created_at),
        "updated_at": iso(task.updated_at),
        "first_event_at": iso(task.first_event_at),
        "last_event_at": iso(task.last_event_at),
        "ended_at": iso(task.ended_at),
        "request_id": task.request_id,
        "overdue": overdue(task, now, deadline) if now is not None else False,
        "reconciled_at": iso(task.reconciled_at),
        "checked_at": iso(task.checked_at),
        "checks": [check_document(c) for c in task.checks],
    }


def check_document(check: MpsCheck) -> dict[str, Any]:
    """One answer MPS gave about a task (``DescribeTaskDetail``), as the API shows it."""
    doc: dict[str, Any] = {"at": iso(check.at), "answer": check.answer.value}
    for name in ("err_code", "message", "code"):
        if getattr(check, name) is not None:
            doc[name] = getattr(check, name)
    return doc


def splices(sink: object) -> bool:
    """Whether a sink takes its documents' payload as JSON to splice (``splices_payload = True``):
    it only encodes the document with orjson, so the stored bytes go out as they are, never decoded."""
    return getattr(sink, "splices_payload", False) is True


def event_document(e: EventRecord, *, spliced: bool = False) -> dict[str, Any]:
    """An event as sinks and the API give it. ``spliced``: the payload is the stored JSON as an
    ``orjson.Fragment`` (for whoever only encodes the document with orjson), not a dict."""
    return {
        "seq": e.seq,
        "event_id": e.event_id,
        "task_id": e.task_id,
        "task_ref": e.task_ref,
        "orphan": e.task_ref is None and e.channel != OWN_CHANNEL,
        "matched_by": e.matched_by.value if e.matched_by else None,
        "notification_type": e.notification_type,
        "session_id": e.session_id,
        "session_context": e.session_context,
        "channel": e.channel,
        "received_at": iso(e.received_at),
        "verdict": e.verdict,
        "sign_key": e.sign_key,
        "traceparent": e.traceparent,  # the trace it came in (tracing on)
        "late": e.late,
        "duplicates": e.duplicates,
        "err_code": e.err_code,
        "err_message": e.err_message,
        "findings": e.findings,
        "payload": orjson.Fragment(e.body) if spliced else e.raw,
    }
