"""The official Tencent Cloud SDK against the emulator: success, and every error it must produce."""

from __future__ import annotations

import asyncio
import time
import types
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import msgspec
import pytest
from aiohttp.test_utils import TestServer
from tencentcloud.common.exception.tencent_cloud_sdk_exception import TencentCloudSDKException
from tencentcloud.mps.v20190612 import models

from receiver import wire
from receiver.emulator import EmulatorSettings, create_emulator
from receiver.emulator.scenario import Scenario, kinds_requested, plan
from tests.apps import ServerFactory
from tests.sdk import SILENT, client, error_code, process


@pytest.fixture
async def emulator(aiohttp_server: ServerFactory) -> TestServer:
    return await aiohttp_server(create_emulator(EmulatorSettings(secret_id="AKIDtest", secret_key="s3cret")))


async def test_process_live_stream_succeeds_with_a_task_id_and_request_id(emulator: TestServer) -> None:
    c = client(emulator)
    resp = await asyncio.to_thread(
        process, c, Url="rtmp://live.example.com/app/stream", TaskNotifyConfig=SILENT,
        AiContentReviewTask={"Definition": 10}, SessionId="s-1", SessionContext="ctx",
    )  # fmt: skip
    assert resp.TaskId.startswith("1300000000-procedure-live-")
    assert resp.RequestId


async def test_signature_errors(emulator: TestServer, monkeypatch: pytest.MonkeyPatch) -> None:
    bad_key = client(emulator, secret_key="wrong")
    call = lambda: process(bad_key, Url="rtmp://x/y", TaskNotifyConfig=SILENT)  # noqa: E731
    assert await error_code(call) == "AuthFailure.SignatureFailure"

    import tencentcloud.common.abstract_client as abstract_client

    # The SDK's clock only (the emulator shares this process): ten minutes slow.
    slow_clock = types.SimpleNamespace(time=lambda: time.time() - 600, sleep=time.sleep)
    monkeypatch.setattr(abstract_client, "time", slow_clock)
    good = client(emulator)
    assert await error_code(lambda: process(good, Url="rtmp://x/y", TaskNotifyConfig=SILENT)) == (
        "AuthFailure.SignatureExpire"
    )


async def test_unknown_actions_are_invalid_action(emulator: TestServer) -> None:
    c = client(emulator)
    call = lambda: c.DescribeTranscodeTemplates(models.DescribeTranscodeTemplatesRequest())  # noqa: E731
    assert await error_code(call) == "InvalidAction"


@pytest.mark.parametrize(
    ("params", "code"),
    [
        ({"TaskNotifyConfig": SILENT}, "MissingParameter"),
        ({"Url": "rtmp://x/y"}, "MissingParameter"),
        ({"Url": "ftp://x/y", "TaskNotifyConfig": SILENT}, "InvalidParameter"),
        ({"Url": "rtmp://x/y", "TaskNotifyConfig": {"NotifyType": "URL"}}, "InvalidParameter"),
        ({"Url": "rtmp://x/y", "TaskNotifyConfig": {"NotifyType": "TDMQ-CMQ", "CmqModel": "Queue"}},
         "InvalidParameter"),
        ({"Url": "rtmp://x/y", "TaskNotifyConfig": SILENT, "AiRecognitionTask": {"Definition": 0}},
         "InvalidParameterValue.Definition"),
    ],
)  # fmt: skip
async def test_invalid_requests_get_the_mps_error_code(
    emulator: TestServer, params: dict[str, Any], code: str
) -> None:
    c = client(emulator)
    assert await error_code(lambda: process(c, **params)) == code


async def test_a_session_id_cannot_be_reused_within_seven_days(emulator: TestServer) -> None:
    c = client(emulator)
    await asyncio.to_thread(process, c, Url="rtmp://x/y", TaskNotifyConfig=SILENT, SessionId="once")
    # Another body (the same one within the second would be the same signature: a replay).
    again = lambda: process(c, Url="rtmp://x/z", TaskNotifyConfig=SILENT, SessionId="once")  # noqa: E731
    assert await error_code(again) == "InvalidParameterValue.SessionId"


async def test_more_than_100_requests_a_second_are_limited(emulator: TestServer) -> None:
    c = client(emulator)

    def one(i: int) -> str:
        try:
            process(c, Url="rtmp://x/y", TaskNotifyConfig=SILENT, SessionContext=str(i))
        except TencentCloudSDKException as exc:
            return str(exc.get_code())
        return "ok"

    with ThreadPoolExecutor(16) as pool:
        codes = await asyncio.to_thread(lambda: list(pool.map(one, range(160))))
    assert "RequestLimitExceeded" in codes
    assert codes.count("ok") >= 100


def test_scenarios_are_deterministic_for_a_seed_and_carry_what_was_asked() -> None:
    request = {"AiContentReviewTask": {"Definition": 10}, "AiQualityControlTask": {"Definition": 10},
               "OutputStorage": {"Type": "COS"}, "SessionContext": "ctx"}  # fmt: skip
    scenario = Scenario(duration=5, rate=10, seed=3, duplicates=0.2, reorder=0.2, late=2, eof_err_code=4002)
    first = plan("T", request, scenario)
    assert first == plan("T", request, scenario)
    assert first != plan("T", request, scenario.model_copy(update={"seed": 4}))
    kinds = [n["NotificationType"] for _, n in first]
    assert set(kinds) == {"AiReviewResult", "AiQualityControlResult", "LiveRecordResult", "ProcessEof"}
    assert kinds[-3] == "ProcessEof"
    assert kinds.count("ProcessEof") == 1
    assert first[-3][1]["ProcessEofInfo"] == {"ErrCode": 4002, "Message": "Success"}
    assert len(kinds) > 50 + 2  # duplicates were added
    assert all(n["SessionContext"] == "ctx" for _, n in first)
    assert kinds_requested({"SmartSubtitlesTask": {"Definition": 1}}) == ["AiSmartSubtitleResult"]
    for _, n in first:
        msgspec.convert(n, wire.Notification)


async def test_url_notifications_are_retried_with_backoff_until_taken(
    aiohttp_server: ServerFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    from aiohttp import web

    from receiver.emulator import notify

    answers = [503, 500, 200]
    seen: list[bytes] = []

    async def hook(request: web.Request) -> web.Response:
        seen.append(await request.read())
        return web.Response(status=answers[len(seen) - 1])

    app = web.Application()
    app.router.add_post("/hook", hook)
    target = await aiohttp_server(app)
    monkeypatch.setattr(notify, "HTTP_BACKOFF", 0.01)
    notifier = notify.Notifier(None)
    try:
        await notifier.send({"NotifyType": "URL", "NotifyUrl": str(target.make_url("/hook"))}, b'{"n": 1}')
    finally:
        await notifier.aclose()
    assert seen == [b'{"n": 1}'] * 3
    assert (notifier.sent, notifier.failed) == (1, 0)
