"""The emulator's TC3 check against hand-signed requests: the client does not choose what is signed,
an unsigned payload is refused, a signature is good once, and its memory stays bounded."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
from datetime import UTC, datetime
from typing import Any

import pytest
from aiohttp import ClientSession
from aiohttp.test_utils import TestServer
from pydantic import ValidationError

from receiver.emulator import EmulatorSettings, api, create_emulator
from receiver.emulator.recent import Recent
from tests.apps import ServerFactory
from tests.sdk import SILENT, client, error_code, process

SECRET_ID, SECRET_KEY = "AKIDtest", "s3cret"


def signed(
    server: TestServer,
    body: bytes,
    *,
    signed_headers: str = "content-type;host",
    payload: str | None = None,
    secret_id: str = SECRET_ID,
    timestamp: int | None = None,
    date: str | None = None,
    extra: dict[str, str] | None = None,
) -> dict[str, str]:
    """Headers for a ProcessLiveStream POST, signed here from the spec (not with receiver.tc3)."""
    ts = int(time.time()) if timestamp is None else timestamp
    day = date or datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d")
    headers = {
        "Content-Type": "application/json",
        "Host": f"127.0.0.1:{server.port}",
        "X-TC-Action": "ProcessLiveStream",
        "X-TC-Version": "2019-06-12",
        "X-TC-Timestamp": str(ts),
        **(extra or {}),
    }
    lowered = {k.lower(): v for k, v in headers.items()}
    names = [h for h in signed_headers.split(";") if h]
    canonical = "\n".join(
        [
            "POST",
            "/",
            "",
            "".join(f"{n}:{lowered[n]}\n" for n in names),
            signed_headers,
            hashlib.sha256(payload.encode() if payload is not None else body).hexdigest(),
        ]
    )
    scope = f"{day}/mps/tc3_request"
    to_sign = f"TC3-HMAC-SHA256\n{ts}\n{scope}\n{hashlib.sha256(canonical.encode()).hexdigest()}"

    def mac(key: bytes, msg: str) -> bytes:
        return hmac.new(key, msg.encode(), hashlib.sha256).digest()

    key = mac(mac(mac(f"TC3{SECRET_KEY}".encode(), day), "mps"), "tc3_request")
    sig = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    headers["Authorization"] = (
        f"TC3-HMAC-SHA256 Credential={secret_id}/{scope}, SignedHeaders={signed_headers}, Signature={sig}"
    )
    return headers


def body(**more: Any) -> bytes:
    return json.dumps({"Url": "rtmp://x/y", "TaskNotifyConfig": SILENT, **more}).encode()


async def post(server: TestServer, data: bytes, headers: dict[str, str]) -> dict[str, Any]:
    async with ClientSession() as http, http.post(server.make_url("/"), data=data, headers=headers) as r:
        assert r.headers["Content-Type"] == "application/json"
        return dict((await r.json())["Response"])


def code(answer: dict[str, Any]) -> str:
    return str(answer["Error"]["Code"]) if "Error" in answer else "ok"


async def emulator_with(aiohttp_server: ServerFactory, **settings: Any) -> TestServer:
    merged = {"secret_id": SECRET_ID, "secret_key": SECRET_KEY, **settings}
    return await aiohttp_server(create_emulator(EmulatorSettings.model_validate(merged)))


@pytest.fixture
async def emulator(aiohttp_server: ServerFactory) -> TestServer:
    return await emulator_with(aiohttp_server)


async def test_a_correctly_signed_request_is_accepted(emulator: TestServer) -> None:
    answer = await post(emulator, body(), signed(emulator, body()))
    assert answer["TaskId"].startswith("1300000000-procedure-live-")


@pytest.mark.parametrize("signed_headers", ["", "host", "content-type", "host;x-tc-action"])
async def test_the_client_cannot_leave_content_type_or_host_unsigned(
    emulator: TestServer, signed_headers: str
) -> None:
    answer = await post(emulator, body(), signed(emulator, body(), signed_headers=signed_headers))
    assert code(answer) == "AuthFailure.InvalidAuthorization"
    assert "content-type;host" in answer["Error"]["Message"]


async def test_an_unsigned_payload_is_refused_whatever_the_body(emulator: TestServer) -> None:
    # Signed as UNSIGNED-PAYLOAD, the headers would carry any body at all.
    headers = signed(
        emulator, b"", payload="UNSIGNED-PAYLOAD", extra={"X-TC-Content-SHA256": "UNSIGNED-PAYLOAD"}
    )
    answer = await post(emulator, body(Url="rtmp://attacker/chosen"), headers)
    assert code(answer) == "AuthFailure.SignatureFailure"
    assert "UNSIGNED-PAYLOAD" in answer["Error"]["Message"]


async def test_a_signature_is_good_for_one_request(emulator: TestServer) -> None:
    headers = signed(emulator, body())
    assert code(await post(emulator, body(), headers)) == "ok"
    replayed = await post(emulator, body(), headers)
    assert code(replayed) == "AuthFailure.SignatureFailure"
    assert "already used" in replayed["Error"]["Message"]
    other = body(SessionContext="another")  # a new request, newly signed, is still fine
    assert code(await post(emulator, other, signed(emulator, other))) == "ok"


async def test_a_request_refused_by_the_rate_limit_may_come_again_with_its_signature(
    emulator: TestServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    headers = signed(emulator, body())
    monkeypatch.setitem(api.RATE_LIMITS, "ProcessLiveStream", 0)
    assert code(await post(emulator, body(), headers)) == "RequestLimitExceeded"
    monkeypatch.setitem(api.RATE_LIMITS, "ProcessLiveStream", 100)
    assert code(await post(emulator, body(), headers)) == "ok"  # what the SDK's retry sends


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"secret_id": "AKIDother"}, "AuthFailure.SecretIdNotFound"),
        ({"skew": -400}, "AuthFailure.SignatureExpire"),
        ({"skew": 400}, "AuthFailure.SignatureExpire"),
        ({"date": "2001-01-01"}, "AuthFailure.SignatureFailure"),
    ],
)
async def test_credential_and_clock_faults_get_the_api_codes(
    emulator: TestServer, change: dict[str, Any], expected: str
) -> None:
    if "skew" in change:  # the clock is read now, not when the tests were collected
        change = {"timestamp": int(time.time()) + change["skew"]}
    assert code(await post(emulator, body(), signed(emulator, body(), **change))) == expected


async def test_a_malformed_authorization_is_invalid_authorization(emulator: TestServer) -> None:
    headers = {**signed(emulator, body()), "Authorization": "HMAC-SHA1 whatever"}
    assert code(await post(emulator, body(), headers)) == "AuthFailure.InvalidAuthorization"


async def test_a_stricter_emulator_can_require_x_tc_action_signed(aiohttp_server: ServerFactory) -> None:
    strict = await emulator_with(
        aiohttp_server, required_signed_headers=["Content-Type", "host", "x-tc-action"]
    )
    with_action = signed(strict, body(), signed_headers="content-type;host;x-tc-action")
    assert code(await post(strict, body(), with_action)) == "ok"
    assert code(await post(strict, body(), signed(strict, body()))) == "AuthFailure.InvalidAuthorization"
    # The official SDK signs content-type;host only: refused by the strict emulator.
    sdk = lambda: process(client(strict), Url="rtmp://x/y", TaskNotifyConfig=SILENT)  # noqa: E731
    assert await error_code(sdk) == "AuthFailure.InvalidAuthorization"


def test_required_signed_headers_cannot_drop_the_mandatory_pair() -> None:
    with pytest.raises(ValidationError, match="required_signed_headers") as caught:
        EmulatorSettings(required_signed_headers=["host"])
    assert "content-type" in str(caught.value)


def test_an_emulator_off_loopback_needs_its_own_key() -> None:
    with pytest.raises(ValidationError, match=r"emulator\.secret_key"):
        EmulatorSettings(host="0.0.0.0")
    assert EmulatorSettings(host="0.0.0.0", secret_key="own-key").host == "0.0.0.0"
    assert EmulatorSettings(host="::1").host == "::1"
    assert EmulatorSettings(host="localhost").host == "localhost"


async def test_tasks_and_session_ids_are_bounded_oldest_first(
    aiohttp_server: ServerFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(api, "TASKS_KEPT", 2)
    monkeypatch.setattr(api, "SESSION_IDS_KEPT", 2)
    server = await emulator_with(aiohttp_server)
    for session_id in ("a", "b", "c"):
        data = body(SessionId=session_id)
        assert code(await post(server, data, signed(server, data))) == "ok"
    emulator = server.app[api.EMULATOR]
    assert len(emulator.tasks) == 2
    assert len(emulator.session_ids) == 2
    again = body(SessionId="a", SessionContext="2")  # forgotten: the oldest went first
    assert code(await post(server, again, signed(server, again))) == "ok"
    kept = body(SessionId="c", SessionContext="2")
    assert code(await post(server, kept, signed(server, kept))) == "InvalidParameterValue.SessionId"


async def test_the_replay_memory_is_bounded_and_refuses_rather_than_forgets(
    aiohttp_server: ServerFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(api, "SIGNATURES_KEPT", 1)
    server = await emulator_with(aiohttp_server)
    first, second = body(SessionContext="1"), body(SessionContext="2")
    first_headers = signed(server, first)
    assert code(await post(server, first, first_headers)) == "ok"
    assert code(await post(server, second, signed(server, second))) == "RequestLimitExceeded"
    assert code(await post(server, first, first_headers)) == "AuthFailure.SignatureFailure"
    assert len(server.app[api.EMULATOR].signatures) == 1


def test_recent_forgets_by_age_and_by_count() -> None:
    now = [0.0]
    recent: Recent[int] = Recent(limit=3, max_age=10, clock=lambda: now[0])
    for i, key in enumerate("abc"):  # a at 0, b at 1, c at 2
        now[0] = float(i)
        recent.put(key, i)
    assert (recent.get("a"), len(recent), recent.full()) == (0, 3, True)
    now[0] = 3.0
    recent.put("d", 3)  # over the limit: "a", the oldest, goes
    assert "a" not in recent
    assert [recent.get(k) for k in "bcd"] == [1, 2, 3]
    now[0] = 4.0
    recent.put("b", 4)  # put again: the newest now
    now[0] = 12.5  # c (put at 2) is past 10 s; d (3) and b (4) are not
    assert "c" not in recent
    assert (len(recent), recent.get("d"), recent.get("b")) == (2, 3, 4)
    now[0] = 13.0
    assert (len(recent), recent.get("b")) == (1, 4)
    now[0] = 30.0
    assert (len(recent), recent.full()) == (0, False)
    with pytest.raises(ValueError, match="positive"):
        Recent(limit=0, max_age=1)


async def test_the_official_sdk_is_accepted_request_after_request(emulator: TestServer) -> None:
    c = client(emulator)
    for i in range(3):
        params = {"Url": "rtmp://x/y", "TaskNotifyConfig": SILENT, "SessionId": f"s{i}"}
        resp = await asyncio.to_thread(process, c, **params)
        assert resp.TaskId
