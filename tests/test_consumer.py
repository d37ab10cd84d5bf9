"""The AMQP consumer against the real RabbitMQ on 127.0.0.1:5672, feeding the real SQLite store."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp.test_utils import TestClient

from receiver.app import create_app
from receiver.consumer import REASON_HEADER, decode_body
from receiver.documents import iso
from tests.amqp_broker import Broker
from tests.apps import ClientFactory, consumer_settings, count_is, events_of
from tests.payloads import (
    EOF_DOC,
    FROZEN_NOW,
    NOTIFICATION_FILES,
    REVIEW,
    body,
    example,
    example_bytes,
    signed,
)
from tests.waiting import eventually

pytestmark = pytest.mark.amqp


@pytest.fixture
async def consumer_app(
    aiohttp_client: ClientFactory, tmp_path: Path, broker: Broker, clock: list[float]
) -> TestClient[Any, Any]:
    return await aiohttp_client(create_app(consumer_settings(tmp_path, broker.queue), clock=lambda: clock[0]))


def test_bodies_are_taken_as_json_or_as_base64_of_json() -> None:
    raw = example_bytes("08-LiveRecordResult.constructed.json")
    assert decode_body(raw) == raw
    assert decode_body(base64.b64encode(raw)) == raw
    assert decode_body(b"not base64 and not json") == b"not base64 and not json"
    assert decode_body(base64.b64encode(b"plain words")) == base64.b64encode(b"plain words")


async def test_every_example_through_the_queue_is_stored_and_acked(
    consumer_app: TestClient[Any, Any], broker: Broker
) -> None:
    for name in NOTIFICATION_FILES:  # re-signed: the examples' own Timestamps spread over hours
        await broker.publish(body(signed(example(name))))
    await eventually(await count_is(consumer_app, len(NOTIFICATION_FILES)))
    stored = await events_of(consumer_app)
    assert {e["channel"] for e in stored} == {"amqp"}
    assert {e["verdict"] for e in stored} == {"valid"}
    assert await broker.depth(broker.queue) == 0
    assert await broker.depth(f"{broker.queue}.dead") == 0


async def test_cmq_envelope_and_base64_bodies_are_accepted(
    consumer_app: TestClient[Any, Any], broker: Broker, clock: list[float]
) -> None:
    envelope = example_bytes("10-CMQ-ReceiveMessage-envelope.constructed.json")
    clock[0] = orjson.loads(orjson.loads(envelope)["msgBody"])["Timestamp"] - 300  # inside its validity
    await broker.publish(envelope)
    await broker.publish(base64.b64encode(body(signed(REVIEW, timestamp=int(clock[0]) + 300))))
    await broker.publish(
        orjson.dumps({"MsgBody": base64.b64encode(b"x").decode()})
    )  # poison: not JSON inside
    await eventually(await count_is(consumer_app, 2))
    types = sorted(e["notification_type"] for e in await events_of(consumer_app))
    assert types == ["AiReviewResult", "LiveRecordResult"]
    await eventually(lambda: _depth_is(broker, f"{broker.queue}.dead", 1))


async def _depth_is(broker: Broker, name: str, n: int) -> bool:
    return await broker.depth(name) == n


async def test_poison_messages_reach_the_dead_letter_queue_with_the_reason_and_neighbours_do_not(
    consumer_app: TestClient[Any, Any], broker: Broker
) -> None:
    poison = [
        (b"{ not json", "invalid_notification"),
        (body({"NotificationType": "ProcessEof"}), "invalid_notification"),
        (body(signed(EOF_DOC, key="not-our-key")), "invalid_signature"),
        (body(EOF_DOC), "invalid_signature"),  # unsigned under "required"
    ]
    goods = [body(signed({**REVIEW, "SessionId": f"good-{i}"})) for i in range(12)]
    for i, good in enumerate(goods):  # each poison message among good neighbours, in one prefetch window
        await broker.publish(good)
        if i % 3 == 1:
            await broker.publish(poison[i // 3][0])
    expected_reasons = dict(poison)
    await eventually(await count_is(consumer_app, len(goods)))
    await eventually(lambda: _depth_is(broker, f"{broker.queue}.dead", len(expected_reasons)))
    dead = await broker.drain(f"{broker.queue}.dead")
    assert {m.body: (m.headers or {})[REASON_HEADER] for m in dead} == expected_reasons
    assert all("x-receiver-detail" in (m.headers or {}) for m in dead)
    missing = [m for m in dead if m.body == body({"NotificationType": "ProcessEof"})]
    assert missing[0].headers is not None
    assert missing[0].headers["x-receiver-field"] == "TaskId"
    assert await broker.depth(broker.queue) == 0
    resp = await consumer_app.get("/v1/quarantine")
    quarantined = (await resp.json())["items"]
    assert sorted(q["reason"] for q in quarantined) == sorted(expected_reasons.values())
    # The quarantine is read through the API: no row carries a Sign pair (the DLQ copy keeps it).
    signs = {signed(EOF_DOC, key="not-our-key")["Sign"], signed(EOF_DOC)["Sign"]}
    assert not [q for q in quarantined if any(sign in q["body"] for sign in signs)]
    assert any(sign in m.body.decode() for m in dead for sign in signs)


async def test_the_same_notification_over_http_and_amqp_is_stored_once(
    consumer_app: TestClient[Any, Any], broker: Broker
) -> None:
    doc = signed(REVIEW)
    resp = await consumer_app.post("/v1/notifications", data=body(doc))
    assert resp.status == 200
    await broker.publish(body(signed(REVIEW, timestamp=int(FROZEN_NOW) + 300)))  # re-signed copy

    async def counted_twice() -> bool:
        items = await events_of(consumer_app)
        return len(items) == 1 and items[0]["duplicates"] == 1

    await eventually(counted_twice)
    assert await broker.depth(broker.queue) == 0


async def test_topic_model_consumes_what_is_published_to_the_topic(
    aiohttp_client: ClientFactory, tmp_path: Path, broker: Broker
) -> None:
    app = create_app(consumer_settings(tmp_path, broker.queue, model="topic"), clock=lambda: FROZEN_NOW)
    client = await aiohttp_client(app)
    for i in range(5):
        await broker.publish(
            body(signed({**REVIEW, "SessionId": f"t-{i}"})), exchange=broker.queue, routing_key=""
        )
    await eventually(await count_is(client, 5))
    ready = await client.get("/readyz")
    state = await ready.json()
    assert ready.status == 200
    assert state["amqp"]["state"] == "consuming"
    assert state["amqp"]["acked"] == 5


async def test_a_body_over_the_limit_is_dead_lettered_as_too_large(
    aiohttp_client: ClientFactory, tmp_path: Path, broker: Broker
) -> None:
    limits = consumer_settings(tmp_path, broker.queue).model_copy(deep=True)
    limits.http.max_body_bytes = 4096
    client = await aiohttp_client(create_app(limits, clock=lambda: FROZEN_NOW))
    await broker.publish(body(signed({**REVIEW, "Padding": "x" * 5000})))
    await broker.publish(body(signed(REVIEW)))  # its neighbour goes through
    await eventually(await count_is(client, 1))
    await eventually(lambda: _depth_is(broker, f"{broker.queue}.dead", 1))
    [dead] = await broker.drain(f"{broker.queue}.dead")
    assert (dead.headers or {})[REASON_HEADER] == "too_large"


async def test_a_quarantine_row_from_the_queue_carries_the_apps_clock(
    consumer_app: TestClient[Any, Any], broker: Broker, clock: list[float]
) -> None:
    clock[0] = FROZEN_NOW + 12.5  # the app's clock, not the wall clock
    await broker.publish(b"{ not json")
    await eventually(lambda: _depth_is(broker, f"{broker.queue}.dead", 1))
    [row] = (await (await consumer_app.get("/v1/quarantine")).json())["items"]
    assert row["received_at"] == iso(FROZEN_NOW + 12.5)
