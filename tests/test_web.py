"""The HTTP API end to end on a real SQLite file: webhook, status codes, management API, probes."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp.test_utils import TestClient
from structlog.testing import capture_logs

from receiver.app import create_app
from receiver.events import expected_sign
from receiver.logs import merge_bound
from receiver.settings import IngestSettings, Settings
from receiver.stores.sqlite import SqliteStore
from tests.apps import ClientFactory
from tests.payloads import (
    EOF_DOC,
    FROZEN_NOW,
    NOTIFICATION_FILES,
    NOTIFY_KEY,
    REVIEW,
    body,
    example,
    example_bytes,
    signed,
)

TOKEN = "s3cret-api-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
_SIGNED_TS = int(FROZEN_NOW) + 600
SIGNATURE = f', "Timestamp": {_SIGNED_TS}, "Sign": "{expected_sign(_SIGNED_TS, NOTIFY_KEY)}"}}'.encode()


def settings(tmp_path: Path, **verify: Any) -> Settings:
    return Settings.model_validate(
        {
            "store": {"url": f"sqlite:///{tmp_path}/receiver.db", "busy_timeout_ms": 100},
            "verify": {"notify_keys": [NOTIFY_KEY], **verify},
            "api": {"token": TOKEN},
            "http": {"max_body_bytes": 64 * 1024},
        }
    )


@pytest.fixture
async def client(aiohttp_client: ClientFactory, tmp_path: Path, clock: list[float]) -> TestClient[Any, Any]:
    return await aiohttp_client(create_app(settings(tmp_path), clock=lambda: clock[0]))


async def post(client: TestClient[Any, Any], payload: bytes | dict[str, Any]) -> tuple[int, Any]:
    data = payload if isinstance(payload, bytes) else body(payload)
    resp = await client.post("/v1/notifications", data=data)
    return resp.status, await resp.json()


async def get(client: TestClient[Any, Any], path: str, **params: str) -> Any:
    resp = await client.get(path, params=params, headers=AUTH)
    assert resp.status == 200, await resp.text()
    return await resp.json()


# --- the webhook ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", NOTIFICATION_FILES)
async def test_every_example_is_stored_and_answered_code_0(
    client: TestClient[Any, Any], clock: list[float], name: str
) -> None:
    payload = example(name)
    if "Sign" not in payload:
        payload = signed(payload)
    else:  # the examples' Timestamps spread over hours: receive each well inside its own validity
        clock[0] = payload["Timestamp"] - 300
    raw = example_bytes(name) if "Sign" in example(name) else body(payload)
    status, answer = await post(client, raw)
    assert (status, answer) == (200, {"code": 0})
    page = await get(client, "/v1/events")
    [stored] = page["items"]
    assert stored["notification_type"] == payload["NotificationType"]
    assert stored["orphan"] is True
    assert stored["verdict"] == "valid"
    assert stored["payload"]["TaskId"] == payload["TaskId"]


async def test_the_doc_example_in_its_response_wrapper_is_accepted(client: TestClient[Any, Any]) -> None:
    wrapped = orjson.loads(example_bytes("01-AiReviewResult-VoicePorn.doc-verbatim.json"))
    wrapped["Response"] = signed(wrapped["Response"])
    assert await post(client, wrapped) == (200, {"code": 0})


async def test_a_cmq_topic_http_push_envelope_is_accepted(client: TestClient[Any, Any]) -> None:
    envelope = {"topicName": "mps", "msgId": "1", "msgBody": body(signed(REVIEW)).decode()}
    assert await post(client, envelope) == (200, {"code": 0})
    page = await get(client, "/v1/events")
    assert page["items"][0]["payload"]["TaskId"] == REVIEW["TaskId"]


async def test_a_retry_is_answered_200_and_stored_once(client: TestClient[Any, Any]) -> None:
    assert await post(client, signed(REVIEW)) == (200, {"code": 0})
    resigned = signed(REVIEW, timestamp=int(FROZEN_NOW) + 300)
    assert await post(client, resigned) == (200, {"code": 0})
    page = await get(client, "/v1/events")
    assert len(page["items"]) == 1
    assert page["items"][0]["duplicates"] == 1


@pytest.mark.parametrize(
    ("raw", "field", "expected"),
    [
        (b"<xml/>", "body", "a JSON object"),
        (b"", "body", "a JSON object"),
        (b"[]", "body", "a JSON object"),
        (b'{"TaskId": "t"}', "NotificationType", "a value (the member is required)"),
        (b'{"NotificationType": "ProcessEof"}', "TaskId", "a value (the member is required)"),
        (b'{"NotificationType": "ProcessEof", "TaskId": 42}', "TaskId", "a string"),
        (
            b'{"NotificationType": "ProcessEof", "TaskId": "t", "ProcessEofInfo": {"ErrCode": [0]}'
            + SIGNATURE,
            "ProcessEofInfo.ErrCode",
            "an integer",
        ),
        (
            b'{"NotificationType": "ProcessEof", "TaskId": "t",'
            b' "ProcessEofInfo": {"ErrCode": 9223372036854775808}' + SIGNATURE,
            "ProcessEofInfo.ErrCode",
            "an integer <= 9223372036854775807",
        ),
        (
            b'{"NotificationType": "X", "TaskId": "t", "X": ' + b"[" * 300 + b"]" * 300 + SIGNATURE,
            "body",
            "JSON nested at most 64 levels deep",
        ),
    ],
)
async def test_bad_input_is_400_naming_the_field_and_nothing_is_stored(
    client: TestClient[Any, Any], raw: bytes, field: str, expected: str
) -> None:
    status, answer = await post(client, raw)
    assert status == 400
    assert answer["error"]["code"] == "invalid_notification"
    assert answer["error"]["field"] == field
    assert answer["error"]["expected"] == expected
    assert field in answer["error"]["message"]
    assert (await get(client, "/v1/events"))["items"] == []


@pytest.mark.parametrize(("member", "limit"), [("SessionId", 50), ("SessionContext", 1000)])
async def test_session_strings_are_limited_in_characters_not_bytes(
    client: TestClient[Any, Any], member: str, limit: int
) -> None:
    at_limit = signed({**EOF_DOC, member: "界" * limit})  # 3 bytes each in UTF-8: the limit counts characters
    assert await post(client, at_limit) == (200, {"code": 0})
    status, answer = await post(client, signed({**EOF_DOC, member: "界" * (limit + 1)}))
    assert status == 400
    assert answer["error"]["field"] == member
    assert str(limit) in answer["error"]["message"]


async def test_a_body_over_the_limit_is_413(client: TestClient[Any, Any]) -> None:
    huge = signed({**EOF_DOC, "Padding": "x" * (64 * 1024)})
    status, answer = await post(client, huge)
    assert status == 413
    assert answer["error"]["code"] == "body_too_large"
    assert answer["error"]["limit"] == 64 * 1024


@pytest.mark.parametrize(
    ("path", "sent", "status", "outcome"),
    [
        ("accepted", [signed(EOF_DOC)], 200, "stored"),
        ("duplicate", [signed(EOF_DOC), signed(EOF_DOC)], 200, "duplicate"),
        ("bad signature", [signed(EOF_DOC, key="not-our-key")], 401, "unauthorized"),
        ("bad JSON", [b"{ not json"], 400, "invalid"),
        ("too large", [signed({**EOF_DOC, "Padding": "x" * (64 * 1024)})], 413, "too_large"),
    ],
)
async def test_each_webhook_notification_logs_exactly_one_summary_line(
    client: TestClient[Any, Any], path: str, sent: list[Any], status: int, outcome: str
) -> None:
    *before, last = sent
    for payload in before:
        assert (await post(client, payload))[0] == 200
    with capture_logs(processors=[merge_bound]) as logs:
        assert (await post(client, last))[0] == status
    [summary] = [line for line in logs if line["event"] == "notification"]
    assert (summary["channel"], summary["outcome"]) == ("http", outcome)


@pytest.mark.parametrize(
    "make",
    [
        lambda: signed(EOF_DOC, key="not-our-key"),
        lambda: signed(EOF_DOC, timestamp=int(FROZEN_NOW) - 61),  # expired beyond the skew
        lambda: EOF_DOC,  # unsigned under "required"
        lambda: {**signed(EOF_DOC), "Timestamp": int(FROZEN_NOW) + 5000},  # tampered expiry
    ],
)
async def test_bad_or_expired_signatures_are_401_and_nothing_is_stored(
    client: TestClient[Any, Any], make: Callable[[], dict[str, Any]]
) -> None:
    status, answer = await post(client, make())
    assert status == 401
    assert answer["error"]["code"] == "invalid_signature"
    assert NOTIFY_KEY not in orjson.dumps(answer).decode()
    assert (await get(client, "/v1/events"))["items"] == []


async def test_the_sign_is_checked_before_the_body_is_validated(client: TestClient[Any, Any]) -> None:
    # An unsigned (or badly signed) body is refused for its Sign, whatever else is wrong with it:
    # validating what nobody signed is work an attacker could make us do for free.
    bad_member = {**EOF_DOC, "ProcessEofInfo": {"ErrCode": "not a number"}}
    assert (await post(client, bad_member))[0] == 401
    assert (await post(client, signed(bad_member, key="wrong")))[0] == 401
    # Signed, the same body is a 400 naming the member.
    status, answer = await post(client, signed(bad_member))
    assert (status, answer["error"]["field"]) == (400, "ProcessEofInfo.ErrCode")


async def test_a_signed_notification_refused_as_invalid_is_quarantined_without_its_sign_pair(
    client: TestClient[Any, Any],
) -> None:
    bad = signed({**EOF_DOC, "ProcessEofInfo": {"ErrCode": 1.5}})
    status, answer = await post(client, bad)
    assert (status, answer["error"]["field"]) == (400, "ProcessEofInfo.ErrCode")
    [kept] = (await get(client, "/v1/quarantine"))["items"]
    assert (kept["reason"], kept["field"], kept["channel"]) == (
        "invalid_notification",
        "ProcessEofInfo.ErrCode",
        "http",
    )
    assert bad["Sign"] not in kept["body"]
    assert orjson.loads(kept["body"]) == {k: v for k, v in bad.items() if k not in ("Sign", "Timestamp")}
    # What nobody signed is refused and not kept: anyone could fill the quarantine with it.
    assert (await post(client, {**EOF_DOC, "TaskId": 7}))[0] == 400
    assert (await post(client, {**EOF_DOC, "ProcessEofInfo": {"ErrCode": 1.5}}))[0] == 401
    assert len((await get(client, "/v1/quarantine"))["items"]) == 1


async def test_what_is_stored_and_passed_on_carries_no_sign_pair(client: TestClient[Any, Any]) -> None:
    doc = signed(REVIEW)
    assert await post(client, doc) == (200, {"code": 0})
    [stored] = (await get(client, "/v1/events"))["items"]
    assert "Sign" not in stored["payload"]
    assert "Timestamp" not in stored["payload"]
    assert doc["Sign"] not in orjson.dumps(stored).decode()
    assert stored["payload"] == {k: v for k, v in doc.items() if k not in ("Sign", "Timestamp")}
    assert (stored["verdict"], stored["sign_key"]) == ("valid", "static:0")


async def test_a_file_task_notification_is_kept_as_a_generic_event_of_its_event_type(
    client: TestClient[Any, Any],
) -> None:
    # A file (VOD) task pointed at the same callback URL: no NotificationType, the TaskId inside.
    doc = {
        "EventType": "WorkflowTask",
        "WorkflowTaskEvent": {"TaskId": "2600011111-WorkflowTask-abc", "Status": "FINISH", "ErrCode": 0},
        "SessionContext": "",
    }
    assert await post(client, signed(doc)) == (200, {"code": 0})
    [stored] = (await get(client, "/v1/events"))["items"]
    assert (stored["notification_type"], stored["task_id"]) == ("WorkflowTask", "2600011111-WorkflowTask-abc")
    assert stored["payload"]["WorkflowTaskEvent"]["Status"] == "FINISH"
    assert stored["findings"] == []
    # Without the event object its EventType names, the TaskId is missing: a 400 that says where.
    status, answer = await post(client, signed({"EventType": "WorkflowTask"}))
    assert (status, answer["error"]["field"]) == (400, "WorkflowTaskEvent.TaskId")


async def test_file_task_notifications_can_be_taken_and_quarantined_instead(
    aiohttp_client: ClientFactory, tmp_path: Path
) -> None:
    configured = settings(tmp_path).model_copy(
        update={"ingest": IngestSettings(file_task_notifications="quarantine")}
    )
    client = await aiohttp_client(create_app(configured, clock=lambda: FROZEN_NOW))
    doc = signed({"EventType": "EditMediaTask", "EditMediaTaskEvent": {"TaskId": "2600-edit-1"}})
    status, answer = await post(client, doc)
    assert status == 200  # MPS must not retry it: it was taken
    assert answer["code"] == 0
    assert "not a live-stream" in answer["message"]
    assert (await get(client, "/v1/events"))["items"] == []
    [kept] = (await get(client, "/v1/quarantine"))["items"]
    assert kept["reason"] == "not_live"
    assert doc["Sign"] not in kept["body"]
    # Unsigned, it is refused like anything else unsigned, not kept.
    unsigned = {k: v for k, v in doc.items() if k not in ("Sign", "Timestamp")}
    assert (await post(client, unsigned))[0] == 401


async def test_if_present_policy_takes_unsigned_but_not_badly_signed(
    aiohttp_client: ClientFactory, tmp_path: Path
) -> None:
    client = await aiohttp_client(
        create_app(settings(tmp_path, policy="if-present"), clock=lambda: FROZEN_NOW)
    )
    assert await post(client, EOF_DOC) == (200, {"code": 0})
    status, _ = await post(client, signed(REVIEW, key="wrong"))
    assert status == 401
    [stored] = (await get(client, "/v1/events"))["items"]
    assert stored["verdict"] == "unsigned"


async def test_with_no_key_configured_nothing_is_checked(
    aiohttp_client: ClientFactory, tmp_path: Path
) -> None:
    s = settings(tmp_path)
    s.verify.notify_keys = []
    client = await aiohttp_client(create_app(s, clock=lambda: FROZEN_NOW))
    assert await post(client, signed(EOF_DOC, key="anything")) == (200, {"code": 0})
    [stored] = (await get(client, "/v1/events"))["items"]
    assert stored["verdict"] == "skipped"


async def test_store_failure_is_503_never_200_and_a_retry_after_recovery_succeeds(
    client: TestClient[Any, Any], tmp_path: Path
) -> None:
    blocker = sqlite3.connect(tmp_path / "receiver.db", isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")
    try:
        status, answer = await post(client, signed(REVIEW))
        assert status == 503
        assert answer["error"]["code"] == "store_unavailable"
        ready = await client.get("/readyz")
        assert ready.status == 503
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    assert await post(client, signed(REVIEW)) == (200, {"code": 0})
    assert (await client.get("/readyz")).status == 200


async def test_unknown_paths_and_methods_answer_json(client: TestClient[Any, Any]) -> None:
    resp = await client.get("/nope")
    assert resp.status == 404
    assert (await resp.json())["error"]["code"] == "not_found"
    resp = await client.get("/v1/notifications")
    assert resp.status == 405
    assert (await resp.json())["error"]["code"] == "method_not_allowed"


# --- tasks and correlation ------------------------------------------------------------------


async def register(client: TestClient[Any, Any], **spec: Any) -> tuple[int, Any]:
    resp = await client.post("/v1/tasks", json=spec, headers=AUTH)
    return resp.status, await resp.json()


async def test_a_registered_task_runs_then_finishes_with_its_events_listed(
    client: TestClient[Any, Any],
) -> None:
    tid = REVIEW["TaskId"]
    status, task = await register(
        client,
        task_id=tid,
        session_context=REVIEW["SessionContext"],
        url="rtmp://live/x",
        labels={"room": "1024"},
    )
    assert status == 201
    assert (task["state"], task["labels"], task["adopted_events"]) == ("submitted", {"room": "1024"}, 0)
    await post(client, signed(REVIEW))
    assert (await get(client, f"/v1/tasks/{tid}"))["state"] == "running"
    await post(client, signed({**EOF_DOC, "TaskId": tid}))
    done = await get(client, f"/v1/tasks/{tid}")
    assert (done["state"], done["err_code"], done["event_count"]) == ("finished", 0, 2)
    assert done["ended_at"].endswith("Z")
    await post(client, signed({**REVIEW, "SessionId": "late-one"}))
    listed = await get(client, f"/v1/tasks/{tid}/events")
    assert [(e["notification_type"], e["late"], e["matched_by"]) for e in listed["items"]] == [
        ("AiReviewResult", False, "session_context"),
        ("ProcessEof", False, "task_id"),
        ("AiReviewResult", True, "session_context"),
    ]
    finished = await get(client, "/v1/tasks", state="finished")
    assert [t["task_id"] for t in finished["items"]] == [tid]


async def test_a_failing_end_is_kept_with_code_and_message(client: TestClient[Any, Any]) -> None:
    await register(client, task_id="T-fail")
    eof = {**EOF_DOC, "TaskId": "T-fail", "ProcessEofInfo": {"ErrCode": 4003, "Message": "bad audio format"}}
    await post(client, signed(eof))
    task = await get(client, "/v1/tasks/T-fail")
    assert (task["state"], task["err_code"], task["err_message"]) == ("failed", 4003, "bad audio format")


async def test_orphans_are_flagged_and_picked_up_when_the_task_is_registered(
    client: TestClient[Any, Any],
) -> None:
    await post(client, signed({**EOF_DOC, "TaskId": "T-late-reg"}))
    orphans = await get(client, "/v1/events", orphan="true")
    assert [e["task_id"] for e in orphans["items"]] == ["T-late-reg"]
    status, task = await register(client, task_id="T-late-reg")
    assert status == 201
    assert (task["adopted_events"], task["state"]) == (1, "finished")
    assert (await get(client, "/v1/events", orphan="true"))["items"] == []


async def test_registering_a_task_id_twice_is_409(client: TestClient[Any, Any]) -> None:
    assert (await register(client, task_id="T1"))[0] == 201
    status, answer = await register(client, task_id="T1")
    assert status == 409
    assert answer["error"]["field"] == "task_id"


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ({}, "task_id"),
        ({"task_id": ""}, "task_id"),
        ({"task_id": "   "}, "task_id"),
        ({"task_id": "T", "session_id": "x" * 51}, "session_id"),
        ({"task_id": "T", "session_context": "界" * 1001}, "session_context"),
        ({"task_id": "T", "labels": {"a": 1}}, "labels.a"),
        ({"task_id": "T", "colour": "red"}, "colour"),
    ],
)
async def test_bad_task_registrations_are_400_naming_the_field(
    client: TestClient[Any, Any], spec: dict[str, Any], field: str
) -> None:
    status, answer = await register(client, **spec)
    assert status == 400
    assert answer["error"]["field"] == field


async def test_unknown_task_is_404(client: TestClient[Any, Any]) -> None:
    resp = await client.get("/v1/tasks/nope", headers=AUTH)
    assert resp.status == 404
    assert (await resp.json())["error"]["code"] == "not_found"


async def test_events_filter_by_task_type_and_since_and_paginate(
    client: TestClient[Any, Any], clock: list[float]
) -> None:
    for i in range(5):
        clock[0] = FROZEN_NOW + i
        await post(client, signed({**REVIEW, "SessionId": f"s{i}"}))
    await post(client, signed({**EOF_DOC, "TaskId": REVIEW["TaskId"]}))
    first = await get(client, "/v1/events", task_id=REVIEW["TaskId"], limit="2")
    assert len(first["items"]) == 2
    assert first["next"]
    second = await get(client, "/v1/events", task_id=REVIEW["TaskId"], limit="2", cursor=first["next"])
    assert [e["session_id"] for e in first["items"] + second["items"]] == ["s0", "s1", "s2", "s3"]
    eofs = await get(client, "/v1/events", type="ProcessEof")
    assert len(eofs["items"]) == 1
    since = await get(client, "/v1/events", since=str(FROZEN_NOW + 3), type="AiReviewResult")
    assert [e["session_id"] for e in since["items"]] == ["s3", "s4"]
    iso = await get(client, "/v1/events", since="2025-06-18T12:00:04Z", type="AiReviewResult")
    assert [e["session_id"] for e in iso["items"]] == ["s4"]


@pytest.mark.parametrize(
    ("path", "params", "field"),
    [
        ("/v1/events", {"limit": "0"}, "limit"),
        ("/v1/events", {"limit": "²"}, "limit"),
        ("/v1/events", {"cursor": "99999999999999999999"}, "cursor"),
        ("/v1/events", {"limit": "many"}, "limit"),
        ("/v1/events", {"cursor": "-1"}, "cursor"),
        ("/v1/events", {"since": "yesterday"}, "since"),
        ("/v1/events", {"orphan": "maybe"}, "orphan"),
        ("/v1/tasks", {"state": "sleeping"}, "state"),
    ],
)
async def test_bad_query_parameters_are_400_naming_them(
    client: TestClient[Any, Any], path: str, params: dict[str, str], field: str
) -> None:
    resp = await client.get(path, params=params, headers=AUTH)
    assert resp.status == 400
    assert (await resp.json())["error"]["field"] == field


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v1/tasks"),
        ("POST", "/v1/tasks"),
        ("GET", "/v1/tasks/T1"),
        ("GET", "/v1/tasks/T1/events"),
        ("GET", "/v1/events"),
    ],
)
@pytest.mark.parametrize("header", [None, "Bearer wrong", f"Basic {TOKEN}", TOKEN])
async def test_management_api_wants_the_bearer_token(
    client: TestClient[Any, Any], method: str, path: str, header: str | None
) -> None:
    headers = {"Authorization": header} if header else {}
    resp = await client.request(method, path, headers=headers, json={"task_id": "T1"})
    assert resp.status == 401
    assert resp.headers["WWW-Authenticate"] == "Bearer"
    assert (await resp.json())["error"]["code"] == "unauthorized"


async def test_webhook_and_probes_need_no_token(client: TestClient[Any, Any]) -> None:
    assert (await post(client, signed(EOF_DOC)))[0] == 200
    assert (await client.get("/healthz")).status == 200
    ready = await client.get("/readyz")
    assert (ready.status, await ready.json()) == (200, {"status": "ready", "store": "ok"})


async def test_an_event_the_store_can_never_take_is_422_and_quarantined(
    aiohttp_client: ClientFactory, tmp_path: Path
) -> None:
    class Picky(SqliteStore):
        async def record_events(self, events, route=None):  # type: ignore[no-untyped-def]
            if any(e.task_id == "poison" for e in events):
                raise TypeError("cannot keep this")
            return await super().record_events(events, route)

    store = await Picky.open(tmp_path / "picky.db")
    try:
        client = await aiohttp_client(create_app(settings(tmp_path), store=store, clock=lambda: FROZEN_NOW))
        status, answer = await post(client, signed({**EOF_DOC, "TaskId": "poison"}))
        assert (status, answer["error"]["code"]) == (422, "unstorable")
        assert await post(client, signed(EOF_DOC)) == (200, {"code": 0})  # the next one is fine
        [kept] = (await get(client, "/v1/quarantine"))["items"]
        assert kept["reason"] == "unstorable"
        assert '"poison"' in kept["body"]
    finally:
        await store.aclose()


async def test_the_metrics_count_which_key_verified_each_notification(
    aiohttp_client: ClientFactory, tmp_path: Path
) -> None:
    # Rotation: the old key's count stops growing once MPS signs with the new one.
    configured = settings(tmp_path, notify_keys=["k-new", NOTIFY_KEY])
    client = await aiohttp_client(create_app(configured, clock=lambda: FROZEN_NOW))
    assert (await post(client, signed(REVIEW)))[0] == 200
    assert (await post(client, signed({**REVIEW, "SessionId": "2"}, key="k-new")))[0] == 200
    assert (await post(client, signed({**REVIEW, "SessionId": "3"}, key="k-new")))[0] == 200
    scrape = await (await client.get("/metrics")).text()
    assert 'receiver_notify_key_matches_total{key="static:1"} 1.0' in scrape
    assert 'receiver_notify_key_matches_total{key="static:0"} 2.0' in scrape
