"""Benchmark: receiver's AMQP consumer with ingest against a bare aio-pika consumer that only acks.

The queue is filled first (N unique signed notifications of seven types, ~1.2 KB), then drained by
the consumer pinned to core 0; the rate is N over the time from its first to its last message.
Same queue settings, same prefetch, same run. Writes a Markdown report and prints it.

    .venv/bin/python bench/consume_amqp.py [--messages 20000]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import aio_pika
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ingest_http import KEY, MIX, ROOT, TASKS, free_port, payloads

from receiver.consumer import declare_topology
from receiver.settings import AmqpSettings

AMQP_URL = os.environ.get("BENCH_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
PREFETCH = 100


async def fill(queue: str, templates: list[bytes], n: int, run: str) -> None:
    async with await aio_pika.connect(AMQP_URL) as connection:
        channel = await connection.channel()
        await declare_topology(connection, channel, AmqpSettings(queue=queue))
        for start in range(0, n, 1000):
            await asyncio.gather(
                *(
                    channel.default_exchange.publish(
                        aio_pika.Message(
                            templates[i % len(templates)]
                            .replace(b"__SEQ__", f"{run}-{i}".encode())
                            .replace(b"__TASK__", str(i % TASKS).encode()),
                            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                        ),
                        routing_key=queue,
                    )
                    for i in range(start, min(start + 1000, n))
                )
            )


async def drop(queue: str) -> None:
    async with await aio_pika.connect(AMQP_URL) as connection:
        channel = await connection.channel()
        await channel.queue_delete(queue)
        await channel.queue_delete(f"{queue}.dead")
        await channel.exchange_delete(f"{queue}.dlx")


def bare_rate(queue: str, n: int) -> float:
    bare = [sys.executable, str(ROOT / "bench" / "bare_consumer.py"), AMQP_URL, queue, str(n), str(PREFETCH)]
    out = subprocess.run(
        ["taskset", "-c", "0", *bare], capture_output=True, text=True, check=True, timeout=600
    ).stdout
    stamps = orjson.loads(out.strip().splitlines()[-1])
    return float((stamps["n"] - 1) / (stamps["last"] - stamps["first"]))


def receiver_rate(queue: str, n: int, work: Path) -> tuple[float, int]:
    db = work / "consume.db"
    env = {
        **os.environ,
        "RECEIVER_STORE__URL": f"sqlite:///{db}",
        "RECEIVER_VERIFY__NOTIFY_KEYS": orjson.dumps([KEY]).decode(),
        "RECEIVER_AMQP__URL": AMQP_URL,
        "RECEIVER_AMQP__QUEUE": queue,
        "RECEIVER_AMQP__PREFETCH": str(PREFETCH),
        "RECEIVER_HTTP__PORT": str(free_port()),
        "RECEIVER_LOG__FORMAT": "json",
    }
    with (work / "consume.log").open("wb") as log:
        cmd = ["taskset", "-c", "0", sys.executable, "-m", "receiver", "consume"]
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=log)
    try:
        deadline = time.monotonic() + 600
        count = 0
        while time.monotonic() < deadline:
            time.sleep(0.2)
            if db.exists():
                try:
                    count = sqlite3.connect(db).execute("SELECT count(*) FROM events").fetchone()[0]
                except sqlite3.OperationalError:
                    continue
                if count >= n:
                    break
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    span = "SELECT min(received_at), max(received_at) FROM events"
    first, last = sqlite3.connect(db).execute(span).fetchone()
    return (count - 1) / (last - first), count


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "consume-amqp.md")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="receiver-bench-amqp-"))
    mean_size = payloads(work / "payloads.jsonl")
    templates = (work / "payloads.jsonl").read_bytes().splitlines()
    queue = f"bench.mps.{uuid.uuid4().hex[:8]}"
    try:
        asyncio.run(fill(queue, templates, args.messages, "bare"))
        bare = bare_rate(queue, args.messages)
        asyncio.run(fill(queue, templates, args.messages, "ingest"))
        full, stored = receiver_rate(queue, args.messages, work)
    finally:
        asyncio.run(drop(queue))
        shutil.rmtree(work, ignore_errors=True)

    report = f"""# AMQP consume benchmark

Measured {time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())} on {platform.machine()}, {os.cpu_count()} cores,
Python {platform.python_version()}, RabbitMQ on the same machine. Consumer pinned to core 0; the queue
(quorum, as receiver declares it) is filled with {args.messages:,} unique signed notifications of
{len(MIX)} types (mean {mean_size:.0f} bytes) before each consumer starts; prefetch {PREFETCH}.
Rerun: `make bench`.

| consumer | messages/s |
| --- | ---: |
| bare aio-pika consumer (acks only) | {bare:,.0f} |
| receiver consume (parse, verify, normalize, match, SQLite commit, log, then ack) | {full:,.0f} |

**Ratio: {full / bare:.2f}x** the bare consumer (target >= 0.8x). Stored: {stored:,} of {args.messages:,}.
"""
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(report)
    print(report)
    return 0 if stored == args.messages else 1


if __name__ == "__main__":
    sys.exit(main())
