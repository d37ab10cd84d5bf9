"""The consumer's coalesced acknowledgements, against the real broker: one frame for a run of
settled deliveries, never an ack for one still in hand, and nothing lost when the channel goes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aio_pika
import pytest
from aio_pika.abc import AbstractIncomingMessage

from receiver.acks import Acks
from tests.amqp_broker import AMQP_URL, Broker, rabbitmqctl

pytestmark = pytest.mark.amqp


async def taken(broker: Broker, n: int) -> AsyncIterator[list[AbstractIncomingMessage]]:
    """``n`` messages published to the test's queue and taken in hand (unacknowledged) on a
    consuming connection of their own, in the broker's order."""
    await broker.channel.declare_queue(broker.queue, durable=True)
    for i in range(n):
        await broker.publish(b"m%d" % i)
    async with await aio_pika.connect(AMQP_URL) as connection:
        channel = await connection.channel()
        await channel.set_qos(prefetch_count=n)
        queue = await channel.declare_queue(broker.queue, passive=True)
        got: list[AbstractIncomingMessage] = []
        while len(got) < n:
            message = await queue.get(fail=False)
            if message is not None:
                got.append(message)
        yield got


async def unacked(broker: Broker) -> int:
    """What the broker counts as delivered and not acknowledged on the test's queue, once settled."""
    # The acks are frames sent without an answer: ask until the count holds still.
    last: int | None = None
    for _ in range(50):
        out = await rabbitmqctl("list_queues", "--no-table-headers", "name", "messages_unacknowledged")
        counts = dict(line.split("\t") for line in out.splitlines() if "\t" in line)
        now = int(counts.get(broker.queue, "0"))
        if now == last:
            return now
        last = now
        await asyncio.sleep(0.1)
    raise AssertionError("the unacknowledged count did not settle")


def books(messages: list[AbstractIncomingMessage]) -> Acks:
    """Acks with ``messages`` taken in hand, in the order the broker gave them."""
    acks = Acks()
    for m in messages:
        acks.received(m)
    return acks


def counting_acks(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int | None, bool]]:
    """Each ``basic.ack`` sent: (delivery tag, multiple)."""
    sent: list[tuple[int | None, bool]] = []
    real = aio_pika.IncomingMessage.ack

    async def ack(self: aio_pika.IncomingMessage, multiple: bool = False) -> None:
        sent.append((self.delivery_tag, multiple))
        await real(self, multiple=multiple)

    monkeypatch.setattr(aio_pika.IncomingMessage, "ack", ack)
    return sent


async def test_a_run_of_settled_deliveries_goes_out_as_one_multiple_ack(
    broker: Broker, monkeypatch: pytest.MonkeyPatch
) -> None:
    sent = counting_acks(monkeypatch)
    async for messages in taken(broker, 20):
        acks = books(messages)
        assert all(await asyncio.gather(*(acks.ack(m) for m in messages)))
        assert sent == [(messages[-1].delivery_tag, True)]
        assert await unacked(broker) == 0


async def test_a_delivery_in_hand_is_never_covered_and_the_ones_after_it_go_alone(
    broker: Broker, monkeypatch: pytest.MonkeyPatch
) -> None:
    sent = counting_acks(monkeypatch)
    async for messages in taken(broker, 6):
        acks = books(messages)
        first, held, *rest = messages
        assert all(await asyncio.gather(acks.ack(first), *(acks.ack(m) for m in rest)))
        assert await unacked(broker) == 1  # the one in hand keeps its slot, the rest do not
        tags = {t for t, _ in sent}
        assert held.delivery_tag not in tags
        assert tags == {m.delivery_tag for m in (first, *rest)}
        assert all(not multiple for _, multiple in sent)  # behind the one in hand: each alone
        assert await acks.ack(held)
        assert await unacked(broker) == 0


async def test_a_delivery_finished_without_an_ack_no_longer_holds_back_the_ones_after_it(
    broker: Broker, monkeypatch: pytest.MonkeyPatch
) -> None:
    sent = counting_acks(monkeypatch)
    async for messages in taken(broker, 4):
        acks = books(messages)
        await messages[0].nack(requeue=True)  # as the consumer does, then tells the books
        acks.done(messages[0])
        assert all(await asyncio.gather(*(acks.ack(m) for m in messages[1:])))
        assert sent == [(messages[-1].delivery_tag, True)]
        assert await unacked(broker) == 0


async def test_an_ack_whose_channel_is_gone_says_so_and_the_broker_redelivers(broker: Broker) -> None:
    async for messages in taken(broker, 3):
        acks = books(messages)
        await messages[0].channel.close()
        results: list[Any] = await asyncio.gather(*(acks.ack(m) for m in messages))
        assert results == [False, False, False]
    assert await broker.depth(broker.queue) == 3  # back in the queue, none lost
