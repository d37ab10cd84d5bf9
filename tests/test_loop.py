"""The whole loop on one machine: submit through the SDK to the emulator, which notifies the receiver."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aio_pika
import pytest

from receiver.emulator.api import EMULATOR
from tests.amqp_broker import AMQP_URL
from tests.apps import ClientFactory, ServerFactory
from tests.emulated import (
    KEY,
    SCENARIO,
    URL_REQUEST,
    check_every_notification_arrived,
    emulator,
    receiver,
    request,
    submit,
    until_ended,
)
from tests.payloads import body as body_of
from tests.payloads import signed


async def test_url_notifications_loop_from_submit_to_finished(
    aiohttp_client: ClientFactory, aiohttp_server: ServerFactory, tmp_path: Any
) -> None:
    mps = await emulator(aiohttp_server)
    client = await receiver(aiohttp_client, tmp_path, mps)
    hook = str(client.make_url("/v1/notifications"))
    task = await submit(client, request({"NotifyType": "URL", "NotifyUrl": hook}))
    assert task["task_id"]
    assert task["request_id"]
    assert task["labels"] == {"room": "loop"}
    ended = await until_ended(client, task["task_id"])
    assert (ended["state"], ended["err_code"]) == ("finished", 0)
    await check_every_notification_arrived(client, ended)


async def test_a_failing_process_eof_fails_the_task_with_its_code(
    aiohttp_client: ClientFactory, aiohttp_server: ServerFactory, tmp_path: Any
) -> None:
    failing = {**SCENARIO, "eof_err_code": 4002, "eof_message": "data timeout"}
    mps = await emulator(aiohttp_server, scenario=failing)
    client = await receiver(aiohttp_client, tmp_path, mps)
    hook = str(client.make_url("/v1/notifications"))
    task = await submit(client, request({"NotifyType": "URL", "NotifyUrl": hook}))
    ended = await until_ended(client, task["task_id"])
    assert (ended["state"], ended["err_code"], ended["err_message"]) == ("failed", 4002, "data timeout")


async def test_a_notification_that_beats_the_submit_response_is_still_matched(
    aiohttp_client: ClientFactory, aiohttp_server: ServerFactory, tmp_path: Any
) -> None:
    mps = await emulator(aiohttp_server, response_delay=1.0)
    client = await receiver(aiohttp_client, tmp_path, mps)
    hook = str(client.make_url("/v1/notifications"))
    task = await submit(client, request({"NotifyType": "URL", "NotifyUrl": hook}))
    # By the time the call returned, the stream had been notifying for a second: the record was
    # already running, matched by the SessionContext receiver generated.
    assert task["state"] in ("running", "finished")
    assert task["first_event_at"] is not None
    ended = await until_ended(client, task["task_id"])
    await check_every_notification_arrived(client, ended)


@pytest.fixture
async def queue() -> AsyncIterator[str]:
    name = f"test.loop.{uuid.uuid4().hex[:8]}"
    yield name
    async with await aio_pika.connect(AMQP_URL) as connection:
        channel = await connection.channel()
        for q in (name, f"{name}.dead"):
            await channel.queue_delete(q)
        await channel.exchange_delete(f"{name}.dlx")


@pytest.mark.amqp
async def test_queue_notifications_loop_from_submit_to_finished(
    aiohttp_client: ClientFactory, aiohttp_server: ServerFactory, tmp_path: Any, queue: str
) -> None:
    mps = await emulator(aiohttp_server, amqp_url=AMQP_URL)
    client = await receiver(aiohttp_client, tmp_path, mps, amqp={"url": AMQP_URL, "queue": queue})
    notify = {"NotifyType": "TDMQ-CMQ", "CmqModel": "Queue", "CmqRegion": "gz", "QueueName": queue}
    task = await submit(client, request(notify))
    ended = await until_ended(client, task["task_id"])
    assert ended["state"] == "finished"
    await check_every_notification_arrived(client, ended)


@pytest.mark.parametrize(
    ("body", "status", "field_or_code"),
    [
        (request({"NotifyType": "URL"}), 400, "TaskNotifyConfig.NotifyUrl"),
        ({**URL_REQUEST, "Url": "ftp://x/y"}, 400, "Url"),
        ({**URL_REQUEST, "SessionId": "s" * 51}, 400, "SessionId"),
        ({**URL_REQUEST, "AiRecognitionTask": {"Definition": 0}}, 400, "AiRecognitionTask.Definition"),
        (request({"NotifyType": "TDMQ-CMQ", "CmqModel": "Topic"}), 400, "TaskNotifyConfig.TopicName"),
        ({**URL_REQUEST, "AiContentReviewTask": {}}, 400, "AiContentReviewTask.Definition"),
        ({**URL_REQUEST, "AiAnalysisTask": {}}, 400, "AiAnalysisTask.Definition"),
        # Each extension string on its own task type only (the SDK would drop a misplaced one).
        ({**URL_REQUEST, "AiQualityControlTask": {"UserExtPara": "x"}}, 400,
         "AiQualityControlTask.UserExtPara"),
        ({**URL_REQUEST, "AiRecognitionTask": {"Definition": 1, "ExtendedParameter": "{}"}}, 400,
         "AiRecognitionTask.ExtendedParameter"),
        ({**URL_REQUEST, "AiAnalysisTask": {"Definition": 1, "ChannelExtPara": "x"}}, 400,
         "AiAnalysisTask.ChannelExtPara"),
        ({**URL_REQUEST, "SmartSubtitlesTask": {"ExtendedParameter": "x"}}, 400,
         "SmartSubtitlesTask.ExtendedParameter"),
        ({**URL_REQUEST, "ResourceId": 5}, 400, "ResourceId"),
    ],
)  # fmt: skip
async def test_bad_submissions_are_refused_before_anything_is_sent(
    aiohttp_client: ClientFactory, aiohttp_server: ServerFactory, tmp_path: Any,
    body: dict[str, Any], status: int, field_or_code: str,
) -> None:  # fmt: skip
    mps = await emulator(aiohttp_server)
    client = await receiver(aiohttp_client, tmp_path, mps)
    resp = await client.post("/v1/tasks/submit", json=body)
    assert resp.status == status
    assert (await resp.json())["error"]["field"] == field_or_code
    assert (await (await client.get("/v1/tasks")).json())["items"] == []  # nothing recorded, nothing sent


async def test_submit_takes_the_parameters_as_mps_defines_them(
    aiohttp_client: ClientFactory, aiohttp_server: ServerFactory, tmp_path: Any
) -> None:
    mps = await emulator(aiohttp_server)
    client = await receiver(aiohttp_client, tmp_path, mps)
    body = {
        **URL_REQUEST,
        "ResourceId": "res-1",
        "AiQualityControlTask": {"ChannelExtPara": "x"},  # no Definition: optional here
        "SmartSubtitlesTask": {"UserExtPara": "y"},  # nor here
        "AiRecognitionTask": {"Definition": 3, "UserExtPara": "z"},
        "AiAnalysisTask": {"Definition": 4, "ExtendedParameter": "{}"},
    }
    task = await submit(client, body)
    emulated = mps.app[EMULATOR].tasks.get(task["task_id"])
    assert emulated is not None
    sent = emulated.params
    assert sent["ResourceId"] == "res-1"
    assert sent["AiQualityControlTask"] == {"ChannelExtPara": "x"}
    assert sent["SmartSubtitlesTask"] == {"UserExtPara": "y"}
    assert sent["AiRecognitionTask"] == {"Definition": 3, "UserExtPara": "z"}
    assert sent["AiAnalysisTask"] == {"Definition": 4, "ExtendedParameter": "{}"}


async def test_mps_errors_become_clear_api_errors_and_leave_a_visible_record(
    aiohttp_client: ClientFactory, aiohttp_server: ServerFactory, tmp_path: Any
) -> None:
    mps = await emulator(aiohttp_server)
    client = await receiver(aiohttp_client, tmp_path, mps)
    silent = request({"NotifyType": "URL", "NotifyUrl": "http://127.0.0.1:9/x"}, SessionId="dup")
    assert (await client.post("/v1/tasks/submit", json=silent)).status == 201
    again = await client.post("/v1/tasks/submit", json=silent)
    assert again.status == 409
    assert (await again.json())["error"]["mps_code"] == "InvalidParameterValue.SessionId"

    wrong = await receiver(aiohttp_client, tmp_path / "w", mps, mps={"endpoint": f"127.0.0.1:{mps.port}",
                           "protocol": "http", "secret_id": "AKIDloop", "secret_key": "not-it"})  # fmt: skip
    denied = await wrong.post(
        "/v1/tasks/submit", json=request({"NotifyType": "URL", "NotifyUrl": "http://h/x"})
    )
    assert denied.status == 502
    assert (await denied.json())["error"]["mps_code"] == "AuthFailure.SignatureFailure"
    [record] = (await (await wrong.get("/v1/tasks")).json())["items"]
    assert record["state"] == "failed"
    assert "AuthFailure.SignatureFailure" in record["err_message"]


async def test_with_a_master_key_each_task_gets_its_own_key_and_a_static_pair_cannot_forge_for_it(
    aiohttp_client: ClientFactory, aiohttp_server: ServerFactory, tmp_path: Any
) -> None:
    mps = await emulator(aiohttp_server)
    client = await receiver(
        aiohttp_client, tmp_path, mps, verify={"notify_keys": [KEY], "master_keys": ["loop-master"]}
    )
    hook = str(client.make_url("/v1/notifications"))
    given_key = await client.post("/v1/tasks/submit", json=request({"NotifyType": "URL", "NotifyUrl": hook}))
    assert given_key.status == 400  # the task's key is receiver's to derive
    assert (await given_key.json())["error"]["field"] == "TaskNotifyConfig.NotifyKey"
    body = request({"NotifyType": "URL", "NotifyUrl": hook})
    del body["TaskNotifyConfig"]["NotifyKey"]
    task = await submit(client, body)
    assert "NotifyKey" not in str(task)
    assert "loop-master" not in str(task)
    ended = await until_ended(client, task["task_id"])
    assert (ended["state"], ended["err_code"]) == ("finished", 0)
    await check_every_notification_arrived(client, ended)
    stored = (await (await client.get(f"/v1/tasks/{task['task_id']}/events")).json())["items"]
    assert {e["sign_key"] for e in stored} == {"derived:0"}
    assert all("Sign" not in e["payload"] and "Timestamp" not in e["payload"] for e in stored)
    # A pair valid for the static key, with this task's context: refused.
    eof = {
        "NotificationType": "ProcessEof",
        "TaskId": task["task_id"],
        "SessionContext": task["session_context"],
        "ProcessEofInfo": {"ErrCode": 1, "Message": "forged"},
    }
    forged = signed(eof, key=KEY, timestamp=int(time.time()) + 300)  # fmt: skip
    assert (await client.post("/v1/notifications", data=body_of(forged))).status == 401
    # Without the context it is no longer this task's: kept as an orphan, the task untouched.
    del forged["SessionContext"]
    forged = signed(forged, key=KEY, timestamp=int(time.time()) + 300)
    assert (await client.post("/v1/notifications", data=body_of(forged))).status == 200
    after = await (await client.get(f"/v1/tasks/{task['task_id']}")).json()
    assert (after["state"], after["err_code"], after["late_count"]) == ("finished", 0, ended["late_count"])
    orphans = (await (await client.get("/v1/events", params={"orphan": "true"})).json())["items"]
    assert [o["err_message"] for o in orphans] == ["forged"]
