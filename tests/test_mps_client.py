"""The MPS client: its 100 req/s limit (on a fake clock) and its backoff on RequestLimitExceeded,
through the real SDK against a local server answering as the Tencent Cloud API does."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from receiver.mps import MpsClient, MpsError, RateLimiter
from receiver.settings import MpsSettings

PARAMS = {
    "Url": "rtmp://live.example.com/app/s",
    "TaskNotifyConfig": {"NotifyType": "URL", "NotifyUrl": "http://127.0.0.1:9/hook"},
    "AiContentReviewTask": {"Definition": 10},
}


class FakeTime:
    """A monotonic clock that only moves when someone sleeps on it."""

    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds
        await asyncio.sleep(0)


async def test_the_rate_limiter_lets_100_start_in_any_second_and_no_more() -> None:
    t = FakeTime()
    limiter = RateLimiter(100, clock=t.clock, sleep=t.sleep)
    starts: list[float] = []

    async def one() -> None:
        await limiter.acquire()
        starts.append(t.now)

    await asyncio.gather(*(one() for _ in range(250)))
    assert len(starts) == 250
    assert starts[:100] == [0.0] * 100  # the first hundred go at once
    assert max(sum(1 for s in starts if w <= s < w + 1.0) for w in starts) == 100
    # ...and it waits no longer than the limit asks: 250 starts take just over two seconds.
    assert starts[-1] == pytest.approx(2.0)


@dataclass
class FakeMps:
    """Answers ProcessLiveStream with RequestLimitExceeded ``limited`` times, then with a TaskId."""

    limited: int = 0
    error: str = "RequestLimitExceeded"
    calls: list[dict[str, Any]] = field(default_factory=list)
    arrivals: list[float] = field(default_factory=list)

    async def handle(self, request: web.Request) -> web.Response:
        self.arrivals.append(time.monotonic())
        assert request.headers["X-TC-Action"] == "ProcessLiveStream"
        assert request.headers["Authorization"].startswith("TC3-HMAC-SHA256 Credential=AKIDtest/")
        self.calls.append(orjson.loads(await request.read()))
        request_id = str(uuid.uuid4())
        if len(self.calls) <= self.limited:
            body: dict[str, Any] = {
                "Error": {"Code": self.error, "Message": "slow down"},
                "RequestId": request_id,
            }
        else:
            body = {"TaskId": f"task-{len(self.calls)}", "RequestId": request_id}
        # Exactly this Content-Type: the SDK reads Response.Error only under it.
        headers = {"Content-Type": "application/json"}
        return web.Response(body=orjson.dumps({"Response": body}), headers=headers)


@pytest.fixture
async def mps() -> AsyncIterator[tuple[FakeMps, TestServer]]:
    fake = FakeMps()
    app = web.Application()
    app.router.add_post("/", fake.handle)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    yield fake, server
    await server.close()


def settings_for(server: TestServer, **settings: Any) -> MpsSettings:
    return MpsSettings.model_validate(
        {
            "endpoint": f"127.0.0.1:{server.port}",
            "protocol": "http",
            "secret_id": "AKIDtest",
            "secret_key": "test-secret",
            **settings,
        }
    )


def client(server: TestServer, t: FakeTime | None = None, **settings: Any) -> MpsClient:
    mps_settings = MpsSettings.model_validate(
        {
            "endpoint": f"127.0.0.1:{server.port}",
            "protocol": "http",
            "secret_id": "AKIDtest",
            "secret_key": "test-secret",
            **settings,
        }
    )
    if t is None:
        return MpsClient(mps_settings)
    return MpsClient(mps_settings, clock=t.clock, sleep=t.sleep)


async def test_request_limit_exceeded_is_retried_with_doubling_backoff_then_succeeds(
    mps: tuple[FakeMps, TestServer],
) -> None:
    fake, server = mps
    fake.limited = 3
    t = FakeTime()
    task_id, request_id = await client(server, t).process_live_stream(PARAMS)
    assert task_id == "task-4"
    assert request_id
    assert len(fake.calls) == 4
    assert all(call["Url"] == PARAMS["Url"] for call in fake.calls)  # the same request each time
    assert t.slept == [0.2, 0.4, 0.8]


async def test_request_limit_exceeded_past_max_retries_is_an_mps_error_with_its_code(
    mps: tuple[FakeMps, TestServer],
) -> None:
    fake, server = mps
    fake.limited = 100
    t = FakeTime()
    with pytest.raises(MpsError) as caught:
        await client(server, t, max_retries=2).process_live_stream(PARAMS)
    assert caught.value.mps_code == "RequestLimitExceeded"
    assert caught.value.request_id
    assert len(fake.calls) == 3  # the first try and two retries
    assert t.slept == [0.2, 0.4]


async def test_other_mps_errors_are_not_retried(mps: tuple[FakeMps, TestServer]) -> None:
    fake, server = mps
    fake.limited, fake.error = 1, "AuthFailure.SignatureFailure"
    t = FakeTime()
    with pytest.raises(MpsError) as caught:
        await client(server, t).process_live_stream(PARAMS)
    assert caught.value.mps_code == "AuthFailure.SignatureFailure"
    assert len(fake.calls) == 1
    assert t.slept == []


async def test_a_burst_reaches_mps_at_no_more_than_the_rate_limit(mps: tuple[FakeMps, TestServer]) -> None:
    fake, server = mps
    c = client(server, rate_limit=50, max_retries=0)  # the real clock: 120 calls take over 2 s
    began = time.monotonic()
    answers = await asyncio.gather(*(c.process_live_stream(PARAMS) for _ in range(120)))
    assert len({task_id for task_id, _ in answers}) == 120
    arrivals = sorted(fake.arrivals)
    # Call 51 no sooner than a second after the first could start, call 101 two seconds.
    assert arrivals[50] - began >= 1.0
    assert arrivals[100] - began >= 2.0


async def test_two_processes_on_one_store_share_one_budget(
    mps: tuple[FakeMps, TestServer], tmp_path: Any
) -> None:
    from receiver.mps import shared_budgets
    from receiver.stores.sqlite import SqliteStore

    fake, server = mps
    store = await SqliteStore.open(tmp_path / "shared.db")
    try:
        # Two clients (two processes' worth) at 2 requests/s each on their own, 2/s between them.
        settings = settings_for(server, rate_limit=2, max_retries=0)
        a, b = (MpsClient(settings, budgets=shared_budgets(store, settings)) for _ in range(2))
        began = time.monotonic()
        await asyncio.gather(*(c.process_live_stream(PARAMS) for c in (a, b, a, b, a)))
    finally:
        await store.aclose()
    arrivals = sorted(fake.arrivals)
    assert len(arrivals) == 5
    assert arrivals[2] - began >= 0.95  # the third waited for a slot the first two took
    assert arrivals[4] - began >= 1.95
