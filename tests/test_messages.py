"""What a user reads: API validation messages in the case they must be typed in, no model class names,
and start-up and submit warnings for settings that silently turn something off."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from receiver.app import create_app
from receiver.settings import Settings
from tests.apps import ClientFactory, ServerFactory
from tests.emulated import KEY, URL_REQUEST, emulator, receiver, request

MODEL_NAMES = ("NotifyConfig", "TemplateTask", "SubmitRequest", "TaskRegistration", "Strict", "WireModel")


def class_names_in(text: str) -> list[str]:
    return [name for name in MODEL_NAMES if re.search(rf"\b{name}\b", text)]


def _without(body: dict[str, Any], key: str) -> dict[str, Any]:
    return {k: v for k, v in body.items() if k != key}


@pytest.mark.parametrize(
    ("body", "field", "expected"),
    [
        (request({"NotifyType": "url", "NotifyUrl": "http://h/x"}), "TaskNotifyConfig.NotifyType",
         "'URL', 'TDMQ-CMQ' or 'CMQ'"),
        ({**URL_REQUEST, "TaskNotifyConfig": "abc"}, "TaskNotifyConfig", "an object"),
        ({**URL_REQUEST, "AiContentReviewTask": 5}, "AiContentReviewTask", "an object"),
        (request({"NotifyType": "URL", "NotifyUrl": "ftp://h/x"}), "TaskNotifyConfig.NotifyUrl",
         "NotifyUrl: an http(s) URL is required when NotifyType is URL"),
        ({**URL_REQUEST, "Url": "file:///etc/passwd"}, "Url",
         "a live stream URL (rtmp, rtmps, http, https, srt, trtc, webrtc)"),
        ({**URL_REQUEST, "Labels": {"room": 5}}, "Labels.room", "a string"),
        (_without(URL_REQUEST, "Url"), "Url", "a value (the member is required)"),
    ],
)  # fmt: skip
async def test_submit_validation_keeps_the_case_and_names_no_model_class(
    aiohttp_client: ClientFactory,
    aiohttp_server: ServerFactory,
    tmp_path: Path,
    body: dict[str, Any],
    field: str,
    expected: str,
) -> None:
    client = await receiver(aiohttp_client, tmp_path, await emulator(aiohttp_server))
    resp = await client.post("/v1/tasks/submit", json=body)
    assert resp.status == 400
    error = (await resp.json())["error"]
    assert (error["field"], error["expected"]) == (field, expected)
    assert error["message"] == f"{field}: expected {expected}"
    assert class_names_in(await resp.text()) == []


@pytest.mark.parametrize(
    ("body", "field", "expected"),
    [
        ({"task_id": 5}, "task_id", "a string"),
        ({"task_id": "t", "labels": "room=5"}, "labels", "an object"),
        ({"task_id": "t", "Labels": {}}, "Labels", "a known member name (this one is not)"),
        ({"task_id": "t", "session_id": "x" * 51}, "session_id", "a string of at most 50 characters"),
    ],
)
async def test_task_registration_messages_read_as_pydantic_wrote_them(
    aiohttp_client: ClientFactory, tmp_path: Path, body: dict[str, Any], field: str, expected: str
) -> None:
    settings = Settings.model_validate({"store": {"url": f"sqlite:///{tmp_path}/r.db"}})
    client = await aiohttp_client(create_app(settings))
    resp = await client.post("/v1/tasks", json=body)
    assert resp.status == 400
    error = (await resp.json())["error"]
    assert (error["field"], error["expected"]) == (field, expected)
    assert class_names_in(await resp.text()) == []


async def test_start_up_says_submitting_is_off_without_mps_credentials(
    aiohttp_client: ClientFactory, tmp_path: Path
) -> None:
    settings = Settings.model_validate({"store": {"url": f"sqlite:///{tmp_path}/r.db"}})
    with capture_logs() as logs:
        client = await aiohttp_client(create_app(settings))
    [warning] = [e for e in logs if e["event"].startswith("submitting is off")]
    assert warning["log_level"] == "warning"
    assert "RECEIVER_MPS__SECRET_ID" in warning["reason"]
    assert "mps.credentials_file" in warning["reason"]
    assert (await client.post("/v1/tasks/submit", json=URL_REQUEST)).status == 503


async def test_a_submitted_notify_key_receiver_does_not_hold_is_warned_about(
    aiohttp_client: ClientFactory, aiohttp_server: ServerFactory, tmp_path: Path
) -> None:
    client = await receiver(aiohttp_client, tmp_path, await emulator(aiohttp_server))
    foreign = request({"NotifyType": "URL", "NotifyUrl": "http://127.0.0.1:9/x"})
    foreign["TaskNotifyConfig"]["NotifyKey"] = "a-key-receiver-does-not-have"
    unsigned = request({"NotifyType": "URL", "NotifyUrl": "http://127.0.0.1:9/x"})
    del unsigned["TaskNotifyConfig"]["NotifyKey"]
    held = request({"NotifyType": "URL", "NotifyUrl": "http://127.0.0.1:9/x"})
    assert held["TaskNotifyConfig"]["NotifyKey"] == KEY
    for body, warned in ((foreign, True), (unsigned, True), (held, False)):
        with capture_logs() as logs:
            assert (await client.post("/v1/tasks/submit", json=body)).status == 201
        warnings = [e for e in logs if "not among verify.notify_keys" in e["event"]]
        assert len(warnings) == (1 if warned else 0), logs
        assert "a-key-receiver-does-not-have" not in repr(logs)  # a key is never logged
