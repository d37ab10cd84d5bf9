"""The whole loop in process: the MPS emulator, a receiver whose MPS is that emulator, a submit
request, and waiting for the task to end with every notification stored."""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp.test_utils import TestClient, TestServer

from receiver import events
from receiver.app import create_app
from receiver.emulator import EmulatorSettings, create_emulator
from receiver.emulator.scenario import Scenario, plan
from receiver.settings import Settings
from tests.apps import ClientFactory, ServerFactory

KEY = "loop-notify-key"
SCENARIO = {"duration": 2.0, "rate": 8.0, "seed": 5, "duplicates": 0.2, "reorder": 0.2, "late": 1}


async def emulator(aiohttp_server: ServerFactory, **settings: Any) -> TestServer:
    merged = {
        "secret_id": "AKIDloop",
        "secret_key": "loop-secret",
        "speed": 4.0,
        "scenario": SCENARIO,
        **settings,
    }
    return await aiohttp_server(create_emulator(EmulatorSettings.model_validate(merged)))


async def receiver(
    aiohttp_client: ClientFactory, tmp_path: Any, emulated: TestServer, **extra: Any
) -> TestClient[Any, Any]:
    settings = Settings.model_validate(
        {
            "store": {"url": f"sqlite:///{tmp_path}/loop.db"},
            "verify": {"notify_keys": [KEY]},
            "mps": {"endpoint": f"127.0.0.1:{emulated.port}", "protocol": "http", "secret_id": "AKIDloop",
                    "secret_key": "loop-secret"},
            **extra,
        }
    )  # fmt: skip
    return await aiohttp_client(create_app(settings))


def request(notify: dict[str, Any], **more: Any) -> dict[str, Any]:
    return {
        "Url": "rtmp://live.example.com/app/loop",
        "TaskNotifyConfig": {**notify, "NotifyKey": KEY},
        "AiContentReviewTask": {"Definition": 10},
        "AiQualityControlTask": {"Definition": 10},
        "Labels": {"room": "loop"},
        **more,
    }


URL_REQUEST = request({"NotifyType": "URL", "NotifyUrl": "http://h/x"})


async def until_ended(client: TestClient[Any, Any], task_id: str, within: float = 30) -> dict[str, Any]:
    deadline = asyncio.get_running_loop().time() + within
    while True:
        task = await (await client.get(f"/v1/tasks/{task_id}")).json()
        if task["state"] in ("finished", "failed") and task["late_count"] >= SCENARIO["late"]:
            return dict(task)
        assert asyncio.get_running_loop().time() < deadline, task
        await asyncio.sleep(0.05)


async def check_every_notification_arrived(client: TestClient[Any, Any], task: dict[str, Any]) -> None:
    mps_request = {
        "AiContentReviewTask": 1,
        "AiQualityControlTask": 1,
        "SessionContext": task["session_context"],
    }
    expected = {events.event_id(n) for _, n in plan(task["task_id"], mps_request, Scenario(**SCENARIO))}
    stored = (
        await (await client.get(f"/v1/tasks/{task['task_id']}/events", params={"limit": "1000"})).json()
    )["items"]
    assert {e["event_id"] for e in stored} == expected
    assert {e["matched_by"] for e in stored} == {"session_context"}
    assert task["session_context"].startswith("receiver:")


async def submit(client: TestClient[Any, Any], body: dict[str, Any]) -> dict[str, Any]:
    resp = await client.post("/v1/tasks/submit", json=body)
    assert resp.status == 201, await resp.text()
    return dict(await resp.json())
