"""The baseline: a bare aio-pika consumer that only acks, same prefetch and loop as receiver's.

Consumes N messages from QUEUE, prints {"first": t, "last": t, "n": n} (unix seconds) and exits.
"""

from __future__ import annotations

import asyncio
import sys
import time

import aio_pika
import orjson
import uvloop


async def main(url: str, queue_name: str, n: int, prefetch: int) -> None:
    connection = await aio_pika.connect_robust(url)
    channel = await connection.channel()
    await channel.set_qos(prefetch_count=prefetch)
    queue = await channel.get_queue(queue_name, ensure=False)
    done = asyncio.Event()
    stamps: list[float] = []

    async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
        await message.ack()
        stamps.append(time.time())
        if len(stamps) >= n:
            done.set()

    await queue.consume(on_message)
    await done.wait()
    await connection.close()
    print(orjson.dumps({"first": stamps[0], "last": stamps[-1], "n": len(stamps)}).decode())


if __name__ == "__main__":
    uvloop.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])))
