"""The CMQ topic model end to end: the emulator publishes to the topic exchange (declaring it when no
one has), and receiver's consumer in the topic model stores the events."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import aio_pika
import pytest
from pydantic import SecretStr

from receiver.emulator.notify import Notifier
from tests.amqp_broker import AMQP_URL
from tests.apps import ClientFactory, ServerFactory
from tests.emulated import check_every_notification_arrived, emulator, receiver, request, submit, until_ended

pytestmark = pytest.mark.amqp


@pytest.fixture
async def topic() -> AsyncIterator[str]:
    """A topic name of this test's own; everything named after it is deleted afterwards."""
    name = f"test.topic.{uuid.uuid4().hex[:8]}"
    yield name
    async with await aio_pika.connect(AMQP_URL) as connection:
        channel = await connection.channel()
        for queue in (f"{name}.receiver", f"{name}.receiver.dead", f"{name}.probe"):
            await channel.queue_delete(queue)
        for exchange in (name, f"{name}.receiver.dlx"):
            await channel.exchange_delete(exchange)


def topic_config(name: str) -> dict[str, Any]:
    return {"NotifyType": "TDMQ-CMQ", "CmqModel": "Topic", "CmqRegion": "gz", "TopicName": name}


async def exchange_exists(name: str) -> bool:
    async with await aio_pika.connect(AMQP_URL) as connection:
        channel = await connection.channel()
        try:
            await channel.declare_exchange(name, passive=True)
        except aio_pika.exceptions.ChannelNotFoundEntity:
            return False
        return True


async def test_the_emulator_declares_a_topic_no_one_has_declared(topic: str) -> None:
    assert not await exchange_exists(topic)
    notifier = Notifier(SecretStr(AMQP_URL))
    try:
        await notifier.send(topic_config(topic), b'{"n": 1}')  # no subscriber yet: CMQ drops it too
        assert await exchange_exists(topic)
        async with await aio_pika.connect(AMQP_URL) as connection:
            channel = await connection.channel()
            probe = await channel.declare_queue(f"{topic}.probe", auto_delete=True)
            await probe.bind(topic, routing_key="")  # a fanout: any routing key
            await notifier.send(topic_config(topic), b'{"n": 2}')
            message = await probe.get(timeout=5, fail=True)
            assert message is not None
            assert message.body == b'{"n": 2}'
            await message.ack()
    finally:
        await notifier.aclose()
    assert (notifier.sent, notifier.failed) == (2, 0)


async def test_a_topic_declared_first_as_another_type_is_used_as_it_is(topic: str) -> None:
    async with await aio_pika.connect(AMQP_URL) as connection:
        channel = await connection.channel()
        exchange = await channel.declare_exchange(topic, aio_pika.ExchangeType.TOPIC, durable=True)
        probe = await channel.declare_queue(f"{topic}.probe", auto_delete=True)
        await probe.bind(exchange, routing_key="#")
        notifier = Notifier(SecretStr(AMQP_URL))
        try:
            await notifier.send(topic_config(topic), b'{"n": 1}')
            await notifier.send(topic_config(topic), b'{"n": 2}')  # the exchange known from now on
        finally:
            await notifier.aclose()
        bodies = []
        for _ in range(2):
            message = await probe.get(timeout=5, fail=True)
            assert message is not None
            bodies.append(message.body)
            await message.ack()
    assert bodies == [b'{"n": 1}', b'{"n": 2}']
    assert (notifier.sent, notifier.failed) == (2, 0)


@pytest.mark.parametrize("topic_type", ["fanout", "topic"])
async def test_topic_notifications_loop_from_submit_to_finished(
    aiohttp_client: ClientFactory, aiohttp_server: ServerFactory, tmp_path: Any, topic: str, topic_type: str
) -> None:
    mps = await emulator(aiohttp_server, amqp_url=AMQP_URL)
    amqp = {"url": AMQP_URL, "model": "topic", "topic": topic, "topic_type": topic_type}
    client = await receiver(aiohttp_client, tmp_path, mps, amqp=amqp)
    task = await submit(client, request(topic_config(topic)))
    ended = await until_ended(client, task["task_id"])
    assert (ended["state"], ended["err_code"]) == ("finished", 0)
    await check_every_notification_arrived(client, ended)
    stored = await (await client.get(f"/v1/tasks/{task['task_id']}/events", params={"limit": "1000"})).json()
    assert {e["channel"] for e in stored["items"]} == {"amqp"}
