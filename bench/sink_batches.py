"""Benchmark: delivering a backlog to a local http target. (1) Throughput with max_batch 1, 10 and 100,
each against a bare aiohttp client POSTing the same batches (the same documents, as JSON arrays of the
same sizes) to the same target, in the same run. (2) A rate limit held: with a backlog far larger
than a minute's worth and a target many times faster, the events the target gets in 60 s.

`receiver dispatch` (and the bare client) on core 0, the target on core 1.

    .venv/bin/python bench/sink_batches.py [--events 6000] [--rate 100] [--rate-seconds 60]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
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
from ingest_http import ROOT, free_port, serve, stop

sys.path.insert(0, str(ROOT))
from receiver import decoder, events
from receiver.documents import event_document
from receiver.ports import EventQuery
from receiver.stores.sqlite import SqliteStore

TEMPLATE = ROOT / "tests" / "data" / "examples" / "03-AiReviewResult-Image.constructed.json"
TASKS = 64
CONCURRENCY = 8


TARGET = r"""
import asyncio, signal, sys, time
import orjson, uvloop
from aiohttp import web

async def main(port):
    state = {"events": 0, "requests": 0, "first": None, "last": None, "times": []}

    async def hook(request):
        doc = orjson.loads(await request.read())
        n = len(doc) if isinstance(doc, list) else 1
        now = time.time()
        state["first"] = state["first"] or now
        state["last"] = now
        state["events"] += n
        state["requests"] += 1
        state["times"].append((now, n))
        return web.Response(status=204)

    async def count(request):
        return web.json_response({k: v for k, v in state.items() if k != "times"})

    async def since(request):
        t0, t1 = float(request.query["from"]), float(request.query["to"])
        return web.json_response({"events": sum(n for t, n in state["times"] if t0 <= t < t1)})

    async def reset(request):
        state.update(events=0, requests=0, first=None, last=None, times=[])
        return web.json_response({})

    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_post("/hook", hook)
    app.router.add_get("/count", count)
    app.router.add_get("/between", since)
    app.router.add_post("/reset", reset)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    await runner.cleanup()

uvloop.run(main(int(sys.argv[1])))
"""


def notification(i: int) -> bytes:
    doc = orjson.loads(TEMPLATE.read_bytes())
    doc.pop("Sign", None)
    doc.pop("Timestamp", None)
    doc.update(TaskId=f"bench-task-{i % TASKS}", SessionContext="", SessionId=f"bench-{i}")
    return orjson.dumps(doc)


async def fill(db: Path, n: int) -> list[bytes]:
    """A backlog of ``n`` events for the sink ``bench`` over 64 tasks; their documents, in order."""
    store = await SqliteStore.open(db, synchronous="NORMAL")
    try:
        batch = []
        for i in range(n):
            body = decoder.unwrap(notification(i))
            head = decoder.read_head(body)
            batch.append(
                events.normalize(
                    body,
                    decoder.read_notification(body, head),
                    channel=events.Channel.HTTP,
                    received_at=time.time(),
                    check=events.SKIPPED,
                )
            )
            if len(batch) == 500:
                await store.record_events(batch, lambda e, t: ["bench"])
                batch = []
        if batch:
            await store.record_events(batch, lambda e, t: ["bench"])
        documents, after = [], 0
        while True:
            page = await store.list_events(EventQuery(after=after, limit=1000))
            documents += [orjson.dumps(event_document(e)) for e in page.items]
            if page.next is None:
                return documents
            after = int(page.next)
    finally:
        await store.aclose()


async def wait_for(url: str, n: int, within: float = 600) -> dict[str, float]:
    deadline = time.monotonic() + within
    async with aiohttp.ClientSession() as http:
        while True:
            async with http.get(f"{url}/count") as r:
                state = await r.json()
            if state["events"] >= n or time.monotonic() > deadline:
                return dict(state)
            await asyncio.sleep(0.05)


async def reset(url: str) -> None:
    async with aiohttp.ClientSession() as http, http.post(f"{url}/reset") as r:
        await r.read()


BARE = r"""
import asyncio, sys, orjson, aiohttp, uvloop

async def main(url, size, path, concurrency):
    documents = orjson.loads(open(path, "rb").read())
    bodies = [d.encode() for d in documents]
    if size > 1:
        chunks = [b"[" + b",".join(bodies[i:i + size]) + b"]" for i in range(0, len(bodies), size)]
    else:
        chunks = bodies
    queue = list(reversed(chunks))
    async with aiohttp.ClientSession(headers={"Content-Type": "application/json"}) as http:
        async def worker():
            while queue:
                body = queue.pop()
                async with http.post(url, data=body) as r:
                    await r.read()
        await asyncio.gather(*(worker() for _ in range(concurrency)))

uvloop.run(main(sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])))
"""


def run_bare(target: str, size: int, documents: list[bytes], work: Path) -> None:
    path = work / "documents.json"
    path.write_bytes(orjson.dumps([d.decode() for d in documents]))
    subprocess.run(
        [
            "taskset",
            "-c",
            "0",
            sys.executable,
            "-c",
            BARE,
            f"{target}/hook",
            str(size),
            str(path),
            str(CONCURRENCY),
        ],
        check=True,
    )


def dispatcher_env(port: int, db: Path, sink: dict[str, object]) -> dict[str, str]:
    return {
        "RECEIVER_HTTP__PORT": str(port),
        "RECEIVER_STORE__URL": f"sqlite:///{db}",
        "RECEIVER_STORE__SQLITE_SYNCHRONOUS": "NORMAL",
        "RECEIVER_LOG__FORMAT": "json",
        "RECEIVER_LOG__LEVEL": "warning",
        "RECEIVER_SINKS": orjson.dumps([sink]).decode(),
        "RECEIVER_DISPATCH_POLL_INTERVAL": "0.05",
    }


async def throughput(size: int, n: int, target: str, work: Path) -> tuple[float, float]:
    """Events per second to the target: receiver's dispatcher, then the bare client, same batches."""
    db = work / f"batch-{size}.db"
    documents = await fill(db, n)
    sink = {"name": "bench", "kind": "http", "options": {"url": f"{target}/hook"}, "concurrency": CONCURRENCY}
    if size > 1:
        sink.update(max_batch=size, max_wait=0.05)
    await reset(target)
    port = free_port()
    proc = serve(
        [str(ROOT / ".venv/bin/receiver"), "dispatch"],
        port,
        dispatcher_env(port, db, sink),
        work / f"dispatch-{size}.log",
    )
    try:
        state = await wait_for(target, n)
    finally:
        stop(proc)
    ours = state["events"] / max(1e-9, state["last"] - state["first"])
    await reset(target)
    run_bare(target, size, documents, work)
    state = await wait_for(target, n)
    bare = state["events"] / max(1e-9, state["last"] - state["first"])
    return ours, bare


async def rate_held(rate: float, seconds: float, target: str, work: Path) -> tuple[int, float]:
    """Events the target gets in ``seconds`` from the first one, under a limit of ``rate`` a second."""
    db = work / "rate.db"
    await fill(db, int(rate * seconds * 1.5) + 1000)  # a backlog the limit cannot clear in the run
    await reset(target)
    sink = {"name": "bench", "kind": "http", "options": {"url": f"{target}/hook"}, "rate_limit": rate}
    port = free_port()
    proc = serve(
        [str(ROOT / ".venv/bin/receiver"), "dispatch"],
        port,
        dispatcher_env(port, db, sink),
        work / "rate.log",
    )
    try:
        state = await wait_for(target, 1)
        t0 = float(state["first"])
        await asyncio.sleep(max(0.0, t0 + seconds + 1 - time.time()))
        window = {"from": str(t0), "to": str(t0 + seconds)}
        async with aiohttp.ClientSession() as http, http.get(f"{target}/between", params=window) as r:
            got = int((await r.json())["events"])
    finally:
        stop(proc)
    return got, got / (rate * seconds)


async def run(args: argparse.Namespace) -> str:
    work = Path(tempfile.mkdtemp(prefix="bench-batches-"))
    port = free_port()
    target = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen(["taskset", "-c", "1", sys.executable, "-c", TARGET, str(port)], cwd=ROOT)  # noqa: ASYNC220
    try:
        await asyncio.sleep(1.0)
        rows = []
        for size in (1, 10, 100):
            ours, bare = await throughput(size, args.events, target, work)
            rows.append(f"| {size} | {ours:,.0f} | {bare:,.0f} | {ours / bare:.2f}x |")
            print(rows[-1], flush=True)
        got, ratio = await rate_held(args.rate, args.rate_seconds, target, work)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    expected = int(args.rate * args.rate_seconds)
    return "\n".join(
        [
            f"# Sink batches and rate limits ({datetime.now():%Y-%m-%d %H:%M}, {os.cpu_count()} cores,"
            f" {platform.python_version()})",
            "",
            f"A backlog of {args.events:,} events over {TASKS} tasks (SQLite), delivered by `receiver"
            f" dispatch` (core 0, concurrency {CONCURRENCY}) to a local aiohttp target (core 1), against a"
            f" bare aiohttp client POSTing the same batches with {CONCURRENCY} requests in flight (core 0),"
            " same run.",
            "",
            "| max_batch | receiver events/s | bare client events/s | receiver / bare |",
            "| ---: | ---: | ---: | ---: |",
            *rows,
            "",
            f"Rate limit {args.rate:g} events/s (burst {args.rate:g}), a backlog of"
            f" {int(args.rate * args.rate_seconds * 1.5) + 1000:,} events, a target far faster (above):"
            f" {got:,} events delivered in {args.rate_seconds:g} s from the first, against {expected:,}"
            f" expected: {ratio:.3f} ({(ratio - 1) * 100:+.1f}%; the burst saved up at the start included).",
            "",
        ]
    )


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=6000)
    parser.add_argument("--rate", type=float, default=100.0)
    parser.add_argument("--rate-seconds", type=float, default=60.0)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "sink-batches.md")
    args = parser.parse_args()
    report = asyncio.run(run(args))
    args.out.write_text(report)
    print(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
