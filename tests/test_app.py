"""The composition root and the HTTP adapter's shape: the management API behind its one guard, the
resources each role opens, the webhook's own listener."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer

from receiver.app import create_app
from receiver.http.keys import DISPATCHER, INGESTOR, SINKS, STORE
from receiver.listeners import Listening, listeners_for
from receiver.settings import Settings
from receiver.sinks.memory import MemorySink
from tests.payloads import FROZEN_NOW, NOTIFY_KEY, body, example, signed
from tests.waiting import eventually

ClientFactory = Callable[..., Awaitable[TestClient[Any, Any]]]
TOKEN = "s3cret-api-token"
REVIEW = example("03-AiReviewResult-Image.constructed.json")
EOF_DOC = example("02-ProcessEof.cmq-msgBody.verbatim.json")


def settings(tmp_path: Path, **http: Any) -> Settings:
    return Settings.model_validate(
        {
            "store": {"url": f"sqlite:///{tmp_path}/app.db", "busy_timeout_ms": 100},
            "verify": {"notify_keys": [NOTIFY_KEY]},
            "api": {"token": TOKEN},
            "http": {"max_body_bytes": 64 * 1024, **http},
            "sinks": [{"name": "s1", "kind": "memory"}],
        }
    )


def management_routes(tmp_path: Path) -> list[tuple[str, str]]:
    app = create_app(settings(tmp_path))
    routes = set()
    for route in app.router.routes():
        path = route.resource.canonical if route.resource is not None else ""
        if path.startswith("/v1/") and path != "/v1/notifications" and route.method != "HEAD":
            routes.add(
                (route.method, path.replace("{task_id}", "T1").replace("{id}", "1").replace("{name}", "s1"))
            )
    return sorted(routes)


async def test_every_management_route_and_unknown_path_wants_the_token(
    aiohttp_client: ClientFactory, tmp_path: Path
) -> None:
    client = await aiohttp_client(create_app(settings(tmp_path), clock=lambda: FROZEN_NOW))
    routes = management_routes(tmp_path / "listed")
    assert len(routes) >= 14  # tasks, events, quarantine, deliveries, sinks, operator events, submit, abort
    for method, path in [*routes, ("GET", "/v1/nothing-here")]:
        resp = await client.request(method, path, json={})
        assert (resp.status, resp.headers.get("WWW-Authenticate")) == (401, "Bearer"), (method, path)
        assert (await resp.json())["error"]["field"] == "Authorization"
    resp = await client.get("/v1/nothing-here", headers={"Authorization": f"Bearer {TOKEN}"})
    assert resp.status == 404


async def test_the_token_is_asked_before_the_body_is_read(
    aiohttp_client: ClientFactory, tmp_path: Path
) -> None:
    client = await aiohttp_client(create_app(settings(tmp_path), clock=lambda: FROZEN_NOW))
    too_big = b'{"task_id": "' + b"x" * 80 * 1024 + b'"}'
    resp = await client.post("/v1/tasks", data=too_big, headers={"Content-Type": "application/json"})
    assert resp.status == 401
    auth = {"Content-Type": "application/json", "Authorization": f"Bearer {TOKEN}"}
    resp = await client.post("/v1/tasks", data=too_big, headers=auth)
    assert (resp.status, (await resp.json())["error"]["code"]) == (413, "body_too_large")


async def test_the_webhook_path_takes_no_token_and_only_post(
    aiohttp_client: ClientFactory, tmp_path: Path
) -> None:
    client = await aiohttp_client(create_app(settings(tmp_path), clock=lambda: FROZEN_NOW))
    resp = await client.put("/v1/notifications", data=b"{}")
    assert (resp.status, resp.headers["Allow"]) == (405, "POST")
    resp = await client.post("/v1/notifications", data=body(signed(REVIEW)))
    assert (resp.status, await resp.json()) == (200, {"code": 0})


async def test_the_dispatch_role_builds_no_ingestor(aiohttp_client: ClientFactory, tmp_path: Path) -> None:
    client = await aiohttp_client(create_app(settings(tmp_path), role="dispatch", clock=lambda: FROZEN_NOW))
    app = client.app
    assert app is not None
    assert INGESTOR not in app
    assert DISPATCHER in app
    assert STORE in app
    assert (await client.get("/healthz")).status == 200
    assert (await client.get("/v1/tasks", headers={"Authorization": f"Bearer {TOKEN}"})).status == 404


@pytest.mark.slow
async def test_on_two_listeners_the_webhook_quarantines_and_the_api_knows_not_its_path(
    tmp_path: Path,
) -> None:
    s = settings(tmp_path, port=0, management_port=0)
    listening = await Listening.start(listeners_for(s, create_app(s, clock=lambda: FROZEN_NOW)))
    try:
        hook = "http://{}:{}".format(*listening.addresses["webhook"])
        admin = "http://{}:{}".format(*listening.addresses["management"])
        auth = {"Authorization": f"Bearer {TOKEN}"}
        async with aiohttp.ClientSession() as http:
            # Signed, yet not a notification: refused, and kept in quarantine (with the app's clock).
            async with http.post(
                f"{hook}/v1/notifications", data=body(signed({**EOF_DOC, "ProcessEofInfo": {"ErrCode": 1.5}}))
            ) as r:
                assert r.status == 400
            async with http.get(f"{admin}/v1/quarantine", headers=auth) as r:
                [kept] = (await r.json())["items"]
                assert kept["channel"] == "http"
            for headers in ({}, auth):
                async with http.post(f"{admin}/v1/notifications", data=b"{}", headers=headers) as r:
                    assert r.status == 404
    finally:
        await listening.stop()


async def test_the_app_closes_the_sinks_it_built_and_uses_the_callers_without_closing_them(
    tmp_path: Path,
) -> None:
    config = Settings.model_validate(
        {
            "store": {"url": f"sqlite:///{tmp_path}/sinks.db"},
            "verify": {"notify_keys": [NOTIFY_KEY]},
            "sinks": [{"name": "mine", "kind": "memory"}, {"name": "built", "kind": "memory"}],
            "dispatch_poll_interval": 0.02,
        }
    )
    mine = MemorySink("mine")
    closed: list[str] = []
    app = create_app(config, sinks={"mine": mine}, clock=lambda: FROZEN_NOW)
    async with TestClient(TestServer(app)) as client:
        sinks = app[SINKS]
        assert list(sinks) == ["mine", "built"]
        assert sinks["mine"] is mine
        built = sinks["built"]
        assert isinstance(built, MemorySink)
        assert built is not mine
        for name, sink in sinks.items():
            original = sink.aclose

            async def closing(name: str = name, original: Any = original) -> None:
                closed.append(name)
                await original()

            sink.aclose = closing  # type: ignore[method-assign]
        resp = await client.post("/v1/notifications", data=body(signed(REVIEW)))
        assert resp.status == 200
        await eventually(lambda: len(mine.received) == 1 and len(built.received) == 1)
    assert closed == ["built"]  # the caller's own stays open: the caller closes it
