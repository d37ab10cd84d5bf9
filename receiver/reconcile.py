"""Asking MPS about tasks: reconcile and discover, one pass at a time per deployment (a store lease).

MPS documents no retry of its callbacks, and its FAQ says to ask ``DescribeTaskDetail`` when they
go missing. A pass asks about the tasks that are ``stalled``, ``aborting``, overdue, or submitted
with no event after ``reconcile.silent_after`` (those created in the last 7 days: MPS answers about
no older ones). ``FINISH`` while no ProcessEof has come: the task ends by an event of receiver's
own (``ReconcileEnd``, its id derived from the answer, so the same answer twice is one event),
recorded, matched and routed to the sinks like any notification; a ProcessEof after it is late.
``WAITING``/``PROCESSING``: the task is live (``tasks.checked``). Unknown to MPS: the answer is
kept, the task left as it is. Every answer is kept on the task (the last 20).

Discover (opt-in) lists MPS's live tasks (``DescribeTasks``, ``PROCESSING``, last 168 h) and
registers those receiver never saw, with the SessionContext ``DescribeTaskDetail`` gives, so that
their orphans are adopted by TaskId and by context.

Only one pass runs at a time in a deployment (the lease ``reconcile``), so the rate budgets of
``DescribeTaskDetail`` and ``DescribeTasks`` (100/s each, per account) are the deployment's.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime

import orjson
import structlog

from receiver import events, tasks
from receiver.errors import ConflictError, ReceiverError, StoreUnavailableError
from receiver.events import OWN_CONTEXT_PREFIX, Channel, Event, Verdict
from receiver.ports import UNSET_TIME, MpsTaskInfo, MpsTasks, ReconcileBook, ReconcileQuery, Router
from receiver.settings import ReconcileSettings
from receiver.tasks import Answer, MpsCheck, Task, TaskState

log = structlog.get_logger("receiver.reconcile")

LEASE = "reconcile"
WINDOW = 7 * 86400  # MPS answers about the tasks of the last 7 days (DescribeTasks: 168 hours)
LIVE_LIST_TYPE = "LiveProcessTask"  # a live task's TaskType in DescribeTasks (DescribeTaskDetail's differs)
# Errors after which no other call of the pass can succeed: the pass stops (the next one retries).
_FATAL_PREFIXES = (
    "AuthFailure",
    "UnauthorizedOperation",
    "RequestLimitExceeded",
    "FailedOperation.InvalidMpsUser",
)
Progress = Callable[[int, int], None]


def mps_time(text: str | None) -> float | None:
    """Unix seconds of an MPS time (ISO 8601); None when unset (``0000-00-00T00:00:00Z``) or unreadable."""
    if not text or text == UNSET_TIME:
        return None
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).timestamp()


def check_of(info: MpsTaskInfo | None, at: float) -> MpsCheck:
    """The answer to keep on the task."""
    if info is None:
        return MpsCheck(at, Answer.NOT_FOUND, code="InvalidParameterValue.TaskId")
    try:
        answer = Answer(info.status)
    except ValueError:
        return MpsCheck(
            at, Answer.ERROR, code="UnknownStatus", message=f"MPS answered Status {info.status!r}"
        )
    if answer is Answer.FINISH:
        return MpsCheck(at, answer, err_code=info.err_code, message=info.message)
    return MpsCheck(at, answer)


def end_event(task: Task, info: MpsTaskInfo, at: float) -> Event:
    """receiver's own end of a task MPS says has finished: matched like the task's notifications
    (its SessionContext, its TaskId), its id derived from MPS's answer alone."""
    assert task.task_id is not None
    document = {
        "NotificationType": tasks.RECONCILE_END,
        "TaskId": task.task_id,
        "SessionId": task.session_id,
        "SessionContext": task.session_context,
        "ReconcileEndInfo": {
            "Action": "DescribeTaskDetail",
            "TaskType": info.task_type,
            "Status": info.status,
            "ErrCode": info.err_code,
            "Message": info.message,
            "FinishTime": info.finish_time,
        },
    }
    return Event(
        event_id=events.event_id(document),
        task_id=task.task_id,
        notification_type=tasks.RECONCILE_END,
        session_id=task.session_id,
        session_context=task.session_context,
        channel=Channel.RECONCILE,
        received_at=at,
        verdict=Verdict.OWN,
        findings=[],
        raw=document,
        body=orjson.dumps(document),
        err_code=info.err_code,
        err_message=info.message,
    )


@dataclass
class Report:
    """What one pass did (or, with ``dry_run``, would do)."""

    lease: str = "held"  # held | busy (another reconciler has it: nothing done) | lost (mid-pass)
    dry_run: bool = False
    candidates: int = 0
    asked: int = 0
    ended: int = 0  # FINISH, no ProcessEof had come: ended by a ReconcileEnd
    already_ended: int = 0  # FINISH, and a ProcessEof ended it meanwhile: the ReconcileEnd is late
    live: int = 0  # WAITING or PROCESSING
    revived: int = 0  # of those, stalled and now running (or submitted) again
    not_found: int = 0
    errors: int = 0
    discovered: int = 0  # live tasks receiver never saw, registered (or attached to our record)
    stopped: str | None = None  # why the pass stopped early


class LeaseLostError(ReceiverError):
    code = "lease_lost"


def default_holder() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class Reconciler:
    def __init__(
        self,
        store: ReconcileBook,
        mps: MpsTasks,
        settings: ReconcileSettings,
        *,
        clock: Callable[[], float],
        deadline: float = 0.0,  # maintenance.task_deadline: older and not ended is overdue (0: never)
        route: Router | None = None,
        on_recorded: Callable[[], None] | None = None,
        holder: str | None = None,
    ) -> None:
        self._store = store
        self._mps = mps
        self._settings = settings
        self._clock = clock
        self._deadline = deadline
        self._route = route
        self._on_recorded = on_recorded
        self.holder = holder or default_holder()
        self._stop: asyncio.Event | None = None
        self._renewed_at = 0.0

    # --- the loop -------------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """A pass every ``reconcile.interval`` until ``stop`` (checked between tasks). Never raises."""
        self._stop = stop
        while not stop.is_set():
            try:
                report = await self.once()
                if report.asked or report.discovered or report.stopped:
                    log.info("reconcile pass", **asdict(report))
            except ReceiverError as exc:
                log.warning("reconcile pass failed; the next pass retries", error=str(exc))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=self._settings.interval)

    async def once(
        self, *, dry_run: bool = False, discover: bool | None = None, progress: Progress | None = None
    ) -> Report:
        """One pass under the lease: reconcile, then discover (when set). With ``dry_run``, MPS is
        asked but nothing is written (the lease aside, which keeps the rate budget the deployment's)."""
        report = Report(dry_run=dry_run)
        store = self._store
        self._renewed_at = self._clock()
        if not await store.hold_lease(LEASE, self.holder, ttl=self._settings.lease_ttl, now=self._renewed_at):
            report.lease = "busy"
            return report
        try:
            await self._reconcile(report, dry_run=dry_run, progress=progress)
            if self._settings.discover if discover is None else discover:
                await self._discover(report, dry_run=dry_run)
        except LeaseLostError:
            report.lease, report.stopped = "lost", "the lease was lost mid-pass (another reconciler has it)"
            return report
        finally:
            if report.lease == "held":
                with contextlib.suppress(StoreUnavailableError):
                    await store.release_lease(LEASE, self.holder)
        return report

    async def _renew(self) -> None:
        """Renew the lease once a third of its time has gone (an MPS call may take its timeout)."""
        now = self._clock()
        if now - self._renewed_at < self._settings.lease_ttl / 3:
            return
        self._renewed_at = now
        if not await self._store.hold_lease(LEASE, self.holder, ttl=self._settings.lease_ttl, now=now):
            raise LeaseLostError("the reconcile lease is held by another")

    def _stopping(self) -> bool:
        return self._stop is not None and self._stop.is_set()

    # --- reconcile ------------------------------------------------------------------------------

    async def _reconcile(self, report: Report, *, dry_run: bool, progress: Progress | None) -> None:
        now = self._clock()
        s = self._settings
        query = ReconcileQuery(
            since=now - WINDOW,
            checked_before=now - s.recheck_after,
            silent_before=now - s.silent_after,
            overdue_before=now - self._deadline if self._deadline else 0.0,
            limit=s.batch,
        )
        candidates = await self._store.reconcile_candidates(query)
        report.candidates = len(candidates)
        for done, task in enumerate(candidates):
            if self._stopping():
                report.stopped = "shutting down"
                return
            await self._renew()
            stop = await self._settle(task, report, dry_run=dry_run)
            if progress is not None:
                progress(done + 1, len(candidates))
            if stop is not None:
                report.stopped = stop
                return

    async def _settle(self, task: Task, report: Report, *, dry_run: bool) -> str | None:
        """Ask about one task and keep what MPS said; returns why the pass must stop, if it must."""
        assert task.task_id is not None
        report.asked += 1
        try:
            info = await self._mps.describe_task(task.task_id)
        except ReceiverError as exc:
            code = str(getattr(exc, "mps_code", exc.code))
            report.errors += 1
            if code.startswith(_FATAL_PREFIXES):
                return f"MPS answered {code}: {getattr(exc, 'message', exc)}"
            check = MpsCheck(
                self._clock(), Answer.ERROR, code=code, message=str(getattr(exc, "message", exc))
            )
            if not dry_run:
                await self._store.record_check(task.id, check)
            return None
        check = check_of(info, self._clock())
        if check.answer is Answer.NOT_FOUND:
            report.not_found += 1
        elif check.answer.live:
            report.live += 1
            report.revived += task.state is TaskState.STALLED
        elif check.answer is Answer.FINISH:
            assert info is not None
            if dry_run:
                report.ended += 1
            else:
                await self._end(task, info, report)
        else:
            report.errors += 1
        if not dry_run:
            await self._store.record_check(task.id, check)
        return None

    async def _end(self, task: Task, info: MpsTaskInfo, report: Report) -> None:
        [recorded] = await self._store.record_events([end_event(task, info, self._clock())], self._route)
        if self._on_recorded is not None:
            self._on_recorded()
        if recorded.late or recorded.duplicate:
            report.already_ended += 1
            return
        report.ended += 1
        ended = recorded.task
        log.info(
            "task ended by reconcile: MPS says FINISH, no ProcessEof came",
            task_id=task.task_id,
            state=ended.state.value if ended else None,
            err_code=info.err_code,
            mps_message=info.message,
        )

    # --- discover -------------------------------------------------------------------------------

    async def _discover(self, report: Report, *, dry_run: bool) -> None:
        try:
            await self._sweep(report, dry_run=dry_run)
        except LeaseLostError:
            raise
        except ReceiverError as exc:  # an MPS error (or the store's): the next pass sweeps again
            report.errors += 1
            code = getattr(exc, "mps_code", exc.code)
            report.stopped = f"discover stopped: {code}: {getattr(exc, 'message', exc)}"

    async def _sweep(self, report: Report, *, dry_run: bool) -> None:
        now = self._clock()
        token = ""
        for _ in range(self._settings.discover_pages):
            page = await self._mps.list_tasks(
                status="PROCESSING", start=now - WINDOW, end=now, limit=100, scroll_token=token
            )
            for item in page.items:
                if self._stopping():
                    report.stopped = "shutting down"
                    return
                await self._renew()
                if item.task_type != LIVE_LIST_TYPE or await self._store.get_task(item.task_id) is not None:
                    continue
                info = await self._mps.describe_task(item.task_id)
                if info is None or info.status == Answer.FINISH:
                    continue  # gone, or ended since it was listed
                if dry_run or await self._register(info, now):
                    report.discovered += 1
            token = page.scroll_token
            if not token:
                return

    async def _register(self, info: MpsTaskInfo, now: float) -> bool:
        """Record a live task receiver never saw (adopting its orphans), or give our own record
        of it (receiver's SessionContext form) the TaskId its ProcessLiveStream call never told."""
        context = info.session_context
        if context.startswith(OWN_CONTEXT_PREFIX):
            ref = context.removeprefix(OWN_CONTEXT_PREFIX).split(":", 1)[0]
            ours = await self._store.get_task(ref)
            if ours is not None and ours.id == ref:
                if ours.task_id is not None:
                    log.warning(
                        "a live task carries the context of another of ours", task_id=info.task_id, ref=ref
                    )
                    return False
                await self._store.finish_submission(
                    ref, task_id=info.task_id, request_id=None, error=None, now=now, route=self._route
                )
                log.info("discovered the TaskId of a task of ours", task_id=info.task_id, ref=ref)
                return True
        task = Task(
            id=tasks.new_id(),
            task_id=info.task_id,
            session_id=info.session_id,
            session_context=context,
            url=info.url,
            labels={},
            state=TaskState.SUBMITTED,
            created_at=mps_time(info.create_time) or now,
            updated_at=now,
        )
        try:
            _, adopted = await self._store.register_task(task, self._route)
        except ConflictError:
            return False  # registered meanwhile
        log.info("discovered a live task receiver never saw", task_id=info.task_id, adopted_events=adopted)
        return True
