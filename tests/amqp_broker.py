"""The shared test broker: publishing to it, its queues, and acting on it through ``rabbitmqctl``,
only ever on what a test created itself."""

from __future__ import annotations

import asyncio
import os
import re
import shlex
import uuid
from collections.abc import AsyncIterator, Iterator

import aio_pika

from receiver.settings import AmqpSettings
from receiver.topology import declare_topology

AMQP_URL = os.environ.get("TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")


class Broker:
    """A publishing connection plus the names used by one test (all deleted afterwards)."""

    def __init__(
        self, connection: aio_pika.abc.AbstractConnection, channel: aio_pika.abc.AbstractChannel
    ) -> None:
        self.connection = connection
        self.channel = channel
        self.queue = f"test.mps.{uuid.uuid4().hex[:10]}"

    async def publish(self, payload: bytes, *, exchange: str = "", routing_key: str | None = None) -> None:
        target = self.channel.default_exchange if not exchange else await self.channel.get_exchange(exchange)
        await target.publish(
            aio_pika.Message(payload, delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
            routing_key=self.queue if routing_key is None else routing_key,
        )

    async def depth(self, name: str) -> int:
        declared = await self.channel.declare_queue(name, passive=True)
        return int(declared.declaration_result.message_count or 0)

    async def drain(self, name: str) -> list[aio_pika.abc.AbstractIncomingMessage]:
        queue = await self.channel.declare_queue(name, passive=True)
        out = []
        while (message := await queue.get(fail=False, no_ack=True)) is not None:
            out.append(message)
        return out


async def broker_session() -> AsyncIterator[Broker]:
    """A ``Broker`` for one test, its queues and exchanges deleted afterwards (the ``broker`` fixture)."""
    connection = await aio_pika.connect(AMQP_URL)
    channel = await connection.channel()
    b = Broker(connection, channel)
    yield b
    await connection.close()
    async with await aio_pika.connect(AMQP_URL) as cleaner:  # ours may have been closed by a test
        cleanup = await cleaner.channel()
        for name in (b.queue, f"{b.queue}.dead", f"{b.queue}.receiver", f"{b.queue}.receiver.dead"):
            await cleanup.queue_delete(name)
        for name in (b.queue, f"{b.queue}.dlx", f"{b.queue}.receiver.dlx"):
            await cleanup.exchange_delete(name)


def queue_for_a_process(prefix: str) -> Iterator[str]:
    """A fresh queue name for a receiver process to declare; its queues and exchange deleted after
    (the body of a synchronous ``queue`` fixture)."""
    name = f"{prefix}.{uuid.uuid4().hex[:10]}"
    yield name

    async def cleanup() -> None:
        async with await aio_pika.connect(AMQP_URL) as connection:
            channel = await connection.channel()
            for q in (name, f"{name}.dead"):
                await channel.queue_delete(q)
            await channel.exchange_delete(f"{name}.dlx")

    asyncio.run(cleanup())


# A connection's client properties as rabbitmqctl prints them: [{"connection_name","..."},...]
_NAME = re.compile(r'\{"connection_name","((?:[^"\\]|\\.)*)"\}')


async def rabbitmqctl(*args: str) -> str:
    proc = await asyncio.create_subprocess_exec(
        "rabbitmqctl", "-q", *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await proc.communicate()
    if proc.returncode != 0:
        raise AssertionError(f"rabbitmqctl {shlex.join(args)}: {err.decode(errors='replace')}")
    return out.decode(errors="replace")


async def connections_named(prefix: str) -> dict[str, str]:
    """Connection name -> broker pid, for the connections whose client-given name starts with ``prefix``."""
    out = await rabbitmqctl("list_connections", "--no-table-headers", "pid", "client_properties")
    found: dict[str, str] = {}
    for line in out.splitlines():
        pid, _, props = line.partition("\t")
        match = _NAME.search(props)
        if match and match.group(1).startswith(prefix):
            found[match.group(1)] = pid
    return found


async def count_connections_named(prefix: str) -> int:
    """How many open connections have a client-given name starting with ``prefix`` (names may repeat)."""
    out = await rabbitmqctl("list_connections", "--no-table-headers", "client_properties")
    return sum(1 for line in out.splitlines() if (m := _NAME.search(line)) and m.group(1).startswith(prefix))


async def close_connections_named(prefix: str, reason: str = "test: forced close") -> int:
    """Close (as a broker failure would) only the connections whose name starts with ``prefix``."""
    named = await connections_named(prefix)
    await asyncio.gather(*(rabbitmqctl("close_connection", pid, reason) for pid in named.values()))
    return len(named)


async def publish_all(queue: str, payloads: list[bytes]) -> None:
    async with await aio_pika.connect(AMQP_URL) as connection:
        channel = await connection.channel()  # publisher confirms: each publish returns once confirmed
        await declare_topology(
            connection, channel, AmqpSettings(queue=queue)
        )  # as the consumer will declare it
        for start in range(0, len(payloads), 500):
            await asyncio.gather(
                *(
                    channel.default_exchange.publish(
                        aio_pika.Message(p, delivery_mode=aio_pika.DeliveryMode.PERSISTENT), routing_key=queue
                    )
                    for p in payloads[start : start + 500]
                )
            )


async def queue_depth(queue: str) -> int:
    async with await aio_pika.connect(AMQP_URL) as connection:
        channel = await connection.channel()
        declared = await channel.declare_queue(queue, passive=True)
        return int(declared.declaration_result.message_count or 0)
