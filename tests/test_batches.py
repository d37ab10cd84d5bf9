"""Batches (``max_batch`` above 1): many events per request or message, each task's order kept inside
and across them, a failed batch retried whole, an event that cannot be encoded dead alone; through
the dispatcher on both stores, and the http and amqp sinks against a real server and broker."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import aio_pika
import orjson
import pytest
from aiohttp import web
from standardwebhooks.webhooks import Webhook

from receiver.http.keys import DISPATCHER
from receiver.ports import Batch
from receiver.sinks.http import HttpSink
from tests.amqp_broker import AMQP_URL
from tests.apps import ClientFactory, ServerFactory, deliveries, post, sink, start
from tests.builders import SECRET, delivery, record
from tests.payloads import EOF_DOC, QUALITY, REVIEW
from tests.waiting import eventually


async def test_batches_carry_many_events_and_each_tasks_order_holds_inside_and_across_them(
    store_url: str, aiohttp_client: ClientFactory
) -> None:
    client = await start(
        aiohttp_client,
        store_url,
        [{"name": "batched", "kind": "memory", "max_batch": 10, "max_wait": 0.05, "concurrency": 2}],
    )
    tasks = [f"batch-task-{t}" for t in range(5)]
    for i in range(8):
        for t in tasks:
            await post(client, {**REVIEW, "TaskId": t, "SessionContext": "", "SessionId": f"{t}-{i}"})
    for t in tasks:
        await post(client, {**EOF_DOC, "TaskId": t})
    batched = sink(client, "batched")
    await eventually(lambda: len(batched.received) == 45, within=20)
    assert sorted(d["event_id"] for d in batched.received) == sorted(
        {d["event_id"] for d in batched.received}
    )
    sizes = [len(ids) for _, ids in batched.batches]
    assert max(sizes) > 1  # several events per request
    assert max(sizes) <= 10
    assert sum(sizes) == 45
    for t in tasks:
        got = [d for d in batched.received if d["task_id"] == t]
        assert [d["session_id"] for d in got[:-1]] == [f"{t}-{i}" for i in range(8)]
        assert got[-1]["notification_type"] == "ProcessEof"
    assert client.app[DISPATCHER].current.status()["batched"]["batches"] == len(batched.batches)


async def test_a_failed_batch_is_retried_whole_with_its_members_and_id_and_counts_as_one_failure(
    store_url: str, aiohttp_client: ClientFactory
) -> None:
    client = await start(
        aiohttp_client,
        store_url,
        [{"name": "flaky", "kind": "memory", "options": {"fail_first": 1}, "max_batch": 10, "max_wait": 0.5,
          "retry_schedule": [0.05, 0.05], "jitter": 0.0, "breaker_threshold": 2, "breaker_cooldown": 3600}],
    )  # fmt: skip
    for i in range(6):
        await post(client, {**REVIEW, "TaskId": f"retry-{i}", "SessionContext": "", "SessionId": f"r{i}"})
    flaky = sink(client, "flaky")
    await eventually(lambda: len(flaky.received) == 6, within=10)
    first, second = flaky.tried_batches[:2]
    assert first == second  # the same id (webhook-id, message id) and the same members, in order
    assert len(first[1]) == 6
    assert flaky.batches == [second]
    # Six events failed in one request: one failure, under the breaker's threshold of two.
    assert client.app[DISPATCHER].current.status()["flaky"]["breaker"] == "closed"
    deadline = asyncio.get_running_loop().time() + 5
    while True:  # settled at the end of each line
        rows = await deliveries(client, sink="flaky")
        if all(r["state"] == "delivered" for r in rows) or asyncio.get_running_loop().time() > deadline:
            break
        await asyncio.sleep(0.02)
    assert [(r["state"], r["attempts"]) for r in rows] == [("delivered", 2)] * 6


async def test_an_event_that_cannot_be_encoded_leaves_its_batch_and_goes_dead_alone(
    store_url: str, aiohttp_client: ClientFactory
) -> None:
    client = await start(
        aiohttp_client,
        store_url,
        [{"name": "picky", "kind": "memory", "options": {"undeliverable_types": ["AiQualityControlResult"]},
          "max_batch": 10, "max_wait": 0.3, "breaker_threshold": 1, "breaker_cooldown": 3600}],
    )  # fmt: skip
    same = {"TaskId": "mixed-task", "SessionContext": ""}
    await post(client, {**REVIEW, **same, "SessionId": "before"})
    await post(client, {**QUALITY, **same})
    await post(client, {**REVIEW, **same, "SessionId": "after"})
    await post(client, {**REVIEW, "TaskId": "other-task", "SessionContext": "", "SessionId": "other"})
    picky = sink(client, "picky")
    await eventually(lambda: len(picky.received) == 3, within=10)
    assert [d["session_id"] for d in picky.received if d["task_id"] == "mixed-task"] == ["before", "after"]
    assert all(d["notification_type"] == "AiReviewResult" for d in picky.received)
    deadline = asyncio.get_running_loop().time() + 5
    while not (dead := await deliveries(client, sink="picky", state="dead")):
        assert asyncio.get_running_loop().time() < deadline
        await asyncio.sleep(0.02)
    [row] = dead
    assert (row["notification_type"], row["attempts"]) == ("AiQualityControlResult", 1)
    assert client.app[DISPATCHER].current.status()["picky"]["breaker"] == "closed"  # the target saw nothing


async def test_http_batch_is_one_post_of_an_array_signed_over_the_batch_under_the_batch_id(
    aiohttp_server: ServerFactory,
) -> None:
    received: list[tuple[bytes, dict[str, str]]] = []

    async def hook(request: web.Request) -> web.Response:
        received.append((await request.read(), dict(request.headers)))
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/hook", hook)
    server = await aiohttp_server(app)
    sink = HttpSink.from_options("hooks", {"url": str(server.make_url("/hook")), "secret": SECRET})
    members = [delivery(record(SessionId=f"s-{i}")) for i in range(3)]
    batch = Batch(
        "batch_0123", "", [d for d, _ in members], [sink.encode(document)[0] for _, document in members]
    )
    try:
        await sink.deliver_batch(batch)
    finally:
        await sink.aclose()
    [(payload, headers)] = received
    assert headers["webhook-id"] == "batch_0123"
    Webhook(SECRET).verify(payload, headers)  # the signature covers the whole array
    documents = orjson.loads(payload)
    assert [d["session_id"] for d in documents] == ["s-0", "s-1", "s-2"]
    assert [d["event_id"] for d in documents] == [document["event_id"] for _, document in members]


@pytest.mark.amqp
async def test_amqp_batches_are_grouped_by_routing_key(tmp_path: Path, aiohttp_client: ClientFactory) -> None:
    exchange = f"test.batches.{uuid.uuid4().hex[:8]}"
    connection = await aio_pika.connect(AMQP_URL)
    try:
        channel = await connection.channel()
        await channel.declare_exchange(exchange, aio_pika.ExchangeType.TOPIC, durable=True)
        queue = await channel.declare_queue(exclusive=True)
        await queue.bind(exchange, routing_key="mps.#")
        client = await start(
            aiohttp_client,
            f"sqlite:///{tmp_path}/receiver.db",
            [{"name": "bus", "kind": "amqp", "options": {"url": AMQP_URL, "exchange": exchange},
              "max_batch": 10, "max_wait": 0.3}],
        )  # fmt: skip
        for i in range(3):  # two routing keys, interleaved, over three tasks
            await post(client, {**REVIEW, "TaskId": f"bus-{i}", "SessionContext": "", "SessionId": f"b{i}"})
            await post(client, {**QUALITY, "TaskId": f"bus-{i}", "SessionContext": ""})
        messages: list[aio_pika.abc.AbstractIncomingMessage] = []
        deadline = asyncio.get_running_loop().time() + 10
        while sum(len(orjson.loads(m.body)) for m in messages) < 6:
            assert asyncio.get_running_loop().time() < deadline, messages
            message = await queue.get(fail=False)
            if message is None:
                await asyncio.sleep(0.02)
                continue
            await message.ack()
            messages.append(message)
        for message in messages:
            documents = orjson.loads(message.body)
            assert message.headers["x-batch-size"] == len(documents)
            assert str(message.message_id).startswith("batch_")
            types = {d["notification_type"] for d in documents}
            assert len(types) == 1  # one routing key per message
            assert message.routing_key == (
                "mps.AiReviewResult.block"
                if types == {"AiReviewResult"}
                else "mps.AiQualityControlResult.QualityControl"
            )
        assert max(len(orjson.loads(m.body)) for m in messages) > 1
        await channel.exchange_delete(exchange)
    finally:
        await connection.close()
