"""A sink's rate limit: a token bucket counting events, batched or not. Over the limit a delivery
waits; a long wait reschedules it (no attempt spent, the breaker not told). Shown in GET /v1/sinks
and in the metrics."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from receiver.http.keys import DISPATCHER
from receiver.throttle import TokenBucket
from tests.apps import ClientFactory, deliveries, post, sink, start
from tests.payloads import REVIEW
from tests.waiting import eventually


def test_the_bucket_lets_a_burst_through_then_its_rate_and_queues_reservations_in_order() -> None:
    bucket = TokenBucket(rate=10.0, burst=5)
    assert [bucket.reserve(1, 100.0) for _ in range(5)] == [0.0] * 5  # the burst
    assert bucket.reserve(1, 100.0) == 0.1  # then one every tenth of a second, in turn
    assert bucket.reserve(1, 100.0) == 0.2
    assert bucket.reserve(10, 100.0) == 1.2  # a batch larger than what is left still gets its turn
    bucket.cancel(10, 100.0)  # not used after all: given back
    assert bucket.reserve(1, 100.0) == 0.3
    assert bucket.held_back == 13
    assert bucket.available(200.0) == 5  # never more than the burst saved up


async def test_a_rate_limited_sink_delivers_at_its_rate_without_failing_anything(
    tmp_path: Path, aiohttp_client: ClientFactory
) -> None:
    client = await start(
        aiohttp_client,
        f"sqlite:///{tmp_path}/receiver.db",
        [{"name": "paced", "kind": "memory", "rate_limit": 40, "rate_burst": 5, "breaker_threshold": 1}],
    )
    started = time.monotonic()
    for i in range(45):
        await post(client, {**REVIEW, "TaskId": f"paced-{i % 5}", "SessionContext": "", "SessionId": f"p{i}"})
    paced = sink(client, "paced")
    await eventually(lambda: len(paced.received) == 45, within=10)
    elapsed = time.monotonic() - started
    assert elapsed >= (45 - 5) / 40 * 0.9  # the burst at once, the rest at 40 a second
    assert paced.attempts == 45  # nothing failed, nothing was tried twice
    status = client.app[DISPATCHER].current.status()["paced"]
    assert (status["breaker"], status.get("failed", 0)) == ("closed", 0)
    [listed] = (await (await client.get("/v1/sinks")).json())["items"]
    assert listed["rate_limit"]["per_second"] == 40
    assert listed["rate_limit"]["burst"] == 5
    assert listed["rate_limit"]["held_back"] > 0


async def test_a_long_wait_reschedules_the_deliveries_with_no_attempt_spent_nor_breaker_told(
    tmp_path: Path, aiohttp_client: ClientFactory
) -> None:
    url = f"sqlite:///{tmp_path}/receiver.db"
    paced = [{"name": "slow", "kind": "memory", "rate_limit": 1, "rate_burst": 10, "max_batch": 10,
              "max_wait": 0.05, "breaker_threshold": 1, "breaker_cooldown": 3600}]  # fmt: skip
    ingest = await start(aiohttp_client, url, paced, dispatch_in_serve=False)
    for i in range(20):  # one task's backlog, there before the dispatcher starts
        await post(ingest, {**REVIEW, "TaskId": "backlog", "SessionContext": "", "SessionId": f"b{i}"})
    await ingest.close()
    client = await start(aiohttp_client, url, paced)
    slow = sink(client, "slow")
    await eventually(lambda: len(slow.received) == 10)  # the burst: one batch of ten
    deadline = asyncio.get_running_loop().time() + 5
    while True:  # the next ten would wait ten seconds: rescheduled, settled at the line's end
        waiting = [r for r in await deliveries(client, sink="slow", state="pending") if r["last_error"]]
        if len(waiting) == 10:
            break
        assert asyncio.get_running_loop().time() < deadline, waiting
        await asyncio.sleep(0.02)
    assert {(r["attempts"], r["last_error"]) for r in waiting} == {
        (0, "held back by the sink's rate limit (1 events/s)")
    }
    assert slow.attempts == 1  # one request; the rest never went
    assert client.app[DISPATCHER].current.status()["slow"]["breaker"] == "closed"
    families = {
        f.name: f for f in text_string_to_metric_families(await (await client.get("/metrics")).text())
    }
    [held] = [s for s in families["receiver_sink_rate_limited_events"].samples if s.name.endswith("_total")]
    assert (held.labels, held.value) == ({"sink": "slow"}, 10.0)
    [limit] = families["receiver_sink_rate_limit"].samples
    assert (limit.labels, limit.value) == ({"sink": "slow"}, 1.0)
