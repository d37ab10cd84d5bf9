"""``MpsClient``: the MPS actions receiver calls (``ProcessLiveStream``, ``DescribeTaskDetail``,
``DescribeTasks``, ``ManageTask``) through the official SDK, off the event loop, each within its own
rate limit (100, 100, 100 and 20 requests/s).

``RequestLimitExceeded`` is retried with backoff; any other MPS error becomes an ``MpsError`` with
its code. Credentials come from settings (the environment or a secret file), never from a request,
and are never logged. ``LeasedRateLimiter`` shares one action's budget among every process on a
store (for ManageTask, which any process's API may call).
"""

from __future__ import annotations

import asyncio
import json
import math
import random
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from typing import Any, Protocol

import structlog
from tencentcloud.common import credential
from tencentcloud.common.exception.tencent_cloud_sdk_exception import TencentCloudSDKException
from tencentcloud.common.profile.client_profile import ClientProfile
from tencentcloud.common.profile.http_profile import HttpProfile
from tencentcloud.mps.v20190612 import models, mps_client

from receiver.errors import MpsError as MpsError  # where the adapters have always found it
from receiver.ports import UNSET_TIME, MpsTaskInfo, MpsTaskPage, MpsTaskSummary
from receiver.settings import MpsSettings

log = structlog.get_logger("receiver.mps")
Sleep = Callable[[float], Awaitable[None]]

# MPS's limits per action and account (its API documentation); ProcessLiveStream's is mps.rate_limit.
RATE_LIMITS = {"DescribeTaskDetail": 100, "DescribeTasks": 100, "ManageTask": 20}
# The codes DescribeTaskDetail and ManageTask answer for a TaskId MPS does not know (or no longer:
# it answers about the last 7 days only).
NOT_FOUND_CODES = frozenset(
    {
        "InvalidParameterValue.TaskId",
        "ResourceNotFound",
        "ResourceNotFound.TaskNotFound",
        "FailedOperation.TaskNotFound",
    }
)
LIVE_TASK_TYPES = ("LiveStreamProcessTask", "LiveScheduleTask")  # DescribeTaskDetail's TaskType


class RateLimiter:
    """At most ``per_second`` starts in any one-second window (a sliding window)."""

    def __init__(
        self,
        per_second: int,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self._per_second = per_second
        self._clock = clock  # injectable, so tests need not wait real seconds
        self._sleep = sleep
        self._starts: deque[float] = deque()
        self._lock = asyncio.Lock()

    async def acquire(self) -> None:
        async with self._lock:
            while True:
                now = self._clock()
                while self._starts and now - self._starts[0] >= 1.0:
                    self._starts.popleft()
                if len(self._starts) < self._per_second:
                    self._starts.append(now)
                    return
                await self._sleep(1.0 - (now - self._starts[0]))


class Limiter(Protocol):
    async def acquire(self) -> None: ...


class Leases(Protocol):
    async def hold_lease(self, name: str, holder: str, *, ttl: float, now: float) -> bool: ...


class LeasedRateLimiter:
    """At most ``per_second`` starts in any one-second window among every process sharing a store:
    ``per_second`` store leases (``rate:<action>:<n>``), each taken for one second by one start and
    left to expire. A start takes any free one; with none free it waits, up to ``wait`` seconds,
    then raises ``MpsError("RequestLimitExceeded")``. The processes' clocks are assumed to agree
    to well under a second."""

    def __init__(
        self,
        leases: Leases,  # the store
        action: str,
        per_second: int,
        *,
        wait: float = 5.0,
        clock: Callable[[], float] = time.time,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self._leases = leases
        self._names = [f"rate:{action}:{n}" for n in range(per_second)]
        self._wait = wait
        self._clock = clock
        self._sleep = sleep

    async def acquire(self) -> None:
        deadline = self._clock() + self._wait
        while True:
            holder = uuid.uuid4().hex
            # From a random slot on: starts at once spread over the slots instead of queueing on the first.
            first = random.randrange(len(self._names))
            for name in self._names[first:] + self._names[:first]:
                if await self._leases.hold_lease(name, holder, ttl=1.0, now=self._clock()):
                    return
            if self._clock() >= deadline:
                raise MpsError(
                    "RequestLimitExceeded",
                    f"receiver's budget of {len(self._names)} requests/s for this action is spent: retry",
                )
            await self._sleep(0.05)


def shared_budgets(leases: Leases, settings: MpsSettings) -> dict[str, Limiter]:
    """The budgets of the actions any process's API calls (ProcessLiveStream, ManageTask), leased
    from the store so that all processes together keep to MPS's per-account limits. (The
    reconciler's actions need none: one pass runs at a time, under its lease.)"""
    return {
        "ProcessLiveStream": LeasedRateLimiter(leases, "ProcessLiveStream", settings.rate_limit),
        "ManageTask": LeasedRateLimiter(leases, "ManageTask", RATE_LIMITS["ManageTask"]),
    }


def iso_time(ts: float) -> str:
    """An MPS time (ISO 8601, seconds, UTC) from unix seconds."""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _schedule_outcome(task: Any) -> tuple[int | None, str | None]:
    """A LiveScheduleTask's code: its own when non-zero (the source failed), else its first
    activity's that failed (LiveRecord, AiQualityControl), else 0."""
    if task.ErrCode:
        return int(task.ErrCode), task.Message
    for activity in task.LiveActivityResultSet or ():
        item = activity.LiveActivityResItem
        for result in (item.LiveRecordTask, item.LiveQualityControlTask) if item is not None else ():
            if result is not None and (result.ErrCode or result.ErrCodeExt):
                code = int(result.ErrCode) if result.ErrCode else -1
                label = f"{activity.ActivityType}: {result.ErrCodeExt or result.Message or 'failed'}"
                return code, label
    return task.ErrCode, task.Message


def task_info(r: models.DescribeTaskDetailResponse) -> MpsTaskInfo:
    """What receiver reads of a DescribeTaskDetail answer; an ``MpsError`` if it is no live-stream task."""
    live = r.LiveStreamProcessTask if r.TaskType == "LiveStreamProcessTask" else r.LiveScheduleTask
    if r.TaskType not in LIVE_TASK_TYPES or live is None:
        raise MpsError("NotALiveTask", f"the task is a {r.TaskType}, not a live-stream task", r.RequestId)
    if r.TaskType == "LiveScheduleTask":
        err_code, message = _schedule_outcome(live)
    else:
        err_code, message = live.ErrCode, live.Message
    return MpsTaskInfo(
        task_id=str(live.TaskId),
        task_type=str(r.TaskType),
        status=str(r.Status or live.Status),
        err_code=None if err_code is None else int(err_code),
        message=message,
        url=str(live.Url or ""),
        session_id=str(r.SessionId or ""),
        session_context=str(r.SessionContext or ""),
        create_time=str(r.CreateTime or UNSET_TIME),
        finish_time=str(r.FinishTime or UNSET_TIME),
        request_id=r.RequestId,
    )


class MpsClient:
    def __init__(
        self,
        settings: MpsSettings,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Sleep = asyncio.sleep,
        budgets: Mapping[str, Limiter] | None = None,
    ) -> None:
        """``budgets``: per action, a limiter shared with other processes (``shared_budgets``),
        taken after this process's own."""
        secret_id, secret_key = settings.credentials()
        http = HttpProfile(
            endpoint=settings.endpoint, protocol=settings.protocol, reqTimeout=int(settings.timeout)
        )
        self._client = mps_client.MpsClient(
            credential.Credential(secret_id, secret_key), settings.region, ClientProfile(httpProfile=http)
        )
        self._limiters: dict[str, Limiter] = {
            "ProcessLiveStream": RateLimiter(settings.rate_limit, clock=clock, sleep=sleep),
            **{action: RateLimiter(n, clock=clock, sleep=sleep) for action, n in RATE_LIMITS.items()},
        }
        self._budgets = dict(budgets or {})
        self._sleep = sleep
        self._retries = settings.max_retries

    async def process_live_stream(self, params: dict[str, Any]) -> tuple[str, str]:
        """Start a task; returns (TaskId, RequestId)."""
        response = await self._request("ProcessLiveStream", params)
        if not response.TaskId:  # e.g. an error body the SDK could not read as one
            raise MpsError("InternalError", "MPS answered without a TaskId", response.RequestId)
        return str(response.TaskId), str(response.RequestId)

    async def describe_task(self, task_id: str) -> MpsTaskInfo | None:
        """``DescribeTaskDetail`` of a live-stream task; None when MPS does not know the TaskId."""
        try:
            response = await self._request("DescribeTaskDetail", {"TaskId": task_id})
        except MpsError as exc:
            if exc.mps_code in NOT_FOUND_CODES:
                return None
            raise
        return task_info(response)

    async def list_tasks(
        self, *, status: str, start: float, end: float, limit: int, scroll_token: str
    ) -> MpsTaskPage:
        """One page of ``DescribeTasks`` (tasks created from ``start`` to ``end``)."""
        params: dict[str, Any] = {
            "Status": status,
            "Limit": limit,
            # MPS's times are to the second: the window widened to whole seconds, not narrowed.
            "StartTime": iso_time(math.floor(start)),
            "EndTime": iso_time(math.ceil(end)),
        }
        if scroll_token:
            params["ScrollToken"] = scroll_token
        r = await self._request("DescribeTasks", params)
        items = [
            MpsTaskSummary(str(t.TaskId), str(t.TaskType), str(t.CreateTime or UNSET_TIME))
            for t in r.TaskSet or ()
        ]
        return MpsTaskPage(items, str(r.ScrollToken or ""), int(r.TotalCount or 0))

    async def abort_task(self, task_id: str) -> str:
        """``ManageTask`` with ``OperationType=Abort``; returns the RequestId."""
        response = await self._request("ManageTask", {"OperationType": "Abort", "TaskId": task_id})
        return str(response.RequestId)

    async def _request(self, action: str, params: dict[str, Any]) -> Any:
        """One action within its rate limit, ``RequestLimitExceeded`` retried with doubling backoff."""
        delay = 0.2
        for attempt in range(self._retries + 1):
            await self._limiters[action].acquire()
            budget = self._budgets.get(action)
            if budget is not None:  # spent for the whole deployment: an MpsError, not retried here
                await budget.acquire()
            try:
                return await asyncio.to_thread(self._call, action, params)
            except MpsError as exc:
                if exc.mps_code == "RequestLimitExceeded" and attempt < self._retries:
                    log.warning("MPS rate limit; retrying", action=action, attempt=attempt + 1, wait=delay)
                    await self._sleep(delay)
                    delay *= 2
                    continue
                raise
        raise AssertionError("unreachable")

    def _call(self, action: str, params: dict[str, Any]) -> Any:
        request = getattr(models, f"{action}Request")()
        request.from_json_string(json.dumps(params))
        try:
            return getattr(self._client, action)(request)
        except TencentCloudSDKException as exc:
            raise MpsError(str(exc.get_code()), str(exc.get_message()), exc.get_request_id()) from None
