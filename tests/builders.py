"""Domain objects built for tests: a stored event, a task, a sink's record and delivery."""

from __future__ import annotations

from typing import Any

import msgspec

from receiver import events
from receiver.documents import event_document
from receiver.events import Event
from receiver.ports import Delivery, EventRecord
from receiver.tasks import MatchedBy, Task, TaskState, new_id
from tests.payloads import FROZEN_NOW, event_of, example

# A Standard Webhooks signing secret for the http sinks under test.
SECRET = "whsec_" + "c2VjcmV0LXNpZ25pbmcta2V5LWZvci10ZXN0cw=="


def event(doc: dict[str, Any], at: float = FROZEN_NOW, **changes: Any) -> Event:
    return event_of({**doc, **changes}, at=at)


def new_task(task_id: str | None = "T1", session_context: str = "", **kw: Any) -> Task:
    return Task(
        id=new_id(),
        task_id=task_id,
        session_id="",
        session_context=session_context,
        url="rtmp://example/live/1",
        labels={"team": "a"},
        state=TaskState.SUBMITTED,
        created_at=1.0,
        updated_at=1.0,
        **kw,
    )


def record(name: str = "03-AiReviewResult-Image.constructed.json", **changes: Any) -> EventRecord:
    """A stored event as a sink gets it. ``NotificationType``/``TaskId`` are set on the record, not
    the wire: events stored before ingest refused over-long ones must still be safe at the sink."""
    wire_changes = {k: v for k, v in changes.items() if k not in ("NotificationType", "TaskId")}
    e = event_of({**example(name), **wire_changes}, check=events.Check(events.Verdict.VALID, "static:0"))
    e.notification_type = changes.get("NotificationType", e.notification_type)
    e.task_id = changes.get("TaskId", e.task_id)
    return EventRecord(
        seq=1,
        event_id=e.event_id,
        task_id=e.task_id,
        task_ref="ours",
        matched_by=MatchedBy.TASK_ID,
        notification_type=e.notification_type,
        session_id=e.session_id,
        session_context=e.session_context,
        channel="http",
        received_at=e.received_at,
        verdict="valid",
        late=False,
        duplicates=0,
        err_code=None,
        err_message=None,
        findings=msgspec.to_builtins(e.findings),
        body=e.body,
    )


def delivery(rec: EventRecord) -> tuple[Delivery, dict[str, Any]]:
    """A first delivery of ``rec`` and the document a sink is given with it."""
    return Delivery(id=1, sink="s", task_key=rec.task_id, attempts=0, event=rec), event_document(rec)
