"""Benchmark: receiver's AMQP consumer with ingest against a bare aio-pika consumer that only acks.

For each consumer: the queue is filled first with enough unique signed notifications of seven types
(~1.2 KB) for ``--seconds`` of consuming (a short calibration run measures the rate first), then
drained by the consumer pinned to core 0; the rate is N over the time from its first to its last
message. Same queue (quorum, as receiver declares it), same prefetch, both ack each message
manually (receiver after the commit, the bare one on receipt). CPU per message = utime + stime of
the consumer's process between its first and its last message (sampled from /proc every 50 ms,
interpolated). Writes bench/results/consume-amqp.{md,json}.

    .venv/bin/python bench/consume_amqp.py [--seconds 30] [--calibrate 5000]
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import platform
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import aio_pika
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import (
    CHECKOUT,
    MIX,
    RECEIVER,
    ROOT,
    TASKS,
    cpu_snapshot,
    fill,
    free_port,
    heading_note,
    payloads,
    pin_self,
    pinned,
    quick,
    receiver_env,
    write_report,
)

from receiver.settings import AmqpSettings
from receiver.topology import declare_topology

AMQP_URL = os.environ.get("BENCH_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
PREFETCH = 100


async def fill_queue(queue: str, templates: list[bytes], n: int, run: str) -> None:
    async with await aio_pika.connect(AMQP_URL) as connection:
        channel = await connection.channel()
        await declare_topology(connection, channel, AmqpSettings(queue=queue))
        for start in range(0, n, 1000):
            await asyncio.gather(
                *(
                    channel.default_exchange.publish(
                        aio_pika.Message(
                            fill(templates[i % len(templates)], f"{run}-{i}", i % TASKS),
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


class CpuSampler(threading.Thread):
    """(unix time, CPU seconds of the process) every 50 ms until it exits."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.samples: list[tuple[float, float]] = []
        self.halt = threading.Event()

    def run(self) -> None:
        while not self.halt.is_set():
            spent = cpu_snapshot([self.pid]).get(self.pid)
            if spent is None:
                return
            self.samples.append((time.time(), spent))
            self.halt.wait(0.05)

    def at(self, when: float) -> float:
        """CPU seconds at ``when``, interpolated between the samples either side."""
        before = [s for s in self.samples if s[0] <= when]
        after = [s for s in self.samples if s[0] >= when]
        if not before:
            return after[0][1]
        if not after:
            return before[-1][1]
        (t0, c0), (t1, c1) = before[-1], after[0]
        return c0 if t1 == t0 else c0 + (c1 - c0) * (when - t0) / (t1 - t0)


@dataclass
class Drain:
    n: int
    first: float
    last: float
    cpu_s: float

    @property
    def seconds(self) -> float:
        return self.last - self.first

    @property
    def rate(self) -> float:
        return (self.n - 1) / self.seconds if self.seconds > 0 else float("nan")

    @property
    def cpu_us(self) -> float:
        return self.cpu_s / max(self.n - 1, 1) * 1e6


def bare_drain(queue: str, n: int, work: Path) -> Drain:
    cmd = [sys.executable, str(ROOT / "bench" / "bare_consumer.py"), AMQP_URL, queue, str(n), str(PREFETCH)]
    proc = subprocess.Popen(pinned(cmd, "0"), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    sampler = CpuSampler(proc.pid)
    sampler.start()
    out, _ = proc.communicate(timeout=1800)
    sampler.halt.set()
    sampler.join()
    if proc.returncode:
        raise SystemExit(f"bare consumer exited with {proc.returncode}")
    stamps = orjson.loads(out.strip().splitlines()[-1])
    first, last = float(stamps["first"]), float(stamps["last"])
    return Drain(int(stamps["n"]), first, last, sampler.at(last) - sampler.at(first))


def receiver_drain(queue: str, n: int, work: Path) -> Drain:
    db = work / f"consume-{queue}-{n}.db"
    env = receiver_env(free_port(), f"sqlite:///{db}")
    env.update(RECEIVER_AMQP__URL=AMQP_URL, RECEIVER_AMQP__QUEUE=queue, RECEIVER_AMQP__PREFETCH=str(PREFETCH))
    with (work / "consume.log").open("ab") as log:
        cmd = pinned([*RECEIVER, "consume"], "0")
        proc = subprocess.Popen(cmd, env={**os.environ, **env}, stdout=log, stderr=log, cwd=CHECKOUT)
    sampler = CpuSampler(proc.pid)
    sampler.start()
    try:
        deadline = time.monotonic() + 1800
        count = 0
        while time.monotonic() < deadline and proc.poll() is None:
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
        sampler.halt.set()
        sampler.join()
    span = "SELECT count(*), min(received_at), max(received_at) FROM events"
    stored, first, last = sqlite3.connect(db).execute(span).fetchone()
    return Drain(int(stored), float(first), float(last), sampler.at(last) - sampler.at(first))


def measure(
    kind: str,
    drain: Callable[[str, int, Path], Drain],
    templates: list[bytes],
    args: argparse.Namespace,
    work: Path,
) -> tuple[Drain, int]:
    """A calibration drain, then one sized for ``args.seconds``; returns it and the messages sent."""
    queue = f"bench.mps.{kind}.{uuid.uuid4().hex[:8]}"
    try:
        asyncio.run(fill_queue(queue, templates, args.calibrate, f"{kind}-calibrate"))
        calibration = drain(queue, args.calibrate, work)
        n = max(args.calibrate, math.ceil(calibration.rate * args.seconds * 1.1))
        print(
            f"consume_amqp: {kind}: {calibration.rate:,.0f}/s in calibration; {n:,} messages", file=sys.stderr
        )
        asyncio.run(fill_queue(queue, templates, n, kind))
        return drain(queue, n, work), n
    finally:
        asyncio.run(drop(queue))


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=quick(30, 3), help="of messages for each consumer")
    parser.add_argument(
        "--calibrate", type=int, default=quick(5000, 2000), help="messages to measure the rate"
    )
    args = parser.parse_args()
    pin_self()
    work = Path(tempfile.mkdtemp(prefix="receiver-bench-amqp-"))

    def signed() -> list[bytes]:  # signed afresh for each consumer's queue (a signature lasts 10 min)
        payloads(work / "payloads.jsonl")
        return (work / "payloads.jsonl").read_bytes().splitlines()

    mean_size = payloads(work / "payloads.jsonl")
    try:
        bare, bare_sent = measure("bare", bare_drain, signed(), args, work)
        full, full_sent = measure("receiver", receiver_drain, signed(), args, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    ratio = full.rate / bare.rate

    def row(name: str, d: Drain) -> str:
        return f"| {name} | {d.n:,} | {d.seconds:.1f} | {d.rate:,.0f} | {d.cpu_us:,.0f} |"

    report = f"""# AMQP consume benchmark
{heading_note()}
Measured {time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())} on {platform.machine()}, {os.cpu_count()} cores,
Python {platform.python_version()}, RabbitMQ on the same machine (not pinned). Consumer pinned to core 0;
the queue (quorum, as receiver declares it) is filled with unique signed notifications of {len(MIX)}
types (mean {mean_size:.0f} bytes) before each consumer starts, as many as a calibration run says
last {args.seconds:g} s; prefetch {PREFETCH}, manual ack of each message for both. Rerun: `make bench`.

| consumer | messages | seconds | messages/s | CPU µs / message |
| --- | ---: | ---: | ---: | ---: |
{row("bare aio-pika consumer (acks only)", bare)}
{row("receiver consume (parse, verify, normalize, match, SQLite commit, log, then ack)", full)}

**Ratio: {ratio:.2f}x** the bare consumer (target >= 0.45x); CPU per message
{full.cpu_us / bare.cpu_us:.1f}x the bare consumer's. Stored: {full.n:,} of {full_sent:,}.
CPU per message: the consumer process's utime + stime from its first message to its last
(RabbitMQ's own CPU not included). When the bare consumer uses well under a core, the broker, not
the consumer, sets its rate, and the ratio flatters receiver: the CPU figures then say more.
"""
    data = {
        "seconds_target": args.seconds,
        "prefetch": PREFETCH,
        "bare": {**bare.__dict__, "rate": bare.rate, "cpu_us": bare.cpu_us, "seconds": bare.seconds},
        "receiver": {**full.__dict__, "rate": full.rate, "cpu_us": full.cpu_us, "seconds": full.seconds},
        "ratio": ratio,
    }
    write_report("consume-amqp", report, data)
    return 0 if full.n == full_sent and bare.n == bare_sent else 1


if __name__ == "__main__":
    sys.exit(main())
