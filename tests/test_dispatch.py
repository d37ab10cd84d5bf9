"""The outbox and the dispatcher end to end: real SQLite, in-memory sinks, the HTTP API."""

from __future__ import annotations

import asyncio
import random
from dataclasses import replace
from typing import Any

import pytest

from receiver.errors import SinkError, UndeliverableError
from receiver.ports import Delivery, DeliveryState, Recorded
from receiver.recent import RecentEvents
from receiver.retries import CircuitBreaker, SinkPolicy, settle
from receiver.tasks import MatchedBy, Task, TaskState
from tests.apps import FAST, ClientFactory, dispatcher_of, post, sink, start
from tests.payloads import EOF_DOC, QUALITY, RECOGNITION, REVIEW, event_of
from tests.waiting import eventually

# --- pure parts ---------------------------------------------------------------------------------


def test_recent_events_keep_the_last_matched_ones_only() -> None:
    recent = RecentEvents(limit=3)
    task = Task("ours", "T1", "", "", "", {}, TaskState.RUNNING, 1.0, 1.0)
    batch = [event_of({**REVIEW, "TaskId": "T1", "SessionId": f"s-{i}"}) for i in range(5)]
    recorded = [
        Recorded(e.event_id, i + 1, False, task, MatchedBy.TASK_ID, False) for i, e in enumerate(batch)
    ]
    orphan = event_of({**REVIEW, "TaskId": "nobody"})
    repeat = batch[0]
    recent.add(
        [*batch, orphan, repeat],
        [
            *recorded,
            Recorded(orphan.event_id, 6, False, None, None, False),
            replace(recorded[0], duplicate=True),
        ],
    )
    assert [seq for seq in range(1, 7) if recent.get(seq) is not None] == [3, 4, 5]  # bounded, oldest out
    kept = recent.get(5)
    assert kept is not None
    assert (kept.event_id, kept.task_ref, kept.matched_by, kept.duplicates) == (
        batch[4].event_id,
        "ours",
        MatchedBy.TASK_ID,
        0,
    )


def delivery(attempts: int) -> Delivery:
    return Delivery(id=1, sink="s", task_key="t", attempts=attempts, event=None)  # type: ignore[arg-type]


def test_settle_follows_the_schedule_with_jitter_then_gives_up() -> None:
    policy = SinkPolicy(retry_schedule=(10.0, 100.0), jitter=0.2)
    rng = random.Random(7)
    first = settle(delivery(0), SinkError("x"), policy, 1000.0, rng)
    assert first.state == DeliveryState.PENDING
    assert 1008.0 <= first.next_attempt_at <= 1012.0
    second = settle(delivery(1), SinkError("x"), policy, 1000.0, rng)
    assert 1080.0 <= second.next_attempt_at <= 1120.0
    last = settle(delivery(2), SinkError("boom"), policy, 1000.0, rng)
    assert (last.state, last.attempts, last.error) == (DeliveryState.DEAD, 3, "boom")
    ok = settle(delivery(2), None, policy, 1000.0, rng)
    assert (ok.state, ok.attempts) == (DeliveryState.DELIVERED, 3)


def test_an_undeliverable_event_is_dead_at_the_first_attempt() -> None:
    policy = SinkPolicy(retry_schedule=(10.0, 100.0), jitter=0.0)
    dead = settle(delivery(0), UndeliverableError("routing key too long"), policy, 5.0, random.Random())
    assert (dead.state, dead.attempts, dead.error) == (DeliveryState.DEAD, 1, "routing key too long")


def test_retry_after_is_honoured_when_longer_than_the_schedule_but_never_past_its_longest_wait() -> None:
    policy = SinkPolicy(retry_schedule=(1.0, 600.0), jitter=0.0)
    waited = settle(delivery(0), SinkError("busy", retry_after=120), policy, 0.0, random.Random())
    assert waited.next_attempt_at == 120.0
    parked = settle(delivery(0), SinkError("busy", retry_after=10**11), policy, 0.0, random.Random())
    assert parked.next_attempt_at == 600.0


def test_breaker_opens_after_the_threshold_and_lets_one_trial_through_after_cooldown() -> None:
    b = CircuitBreaker(threshold=3, cooldown=10)
    for _ in range(3):
        assert b.allows(0)
        b.failed(0)
    assert b.state == "open"
    assert not b.allows(5)
    assert b.allows(11)  # half-open: one trial
    assert not b.allows(11)
    b.failed(11)
    assert not b.allows(12)
    assert b.allows(22)
    b.succeeded()
    assert b.state == "closed"
    assert b.allows(22)


# --- filters ------------------------------------------------------------------------------------


async def test_filters_include_and_exclude_what_they_say(
    store_url: str, aiohttp_client: ClientFactory
) -> None:
    client = await start(
        aiohttp_client,
        store_url,
        [
            {"name": "all", "kind": "memory"},
            {"name": "blocks", "kind": "memory", "filter": {"suggestions": ["block"]}},
            {
                "name": "faces",
                "kind": "memory",
                "filter": {"kinds": ["FaceRecognition"], "min_confidence": 90},
            },
            {"name": "eof-only", "kind": "memory", "filter": {"types": ["ProcessEof"]}},
            {"name": "vip", "kind": "memory", "filter": {"task_labels": {"tier": "vip"}}},
        ],
    )
    reg = await client.post("/v1/tasks", json={"task_id": "vip-task", "labels": {"tier": "vip"}})
    assert reg.status == 201
    # REVIEW has one block and one review finding; RECOGNITION a 96.3 face; QUALITY none of those.
    for doc in (REVIEW, RECOGNITION, {**QUALITY, "TaskId": "vip-task", "SessionContext": ""}, EOF_DOC):
        await post(client, doc)
    await eventually(lambda: len(sink(client, "all").received) == 4)

    async def all_settled() -> bool:  # nothing left on its way to any sink
        stats = (await (await client.get("/v1/sinks")).json())["items"]
        return len(stats) == 5 and all(s["backlog"] == 0 for s in stats)

    await eventually(all_settled)

    def types(name: str) -> list[str]:
        return [d["notification_type"] for d in sink(client, name).received]

    assert types("blocks") == ["AiReviewResult", "ProcessEof"]  # an event with no findings is not judged
    assert types("faces") == ["AiRecognitionResult", "ProcessEof"]
    assert types("eof-only") == ["ProcessEof"]
    assert types("vip") == ["AiQualityControlResult"]
    delivered = sink(client, "blocks").received[0]
    assert delivered["event_id"]
    assert delivered["findings"]
    assert delivered["payload"]["TaskId"] == REVIEW["TaskId"]


# --- delivery -----------------------------------------------------------------------------------


async def test_a_failing_sink_that_recovers_gets_every_event_in_order_per_task(
    store_url: str, aiohttp_client: ClientFactory
) -> None:
    client = await start(
        aiohttp_client,
        store_url,
        [{"name": "flaky", "kind": "memory", "options": {"fail_first": 25}, "concurrency": 4, **FAST,
          "retry_schedule": [0.01] * 30}],
    )  # fmt: skip
    tasks = [f"order-task-{t}" for t in range(5)]
    sent: dict[str, list[str]] = {t: [] for t in tasks}
    for i in range(8):
        for t in tasks:
            await post(client, {**REVIEW, "TaskId": t, "SessionContext": "", "SessionId": f"{t}-{i}"})
            sent[t].append(f"{t}-{i}")
    for t in tasks:
        await post(client, {**EOF_DOC, "TaskId": t})
    flaky = sink(client, "flaky")
    await eventually(lambda: len(flaky.received) == 45, within=20)
    assert flaky.attempts > 45  # it did fail on the way
    for t in tasks:
        got = [d for d in flaky.received if d["task_id"] == t]
        assert [d["session_id"] for d in got[:-1]] == sent[t]
        assert got[-1]["notification_type"] == "ProcessEof"


async def test_after_the_last_attempt_a_delivery_is_dead_kept_and_redrivable(
    store_url: str, aiohttp_client: ClientFactory
) -> None:
    client = await start(
        aiohttp_client, store_url, [{"name": "down", "kind": "memory", "options": {"fail_first": 4}, **FAST}]
    )
    await post(client, REVIEW)

    async def dead() -> list[dict[str, Any]]:
        resp = await client.get("/v1/deliveries", params={"sink": "down", "state": "dead"})
        return list((await resp.json())["items"])

    deadline = asyncio.get_running_loop().time() + 5
    while not await dead():
        assert asyncio.get_running_loop().time() < deadline
        await asyncio.sleep(0.02)
    [row] = await dead()
    assert (row["attempts"], row["last_error"]) == (4, "told to fail")
    stats = (await (await client.get("/v1/sinks")).json())["items"]
    assert [(s["sink"], s["dead"], s["backlog"]) for s in stats] == [("down", 1, 0)]

    dry = await client.post("/v1/deliveries/redrive", json={"sink": "down", "dry_run": True})
    assert await dry.json() == {"matched": 1}
    redriven = await client.post("/v1/deliveries/redrive", json={"sink": "down"})
    assert await redriven.json() == {"redriven": 1}
    await eventually(lambda: len(sink(client, "down").received) == 1)
    assert sink(client, "down").received[0]["event_id"] == row["event_id"]


async def test_one_dead_sink_does_not_hold_up_the_others(
    store_url: str, aiohttp_client: ClientFactory
) -> None:
    client = await start(
        aiohttp_client,
        store_url,
        [
            {
                "name": "stuck",
                "kind": "memory",
                "options": {"fail_first": 10**6, "delay": 0.2},
                "concurrency": 2,
            },
            {"name": "healthy", "kind": "memory"},
        ],
    )
    for i in range(100):
        await post(client, {**REVIEW, "TaskId": f"t-{i % 10}", "SessionContext": "", "SessionId": str(i)})
    stuck = sink(client, "stuck")
    await eventually(lambda: stuck.attempts >= 2)  # it is being tried, two tasks at a time, slowly
    await eventually(lambda: len(sink(client, "healthy").received) == 100, within=5)
    # All of the healthy sink's deliveries went out while the stuck one had barely started: in
    # the time it took, the stuck sink could have made only a few of its slow attempts.
    assert stuck.attempts < 100
    deadline = asyncio.get_running_loop().time() + 5
    while True:  # the last settlements reach the store just after the sink has the events
        stats = {s["sink"]: s for s in (await (await client.get("/v1/sinks")).json())["items"]}
        if stats["healthy"]["delivered"] == 100:
            break
        assert asyncio.get_running_loop().time() < deadline, stats
        await asyncio.sleep(0.02)
    assert stats["healthy"]["backlog"] == 0
    assert (stats["stuck"]["delivered"], stats["stuck"]["backlog"]) == (0, 100)


async def test_an_event_its_sink_can_never_encode_is_dead_at_once_and_does_not_trip_the_breaker(
    store_url: str, aiohttp_client: ClientFactory
) -> None:
    client = await start(
        aiohttp_client,
        store_url,
        [{"name": "bus", "kind": "memory", "options": {"undeliverable_types": ["AiReviewResult"]},
          "breaker_threshold": 1, "breaker_cooldown": 3600, "retry_schedule": [3600.0], "jitter": 0.0}],
    )  # fmt: skip
    tid = {"TaskId": "poison-task", "SessionContext": ""}
    for i in range(3):  # poison first, twice: with the breaker counting, the first would stop all
        await post(client, {**REVIEW, **tid, "SessionId": f"poison-{i}"})
    await post(client, {**EOF_DOC, "TaskId": "poison-task"})
    await post(client, {**QUALITY, "TaskId": "other-task", "SessionContext": ""})
    bus = sink(client, "bus")
    await eventually(lambda: len(bus.received) == 2)
    assert sorted(d["notification_type"] for d in bus.received) == ["AiQualityControlResult", "ProcessEof"]
    # A task's line is settled once it has all been sent, in one commit: wait for that.
    deadline = asyncio.get_running_loop().time() + 10
    while True:
        resp = await client.get("/v1/deliveries", params={"sink": "bus", "state": "dead"})
        dead = (await resp.json())["items"]
        if len(dead) == 3 or asyncio.get_running_loop().time() > deadline:
            break
        await asyncio.sleep(0.01)
    assert [(d["attempts"], d["last_error"]) for d in dead] == [(1, "cannot encode a AiReviewResult")] * 3
    assert dispatcher_of(client).status()["bus"]["breaker"] == "closed"


async def test_orphans_reach_a_task_labels_sink_once_their_task_is_registered(
    store_url: str, aiohttp_client: ClientFactory
) -> None:
    client = await start(
        aiohttp_client,
        store_url,
        [
            {"name": "all", "kind": "memory"},
            {"name": "vip", "kind": "memory", "filter": {"task_labels": {"tier": "vip"}}},
        ],
    )
    for i in range(2):  # before the task is known: orphans
        await post(client, {**REVIEW, "TaskId": "early-task", "SessionContext": "", "SessionId": f"o{i}"})
    await eventually(lambda: len(sink(client, "all").received) == 2)
    reg = await client.post("/v1/tasks", json={"task_id": "early-task", "labels": {"tier": "vip"}})
    assert (reg.status, (await reg.json())["adopted_events"]) == (201, 2)
    await eventually(lambda: len(sink(client, "vip").received) == 2)
    assert [d["session_id"] for d in sink(client, "vip").received] == ["o0", "o1"]
    assert len(sink(client, "all").received) == 2  # routed again only where it had not gone


async def test_pending_deliveries_survive_a_restart_and_resume(
    store_url: str, aiohttp_client: ClientFactory
) -> None:
    slow = [{"name": "slow", "kind": "memory", "options": {"delay": 0.05}, "concurrency": 1}]
    first = await start(aiohttp_client, store_url, slow)
    for i in range(30):
        await post(first, {**REVIEW, "SessionId": f"r-{i}"})
    await eventually(lambda: len(sink(first, "slow").received) >= 3)
    first_sink = sink(first, "slow")
    await first.close()  # stops the dispatcher mid-backlog (the delivery in hand finishes)
    delivered_before = {d["event_id"] for d in first_sink.received}
    assert len(delivered_before) < 30

    second = await start(aiohttp_client, store_url, slow)
    await eventually(lambda: len(sink(second, "slow").received) + len(delivered_before) >= 30, within=10)
    everything = delivered_before | {d["event_id"] for d in sink(second, "slow").received}
    assert len(everything) == 30


@pytest.mark.parametrize("bad", [{"state": "lost"}, {"sink": 3}, {"colour": "red"}, {"dry_run": "yes"}])
async def test_bad_redrive_requests_are_400_naming_the_field(
    store_url: str, aiohttp_client: ClientFactory, bad: dict[str, Any]
) -> None:
    client = await start(aiohttp_client, store_url, [{"name": "a", "kind": "memory"}])
    resp = await client.post("/v1/deliveries/redrive", json=bad)
    assert resp.status == 400
    assert (await resp.json())["error"]["field"] == next(iter(bad))


async def test_the_breaker_half_open_trial_is_not_lost_when_nothing_is_due(
    store_url: str, aiohttp_client: ClientFactory
) -> None:
    client = await start(
        aiohttp_client,
        store_url,
        [{"name": "b", "kind": "memory", "options": {"fail_first": 1}, "breaker_threshold": 1,
          "breaker_cooldown": 0.05, "retry_schedule": [30.0], "jitter": 0.0}],
    )  # fmt: skip
    await post(client, {**REVIEW, "TaskId": "first-task", "SessionContext": ""})
    b = sink(client, "b")
    await eventually(lambda: b.attempts == 1)  # failed: breaker open, the retry 30 s away
    await asyncio.sleep(0.2)  # the cooldown passes while nothing is due
    await post(client, {**REVIEW, "TaskId": "second-task", "SessionContext": ""})
    await eventually(lambda: len(b.received) == 1, within=3)
    assert b.received[0]["task_id"] == "second-task"
