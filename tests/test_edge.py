"""The HTTP edge: cross-site and rebound requests, stalled bodies, exposure, two listeners, redaction."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp.test_utils import TestClient
from structlog.testing import capture_logs

from receiver.app import create_app
from receiver.errors import ConfigError
from receiver.listeners import Listening, listeners_for
from receiver.redact import redact_url
from receiver.settings import Settings
from tests.apps import ClientFactory
from tests.payloads import FROZEN_NOW, NOTIFY_KEY, REVIEW, body, signed

# Every state-changing route of the management API, with a body it would otherwise take.
STATE_CHANGES = [
    ("/v1/tasks", {"task_id": "T-csrf"}),
    ("/v1/tasks/submit", {"Url": "rtmp://live/x", "TaskNotifyConfig": {"NotifyType": "URL", "NotifyUrl": "http://h/x"}}),
    ("/v1/deliveries/redrive", {}),
    ("/v1/sinks/s1/enable", None),
]  # fmt: skip


def settings(tmp_path: Path, **http: Any) -> Settings:
    """As ``make run`` has it: loopback, no token."""
    return Settings.model_validate(
        {
            "store": {"url": f"sqlite:///{tmp_path}/edge.db", "busy_timeout_ms": 100},
            "verify": {"notify_keys": [NOTIFY_KEY]},
            "http": http,
            "sinks": [{"name": "s1", "kind": "memory"}],  # the sink the enable route names
        }
    )


@pytest.fixture
async def client(aiohttp_client: ClientFactory, tmp_path: Path) -> TestClient[Any, Any]:
    return await aiohttp_client(create_app(settings(tmp_path), clock=lambda: FROZEN_NOW))


async def tasks(client: TestClient[Any, Any]) -> list[Any]:
    return list((await (await client.get("/v1/tasks")).json())["items"])


# --- cross-site requests ----------------------------------------------------------------------


@pytest.mark.parametrize(("path", "payload"), STATE_CHANGES)
@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", None])
async def test_a_state_change_not_sent_as_json_is_415_and_changes_nothing(
    client: TestClient[Any, Any], path: str, payload: Any, content_type: str | None
) -> None:
    headers = {"Content-Type": content_type} if content_type else {}
    data = orjson.dumps(payload) if payload is not None else None
    resp = await client.post(path, data=data, headers=headers)
    assert resp.status == 415
    error = (await resp.json())["error"]
    assert (error["code"], error["field"]) == ("unsupported_media_type", "Content-Type")
    assert "application/json" in error["message"]
    assert await tasks(client) == []


async def test_the_same_request_as_json_goes_through(client: TestClient[Any, Any]) -> None:
    resp = await client.post("/v1/tasks", json={"task_id": "T-csrf"})
    assert resp.status == 201
    assert [t["task_id"] for t in await tasks(client)] == ["T-csrf"]
    resp = await client.post("/v1/sinks/s1/enable", json={})
    assert resp.status == 200


@pytest.mark.parametrize("method", ["GET", "POST"])
async def test_a_rebound_host_name_is_403_naming_the_header(
    client: TestClient[Any, Any], method: str
) -> None:
    resp = await client.request(
        method, "/v1/tasks", json={"task_id": "T-rebound"}, headers={"Host": "attacker.example:8080"}
    )
    assert resp.status == 403
    error = (await resp.json())["error"]
    assert (error["code"], error["field"]) == ("forbidden_host", "Host")
    assert "http.allowed_hosts" in error["message"]
    assert await tasks(client) == []


@pytest.mark.parametrize(
    "origin", ["http://attacker.example", "null", "http://127.0.0.1.attacker.example:8080"]
)
async def test_a_foreign_origin_is_403_naming_the_header(client: TestClient[Any, Any], origin: str) -> None:
    resp = await client.post("/v1/tasks", json={"task_id": "T-origin"}, headers={"Origin": origin})
    assert resp.status == 403
    error = (await resp.json())["error"]
    assert (error["code"], error["field"]) == ("forbidden_origin", "Origin")
    assert await tasks(client) == []


@pytest.mark.parametrize(
    ("headers", "allowed"),
    [
        ({"Host": "localhost:8080", "Origin": "http://localhost:8080"}, []),
        ({"Host": "[::1]:8080"}, []),
        ({"Host": "Receiver.Internal", "Origin": "https://receiver.internal"}, ["receiver.internal"]),
        ({"Host": "anything.example", "Origin": "http://elsewhere.example"}, ["*"]),
    ],
)
async def test_loopback_and_configured_names_are_answered(
    aiohttp_client: ClientFactory, tmp_path: Path, headers: dict[str, str], allowed: list[str]
) -> None:
    app = create_app(settings(tmp_path, allowed_hosts=allowed), clock=lambda: FROZEN_NOW)
    client = await aiohttp_client(app)
    resp = await client.post("/v1/tasks", json={"task_id": "T-ok"}, headers=headers)
    assert resp.status == 201, await resp.text()


async def test_the_webhook_takes_what_mps_sends_whatever_its_type_and_host(
    client: TestClient[Any, Any],
) -> None:
    resp = await client.post(
        "/v1/notifications",
        data=body(signed(REVIEW)),
        headers={"Content-Type": "text/plain", "Host": "receiver.example.com", "Origin": "null"},
    )
    assert (resp.status, await resp.json()) == (200, {"code": 0})


# --- exposure -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("http", "api", "named"),
    [
        ({"host": "0.0.0.0"}, {}, "http.host"),
        ({"host": "0.0.0.0"}, {"token": ""}, "http.host"),
        ({"host": "10.1.2.3"}, {}, "http.host"),
        ({"host": "receiver.example.com"}, {}, "http.host"),
        ({"management_host": "0.0.0.0", "management_port": 8081}, {}, "http.management_host"),
        ({"host": "0.0.0.0", "management_port": 8081}, {}, "http.management_host"),
    ],
)  # fmt: skip
def test_a_tokenless_management_api_off_loopback_is_refused_at_start_up(
    tmp_path: Path, http: dict[str, Any], api: dict[str, Any], named: str
) -> None:
    s = Settings.model_validate({"store": {"url": f"sqlite:///{tmp_path}/x.db"}, "http": http, "api": api})
    with pytest.raises(ConfigError) as refused:
        create_app(s)
    for setting in ("api.token", "RECEIVER_API__TOKEN", "api.open", named):
        assert setting in str(refused.value)


@pytest.mark.parametrize(
    ("http", "api", "role"),
    [
        ({"host": "0.0.0.0"}, {"token": "t"}, "serve"),
        ({"host": "0.0.0.0"}, {"open": True}, "serve"),
        ({"host": "::1"}, {}, "serve"),
        ({"host": "localhost"}, {}, "serve"),
        ({"host": "0.0.0.0", "management_host": "127.0.0.1", "management_port": 8081}, {}, "serve"),
        ({"host": "0.0.0.0"}, {}, "consume"),  # probes only
        ({"host": "0.0.0.0"}, {}, "dispatch"),
    ],
)  # fmt: skip
def test_loopback_a_token_or_api_open_may_serve_it(
    tmp_path: Path, http: dict[str, Any], api: dict[str, Any], role: Any
) -> None:
    s = Settings.model_validate(
        {
            "store": {"url": f"sqlite:///{tmp_path}/x.db"},
            "http": http,
            "api": api,
            "amqp": {"url": "amqp://h/"},
        }
    )
    create_app(s, role=role)


def test_a_management_host_without_its_port_is_refused() -> None:
    with pytest.raises(ValueError, match="management_port"):
        Settings.model_validate({"http": {"management_host": "127.0.0.1"}})


# --- two listeners ------------------------------------------------------------------------------


async def test_with_a_management_port_the_webhook_listener_serves_only_the_webhook(tmp_path: Path) -> None:
    s = settings(tmp_path, port=0, management_port=0)
    app = create_app(s, clock=lambda: FROZEN_NOW)
    listening = await Listening.start(listeners_for(s, app))
    try:
        assert set(listening.addresses) == {"management", "webhook"}
        hook = "http://{}:{}".format(*listening.addresses["webhook"])
        admin = "http://{}:{}".format(*listening.addresses["management"])
        async with aiohttp.ClientSession() as http:
            async with http.post(f"{hook}/v1/notifications", data=body(signed(REVIEW))) as r:
                assert (r.status, await r.json()) == (200, {"code": 0})
            for path in ("/v1/events", "/v1/tasks", "/readyz", "/metrics", "/openapi.json"):
                async with http.get(f"{hook}{path}") as r:
                    assert r.status == 404, path
            async with http.post(f"{hook}/v1/tasks", json={"task_id": "T"}) as r:
                assert r.status == 404
            async with http.get(f"{hook}/healthz") as r:
                assert r.status == 200
            async with http.get(f"{admin}/v1/events") as r:
                assert r.status == 200
                [event] = (await r.json())["items"]
                assert event["task_id"] == REVIEW["TaskId"]
            for path in ("/healthz", "/readyz", "/metrics"):
                async with http.get(f"{admin}{path}") as r:
                    assert r.status == 200, path
            async with http.post(f"{admin}/v1/notifications", data=body(signed(REVIEW))) as r:
                assert r.status == 404
    finally:
        await listening.stop()
    assert listening.runners == []


async def test_without_a_management_port_one_listener_serves_everything(tmp_path: Path) -> None:
    s = settings(tmp_path, port=0)
    [listener] = listeners_for(s, create_app(s))
    assert (listener.name, listener.host) == ("http", "127.0.0.1")


# --- body timeout -------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/v1/notifications", "/v1/tasks"])
async def test_a_body_that_stops_half_way_is_408_and_the_connection_closes(tmp_path: Path, path: str) -> None:
    timeout = 0.3
    s = settings(tmp_path, port=0, body_timeout=timeout)
    listening = await Listening.start(listeners_for(s, create_app(s)))
    try:
        with capture_logs() as logs:
            host, port = listening.addresses["http"]
            reader, writer = await asyncio.open_connection(host, port)
            writer.write(
                f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                "Content-Length: 1000\r\n\r\n".encode()
                + b'{"TaskId": "' + b"x" * 488
            )  # fmt: skip
            await writer.drain()
            sent = time.monotonic()
            answer = await asyncio.wait_for(reader.read(), timeout=timeout + 5)  # until the server closes
            elapsed = time.monotonic() - sent
            writer.close()
    finally:
        await listening.stop()
    head, _, payload = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408"), answer
    assert orjson.loads(payload)["error"]["code"] == "body_timeout"
    assert timeout <= elapsed < timeout + 1.0  # closed at once, not after aiohttp's 10 s of lingering
    summaries = [line["outcome"] for line in logs if line["event"] == "notification"]
    assert summaries == (["body_timeout"] if path == "/v1/notifications" else [])


# --- what the unauthenticated are told ----------------------------------------------------------


async def test_store_errors_are_generic_outside_and_detailed_in_the_log(
    client: TestClient[Any, Any], tmp_path: Path
) -> None:
    blocker = sqlite3.connect(tmp_path / "edge.db", isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")
    try:
        with capture_logs() as logs:
            webhook = await client.post("/v1/notifications", data=body(signed(REVIEW)))
            ready = await client.get("/readyz")
        answers = (await webhook.text()) + (await ready.text())
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    assert (webhook.status, ready.status) == (503, 503)
    assert (await ready.json())["store"] == "unavailable"
    assert "the store is unavailable" in (await webhook.json())["error"]["message"]
    for detail in ("sqlite", "locked", str(tmp_path)):
        assert detail not in answers
    logged = " ".join(str(entry.get("error", "")) for entry in logs)
    assert "locked" in logged


# --- redaction ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://receiver:pg-pass@db:5432/receiver", "postgresql://receiver:***@db:5432/receiver"),
        ("postgresql://receiver@db/receiver?password=pg-pass&sslmode=require",
         "postgresql://receiver@db/receiver?password=***&sslmode=***"),
        ("amqp://guest:amqp-pass@[::1]:5672/%2f", "amqp://guest:***@[::1]:5672/%2f"),
        ("https://u:p%40ss@hooks.example/x?token-only", "https://u:***@hooks.example/x?***"),
        ("sqlite:///var/receiver.db", "sqlite:///var/receiver.db"),
        ("http://host:not-a-port/x", "***"),
    ],
)  # fmt: skip
def test_redact_url_masks_passwords_and_query_values(url: str, shown: str) -> None:
    assert redact_url(url) == shown


def test_max_body_defaults_to_256_kib() -> None:
    assert Settings().http.max_body_bytes == 262_144
