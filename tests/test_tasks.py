"""The task state machine and the matching rules, on plain values."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from receiver import tasks
from receiver.tasks import MatchedBy, Task, TaskState
from tests.payloads import event_of


@dataclass
class Happened:
    task_id: str = "T1"
    session_context: str = ""
    notification_type: str = "AiReviewResult"
    received_at: float = 100.0
    err_code: int | None = None
    err_message: str | None = None
    channel: str = "http"


def task(**kw: object) -> Task:
    base: dict[str, object] = {
        "id": "ours-1",
        "task_id": "T1",
        "session_id": "",
        "session_context": "",
        "url": "rtmp://x/live/1",
        "labels": {},
        "state": TaskState.SUBMITTED,
        "created_at": 1.0,
        "updated_at": 1.0,
    }
    base.update(kw)
    return Task(**base)  # type: ignore[arg-type]


def test_first_event_makes_a_submitted_task_running() -> None:
    t = tasks.apply(task(), Happened(received_at=5.0))
    assert (t.task.state, t.late, t.task.event_count, t.task.first_event_at, t.task.last_event_at) == (
        TaskState.RUNNING,
        False,
        1,
        5.0,
        5.0,
    )


def test_process_eof_with_code_zero_finishes_and_nonzero_fails_keeping_code_and_message() -> None:
    running = tasks.apply(task(), Happened()).task
    done = tasks.apply(
        running, Happened(notification_type="ProcessEof", err_code=0, err_message="Success", received_at=9)
    )
    assert (done.task.state, done.task.err_code, done.task.ended_at) == (TaskState.FINISHED, 0, 9)
    failed = tasks.apply(
        running, Happened(notification_type="ProcessEof", err_code=4002, err_message="data timeout")
    )
    assert (failed.task.state, failed.task.err_code, failed.task.err_message) == (
        TaskState.FAILED,
        4002,
        "data timeout",
    )


def test_process_eof_without_an_error_code_is_a_failure_that_says_so() -> None:
    t = tasks.apply(task(), Happened(notification_type="ProcessEof")).task
    assert t.state is TaskState.FAILED
    assert t.err_message is not None
    assert "no ProcessEofInfo.ErrCode" in t.err_message


def test_events_after_the_end_are_late_and_change_nothing_but_the_late_count() -> None:
    ended = tasks.apply(task(), Happened(notification_type="ProcessEof", err_code=0)).task
    after = tasks.apply(ended, Happened(received_at=50.0))
    assert after.late
    assert (after.task.state, after.task.event_count, after.task.late_count) == (TaskState.FINISHED, 1, 1)
    second_eof = tasks.apply(after.task, Happened(notification_type="ProcessEof", err_code=1))
    assert second_eof.late
    assert second_eof.task.state is TaskState.FINISHED


def test_a_task_recorded_before_its_task_id_was_known_learns_it_from_its_first_event() -> None:
    t = tasks.apply(task(task_id=None, state=TaskState.SUBMITTING), Happened(task_id="T9")).task
    assert (t.task_id, t.state) == ("T9", TaskState.RUNNING)


def test_match_prefers_session_context_over_task_id() -> None:
    by_ctx = task(id="a", task_id="T-other", session_context="ctx")
    by_id = task(id="b", task_id="T1")
    assert tasks.match(Happened(), [by_ctx], by_id) == (by_ctx, MatchedBy.SESSION_CONTEXT)
    assert tasks.match(Happened(), [], by_id) == (by_id, MatchedBy.TASK_ID)
    assert tasks.match(Happened(), [], None) is None


def test_a_shared_session_context_is_settled_by_task_id() -> None:
    a = task(id="a", task_id="T0", session_context="room-1")
    b = task(id="b", task_id="T1", session_context="room-1")
    assert tasks.match(Happened(task_id="T1"), [a, b], None) == (b, MatchedBy.SESSION_CONTEXT)
    c = task(id="c", task_id="T7")
    assert tasks.match(Happened(task_id="T7"), [a, b], c) == (c, MatchedBy.TASK_ID)
    assert tasks.match(Happened(task_id="T8"), [a, b], None) is None


def test_a_submission_answer_moves_submitting_to_submitted_but_never_back_from_running() -> None:
    waiting = task(task_id=None, state=TaskState.SUBMITTING)
    done = tasks.submitted(waiting, "T5", "req-1", now=7.0)
    assert (done.state, done.task_id, done.request_id, done.updated_at) == (
        TaskState.SUBMITTED,
        "T5",
        "req-1",
        7.0,
    )
    ahead = tasks.apply(waiting, Happened(task_id="T5")).task  # a notification beat the answer
    assert tasks.submitted(ahead, "T5", "req-1", now=8.0).state is TaskState.RUNNING


def test_a_failed_submission_fails_only_a_task_still_submitting() -> None:
    waiting = task(task_id=None, state=TaskState.SUBMITTING)
    failed = tasks.submission_failed(waiting, "submit failed: AuthFailure", now=3.0)
    assert (failed.state, failed.err_message, failed.ended_at) == (
        TaskState.FAILED,
        "submit failed: AuthFailure",
        3.0,
    )
    running = task(state=TaskState.RUNNING)
    assert tasks.submission_failed(running, "x", now=3.0) is running


def test_an_adopted_orphan_matched_by_context_only_when_the_contexts_agree() -> None:
    with_context = task(session_context="room-1")
    assert tasks.adoption_match(with_context, "room-1") is MatchedBy.SESSION_CONTEXT
    assert tasks.adoption_match(with_context, "room-2") is MatchedBy.TASK_ID
    assert tasks.adoption_match(task(), "") is MatchedBy.TASK_ID


def test_a_task_receiver_submitted_is_matched_by_its_own_context_only() -> None:
    ours = task(session_context="receiver:abc", task_id="T1")
    # A notification naming its TaskId without its context (a static-key forgery) finds no task.
    assert tasks.match(Happened(task_id="T1", session_context=""), [], ours) is None
    assert tasks.match(Happened(task_id="T1", session_context="receiver:other"), [], ours) is None
    assert tasks.match(Happened(task_id="T1", session_context="receiver:abc"), [ours], ours) == (
        ours,
        MatchedBy.SESSION_CONTEXT,
    )
    assert not tasks.adoptable(ours, "")
    assert tasks.adoptable(ours, "receiver:abc")
    # A task registered from elsewhere is matched by its TaskId as before.
    theirs = task(session_context="their-own")
    assert tasks.match(Happened(task_id="T1"), [], theirs) == (theirs, MatchedBy.TASK_ID)
    assert tasks.adoptable(theirs, "")


@dataclass
class Orphan(Happened):
    seq: int = 0


def test_adoption_takes_the_matching_orphans_in_order_and_the_task_changes_now() -> None:
    ours = task(session_context="receiver:abc")
    orphans = [
        Orphan(seq=3, session_context="receiver:abc", received_at=10.0),
        Orphan(seq=5, session_context="", received_at=11.0),  # its TaskId, not its context: not ours
        Orphan(
            seq=8,
            session_context="receiver:abc",
            notification_type="ProcessEof",
            err_code=0,
            received_at=12.0,
        ),
        Orphan(seq=9, session_context="receiver:abc", received_at=13.0),  # after the end: late
    ]
    adopted_task, adopted = tasks.adopt(ours, orphans, now=500.0)
    assert [(a.seq, a.matched_by, a.late) for a in adopted] == [
        (3, MatchedBy.SESSION_CONTEXT, False),
        (8, MatchedBy.SESSION_CONTEXT, False),
        (9, MatchedBy.SESSION_CONTEXT, True),
    ]
    assert [a.task.state for a in adopted] == [TaskState.RUNNING, TaskState.FINISHED, TaskState.FINISHED]
    assert (adopted_task.state, adopted_task.event_count, adopted_task.late_count) == (
        TaskState.FINISHED,
        2,  # the late one is counted apart
        1,
    )
    assert adopted_task.updated_at == 500.0  # adopted now, whatever the orphans' own times
    untouched, none = tasks.adopt(ours, [], now=500.0)
    assert (untouched, none) == (ours, [])


# --- asking MPS: reconcile ends, live answers, aborts --------------------------------------------

RECONCILED: dict[str, Any] = {"notification_type": "ReconcileEnd", "channel": "reconcile"}


def check(answer: str, at: float = 50.0, **kw: Any) -> tasks.MpsCheck:
    return tasks.MpsCheck(at, tasks.Answer(answer), **kw)


def test_a_reconcile_end_ends_the_task_from_mps_code_and_marks_it_reconciled() -> None:
    running = tasks.apply(task(), Happened()).task
    done = tasks.apply(running, Happened(**RECONCILED, err_code=0, err_message="", received_at=60.0)).task
    assert (done.state, done.err_code, done.ended_at, done.reconciled_at) == (
        TaskState.FINISHED,
        0,
        60.0,
        60.0,
    )
    failed = tasks.apply(running, Happened(**RECONCILED, err_code=70010, err_message="source gone")).task
    assert (failed.state, failed.err_code, failed.err_message) == (TaskState.FAILED, 70010, "source gone")
    silent = tasks.apply(running, Happened(**RECONCILED)).task
    assert (silent.state, silent.err_message) == (TaskState.FAILED, "MPS said FINISH without an ErrCode")


def test_a_process_eof_after_a_reconcile_end_is_late_and_changes_nothing() -> None:
    ended = tasks.apply(task(), Happened(**RECONCILED, err_code=0, received_at=60.0)).task
    eof = tasks.apply(ended, Happened(notification_type="ProcessEof", err_code=4002, received_at=70.0))
    assert eof.late
    assert (eof.task.state, eof.task.err_code, eof.task.ended_at, eof.task.reconciled_at) == (
        TaskState.FINISHED,
        0,
        60.0,
        60.0,
    )
    assert (eof.task.event_count, eof.task.late_count) == (1, 1)


def test_a_notification_named_reconcile_end_from_outside_ends_nothing() -> None:
    forged = tasks.apply(task(), Happened(notification_type="ReconcileEnd", err_code=0, channel="http"))
    assert forged.task.state is TaskState.RUNNING
    assert forged.task.reconciled_at is None


def test_a_live_answer_makes_a_stalled_task_running_again_and_counts_as_a_sign_of_life() -> None:
    stalled = task(state=TaskState.STALLED, first_event_at=5.0, last_event_at=5.0)
    live = tasks.checked(stalled, check("PROCESSING"))
    assert (live.state, live.live_at, live.checked_at, live.updated_at) == (
        TaskState.RUNNING,
        50.0,
        50.0,
        50.0,
    )
    never_heard = tasks.checked(task(state=TaskState.STALLED), check("WAITING"))
    assert never_heard.state is TaskState.SUBMITTED  # no event ever came: not "running"


def test_other_answers_are_kept_and_change_no_state() -> None:
    stalled = task(state=TaskState.STALLED)
    for answer in ("NOT_FOUND", "ERROR", "FINISH"):  # FINISH ends by an event of its own, not here
        after = tasks.checked(stalled, check(answer, code="X"))
        assert (after.state, after.live_at, after.checks[-1].answer) == (TaskState.STALLED, None, answer)
    aborting = tasks.checked(task(state=TaskState.ABORTING), check("PROCESSING"))
    assert aborting.state is TaskState.ABORTING  # the abort has not taken effect yet


def test_the_last_20_answers_are_kept_oldest_first() -> None:
    t = task()
    for i in range(25):
        t = tasks.checked(t, check("PROCESSING", at=float(i)))
    assert [c.at for c in t.checks] == [float(i) for i in range(5, 25)]


def test_an_abort_makes_a_task_aborting_until_its_end_which_events_do_not_undo() -> None:
    aborting = tasks.aborting(task(state=TaskState.STALLED), now=9.0)
    assert (aborting.state, aborting.updated_at) == (TaskState.ABORTING, 9.0)
    assert tasks.apply(aborting, Happened()).task.state is TaskState.ABORTING
    ended = tasks.apply(aborting, Happened(notification_type="ProcessEof", err_code=0)).task
    assert ended.state is TaskState.FINISHED
    by_reconcile = tasks.apply(aborting, Happened(**RECONCILED, err_code=0)).task
    assert by_reconcile.state is TaskState.FINISHED
    assert tasks.aborting(ended, now=10.0) is ended  # an ended task stays as it is


# --- the batch plan ---------------------------------------------------------------------------


def ev(
    n: int, *, task_id: str = "T1", context: str = "", kind: str = "AiReviewResult", **more: object
) -> Any:
    doc: dict[str, Any] = {
        "NotificationType": kind,
        "TaskId": task_id,
        "SessionContext": context,
        "SessionId": f"n-{n}",
        **more,
    }
    return event_of(doc, at=100.0 + n)


def test_the_plan_matches_advances_and_routes_a_batch_in_order() -> None:
    submitted = task(task_id=None, session_context="ctx-1")  # recorded before MPS answered
    routed: list[tuple[str, str | None, str | None]] = []

    def route(e: Any, t: Task | None) -> list[str]:
        routed.append((e.notification_type, t.state.value if t else None, t.task_id if t else None))
        return ["sink-a"] if t is not None else []

    batch = [
        ev(1, context="ctx-1"),  # by context: the task learns its TaskId here...
        ev(2),  # ...so this one, without the context, finds it by TaskId
        ev(3, kind="ProcessEof", context="ctx-1", ProcessEofInfo={"ErrCode": 0, "Message": "ok"}),
        ev(4, context="ctx-1"),  # after the end: late
        ev(5, task_id="T-unknown"),  # nobody's: an orphan
    ]
    p = tasks.plan(batch, tasks.Known({submitted.id: submitted}, {}), route)
    assert [(s.duplicate, s.matched_by, s.late) for s in p.steps] == [
        (False, MatchedBy.SESSION_CONTEXT, False),
        (False, MatchedBy.TASK_ID, False),
        (False, MatchedBy.SESSION_CONTEXT, False),
        (False, MatchedBy.SESSION_CONTEXT, True),
        (False, None, False),
    ]
    # Each sink decision sees the task as it is after that event.
    assert routed == [
        ("AiReviewResult", "running", "T1"),
        ("AiReviewResult", "running", "T1"),
        ("ProcessEof", "finished", "T1"),
        ("AiReviewResult", "finished", "T1"),
        ("AiReviewResult", None, None),
    ]
    assert [s.sinks for s in p.steps] == [("sink-a",)] * 4 + [()]
    [final] = p.tasks.values()
    assert (final.state, final.event_count, final.late_count, final.task_id) == (
        TaskState.FINISHED,
        3,
        1,
        "T1",
    )


def test_the_plan_counts_repeats_on_the_row_that_holds_their_id() -> None:
    running = task(state=TaskState.RUNNING, event_count=1)
    old, new = ev(1), ev(2)
    known = tasks.Known(
        {running.id: running},
        {
            old.event_id: tasks.StoredEvent(
                seq=7, task_ref=running.id, matched_by=MatchedBy.TASK_ID, late=False
            )
        },
    )
    p = tasks.plan([old, new, new], known)
    assert [(s.duplicate, s.matched_by) for s in p.steps] == [
        (True, MatchedBy.TASK_ID),  # stored before: nothing else changes
        (False, MatchedBy.TASK_ID),
        (True, MatchedBy.TASK_ID),  # twice in one batch: counted on the first
    ]
    assert [s.event.event_id for s in p.new] == [new.event_id]
    assert p.tasks[running.id].event_count == 2  # the repeats did not count as events
    recorded = p.recorded({old.event_id: 7, new.event_id: 8})
    assert [(r.seq, r.duplicate) for r in recorded] == [(7, True), (8, False), (8, True)]


def test_the_plan_keeps_a_task_of_our_own_to_its_context() -> None:
    ours = task(session_context="receiver:abc")
    p = tasks.plan([ev(1), ev(2, context="receiver:abc")], tasks.Known({ours.id: ours}, {}))
    assert [s.task is None for s in p.steps] == [True, False]


def test_an_event_changes_only_what_it_advances_and_keeps_every_other_field() -> None:
    # Every field set to something no default would give: a field apply() forgot would come back
    # as its default (or fail to build) and differ here.
    before = task(
        session_id="s",
        session_context="ctx",
        labels={"tenant": "a"},
        state=TaskState.RUNNING,
        err_code=7,
        err_message="earlier",
        event_count=3,
        late_count=2,
        first_event_at=2.0,
        last_event_at=3.0,
        ended_at=None,
        request_id="req-1",
    )
    after = tasks.apply(before, Happened(received_at=9.0)).task
    assert after == replace(before, event_count=4, last_event_at=9.0, updated_at=9.0)
