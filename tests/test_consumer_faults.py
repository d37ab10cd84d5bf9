"""The AMQP consumer under faults, against the real broker: store down, its own connection dropped,
a dead-letter queue declared before it was bounded, a start the broker refuses; and one summary
line per notification."""

from __future__ import annotations

import shlex
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import aio_pika
import aiormq
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from structlog.testing import capture_logs

from receiver.app import create_app
from receiver.consumer import START_ATTEMPTS, AmqpConsumer
from receiver.http.keys import CONSUMER
from receiver.logs import merge_bound
from receiver.topology import policy_command
from tests.amqp_broker import (
    Broker,
    close_connections_named,
    connections_named,
    count_connections_named,
    rabbitmqctl,
)
from tests.apps import ClientFactory, consumer_settings, count_is, events_of
from tests.payloads import FROZEN_NOW, REVIEW, body, signed
from tests.waiting import eventually

pytestmark = pytest.mark.amqp


@contextmanager
def store_locked(tmp_path: Path) -> Iterator[None]:
    """Hold the SQLite write lock from another connection: to receiver, the store is down."""
    blocker = sqlite3.connect(tmp_path / "receiver.db", isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")
    try:
        yield
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()


async def amqp_state(client: TestClient[Any, Any]) -> dict[str, Any]:
    state = await (await client.get("/readyz")).json()
    return dict(state.get("amqp", {}))


async def test_store_down_deliveries_are_held_in_hand_not_requeued_so_none_spends_its_delivery_limit(
    aiohttp_client: ClientFactory, tmp_path: Path, broker: Broker
) -> None:
    # delivery_limit 1: a message returned to the queue twice would be dead-lettered by the broker.
    client = await aiohttp_client(
        create_app(consumer_settings(tmp_path, broker.queue, delivery_limit=1), clock=lambda: FROZEN_NOW)
    )
    prefetch, sent = 20, 30
    with store_locked(tmp_path):
        for i in range(sent):
            await broker.publish(body(signed({**REVIEW, "SessionId": f"held-{i}"})))

        async def held_through_store_checks() -> bool:  # long enough for any requeue to have been redelivered
            state = await amqp_state(client)
            tries, checks = int(state.get("held_retries", 0)), int(state.get("store_checks", 0))
            dead = await broker.depth(f"{broker.queue}.dead")  # a requeueing consumer ends here
            return (tries >= prefetch and checks >= 4) or dead > 0

        await eventually(held_through_store_checks)
        state = await amqp_state(client)
        assert "paused" in state["state"]
        assert state.get("acked", 0) == 0
        # Held in hand, the broker's view: the prefetch window unacknowledged, the rest still ready.
        assert await broker.depth(broker.queue) == sent - prefetch
        assert await broker.depth(f"{broker.queue}.dead") == 0
    await eventually(await count_is(client, sent))
    assert await broker.depth(broker.queue) == 0
    assert await broker.depth(f"{broker.queue}.dead") == 0  # none spent its single redelivery
    assert (await amqp_state(client))["state"] == "consuming"


async def test_only_the_consumers_own_named_connection_is_dropped_and_the_redelivery_is_a_counted_duplicate(
    aiohttp_client: ClientFactory, tmp_path: Path, broker: Broker
) -> None:
    config = consumer_settings(tmp_path, broker.queue).model_copy(deep=True)
    config.store.busy_timeout_ms = 30_000  # the write waits for the lock instead of failing
    client = await aiohttp_client(create_app(config, clock=lambda: FROZEN_NOW))
    name = client.app[CONSUMER].connection_name
    assert name.startswith("receiver-consumer-")
    assert list(await connections_named(name)) == [name]
    with store_locked(tmp_path):
        await broker.publish(body(signed({**REVIEW, "SessionId": "in-hand"})))

        async def taken() -> bool:
            return int((await amqp_state(client)).get("consumed", 0)) == 1

        await eventually(taken)  # its commit waits for the lock; not acknowledged
        assert await close_connections_named(name) == 1

        async def reconnected() -> bool:
            return int((await amqp_state(client)).get("reconnects", 0)) >= 1

        await eventually(reconnected)
    # The first commit lands once the lock goes, its ack cannot (that channel is gone): the broker
    # redelivers, and the copy is counted as a duplicate rather than stored again.

    async def counted_as_duplicate() -> bool:
        items = await events_of(client)
        return len(items) == 1 and items[0]["duplicates"] == 1

    await eventually(counted_as_duplicate)
    assert int((await amqp_state(client))["duplicates"]) == 1
    for i in range(10):  # our own publishing connection was not touched: it still works
        await broker.publish(body(signed({**REVIEW, "SessionId": f"after-{i}"})))
    await eventually(await count_is(client, 11))
    assert await broker.depth(broker.queue) == 0


async def test_the_dead_letter_queue_receiver_creates_is_bounded_oldest_dropped_first(
    aiohttp_client: ClientFactory, tmp_path: Path, broker: Broker
) -> None:
    client = await aiohttp_client(
        create_app(
            consumer_settings(tmp_path, broker.queue, dead_letter_max_length=3), clock=lambda: FROZEN_NOW
        )
    )
    for i in range(5):
        await broker.publish(b"{ not json %d" % i)

    async def all_rejected() -> bool:
        return int((await amqp_state(client)).get("rejected", 0)) == 5

    await eventually(all_rejected)
    assert await broker.depth(f"{broker.queue}.dead") == 3


async def test_a_dead_letter_queue_declared_without_the_bound_is_used_as_it_is_and_the_policy_bounds_it(
    aiohttp_client: ClientFactory, tmp_path: Path, broker: Broker
) -> None:
    dead = f"{broker.queue}.dead"
    # As an older receiver declared it: no x-max-length. Redeclaring it with one is refused.
    await broker.channel.declare_queue(dead, durable=True, arguments={"x-queue-type": "quorum"})
    config = consumer_settings(tmp_path, broker.queue, dead_letter_max_length=3)
    with capture_logs() as logs:
        client = await aiohttp_client(create_app(config, clock=lambda: FROZEN_NOW))
    assert (await amqp_state(client))["state"] == "consuming"
    [warning] = [e for e in logs if "policy" in e["event"]]
    command = warning["command"]
    assert command == policy_command(config.amqp)
    for i in range(5):
        await broker.publish(b"{ not json %d" % i)
    await eventually(lambda: _depth_is(broker, dead, 5))  # used as it is: unbounded
    policy = shlex.split(command)[4]
    try:
        await rabbitmqctl(*shlex.split(command)[1:])  # the command the warning gives the operator
        await broker.publish(b"{ not json 5")  # the policy's bound applies from the next message on

        async def rejected_six() -> bool:
            return int((await amqp_state(client)).get("rejected", 0)) == 6

        await eventually(rejected_six)
        await eventually(lambda: _depth_is(broker, dead, 3))
    finally:
        await rabbitmqctl("clear_policy", policy)


async def _depth_is(broker: Broker, name: str, n: int) -> bool:
    return await broker.depth(name) == n


async def test_every_notification_logs_exactly_one_summary_line_whichever_way_it_goes(
    aiohttp_client: ClientFactory, tmp_path: Path, broker: Broker
) -> None:
    limits = consumer_settings(tmp_path, broker.queue).model_copy(deep=True)
    limits.http.max_body_bytes = 4096
    client = await aiohttp_client(create_app(limits, clock=lambda: FROZEN_NOW))
    messages = [
        body(signed(REVIEW)),  # stored
        body(signed(REVIEW, timestamp=int(FROZEN_NOW) + 300)),  # a duplicate
        b"{ not json",  # invalid: dead-lettered
        body(signed(REVIEW, key="not-our-key")),  # bad signature: dead-lettered
        body(signed({**REVIEW, "Padding": "x" * 5000})),  # too large: dead-lettered before parsing
    ]
    with capture_logs() as logs:
        for m in messages:
            await broker.publish(m)

        async def all_settled() -> bool:
            state = await amqp_state(client)
            return int(state.get("acked", 0)) + int(state.get("rejected", 0)) == len(messages)

        await eventually(all_settled)
    per_notification = [e for e in logs if str(e["event"]).startswith("notification")]
    assert [e["event"] for e in per_notification] == ["notification"] * len(messages), per_notification
    outcomes = sorted(e["outcome"] for e in per_notification)
    assert outcomes == ["duplicate", "invalid", "stored", "too_large", "unauthorized"]
    assert {e["channel"] for e in per_notification} == {"amqp"}


@pytest.mark.parametrize(
    ("path", "payload", "outcome"),
    [
        ("dead-lettered", b"{ not json", "invalid"),
        ("too large", body(signed({**REVIEW, "Padding": "x" * 5000})), "too_large"),
    ],
)
async def test_a_refused_delivery_logs_one_summary_line_bound_to_its_message_id(
    aiohttp_client: ClientFactory, tmp_path: Path, broker: Broker, path: str, payload: bytes, outcome: str
) -> None:
    limits = consumer_settings(tmp_path, broker.queue).model_copy(deep=True)
    limits.http.max_body_bytes = 4096
    client = await aiohttp_client(create_app(limits, clock=lambda: FROZEN_NOW))
    with capture_logs(processors=[merge_bound]) as logs:
        await broker.channel.default_exchange.publish(
            aio_pika.Message(payload, message_id="m-refused"), routing_key=broker.queue
        )

        async def settled() -> bool:
            return int((await amqp_state(client)).get("rejected", 0)) == 1

        await eventually(settled)
    [summary] = [e for e in logs if e["event"] == "notification"]
    assert (summary["channel"], summary["outcome"], summary["message_id"]) == ("amqp", outcome, "m-refused")


async def test_the_connection_name_can_be_set(
    aiohttp_client: ClientFactory, tmp_path: Path, broker: Broker
) -> None:
    name = f"receiver-test-{broker.queue}"
    client = await aiohttp_client(
        create_app(consumer_settings(tmp_path, broker.queue, connection_name=name), clock=lambda: FROZEN_NOW)
    )
    assert client.app[CONSUMER].connection_name == name
    assert list(await connections_named(name)) == [name]


def refused_after_connecting(monkeypatch: pytest.MonkeyPatch, times: int) -> list[str]:
    """The first ``times`` starts connect for real, then meet the INTERNAL_ERROR RabbitMQ closes a
    connection with when two consumers declare the same quorum queue at once. Returns the names
    of the connections each attempt opened."""
    real = AmqpConsumer._start_once
    opened: list[str] = []

    async def start_once(self: AmqpConsumer) -> None:
        opened.append(self.connection_name)
        await real(self)
        if len(opened) <= times:
            raise aiormq.exceptions.ConnectionInternalError("INTERNAL_ERROR")

    monkeypatch.setattr(AmqpConsumer, "_start_once", start_once)
    monkeypatch.setattr("receiver.consumer.START_BACKOFF", 0.01)
    return opened


async def test_a_start_the_broker_refuses_with_internal_error_is_retried_on_a_fresh_connection(
    aiohttp_client: ClientFactory, tmp_path: Path, broker: Broker, monkeypatch: pytest.MonkeyPatch
) -> None:
    opened = refused_after_connecting(monkeypatch, times=2)
    with capture_logs() as logs:
        client = await aiohttp_client(
            create_app(consumer_settings(tmp_path, broker.queue), clock=lambda: FROZEN_NOW)
        )
    assert len(opened) == 3
    assert [e["attempt"] for e in logs if "retrying" in e["event"]] == [1, 2]
    name = client.app[CONSUMER].connection_name
    assert await count_connections_named(name) == 1  # the refused attempts' connections are closed
    await broker.publish(body(signed(REVIEW)))
    await eventually(await count_is(client, 1))


async def test_a_start_refused_every_time_gives_up_and_leaves_no_connection_behind(
    tmp_path: Path, broker: Broker, monkeypatch: pytest.MonkeyPatch
) -> None:
    opened = refused_after_connecting(monkeypatch, times=START_ATTEMPTS)
    app = create_app(consumer_settings(tmp_path, broker.queue), clock=lambda: FROZEN_NOW)
    runner = web.AppRunner(app)
    with pytest.raises(aiormq.exceptions.ConnectionInternalError):
        await runner.setup()
    await runner.cleanup()
    assert len(opened) == START_ATTEMPTS
    assert await count_connections_named(opened[0]) == 0
