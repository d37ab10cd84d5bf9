"""What the stores keep for batches, operator events, counters and digests, on both stores."""

from __future__ import annotations

from typing import Any

from receiver.ports import DeliveryQuery, DeliveryState, EventQuery, OperatorEvent, OwnEvent, Settlement
from receiver.tasks import TaskState
from tests.builders import event, new_task
from tests.databases import mps_events
from tests.payloads import EOF_DOC, FROZEN_NOW, REVIEW


def own(event_id: str, task_key: str = "receiver:operator:x", **more: Any) -> OwnEvent:
    return OwnEvent(
        event_id=event_id,
        notification_type="OperatorEvent",
        task_id="",
        task_ref=None,
        task_key=task_key,
        at=FROZEN_NOW,
        document={"message": "hello"},
        **more,
    )


async def test_a_failed_batch_is_claimed_again_with_its_id_and_size_until_redriven(store: Any) -> None:
    recs = await store.record_events([event(REVIEW, SessionId=f"s{i}") for i in range(2)], lambda e, t: ["s"])
    claimed = await store.claim_deliveries("s", now=FROZEN_NOW, limit=10, busy_keys=set(), per_key=10)
    assert [(d.batch_id, d.batch_size) for d in claimed] == [(None, None)] * 2
    await store.settle_deliveries(
        [
            Settlement(d.id, DeliveryState.PENDING, 1, FROZEN_NOW, "503", FROZEN_NOW, "batch_1", 2)
            for d in claimed
        ]
    )
    again = await store.claim_deliveries("s", now=FROZEN_NOW + 60, limit=10, busy_keys=set(), per_key=10)
    assert [(d.event.seq, d.batch_id, d.batch_size, d.attempts) for d in again] == [
        (r.seq, "batch_1", 2, 1) for r in recs
    ]
    await store.redrive(DeliveryQuery(sink="s", state=DeliveryState.PENDING), now=FROZEN_NOW + 60)
    fresh = await store.claim_deliveries("s", now=FROZEN_NOW + 120, limit=10, busy_keys=set(), per_key=10)
    assert [(d.batch_id, d.attempts) for d in fresh] == [(None, 0)] * 2  # a redrive starts over


async def test_an_operator_event_is_kept_once_per_kind_subject_and_window_and_sent_once(store: Any) -> None:
    op = OperatorEvent("sink_dead_letter", "alerts", 3600.0, 3601.0, {"error": "boom"})
    assert await store.record_own_event(own("receiver:operator:1"), ["oncall"], op)
    later = OperatorEvent("sink_dead_letter", "alerts", 3600.0, 3650.0, {"error": "again"})
    assert not await store.record_own_event(own("receiver:operator:1b"), ["oncall"], later)
    other = OperatorEvent("sink_dead_letter", "alerts", 7200.0, 7201.0, {})
    assert await store.record_own_event(own("receiver:operator:2"), [], other)  # kept; no sink to send to
    page = await store.list_operator_events(kind=None, after=0, limit=10)
    assert [(o.kind, o.subject, o.window_start, o.detail, o.event_id) for o in page.items] == [
        ("sink_dead_letter", "alerts", 3600.0, {"error": "boom"}, "receiver:operator:1"),
        ("sink_dead_letter", "alerts", 7200.0, {}, None),
    ]
    assert (await store.list_operator_events(kind="task_failed", after=0, limit=10)).items == []
    [sent] = await store.claim_deliveries("oncall", now=FROZEN_NOW, limit=10, busy_keys=set())
    assert (sent.task_key, sent.event.notification_type, sent.event.raw) == (
        "receiver:operator:x",
        "OperatorEvent",
        {"message": "hello"},
    )
    # receiver's own events are neither orphans nor counted among MPS's events.
    assert (await store.list_events(EventQuery(orphan=True))).items == []
    assert await mps_events(store) == 0


async def test_counters_add_up_whoever_adds(store: Any) -> None:
    assert await store.count_up("signature_failures", 3600.0, 3) == 3
    assert await store.count_up("signature_failures", 3600.0, 4) == 7
    assert await store.count_up("signature_failures", 7200.0, 1) == 1  # a window of its own


async def test_an_ended_task_wants_a_digest_until_it_has_one_which_goes_after_its_end(store: Any) -> None:
    task, _ = await store.register_task(new_task(EOF_DOC["TaskId"]))
    tid = EOF_DOC["TaskId"]
    await store.record_events(
        [event(REVIEW, TaskId=tid, SessionContext="", at=FROZEN_NOW), event(EOF_DOC, at=FROZEN_NOW + 1)],
        lambda e, t: ["digests"],
    )
    [waiting] = await store.undigested_tasks(FROZEN_NOW - 10, 10)
    assert (waiting.id, waiting.state) == (task.id, TaskState.FINISHED)
    assert await store.undigested_tasks(FROZEN_NOW + 5, 10) == []  # ended before "since"
    digest = OwnEvent(f"receiver:digest:{task.id}", "TaskDigest", tid, task.id, tid, FROZEN_NOW + 2, {"n": 2})
    assert await store.record_own_event(digest, ["digests"])
    assert not await store.record_own_event(digest, ["digests"])  # one digest per task
    assert await store.undigested_tasks(FROZEN_NOW - 10, 10) == []
    line = await store.claim_deliveries("digests", now=FROZEN_NOW + 3, limit=10, busy_keys=set(), per_key=10)
    assert [d.event.notification_type for d in line] == ["AiReviewResult", "ProcessEof", "TaskDigest"]
    listed = (await store.list_events(EventQuery(task_ref=task.id))).items
    assert [(e.notification_type, e.channel) for e in listed][-1] == ("TaskDigest", "receiver")


async def test_tasks_to_alert_are_the_failed_stalled_and_lately_overdue(store: Any) -> None:
    await store.register_task(new_task("failed-task"))
    await store.record_events(
        [event(EOF_DOC, TaskId="failed-task", ProcessEofInfo={"ErrCode": 1, "Message": "x"})]
    )
    await store.register_task(new_task("quiet-task"))
    await store.record_events([event(REVIEW, TaskId="quiet-task", SessionContext="", at=FROZEN_NOW - 100)])
    await store.mark_stalled(FROZEN_NOW - 50, now=FROZEN_NOW)
    await store.register_task(new_task("old-task"))  # created at 1.0, still submitted
    found = await store.tasks_to_alert(FROZEN_NOW - 10, (0.5, 2.0), 100)  # overdue: started in range
    assert {(t.task_id, t.state.value) for t in found} == {
        ("failed-task", "failed"),
        ("old-task", "submitted"),
        ("quiet-task", "stalled"),
    }
    assert {t.task_id for t in await store.tasks_to_alert(FROZEN_NOW - 10, None, 100)} == {
        "failed-task",
        "quiet-task",
    }
