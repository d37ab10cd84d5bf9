"""The emulator's record of the tasks it accepted, and the task APIs that read and change it:
``DescribeTaskDetail``, ``DescribeTasks`` and ``ManageTask``, with MPS's shapes, limits and errors.

A task is ``WAITING`` when accepted, ``PROCESSING`` once its stream plays, ``FINISH`` at its end
(whether its ProcessEof was sent or lost) or once an abort took effect. Times not set yet are
``0000-00-00T00:00:00Z``, as MPS writes them. In ``DescribeTaskDetail`` a live task's TaskType is
``LiveStreamProcessTask`` (``LiveScheduleTask`` when submitted with a ScheduleId); in
``DescribeTasks`` it is ``LiveProcessTask``. ``DescribeTasks`` lists the tasks created in the last
168 hours, newest first, at most ``Limit`` (1 to 100, default 10) a page, ``ScrollToken`` naming
the first task of the next page ("" at the end).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from receiver.emulator.recent import Recent
from receiver.emulator.scenario import Scenario

UNSET = "0000-00-00T00:00:00Z"
LIST_WINDOW = 168 * 3600  # DescribeTasks: tasks of the last seven days only
STATUSES = ("WAITING", "PROCESSING", "FINISH")
MAX_LIMIT = 100
# The parameters each action takes (anything else is UnknownParameter, as the API answers).
PARAMETERS = {
    "DescribeTaskDetail": {"TaskId"},
    "DescribeTasks": {"Status", "SubTaskHasFailed", "Limit", "ScrollToken", "StartTime", "EndTime"},
    "ManageTask": {"OperationType", "TaskId"},
}
# What a DescribeTaskDetail answer echoes of the TaskNotifyConfig given (the NotifyKey is not).
NOTIFY_MEMBERS = ("NotifyType", "NotifyUrl", "CmqModel", "CmqRegion", "TopicName", "QueueName")
SUB_TASKS = {
    "AiContentReviewTask": "AiContentReview",
    "AiRecognitionTask": "AiRecognition",
    "AiAnalysisTask": "AiAnalysis",
    "AiQualityControlTask": "AiQualityControl",
    "SmartSubtitlesTask": "SmartSubtitles",
    "OutputStorage": "LiveRecord",
}


class ApiError(Exception):
    def __init__(self, code: str, message: str) -> None:
        self.code = code
        self.message = message
        super().__init__(f"{code}: {message}")


def iso(ts: float | None) -> str:
    """An MPS time: ISO 8601 to the second, UTC; unset as MPS writes it."""
    return UNSET if ts is None else datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse_time(value: Any, name: str) -> float:
    try:
        if not isinstance(value, str):
            raise ValueError(value)
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ApiError(f"InvalidParameter.{name}", f"{name} must be an ISO 8601 time") from None
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).timestamp()


@dataclass
class EmulatedTask:
    task_id: str
    params: dict[str, Any]  # the ProcessLiveStream request, as received
    scenario: Scenario
    created_at: float  # wall-clock seconds
    begin_at: float | None = None
    finish_at: float | None = None
    err_code: int = 0
    message: str = ""
    aborted: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def status(self) -> str:
        if self.finish_at is not None:
            return "FINISH"
        return "PROCESSING" if self.begin_at is not None else "WAITING"

    @property
    def task_type(self) -> str:
        return "LiveScheduleTask" if self.params.get("ScheduleId") else "LiveStreamProcessTask"

    def finish(self, code: int, message: str) -> None:
        if self.finish_at is None:
            self.finish_at, self.err_code, self.message = time.time(), code, message

    def detail(self, request_id: str) -> dict[str, Any]:
        """The DescribeTaskDetail answer."""
        p = self.params
        live: dict[str, Any] = {
            "TaskId": self.task_id,
            "Status": "FINISH" if self.status == "FINISH" else "PROCESSING",  # its own Status has no WAITING
            "ErrCode": self.err_code,
            "Message": self.message,
            "Url": p.get("Url", ""),
        }
        if self.task_type == "LiveScheduleTask":
            live["LiveActivityResultSet"] = []
        notify = p.get("TaskNotifyConfig") or {}
        return {
            "TaskType": self.task_type,
            "Status": self.status,
            "CreateTime": iso(self.created_at),
            "BeginProcessTime": iso(self.begin_at),
            "FinishTime": iso(self.finish_at),
            "EditMediaTask": None,
            "WorkflowTask": None,
            "LiveStreamProcessTask": live if self.task_type == "LiveStreamProcessTask" else None,
            "ExtractBlindWatermarkTask": None,
            "TaskNotifyConfig": {k: notify[k] for k in NOTIFY_MEMBERS if k in notify},
            "TasksPriority": 0,
            "SessionId": p.get("SessionId", ""),
            "SessionContext": p.get("SessionContext", ""),
            "ExtInfo": "",
            "ScheduleTask": None,
            "LiveScheduleTask": live if self.task_type == "LiveScheduleTask" else None,
            "RequestId": request_id,
        }

    def summary(self) -> dict[str, Any]:
        """A DescribeTasks row."""
        return {
            "TaskId": self.task_id,
            "TaskType": "LiveProcessTask",
            "CreateTime": iso(self.created_at),
            "BeginProcessTime": iso(self.begin_at),
            "FinishTime": iso(self.finish_at),
            "SubTaskTypes": [name for member, name in SUB_TASKS.items() if self.params.get(member)],
        }


def _check_parameters(action: str, params: dict[str, Any]) -> None:
    unknown = sorted(set(params) - PARAMETERS[action])
    if unknown:
        raise ApiError("UnknownParameter", f"the parameter {unknown[0]} is not a parameter of {action}")


def _task_id(params: dict[str, Any]) -> str:
    task_id = params.get("TaskId")
    if task_id is None or task_id == "":
        raise ApiError("MissingParameter", "the parameter TaskId is required")
    if not isinstance(task_id, str):
        raise ApiError("InvalidParameter", "TaskId must be a string")
    return task_id


def _known(book: Recent[EmulatedTask], task_id: str) -> EmulatedTask:
    task = book.get(task_id)
    if task is None:
        raise ApiError("InvalidParameterValue.TaskId", f"the task {task_id!r} does not exist")
    return task


def describe_task_detail(
    book: Recent[EmulatedTask], params: dict[str, Any], request_id: str
) -> dict[str, Any]:
    _check_parameters("DescribeTaskDetail", params)
    return _known(book, _task_id(params)).detail(request_id)


def describe_tasks(
    book: Recent[EmulatedTask], params: dict[str, Any], request_id: str, now: float
) -> dict[str, Any]:
    _check_parameters("DescribeTasks", params)
    status = params.get("Status")
    if status is None:
        raise ApiError("MissingParameter", "the parameter Status is required")
    if status not in STATUSES:
        raise ApiError("InvalidParameterValue", f"Status must be one of {', '.join(STATUSES)}")
    limit = params.get("Limit", 10)
    if type(limit) is not int or not 1 <= limit <= MAX_LIMIT:
        raise ApiError("InvalidParameterValue.Limit", f"Limit must be an integer from 1 to {MAX_LIMIT}")
    failed = params.get("SubTaskHasFailed")
    if failed is not None and type(failed) is not bool:
        raise ApiError("InvalidParameter", "SubTaskHasFailed must be a boolean")
    start = (
        max(_parse_time(params["StartTime"], "StartTime"), now - LIST_WINDOW)
        if "StartTime" in params
        else now - LIST_WINDOW
    )
    end = _parse_time(params["EndTime"], "EndTime") if "EndTime" in params else now
    if end < start and "StartTime" in params and "EndTime" in params:
        raise ApiError("InvalidParameter.EndTime", "EndTime is before StartTime")
    newest_first = list(reversed(book.values()))
    token = params.get("ScrollToken") or ""
    if token:
        at = next((i for i, t in enumerate(newest_first) if t.task_id == token), None)
        if at is None:
            raise ApiError("InvalidParameterValue", "ScrollToken is not one this API gave")
        newest_first = newest_first[at:]

    def matches(t: EmulatedTask) -> bool:
        if t.status != status or not start <= t.created_at <= end:
            return False
        return failed is None or t.status != "FINISH" or (t.err_code != 0) == failed

    chosen = [t for t in newest_first if matches(t)]
    page, rest = chosen[:limit], chosen[limit:]
    total = len([t for t in book.values() if matches(t)])
    return {
        "TaskSet": [t.summary() for t in page],
        "ScrollToken": rest[0].task_id if rest else "",
        "TotalCount": total,
        "RequestId": request_id,
    }


def manage_task(book: Recent[EmulatedTask], params: dict[str, Any], request_id: str) -> dict[str, Any]:
    _check_parameters("ManageTask", params)
    operation = params.get("OperationType")
    if not operation:
        raise ApiError("MissingParameter", "the parameter OperationType is required")
    if operation != "Abort":
        raise ApiError(
            "InvalidParameterValue.InvalidOperationType", f"OperationType {operation!r} is not Abort"
        )
    task = _known(book, _task_id(params))
    if task.status == "FINISH":
        raise ApiError("InvalidParameterValue.NotProcessingTask", "the task is not waiting or processing")
    task.aborted.set()  # its player ends it (with or without a ProcessEof, as its scenario says)
    return {"RequestId": request_id}
