"""Shared fixtures: the spec's example payloads, signing, a frozen clock."""

from __future__ import annotations

import asyncio
import copy
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import web

from receiver import decoder, events
from receiver.documents import OWN_CHANNEL
from receiver.events import Channel, Check, Event, expected_sign
from receiver.ports import EventQuery
from tests.amqp_broker import Broker, broker_session

EXAMPLES = Path(__file__).parent / "data" / "examples"
NOTIFY_KEY = "mpsDemoNotifyKey2025"  # the key the spec's examples are signed with
# Before every example's Timestamp (the earliest is 1750248641): the examples are not expired here.
FROZEN_NOW = 1_750_248_000.0

EXAMPLE_FILES = sorted(p.name for p in EXAMPLES.glob("*.json"))
NOTIFICATION_FILES = [n for n in EXAMPLE_FILES if "envelope" not in n]


def example_bytes(name: str) -> bytes:
    return (EXAMPLES / name).read_bytes()


def example(name: str) -> dict[str, Any]:
    """An example as a bare notification object (unwrapped from Response / CMQ envelope)."""
    doc = orjson.loads(example_bytes(name))
    if "Response" in doc:
        doc = doc["Response"]
    if "msgBody" in doc:
        doc = orjson.loads(doc["msgBody"])
    return dict(doc)


def signed(doc: dict[str, Any], *, key: str = NOTIFY_KEY, timestamp: int | None = None) -> dict[str, Any]:
    out = copy.deepcopy(doc)
    ts = int(timestamp if timestamp is not None else FROZEN_NOW + 600)
    out["Timestamp"] = ts
    out["Sign"] = expected_sign(ts, key)
    return out


def body(doc: dict[str, Any]) -> bytes:
    return orjson.dumps(doc)


def event_of(
    raw: bytes | dict[str, Any],
    *,
    at: float = FROZEN_NOW,
    channel: Channel = Channel.HTTP,
    check: Check = events.SKIPPED,
) -> Event:
    """The event ingest would make of these bytes (a document is encoded first), Sign check aside."""
    data = decoder.unwrap(raw if isinstance(raw, bytes) else body(raw))
    head = decoder.read_head(data)
    notification = decoder.read_notification(data, head)
    return events.normalize(
        decoder.strip_sign(data, head=head), notification, channel=channel, received_at=at, check=check
    )


@pytest.fixture(name="broker")
async def broker_fixture() -> AsyncIterator[Broker]:
    """A publishing connection to the real broker and a fresh queue name, cleaned up afterwards."""
    async for b in broker_session():
        yield b


@pytest.fixture
def clock() -> list[float]:
    """A settable clock: ``clock[0]`` is now."""
    return [FROZEN_NOW]


class HookTarget:
    """A local http sink target for process tests: records each ``webhook-id`` in arrival order,
    answers after ``delay`` (a slow target lets a backlog build up), and sets ``reached`` once
    ``enough`` have arrived."""

    def __init__(self, *, delay: float = 0.0, enough: int = 1) -> None:
        self.got: list[str] = []
        self.reached = asyncio.Event()
        self._delay = delay
        self._enough = enough
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def _hook(self, request: web.Request) -> web.Response:
        if self._delay:
            await asyncio.sleep(self._delay)
        self.got.append(request.headers["webhook-id"])
        if len(self.got) >= self._enough:
            self.reached.set()
        return web.Response(status=200)

    async def start(self) -> HookTarget:
        app = web.Application()
        app.router.add_post("/hook", self._hook)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}/hook"
        return self

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


async def mps_events(store: Any) -> int:
    """How many of MPS's events a store holds (receiver's own operator events left out), read
    through the event listing as the API reads it."""
    count, after = 0, 0
    while True:
        page = await store.list_events(EventQuery(after=after, limit=1000))
        count += sum(1 for e in page.items if e.channel != OWN_CHANNEL)
        if page.next is None:
            return count
        after = int(page.next)
