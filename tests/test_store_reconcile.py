"""What asking MPS keeps in the stores, on both stores: which tasks a reconcile asks about, the
answers kept on the task, the reconcile end through the record path (routed, a later ProcessEof
late), aborting, stalls that a live answer holds off, and the rate budget leased from the store."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Any

import pytest

from receiver import reconcile
from receiver.errors import ConflictError
from receiver.mps import LeasedRateLimiter, MpsError
from receiver.ports import DeliveryQuery, EventQuery, MpsTaskInfo, ReconcileQuery
from receiver.tasks import Answer, MpsCheck, TaskState
from tests.builders import event, new_task
from tests.payloads import EOF_DOC, FROZEN_NOW, REVIEW

NOW = FROZEN_NOW
DAY = 86400.0


def query(**kw: Any) -> ReconcileQuery:
    base: dict[str, Any] = {
        "since": NOW - 7 * DAY,
        "checked_before": NOW - 300,
        "silent_before": NOW - 300,
        "overdue_before": 0.0,
        "limit": 100,
    }
    return ReconcileQuery(**{**base, **kw})


def finished(task_id: str, code: int = 0, message: str = "Success") -> MpsTaskInfo:
    return MpsTaskInfo(
        task_id=task_id, task_type="LiveStreamProcessTask", status="FINISH", err_code=code, message=message,
        url="rtmp://x/y", session_id="", session_context="", create_time="2025-06-18T10:00:00Z",
        finish_time="2025-06-18T11:00:00Z",
    )  # fmt: skip


async def registered(store: Any, task_id: str | None, state: TaskState, **kw: Any) -> Any:
    task = replace(
        new_task(task_id), state=state, **{"created_at": NOW - 3600, "updated_at": NOW - 3600, **kw}
    )
    await store.register_task(task)
    return task


async def test_a_reconcile_asks_about_stalled_aborting_overdue_and_silent_tasks_of_the_last_7_days(
    store: Any,
) -> None:
    stalled = await registered(store, "T-stalled", TaskState.STALLED)
    aborting = await registered(store, "T-aborting", TaskState.ABORTING)
    silent = await registered(store, "T-silent", TaskState.SUBMITTED)  # no event for an hour
    old = await registered(store, "T-old", TaskState.RUNNING, created_at=NOW - 2 * DAY, first_event_at=NOW)
    await registered(store, "T-quiet-new", TaskState.SUBMITTED, created_at=NOW - 10)  # silent, not long
    await registered(store, "T-running", TaskState.RUNNING, first_event_at=NOW - 3600)
    await registered(store, "T-ended", TaskState.FINISHED)
    await registered(store, "T-too-old", TaskState.STALLED, created_at=NOW - 8 * DAY)  # MPS forgot it
    await registered(store, None, TaskState.STALLED)  # no TaskId to ask about
    checked = await registered(store, "T-checked", TaskState.STALLED)
    await store.record_check(checked.id, MpsCheck(NOW - 60, Answer.PROCESSING))  # asked a minute ago
    checked = await store.get_task("T-checked")
    assert checked.state is TaskState.SUBMITTED  # the live answer; no event ever came

    found = await store.reconcile_candidates(query())
    assert {t.task_id for t in found} == {"T-stalled", "T-aborting", "T-silent"}
    overdue = await store.reconcile_candidates(query(overdue_before=NOW - DAY))
    assert {t.task_id for t in overdue} == {"T-stalled", "T-aborting", "T-silent", "T-old"}
    assert len(await store.reconcile_candidates(query(limit=2))) == 2
    # Never asked first, then the longest unasked.
    await store.record_check(
        stalled.id, MpsCheck(NOW - 900, Answer.NOT_FOUND, code="InvalidParameterValue.TaskId")
    )
    order = [t.task_id for t in await store.reconcile_candidates(query())]
    assert order[-1] == "T-stalled"
    assert set(order) == {"T-stalled", "T-aborting", "T-silent"}
    del aborting, silent, old


async def test_the_answers_are_kept_on_the_task_the_last_20_and_survive_its_events(store: Any) -> None:
    task = await registered(store, "T1", TaskState.STALLED)
    for i in range(22):
        await store.record_check(task.id, MpsCheck(NOW + i, Answer.PROCESSING))
    await store.record_check(
        task.id, MpsCheck(NOW + 30, Answer.ERROR, code="InternalError", message="try later")
    )
    [rec] = await store.record_events([event(REVIEW, at=NOW + 40, TaskId="T1", SessionContext="")])
    assert rec.task is not None
    kept = await store.get_task("T1")
    assert len(kept.checks) == 20
    assert kept.checks[0].at == NOW + 3
    assert kept.checks[-1] == MpsCheck(NOW + 30, Answer.ERROR, code="InternalError", message="try later")
    assert (kept.checked_at, kept.live_at, kept.state, kept.event_count) == (
        NOW + 30,
        NOW + 21,
        TaskState.RUNNING,
        1,
    )
    with pytest.raises(ConflictError):
        await store.record_check("no-such-ref", MpsCheck(NOW, Answer.PROCESSING))


async def test_a_reconcile_end_goes_the_record_path_routed_and_a_later_process_eof_is_late(
    store: Any,
) -> None:
    task = await registered(store, "T1", TaskState.STALLED, first_event_at=NOW - 3600)
    end = reconcile.end_event(task, finished("T1", 4002, "source timeout"), NOW)
    [rec] = await store.record_events([end], lambda e, t: ["alerts"])
    assert (rec.duplicate, rec.late) == (False, False)
    ended = await store.get_task("T1")
    assert (ended.state, ended.err_code, ended.err_message) == (TaskState.FAILED, 4002, "source timeout")
    assert (ended.ended_at, ended.reconciled_at) == (NOW, NOW)
    [again] = await store.record_events(
        [reconcile.end_event(task, finished("T1", 4002, "source timeout"), NOW + 60)]
    )
    assert again.duplicate  # the same answer twice is one event
    [delivery] = (await store.list_deliveries(DeliveryQuery(sink="alerts"))).items
    assert delivery.notification_type == "ReconcileEnd"
    eof = event(
        EOF_DOC, at=NOW + 120, TaskId="T1", SessionContext="", ProcessEofInfo={"ErrCode": 0, "Message": "ok"}
    )
    [late] = await store.record_events([eof])
    assert late.late
    after = await store.get_task("T1")
    assert (after.state, after.err_code, after.reconciled_at, after.late_count) == (
        TaskState.FAILED,
        4002,
        NOW,
        1,
    )
    stored = (await store.list_events(EventQuery(task_id="T1"))).items
    assert [(e.notification_type, e.channel, e.verdict, e.late) for e in stored] == [
        ("ReconcileEnd", "reconcile", "own", False),
        ("ProcessEof", "http", "skipped", True),
    ]


async def test_an_aborting_task_stays_so_through_its_results_until_its_process_eof(store: Any) -> None:
    task = await registered(store, "T1", TaskState.RUNNING, first_event_at=NOW - 60)
    assert (await store.mark_aborting(task.id, now=NOW)).state is TaskState.ABORTING
    [rec] = await store.record_events([event(REVIEW, at=NOW + 1, TaskId="T1", SessionContext="")])
    assert rec.task is not None
    assert rec.task.state is TaskState.ABORTING
    eof = event(
        EOF_DOC, at=NOW + 2, TaskId="T1", SessionContext="", ProcessEofInfo={"ErrCode": 0, "Message": "x"}
    )
    await store.record_events([eof])
    assert (await store.get_task("T1")).state is TaskState.FINISHED
    assert (await store.mark_aborting(task.id, now=NOW + 3)).state is TaskState.FINISHED


async def test_a_live_answer_holds_a_stall_off_as_a_notification_would(store: Any) -> None:
    quiet = await registered(store, "T-quiet", TaskState.RUNNING, last_event_at=NOW - 3600)
    asked = await registered(store, "T-asked", TaskState.RUNNING, last_event_at=NOW - 3600)
    await store.record_check(asked.id, MpsCheck(NOW - 10, Answer.PROCESSING))
    assert await store.mark_stalled(NOW - 900, now=NOW) == 1
    assert (await store.get_task("T-quiet")).state is TaskState.STALLED
    assert (await store.get_task("T-asked")).state is TaskState.RUNNING
    del quiet


async def test_the_leased_budget_is_shared_by_every_process_on_the_store(store: Any) -> None:
    now = [NOW]
    granted: list[float] = []  # when the store gave a start its slot

    class Recording:
        async def hold_lease(self, name: str, holder: str, *, ttl: float, now: float) -> bool:
            held: bool = await store.hold_lease(name, holder, ttl=ttl, now=now)
            if held:
                granted.append(now)
            return held

    async def sleep(seconds: float) -> None:
        now[0] += seconds
        await asyncio.sleep(0)

    # Two "processes": two limiters on one store, one budget of 5 a second between them.
    a, b = (
        LeasedRateLimiter(Recording(), "ManageTask", 5, clock=lambda: now[0], sleep=sleep) for _ in range(2)
    )
    await asyncio.gather(*(limiter.acquire() for limiter in [a, b] * 6))
    assert len(granted) == 12
    assert max(sum(1 for s in granted if w <= s < w + 1.0) for w in granted) == 5
    assert granted.count(NOW) == 5
    now[0] += 2.0  # every slot free again
    tight = LeasedRateLimiter(store, "ManageTask", 5, wait=0.5, clock=lambda: now[0], sleep=sleep)
    for _ in range(5):
        await tight.acquire()
    with pytest.raises(MpsError) as caught:
        await tight.acquire()
    assert caught.value.mps_code == "RequestLimitExceeded"
