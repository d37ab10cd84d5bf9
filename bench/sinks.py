"""Benchmark: the outbox. (1) Ingest-to-sink latency at a sustained rate (default 2,000 events/s):
from the moment receiver takes a notification to the moment an http sink's target has it.
(2) Ingest throughput with three sinks (log, jsonl, http) against none, same load, same run.

receiver on core 0; the load generator and the sink target on core 1.

    .venv/bin/python bench/sinks.py [--rate 2000] [--seconds 10]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import aiohttp
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ingest_http import KEY, MIX, ROOT, TASKS, free_port, payloads, serve, stop, wrk


def receiver_env(port: int, db: Path, sinks: list[dict[str, object]]) -> dict[str, str]:
    return {
        "RECEIVER_HTTP__PORT": str(port),
        "RECEIVER_STORE__URL": f"sqlite:///{db}",
        "RECEIVER_VERIFY__NOTIFY_KEYS": orjson.dumps([KEY]).decode(),
        "RECEIVER_LOG__FORMAT": "json",
        "RECEIVER_SINKS": orjson.dumps(sinks).decode(),
        "RECEIVER_DISPATCH_POLL_INTERVAL": "0.05",
    }


async def open_loop(url: str, templates: list[bytes], rate: float, seconds: float) -> tuple[int, int]:
    """POST at a fixed rate whatever the answers take (no coordinated omission); returns sent, ok."""
    n = int(rate * seconds)
    ok = 0
    connector = aiohttp.TCPConnector(limit=512)
    async with aiohttp.ClientSession(connector=connector) as http:

        async def one(i: int) -> None:
            nonlocal ok
            body = (
                templates[i % len(templates)]
                .replace(b"__SEQ__", f"lat-{i}".encode())
                .replace(b"__TASK__", str(i % TASKS).encode())
            )
            async with http.post(url, data=body) as r:
                await r.read()
                ok += r.status == 200

        started = time.perf_counter()
        pending = set()
        for i in range(n):
            delay = started + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            task = asyncio.create_task(one(i))
            pending.add(task)
            task.add_done_callback(pending.discard)
        await asyncio.gather(*pending)
    return n, ok


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rate", type=float, default=2000)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--duration", type=int, default=10, help="seconds of each throughput run")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "sinks.md")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="receiver-bench-sinks-"))
    payload_file = work / "payloads.jsonl"
    mean_size = payloads(payload_file)
    templates = payload_file.read_bytes().splitlines()

    target_port = free_port()
    arrivals_file = work / "arrivals.jsonl"
    target = subprocess.Popen(
        ["taskset", "-c", "1", sys.executable, str(ROOT / "bench" / "sink_target.py"), str(target_port),
         str(arrivals_file)]
    )  # fmt: skip
    hook = {"name": "hook", "kind": "http", "options": {"url": f"http://127.0.0.1:{target_port}/hook"},
            "concurrency": 64}  # fmt: skip
    three = [
        {"name": "log", "kind": "log"},
        {"name": "file", "kind": "jsonl", "options": {"path": str(work / "events.jsonl")}},
        hook,
    ]
    try:
        time.sleep(1)
        # (1) latency at a sustained rate, one http sink
        port = free_port()
        receiver = [sys.executable, "-m", "receiver", "serve"]
        proc = serve(receiver, port, receiver_env(port, work / "lat.db", [hook]), work / "lat.log")
        try:
            url = f"http://127.0.0.1:{port}/v1/notifications"
            sent, ok = asyncio.run(open_loop(url, templates, args.rate, args.seconds))
            time.sleep(2)  # let the outbox drain
        finally:
            stop(proc)
        target.send_signal(signal.SIGTERM)
        target.wait(timeout=30)
        arrivals = [orjson.loads(line) for line in arrivals_file.read_bytes().splitlines()]
        lat = [
            (a["arrival"] - datetime.fromisoformat(a["received_at"].replace("Z", "+00:00")).timestamp())
            * 1000
            for a in arrivals
        ]
        target = subprocess.Popen(
            ["taskset", "-c", "1", sys.executable, str(ROOT / "bench" / "sink_target.py"), str(target_port),
             str(work / "arrivals2.jsonl")]
        )  # fmt: skip
        time.sleep(1)

        # (2) throughput, no sinks against three
        rates = {}
        for label, sinks in (("none", []), ("three", three)):
            port = free_port()
            env = receiver_env(port, work / f"tp-{label}.db", sinks)
            proc = serve(receiver, port, env, work / f"tp-{label}.log")
            try:
                wrk(port, 3, 64, payload_file)
                rates[label] = wrk(port, args.duration, 64, payload_file)
            finally:
                stop(proc)
    finally:
        if target.poll() is None:
            target.send_signal(signal.SIGTERM)
            target.wait(timeout=30)
        shutil.rmtree(work, ignore_errors=True)

    ratio = rates["three"].rps / rates["none"].rps
    report = f"""# Sinks benchmark

Measured {time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())} on {platform.machine()}, {os.cpu_count()} cores,
Python {platform.python_version()}. receiver (SQLite, synchronous=FULL) on core 0; load generator and sink
target on core 1. Payloads: {len(MIX)} notification types, unique, signed, mean {mean_size:.0f} bytes.
Rerun: `make bench`.

## Ingest-to-sink latency at {args.rate:,.0f} events/s

Open-loop load for {args.seconds:.0f} s ({sent:,} notifications, {ok:,} answered 200), one http sink.
Latency = arrival at the sink's target minus the event's `received_at` (same clock).

| delivered | p50 | p99 | max |
| ---: | ---: | ---: | ---: |
| {len(lat):,} | {percentile(lat, 50):.1f} ms | {percentile(lat, 99):.1f} ms | {max(lat):.1f} ms |

Target: p99 <= 100 ms.

## Ingest throughput with sinks

wrk, 64 connections, {args.duration} s after a 3 s warm-up, closed loop:

| sinks | requests/s | p99 |
| --- | ---: | ---: |
| none | {rates["none"].rps:,.0f} | {rates["none"].p99_ms:.1f} ms |
| log + jsonl + http | {rates["three"].rps:,.0f} | {rates["three"].p99_ms:.1f} ms |

**{ratio:.2f}x** with three sinks (target: within 20%, >= 0.80x).
"""
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(report)
    print(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
