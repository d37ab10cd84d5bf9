"""The receiver app in process for a test: its settings, starting it, posting to it, its sinks."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Literal

from aiohttp.test_utils import TestClient, TestServer

from receiver.app import create_app
from receiver.dispatch import Dispatcher
from receiver.http.keys import DISPATCHER, SINKS
from receiver.settings import Settings
from receiver.sinks.memory import MemorySink
from tests.amqp_broker import AMQP_URL
from tests.payloads import FROZEN_NOW, NOTIFY_KEY, body, signed

# pytest-aiohttp's ``aiohttp_client`` and ``aiohttp_server`` fixtures.
ClientFactory = Callable[..., Awaitable[TestClient[Any, Any]]]
ServerFactory = Callable[..., Awaitable[TestServer]]

# A sink policy that retries at once and never opens its breaker.
FAST = {"retry_schedule": [0.01, 0.01, 0.01], "jitter": 0.0, "breaker_threshold": 1000}


def app_settings(store_url: str, sinks: list[dict[str, Any]], **more: Any) -> Settings:
    """The examples' key, these sinks, and a dispatcher that polls often."""
    return Settings.model_validate(
        {
            "store": {"url": store_url},
            "verify": {"notify_keys": [NOTIFY_KEY]},
            "sinks": sinks,
            "dispatch_poll_interval": 0.02,
            **more,
        }
    )


def consumer_settings(tmp_path: Path, queue: str, **amqp: Any) -> Settings:
    """The examples' key, SQLite in ``tmp_path``, and the consumer on ``queue`` of the real broker."""
    return Settings.model_validate(
        {
            "store": {"url": f"sqlite:///{tmp_path}/receiver.db", "busy_timeout_ms": 100},
            "verify": {"notify_keys": [NOTIFY_KEY]},
            "amqp": {"url": AMQP_URL, "queue": queue, "topic": queue, "prefetch": 20, **amqp},
        }
    )


_STARTED = time.monotonic()


def running_clock() -> float:
    """Moves forward like a real clock, from before the examples' signatures expire."""
    return FROZEN_NOW + (time.monotonic() - _STARTED)


async def start(
    aiohttp_client: ClientFactory,
    store_url: str,
    sinks: list[dict[str, Any]],
    role: Literal["serve", "consume", "dispatch"] = "serve",
    **more: Any,
) -> TestClient[Any, Any]:
    return await aiohttp_client(
        create_app(app_settings(store_url, sinks, **more), clock=running_clock, role=role)
    )


def dispatcher_of(client: TestClient[Any, Any]) -> Dispatcher:
    """The app's dispatcher: it runs there, as the app holds the store's dispatch lease."""
    dispatcher = client.app[DISPATCHER].current
    assert isinstance(dispatcher, Dispatcher)
    return dispatcher


def sink(client: TestClient[Any, Any], name: str) -> MemorySink:
    found = client.app[SINKS][name]
    assert isinstance(found, MemorySink)
    return found


async def post(client: TestClient[Any, Any], doc: dict[str, Any]) -> None:
    resp = await client.post("/v1/notifications", data=body(signed(doc)))
    assert resp.status == 200, await resp.text()


async def deliveries(client: TestClient[Any, Any], **params: str) -> list[dict[str, Any]]:
    resp = await client.get("/v1/deliveries", params={"limit": "1000", **params})
    return list((await resp.json())["items"])


async def events_of(client: TestClient[Any, Any]) -> list[dict[str, Any]]:
    resp = await client.get("/v1/events", params={"limit": "1000"})
    assert resp.status == 200
    return list((await resp.json())["items"])


async def count_is(client: TestClient[Any, Any], n: int) -> Callable[[], Awaitable[bool]]:
    """A check for ``eventually``: the store holds ``n`` events."""

    async def check() -> bool:
        return len(await events_of(client)) == n

    return check
