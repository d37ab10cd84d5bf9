"""The emulator's task APIs (DescribeTaskDetail, DescribeTasks, ManageTask) through the official SDK:
states, limits, paging and errors as MPS gives them, and every answer read by the SDK's own
response model (3.1.194) without a warning and with no member or type the model does not have, so
the emulator cannot drift into agreeing with receiver instead of with MPS."""

from __future__ import annotations

import asyncio
import json
import time
import warnings
from typing import Any

import orjson
import pytest
import tencentcloud.mps.v20190612.models as sdk
from aiohttp.test_utils import TestServer
from tencentcloud.common import credential
from tencentcloud.common.exception.tencent_cloud_sdk_exception import TencentCloudSDKException
from tencentcloud.common.profile.client_profile import ClientProfile
from tencentcloud.common.profile.http_profile import HttpProfile
from tencentcloud.mps.v20190612 import mps_client

from receiver.emulator import EmulatorSettings, book, create_emulator
from receiver.emulator.api import EMULATOR
from receiver.emulator.book import EmulatedTask
from receiver.emulator.notify import CallbackRetry, Notifier
from receiver.emulator.scenario import Scenario
from tests.apps import ServerFactory
from tests.sdk import sdk_type
from tests.waiting import eventually

SILENT = {"NotifyType": ""}
_SOURCE = __import__("pathlib").Path(sdk.__file__).read_text(encoding="utf-8")


def members(model: str) -> dict[str, str]:
    """``{member: SDK type}`` of a model, RequestId included (it is in every answer)."""
    import re

    m = re.search(rf"\nclass {model}\(AbstractModel\):(.*?)\n        \"\"\"\n", _SOURCE, re.S)
    assert m, f"the SDK has no model {model}"
    return {k: sdk_type(v) for k, v in re.findall(r":type (\w+): ([^\n]+)", m.group(1))}


def conforms(value: Any, spelled: str, where: str) -> None:
    """``value`` is what the SDK type ``spelled`` says, recursively; AssertionError naming where not."""
    if value is None:
        return  # "this member may return null"
    if spelled.startswith("list of "):
        assert isinstance(value, list), f"{where}: expected a list"
        for i, item in enumerate(value):
            conforms(item, spelled.removeprefix("list of "), f"{where}[{i}]")
        return
    scalars: dict[str, type | tuple[type, ...]] = {
        "str": str,
        "int": int,
        "float": (int, float),
        "bool": bool,
    }
    scalar = scalars.get(spelled)
    if scalar is not None:
        assert isinstance(value, scalar), f"{where}: {value!r} is not {spelled}"
        assert (spelled == "bool") == isinstance(value, bool), f"{where}: {value!r} is not {spelled}"
        return
    assert isinstance(value, dict), f"{where}: expected a {spelled} object"
    known = members(spelled)
    for key, item in value.items():
        assert key in known, f"{where}.{key}: not a member of the SDK's {spelled}"
        conforms(item, known[key], f"{where}.{key}")


def read_as_sdk(action: str, answer: dict[str, Any]) -> Any:
    """The answer through the SDK's response model, warnings (unknown members) as errors."""
    conforms(answer, f"{action}Response", action)
    model = getattr(sdk, f"{action}Response")()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model._deserialize(answer)
    return model


def test_the_shape_check_refuses_what_the_sdk_model_lacks_or_types_otherwise() -> None:
    good = {"TaskType": "LiveStreamProcessTask", "LiveStreamProcessTask": {"TaskId": "T", "ErrCode": 0}}
    read_as_sdk("DescribeTaskDetail", good)
    for bad, named in (
        ({**good, "Extra": 1}, "DescribeTaskDetail.Extra"),  # the SDK itself would not warn at the top
        ({**good, "LiveStreamProcessTask": {"TaskId": "T", "Code": 0}}, "LiveStreamProcessTask.Code"),
        ({**good, "LiveStreamProcessTask": {"TaskId": "T", "ErrCode": "0"}}, "LiveStreamProcessTask.ErrCode"),
        ({**good, "TasksPriority": True}, "DescribeTaskDetail.TasksPriority"),
    ):
        with pytest.raises(AssertionError, match=named.replace(".", r"\.")):
            read_as_sdk("DescribeTaskDetail", bad)


class Mps:
    """The emulator through the official SDK client, each answer also checked by ``read_as_sdk``."""

    def __init__(self, server: TestServer) -> None:
        profile = ClientProfile(httpProfile=HttpProfile(endpoint=f"127.0.0.1:{server.port}", protocol="http"))
        self.client = mps_client.MpsClient(
            credential.Credential("AKIDtest", "s3cret"), "ap-guangzhou", profile
        )
        self.server = server

    async def call(self, action: str, **params: Any) -> Any:
        def run() -> Any:
            # What the SDK's own client.<Action>() does, with the answer checked before it is read.
            request = getattr(sdk, f"{action}Request")()
            with warnings.catch_warnings():
                warnings.simplefilter("error")  # a parameter the SDK's request model lacks
                request.from_json_string(json.dumps(params))
            body = self.client.call(action, request._serialize())  # raises MPS's errors
            return read_as_sdk(action, orjson.loads(body)["Response"])

        return await asyncio.to_thread(run)

    async def code(self, action: str, **params: Any) -> str:
        with pytest.raises(TencentCloudSDKException) as caught:
            await self.call(action, **params)
        return str(caught.value.get_code())

    def task(self, task_id: str) -> EmulatedTask:
        task = self.server.app[EMULATOR].tasks.get(task_id)
        assert task is not None
        return task


async def emulated(aiohttp_server: ServerFactory, **settings: Any) -> Mps:
    merged = {"secret_id": "AKIDtest", "secret_key": "s3cret", "speed": 20.0, **settings}
    return Mps(await aiohttp_server(create_emulator(EmulatorSettings.model_validate(merged))))


async def start(mps: Mps, **params: Any) -> str:
    response = await mps.call("ProcessLiveStream", Url="rtmp://live.example.com/a/s", TaskNotifyConfig=SILENT,
                              AiContentReviewTask={"Definition": 10}, **params)  # fmt: skip
    return str(response.TaskId)


async def until_status(mps: Mps, task_id: str, status: str, *, ask: bool = True) -> Any:
    """Watched in the emulator's own record, then asked through the SDK."""
    for _ in range(400):
        if mps.task(task_id).status == status:
            if not ask:
                return None
            detail = await mps.call("DescribeTaskDetail", TaskId=task_id)
            assert detail.Status == status
            return detail
        await asyncio.sleep(0.02)
    raise AssertionError(f"{task_id} never reached {status}")


async def test_a_live_task_is_described_processing_then_finish_with_times_set_as_they_happen(
    aiohttp_server: ServerFactory,
) -> None:
    ending = {"duration": 1.0, "rate": 4.0, "eof_err_code": 4002, "eof_message": "source timeout"}
    mps = await emulated(aiohttp_server, scenario=ending)
    task_id = await start(mps, SessionId="s-1", SessionContext="ctx-1")
    live = await until_status(mps, task_id, "PROCESSING")
    assert live.TaskType == "LiveStreamProcessTask"
    assert live.LiveStreamProcessTask.TaskId == task_id
    assert (live.LiveStreamProcessTask.Status, live.LiveStreamProcessTask.ErrCode) == ("PROCESSING", 0)
    assert (live.SessionId, live.SessionContext) == ("s-1", "ctx-1")
    assert live.FinishTime == "0000-00-00T00:00:00Z"
    assert live.BeginProcessTime != "0000-00-00T00:00:00Z"
    assert live.LiveScheduleTask is None
    done = await until_status(mps, task_id, "FINISH")
    assert (done.LiveStreamProcessTask.ErrCode, done.LiveStreamProcessTask.Message) == (
        4002,
        "source timeout",
    )
    assert done.FinishTime != "0000-00-00T00:00:00Z"


async def test_a_task_waits_before_it_plays(aiohttp_server: ServerFactory) -> None:
    mps = await emulated(aiohttp_server)
    task = EmulatedTask("T-wait", {"Url": "rtmp://x/y", "TaskNotifyConfig": SILENT}, Scenario(), time.time())
    mps.server.app[EMULATOR].tasks.put(task.task_id, task)  # accepted, its stream not started
    detail = await mps.call("DescribeTaskDetail", TaskId="T-wait")
    assert (detail.Status, detail.BeginProcessTime) == ("WAITING", "0000-00-00T00:00:00Z")


async def test_a_task_submitted_with_a_schedule_is_a_live_schedule_task(
    aiohttp_server: ServerFactory,
) -> None:
    mps = await emulated(aiohttp_server)
    task_id = await start(mps, ScheduleId=7)
    detail = await mps.call("DescribeTaskDetail", TaskId=task_id)
    assert detail.TaskType == "LiveScheduleTask"
    assert detail.LiveStreamProcessTask is None
    assert detail.LiveScheduleTask.TaskId == task_id


async def test_describe_task_detail_errors(aiohttp_server: ServerFactory) -> None:
    mps = await emulated(aiohttp_server)
    assert await mps.code("DescribeTaskDetail", TaskId="no-such-task") == "InvalidParameterValue.TaskId"
    assert await mps.code("DescribeTaskDetail") == "MissingParameter"


async def test_describe_tasks_pages_with_a_scroll_token_newest_first_at_most_100(
    aiohttp_server: ServerFactory,
) -> None:
    mps = await emulated(aiohttp_server, scenario={"duration": 60.0, "rate": 0.1})
    started = [await start(mps, SessionContext=str(i)) for i in range(7)]
    await until_status(mps, started[-1], "PROCESSING")
    seen: list[str] = []
    token = ""
    pages = 0
    while True:
        params: dict[str, Any] = {"Status": "PROCESSING", "Limit": 3}
        if token:
            params["ScrollToken"] = token
        page = await mps.call("DescribeTasks", **params)
        pages += 1
        assert page.TotalCount == 7
        assert len(page.TaskSet) <= 3
        assert {t.TaskType for t in page.TaskSet} == {"LiveProcessTask"}
        assert all(t.FinishTime == "0000-00-00T00:00:00Z" for t in page.TaskSet)
        assert all(t.SubTaskTypes == ["AiContentReview"] for t in page.TaskSet)
        seen += [t.TaskId for t in page.TaskSet]
        token = page.ScrollToken
        if not token:
            break
    assert pages == 3
    assert seen == list(reversed(started))
    finished = await mps.call("DescribeTasks", Status="FINISH")
    assert (finished.TaskSet, finished.ScrollToken, finished.TotalCount) == ([], "", 0)
    assert await mps.code("DescribeTasks", Status="PROCESSING", Limit=101) == "InvalidParameterValue.Limit"
    assert await mps.code("DescribeTasks", Status="PROCESSING", Limit=0) == "InvalidParameterValue.Limit"
    assert await mps.code("DescribeTasks", Status="RUNNING") == "InvalidParameterValue"
    assert await mps.code("DescribeTasks", Limit=10) == "MissingParameter"
    assert await mps.code("DescribeTasks", Status="PROCESSING", StartTime="yesterday") == (
        "InvalidParameter.StartTime"
    )
    assert (
        await mps.code("DescribeTasks", Status="PROCESSING", ScrollToken="made-up") == "InvalidParameterValue"
    )


async def test_describe_tasks_lists_the_tasks_created_between_start_and_end(
    aiohttp_server: ServerFactory,
) -> None:
    mps = await emulated(aiohttp_server, scenario={"duration": 60.0, "rate": 0.1})
    task_id = await start(mps)
    await until_status(mps, task_id, "PROCESSING")
    future = await mps.call("DescribeTasks", Status="PROCESSING", StartTime=book.iso(time.time() + 3600))
    assert future.TotalCount == 0
    window = await mps.call(
        "DescribeTasks",
        Status="PROCESSING",
        StartTime=book.iso(time.time() - 3600),
        EndTime=book.iso(time.time() + 5),
    )
    assert [t.TaskId for t in window.TaskSet] == [task_id]


async def test_more_than_20_manage_task_requests_a_second_are_limited(aiohttp_server: ServerFactory) -> None:
    mps = await emulated(aiohttp_server)
    codes = await asyncio.gather(
        *(mps.code("ManageTask", OperationType="Abort", TaskId=f"T{i}") for i in range(30))
    )
    assert codes.count("RequestLimitExceeded") >= 10  # the rest: no such task
    assert set(codes) == {"RequestLimitExceeded", "InvalidParameterValue.TaskId"}


async def test_an_abort_ends_the_task_with_a_process_eof_or_without_one(
    aiohttp_server: ServerFactory,
) -> None:
    for with_eof in (True, False):
        mps = await emulated(
            aiohttp_server,
            scenario={"duration": 60.0, "rate": 1.0, "abort_eof": with_eof, "abort_err_code": 0},
        )
        sent: list[dict[str, Any]] = []

        async def capture(notify: dict[str, Any], body: bytes, sent: list[dict[str, Any]] = sent) -> None:
            sent.append(orjson.loads(body))

        mps.server.app[EMULATOR].notifier.send = capture  # type: ignore[method-assign]
        response = await mps.call(
            "ProcessLiveStream", Url="rtmp://x/y", AiContentReviewTask={"Definition": 10},
            TaskNotifyConfig={"NotifyType": "URL", "NotifyUrl": "http://127.0.0.1:9/hook"},
        )  # fmt: skip
        task_id = str(response.TaskId)
        await until_status(mps, task_id, "PROCESSING", ask=False)
        assert (await mps.call("ManageTask", OperationType="Abort", TaskId=task_id)).RequestId
        done = await until_status(mps, task_id, "FINISH")
        assert done.LiveStreamProcessTask.Message == "Task aborted by ManageTask"
        # The player sends its ProcessEof (or none) right after it ended the task, then it is done.
        emulator = mps.server.app[EMULATOR]

        def ended(emulator: Any = emulator) -> bool:
            return not emulator.players

        await eventually(ended, within=10)
        eofs = [n for n in sent if n["NotificationType"] == "ProcessEof"]
        assert len(eofs) == (1 if with_eof else 0)
        assert await mps.code("ManageTask", OperationType="Abort", TaskId=task_id) == (
            "InvalidParameterValue.NotProcessingTask"
        )


async def test_manage_task_errors(aiohttp_server: ServerFactory) -> None:
    mps = await emulated(aiohttp_server)
    task_id = await start(mps)
    assert await mps.code("ManageTask", OperationType="Pause", TaskId=task_id) == (
        "InvalidParameterValue.InvalidOperationType"
    )
    assert await mps.code("ManageTask", TaskId=task_id) == "MissingParameter"
    assert (
        await mps.code("ManageTask", OperationType="Abort", TaskId="nope") == "InvalidParameterValue.TaskId"
    )


async def test_a_lost_process_eof_is_never_sent_yet_the_task_finishes(aiohttp_server: ServerFactory) -> None:
    mps = await emulated(
        aiohttp_server,
        scenarios={"lost": {"duration": 0.5, "rate": 4.0, "lose_eof": True, "late": 1}},
    )
    sent: list[dict[str, Any]] = []

    async def capture(notify: dict[str, Any], body: bytes) -> None:
        sent.append(orjson.loads(body))

    mps.server.app[EMULATOR].notifier.send = capture  # type: ignore[method-assign]
    response = await mps.call(
        "ProcessLiveStream", Url="rtmp://x/y?emulator_scenario=lost", AiContentReviewTask={"Definition": 10},
        TaskNotifyConfig={"NotifyType": "URL", "NotifyUrl": "http://127.0.0.1:9/hook"},
    )  # fmt: skip
    done = await until_status(mps, str(response.TaskId), "FINISH")
    assert done.LiveStreamProcessTask.ErrCode == 0
    # The late notification goes after the (lost) end; then the player is done: all was sent.
    await eventually(lambda: not mps.server.app[EMULATOR].players, within=10)
    kinds = [n["NotificationType"] for n in sent]
    assert "ProcessEof" not in kinds
    assert len(kinds) == 3  # two results, one late
    assert (
        await mps.code("ProcessLiveStream", Url="rtmp://x/y?emulator_scenario=nope", TaskNotifyConfig=SILENT)
        == "InvalidParameter"
    )


async def test_a_task_api_request_may_come_again_within_its_signature_as_a_poll_does(
    aiohttp_server: ServerFactory,
) -> None:
    mps = await emulated(aiohttp_server)
    task_id = await start(mps)
    for _ in range(3):  # the same body within the same second: the same signature each time
        assert (await mps.call("DescribeTaskDetail", TaskId=task_id)).TaskType == "LiveStreamProcessTask"
    assert len(mps.server.app[EMULATOR].signatures) == 1  # only the ProcessLiveStream is remembered


async def test_unknown_parameters_are_refused_by_name(aiohttp_server: ServerFactory) -> None:
    mps = await emulated(aiohttp_server)

    with pytest.raises(TencentCloudSDKException) as caught:  # past the SDK's request model, which drops it
        await asyncio.to_thread(mps.client.call, "DescribeTaskDetail", {"TaskId": "x", "Extra": 1})
    assert caught.value.get_code() == "UnknownParameter"


@pytest.mark.parametrize(
    ("policy", "waits"),
    [
        (CallbackRetry(policy="none"), []),
        (CallbackRetry(policy="fixed", attempts=4, interval=2.0), [2.0, 2.0, 2.0]),
        (CallbackRetry(policy="backoff", attempts=4, interval=0.5), [0.5, 1.0, 2.0]),
    ],
)
def test_the_callback_retry_policy_is_a_named_choice(policy: CallbackRetry, waits: list[float]) -> None:
    assert policy.waits() == waits


async def test_under_no_retry_a_notification_not_taken_is_dropped_after_one_attempt(
    aiohttp_server: ServerFactory,
) -> None:
    from aiohttp import web

    seen: list[bytes] = []

    async def hook(request: web.Request) -> web.Response:
        seen.append(await request.read())
        return web.Response(status=503)

    app = web.Application()
    app.router.add_post("/hook", hook)
    target = await aiohttp_server(app)
    notifier = Notifier(None, CallbackRetry(policy="none"))
    try:
        await notifier.send({"NotifyType": "URL", "NotifyUrl": str(target.make_url("/hook"))}, b"{}")
    finally:
        await notifier.aclose()
    assert (len(seen), notifier.sent, notifier.failed) == (1, 0, 1)
