"""The RabbitMQ topology the consumer declares: CMQ's queue or topic, the dead-letter exchange and queue.

Declared idempotently at every start, with arguments fixed for good once a queue exists; a
dead-letter queue declared before it was bounded is bounded by a ``rabbitmqctl`` policy instead.
"""

from __future__ import annotations

import json
import re
import shlex
from typing import Any

import aio_pika
import structlog
from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractExchange, AbstractQueue

from receiver.settings import AmqpSettings

log = structlog.get_logger("receiver.consumer")


def policy_command(settings: AmqpSettings) -> str:
    """The ``rabbitmqctl`` command that bounds the dead-letter queue (``set_policy`` needs no restart)."""
    pattern = "^" + re.escape(settings.dead_letter_queue) + "$"
    definition = json.dumps(
        {"max-length": settings.dead_letter_max_length or 100_000, "overflow": "drop-head"}
    )
    return (
        f"rabbitmqctl set_policy --apply-to queues {shlex.quote(settings.dead_letter_queue + '.bound')}"
        f" {shlex.quote(pattern)} {shlex.quote(definition)}"
    )


async def declare_dead_letter_queue(
    connection: AbstractConnection, settings: AmqpSettings, dlx: AbstractExchange
) -> bool:
    """Create the dead-letter queue bounded by ``x-max-length``, or keep the one that exists.

    RabbitMQ refuses (PRECONDITION_FAILED, closing the channel) to redeclare an existing queue with
    an argument it was not declared with, so a queue from an older receiver, or one declared with
    another bound, is used as it is: a policy bounds it (``policy_command``). Each attempt runs on
    a channel of its own, so the refusal never closes the consumer's channel. Returns whether the
    queue carries our bound.
    """
    name = settings.dead_letter_queue
    arguments: dict[str, Any] = {"x-queue-type": "quorum"}
    if settings.dead_letter_max_length:
        arguments["x-max-length"] = settings.dead_letter_max_length  # overflow: drop-head, the oldest
    bounded = True
    try:
        async with connection.channel(publisher_confirms=False) as probe:
            await probe.declare_queue(name, durable=True, arguments=arguments)
    except aio_pika.exceptions.ChannelPreconditionFailed:
        bounded = False
    async with connection.channel(publisher_confirms=False) as side:
        queue = await side.declare_queue(name, passive=True)
        await queue.bind(dlx.name, routing_key=settings.consumed_queue)
    if not bounded:
        log.warning(
            "the dead-letter queue exists with other arguments and is used as it is; bound it with a policy",
            queue=name,
            command=policy_command(settings),
        )
    return bounded


async def declare_topology(
    connection: AbstractConnection, channel: AbstractChannel, settings: AmqpSettings
) -> tuple[AbstractQueue, AbstractExchange]:
    """Declare (idempotently) the queue we consume, its dead-letter exchange and queue, and for the
    topic model the topic exchange with our queue bound to it. Returns the queue and the DLX."""
    queue_name = settings.consumed_queue
    dlx = await channel.declare_exchange(
        settings.dead_letter_exchange, aio_pika.ExchangeType.DIRECT, durable=True
    )
    await declare_dead_letter_queue(connection, settings, dlx)
    # Arguments here are fixed for good: a new one would make every existing queue refuse the
    # declaration. Anything added later goes through a policy (see policy_command).
    queue = await channel.declare_queue(
        queue_name,
        durable=True,
        arguments={
            "x-queue-type": "quorum",
            "x-dead-letter-exchange": settings.dead_letter_exchange,
            "x-dead-letter-routing-key": queue_name,
            # at-least-once dead-lettering (RabbitMQ >= 3.10) needs reject-publish overflow.
            "x-dead-letter-strategy": "at-least-once",
            "x-overflow": "reject-publish",
            "x-delivery-limit": settings.delivery_limit,
        },
    )
    if settings.model == "topic":
        kind = (
            aio_pika.ExchangeType.FANOUT if settings.topic_type == "fanout" else aio_pika.ExchangeType.TOPIC
        )
        topic = await channel.declare_exchange(settings.topic, kind, durable=True)
        await queue.bind(topic, routing_key=settings.binding_key if settings.topic_type == "topic" else "")
    return queue, dlx
