"""Send-and-verify under faults: N unique notifications over HTTP and AMQP while the receiver is
killed and restarted, the broker drops its connections, the store is locked, and the sink fails.

Then, from its own record of what was answered 200 or confirmed by the broker, it checks: every
such notification stored exactly once; every stored event delivered to the sink at least once; per
task, the sink saw events in the order they were stored; duplicates counted. Everything on
127.0.0.1, bounded in count and time.

    python -m bench.soak --notifications 100000 --rate 400     # make soak
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import random
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import aio_pika
import aiohttp
import asyncpg
import orjson
from aiohttp import web

from receiver import events
from receiver.settings import AmqpSettings
from receiver.topology import declare_topology
from tests.amqp_broker import close_connections_named

AMQP_URL = os.environ.get("TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
KEY = "soak-notify-key"
ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "tests" / "data" / "examples"
FAULTS = ("kill", "broker", "store", "sink")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def percentile(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


@dataclass
class Report:
    notifications: int
    seconds: float
    faults: Counter[str]
    lost: int
    unexpected: int  # stored but never sent
    task_count_mismatches: dict[str, tuple[int, int]]  # task -> (sent, event_count the store says)
    duplicates_absorbed: int
    not_delivered: int
    sink_duplicates: int
    order_violations: int
    ingest_ms: tuple[float, float, float]
    lag_ms: tuple[float, float, float]
    catch_up_s: float = 0.0  # after the last send, until the store and the sink had everything
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (
            self.lost
            or self.unexpected
            or self.task_count_mismatches
            or self.not_delivered
            or self.order_violations
            or self.problems
        )

    def table(self) -> str:
        faults = ", ".join(f"{k} {self.faults[k]}" for k in FAULTS)
        rows = [
            ("notifications (answered 200 or confirmed)", f"{self.notifications:,}"),
            ("run time", f"{self.seconds:.0f} s"),
            ("faults injected", faults),
            ("lost (must be 0)", str(self.lost)),
            ("stored but never sent (must be 0)", str(self.unexpected)),
            (
                "tasks whose event count differs from what was sent (must be 0)",
                str(len(self.task_count_mismatches)),
            ),
            ("repeats absorbed as duplicates", f"{self.duplicates_absorbed:,}"),
            ("stored but never delivered to the sink (must be 0)", str(self.not_delivered)),
            ("sink duplicates (at least once)", f"{self.sink_duplicates:,}"),
            ("per-task order violations at the sink (must be 0)", str(self.order_violations)),
            ("HTTP ingest latency p50 / p99 / max", " / ".join(f"{v:.1f} ms" for v in self.ingest_ms)),
            ("ingest-to-sink lag p50 / p99 / max", " / ".join(f"{v:.0f} ms" for v in self.lag_ms)),
            ("catching up after the last send", f"{self.catch_up_s:.0f} s"),
        ]
        return "| measure | value |\n| --- | ---: |\n" + "\n".join(f"| {a} | {b} |" for a, b in rows)


class Receiver:
    """receiver as a process, restartable on the same port and the same store."""

    def __init__(self, work: Path, queue: str, sink_url: str, store_url: str, name: str = "r") -> None:
        self.port = free_port()
        # The broker fault closes only connections with this prefix: the broker is shared.
        self.connection_name = f"soak-{queue}-receiver-{name}"
        self.work = work
        self.name = name
        self.env = {
            **os.environ,
            "RECEIVER_HTTP__PORT": str(self.port),
            "RECEIVER_STORE__URL": store_url,
            "RECEIVER_STORE__BUSY_TIMEOUT_MS": "200",
            "RECEIVER_VERIFY__NOTIFY_KEYS": orjson.dumps([KEY]).decode(),
            "RECEIVER_AMQP__URL": AMQP_URL,
            "RECEIVER_AMQP__QUEUE": queue,
            "RECEIVER_AMQP__CONNECTION_NAME": self.connection_name,
            "RECEIVER_AMQP__STORE_RETRY_MAX": "0.5",
            "RECEIVER_AMQP__RECONNECT_INTERVAL": "0.5",
            "RECEIVER_LOG__FORMAT": "json",
            "RECEIVER_LOG__LEVEL": "warning",
            "RECEIVER_DISPATCH_POLL_INTERVAL": "0.1",
            "RECEIVER_SINKS": orjson.dumps(
                [
                    {
                        "name": "target",
                        "kind": "http",
                        "options": {"url": sink_url, "timeout": 5},
                        "concurrency": 16,
                        "retry_schedule": [0.2, 0.5, 1, 2, 2, 2, 2, 2, 2, 2],
                        "jitter": 0.1,
                        "breaker_threshold": 20,
                        "breaker_cooldown": 1,
                    }
                ]
            ).decode(),
        }
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    async def start(self) -> None:
        self.starts += 1
        with (self.work / f"receiver-{self.name}-{self.starts}.log").open("wb") as log:
            self.proc = subprocess.Popen(  # noqa: ASYNC220 (a child we keep, not one we wait on)
                [sys.executable, "-m", "receiver", "serve"],
                env=self.env,
                stdout=log,
                stderr=log,
                cwd=self.work,
            )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"receiver exited: {self.proc.returncode}"
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", self.port)
                writer.close()
                return
            except OSError:
                await asyncio.sleep(0.05)
        raise AssertionError("receiver did not start")

    async def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        await asyncio.to_thread(self.proc.wait)

    async def stop(self) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return await asyncio.to_thread(self.proc.wait, 60)


class SinkTarget:
    """The http sink's target: records every arrival; can be told to fail for a while."""

    def __init__(self) -> None:
        self.arrivals: list[tuple[str, str, float, float]] = []  # event_id, task_id, received_at, arrival
        self.failing_until = 0.0

    async def hook(self, request: web.Request) -> web.Response:
        doc = orjson.loads(await request.read())
        if time.monotonic() < self.failing_until:
            return web.Response(status=503)
        received = datetime.fromisoformat(doc["received_at"].replace("Z", "+00:00")).timestamp()
        self.arrivals.append((doc["event_id"], doc["task_id"], received, time.time()))
        return web.Response(status=204)


def templates() -> list[dict[str, Any]]:
    names = [
        "03-AiReviewResult-Image.constructed.json",
        "05-AiRecognitionResult-Face-Ocr-Object-Tag.constructed.json",
        "07-AiQualityControlResult.constructed.json",
        "09-AiSmartSubtitleResult.constructed.json",
    ]
    return [orjson.loads((EXAMPLES / n).read_bytes()) for n in names]


async def register_tasks(port: int, task_ids: list[str]) -> None:
    async with aiohttp.ClientSession() as http:
        for task_id in task_ids:
            async with http.post(
                f"http://127.0.0.1:{port}/v1/tasks",
                data=orjson.dumps({"task_id": task_id}),
                headers={"Content-Type": "application/json"},
            ) as r:
                assert r.status in (200, 201), (r.status, await r.text())


def make(i: int, tasks: int, bases: list[dict[str, Any]]) -> dict[str, Any]:
    doc = dict(bases[i % len(bases)])
    ts = int(time.time()) + 600  # as MPS signs: valid for 10 minutes
    doc.update(TaskId=f"soak-task-{i % tasks}", SessionId=f"n-{i}", SessionContext="", Timestamp=ts)
    doc["Sign"] = events.expected_sign(ts, KEY)
    return doc


class Store:
    """The harness's own view of the store the replicas share: SQLite file or PostgreSQL database."""

    def __init__(self, work: Path, postgres_url: str | None) -> None:
        self.db = work / "soak.db"
        self.postgres_url = postgres_url
        self.url = postgres_url or f"sqlite:///{self.db}"

    async def stored(self) -> dict[str, tuple[int, str, int]]:
        sql = "SELECT event_id, seq, task_id, duplicates FROM events"
        if self.postgres_url:
            con = await asyncpg.connect(self.postgres_url)
            try:
                return {r[0]: (r[1], r[2], r[3]) for r in await con.fetch(sql)}
            except asyncpg.UndefinedTableError:
                return {}
            finally:
                await con.close()
        if not self.db.exists():
            return {}
        lite = sqlite3.connect(f"file:{self.db}?mode=ro", uri=True, timeout=5)
        try:
            return {r[0]: (r[1], r[2], r[3]) for r in lite.execute(sql)}
        finally:
            lite.close()

    async def task_event_counts(self) -> dict[str, int]:
        """What the store counted per task (``tasks.event_count``): one per event stored, never per repeat."""
        sql = "SELECT task_id, event_count FROM tasks"
        if self.postgres_url:
            con = await asyncpg.connect(self.postgres_url)
            try:
                return {r[0]: int(r[1]) for r in await con.fetch(sql)}
            finally:
                await con.close()
        lite = sqlite3.connect(f"file:{self.db}?mode=ro", uri=True, timeout=5)
        try:
            return {r[0]: int(r[1]) for r in lite.execute(sql)}
        finally:
            lite.close()

    async def make_unavailable(self, seconds: float) -> None:
        """SQLite: hold its write lock. PostgreSQL: cut every session the replicas have, twice."""
        if self.postgres_url:
            con = await asyncpg.connect(self.postgres_url)
            try:
                for _ in range(2):
                    await con.execute(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                        " WHERE datname = current_database() AND pid <> pg_backend_pid()"
                    )
                    await asyncio.sleep(seconds / 2)
            finally:
                await con.close()
            return
        lock = sqlite3.connect(self.db, isolation_level=None, timeout=10)
        lock.execute("BEGIN EXCLUSIVE")
        await asyncio.sleep(seconds)
        lock.execute("ROLLBACK")
        lock.close()


async def run(
    n: int,
    rate: float,
    *,
    seed: int = 1,
    fault_every: float = 4.0,
    tasks: int = 20,
    replicas: int = 1,
    postgres_url: str | None = None,
    faults_enabled: bool = True,
    register: bool = True,
) -> Report:
    rng = random.Random(seed)
    work = Path(tempfile.mkdtemp(prefix="receiver-soak-"))
    store = Store(work, postgres_url)
    queue = f"soak.{uuid.uuid4().hex[:8]}"
    target = SinkTarget()
    app = web.Application()
    app.router.add_post("/hook", target.hook)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    sink_port = free_port()
    await web.TCPSite(runner, "127.0.0.1", sink_port).start()
    fleet = [
        Receiver(work, queue, f"http://127.0.0.1:{sink_port}/hook", store.url, name=str(k))
        for k in range(replicas)
    ]
    amqp = await aio_pika.connect_robust(
        AMQP_URL, reconnect_interval=0.5, client_properties={"connection_name": f"soak-{queue}-publisher"}
    )
    channel = await amqp.channel()
    await declare_topology(amqp, channel, AmqpSettings(queue=queue))
    for receiver in fleet:
        await receiver.start()
    task_ids = [f"soak-task-{t}" for t in range(tasks)]
    if register:  # then the store counts each task's events, and the report checks the counts
        await register_tasks(fleet[0].port, task_ids)

    bases = templates()
    accepted: dict[str, int] = {}  # event id -> sequence number, for what was answered 200 / confirmed
    ingest_ms: list[float] = []
    faults: Counter[str] = Counter()
    started = time.monotonic()
    sending = True

    async def send_http(http: aiohttp.ClientSession, i: int, doc: dict[str, Any]) -> None:
        body = orjson.dumps(doc)
        attempt = 0
        while True:  # as MPS does: until it is taken (by any replica, as behind a load balancer)
            t0 = time.perf_counter()
            port = fleet[(i + attempt) % len(fleet)].port
            attempt += 1
            try:
                async with http.post(f"http://127.0.0.1:{port}/v1/notifications", data=body) as r:
                    await r.read()
                    if r.status == 200:
                        ingest_ms.append((time.perf_counter() - t0) * 1000)
                        accepted[events.event_id(doc)] = i
                        return
            except (aiohttp.ClientError, TimeoutError):
                pass
            await asyncio.sleep(0.2)

    async def send_amqp(i: int, doc: dict[str, Any]) -> None:
        body = orjson.dumps(doc)
        while True:
            try:
                await channel.default_exchange.publish(
                    aio_pika.Message(body, delivery_mode=aio_pika.DeliveryMode.PERSISTENT), routing_key=queue
                )
                accepted[events.event_id(doc)] = i
                return
            except Exception:  # the broker connection was dropped: the robust connection comes back
                await asyncio.sleep(0.2)

    closing: list[asyncio.Task[int]] = []

    async def inject() -> None:
        kinds = list(FAULTS)

        def more() -> bool:  # until the sending ends, and each kind has happened once (a slow host)
            return sending or any(faults[k] == 0 for k in kinds)

        while more():
            await asyncio.sleep(fault_every * rng.uniform(0.5, 1.5))
            if not more():
                return
            kind = kinds[faults.total() % len(kinds)] if faults.total() < len(kinds) else rng.choice(kinds)
            faults[kind] += 1
            if kind == "kill":
                victim = rng.choice(fleet)
                await victim.kill()
                await asyncio.sleep(rng.uniform(0.2, 1.0))
                await victim.start()
            elif kind == "broker":
                # Only this run's own connections (receivers and publisher): the broker is shared.
                # In the background: rabbitmqctl takes seconds, the other faults need not wait.
                closing.append(asyncio.create_task(close_connections_named(f"soak-{queue}-", "soak fault")))
            elif kind == "store":
                await store.make_unavailable(rng.uniform(1.0, 3.0))
            else:
                target.failing_until = time.monotonic() + rng.uniform(1.0, 3.0)

    injector = asyncio.create_task(inject() if faults_enabled else asyncio.sleep(0))
    pending: set[asyncio.Task[None]] = set()
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:
        for i in range(n):
            delay = started + i / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            doc = make(i, tasks, bases)
            over_http = i % 2 == 0
            task = asyncio.create_task(send_http(http, i, doc) if over_http else send_amqp(i, doc))
            pending.add(task)
            task.add_done_callback(pending.discard)
            if rng.random() < 0.05:  # the same notification again, over the other channel
                again = asyncio.create_task(send_amqp(i, doc) if over_http else send_http(http, i, doc))
                pending.add(again)
                again.add_done_callback(pending.discard)
        await asyncio.gather(*pending)
    sending = False
    await injector  # returns once each kind of fault has been injected

    await asyncio.gather(*closing)
    for receiver in fleet:
        if receiver.proc is not None and receiver.proc.poll() is not None:
            await receiver.start()

    # Wait for the store to have everything, and the sink to have every stored event.
    # Slow is not lost: wait as long as the store and the sink keep making progress (how fast is
    # bench/'s to measure), and fail once nothing has moved for a minute, or at a hard cap.
    problems: list[str] = []
    waiting_since = last_move = time.monotonic()
    stored: dict[str, tuple[int, str, int]] = {}
    progress = (-1, -1)
    while True:
        stored = await store.stored()
        delivered = {a[0] for a in target.arrivals}
        if set(accepted) <= set(stored) and set(stored) <= delivered:
            break
        now = time.monotonic()
        if (len(stored), len(delivered)) != progress:
            progress, last_move = (len(stored), len(delivered)), now
        if now - last_move > 60 or now - waiting_since > 600:
            problems.append("timed out waiting for the store and the sink to catch up")
            break
        await asyncio.sleep(0.5)
    catch_up = time.monotonic() - waiting_since
    for receiver in fleet:
        exit_code = await receiver.stop()
        if exit_code != 0:
            problems.append(f"receiver {receiver.name} exited {exit_code} on SIGTERM")
    await amqp.close()
    await runner.cleanup()

    lost = len(set(accepted) - set(stored))
    unexpected = len(set(stored) - set(accepted))
    sent_per_task = Counter(f"soak-task-{i % tasks}" for i in accepted.values())
    counted = await store.task_event_counts() if register else {}
    mismatches = {  # without registered tasks there is no count to check
        t: (sent_per_task[t], counted.get(t, 0))
        for t in task_ids
        if register and sent_per_task[t] != counted.get(t, 0)
    }
    first_arrival: dict[str, int] = {}
    for position, (event_id, _, _, _) in enumerate(target.arrivals):
        first_arrival.setdefault(event_id, position)
    per_task: dict[str, list[tuple[int, int]]] = defaultdict(list)
    for event_id, (seq, task_id, _) in stored.items():
        if event_id in first_arrival:
            per_task[task_id].append((seq, first_arrival[event_id]))
    violations = 0
    for pairs in per_task.values():
        by_seq = [arrival for _, arrival in sorted(pairs)]
        violations += sum(1 for a, b in itertools.pairwise(by_seq) if b < a)
    lag = [(arrival - received) * 1000 for _, _, received, arrival in target.arrivals]
    report = Report(
        notifications=len(accepted),
        seconds=time.monotonic() - started,
        faults=faults,
        lost=lost,
        unexpected=unexpected,
        task_count_mismatches=mismatches,
        duplicates_absorbed=sum(d for _, _, d in stored.values()),
        not_delivered=len(set(stored) - {a[0] for a in target.arrivals}),
        sink_duplicates=len(target.arrivals) - len(first_arrival),
        order_violations=violations,
        ingest_ms=(
            percentile(ingest_ms, 50),
            percentile(ingest_ms, 99),
            max(ingest_ms, default=float("nan")),
        ),
        lag_ms=(percentile(lag, 50), percentile(lag, 99), max(lag, default=float("nan"))),
        catch_up_s=catch_up,
        problems=problems,
    )
    async with await aio_pika.connect(AMQP_URL) as cleanup:
        ch = await cleanup.channel()
        for q in (queue, f"{queue}.dead"):
            await ch.queue_delete(q)
        await ch.exchange_delete(f"{queue}.dlx")
    return report


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--notifications", type=int, default=100_000)
    parser.add_argument("--rate", type=float, default=400.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--fault-every", type=float, default=10.0)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "soak.md")
    args = parser.parse_args()
    report = asyncio.run(run(args.notifications, args.rate, seed=args.seed, fault_every=args.fault_every))
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    text = (
        f"# Soak: send and verify under faults\n\nMeasured {when}, seed {args.seed},"
        f" {args.rate:.0f} notifications/s offered.\n\n{report.table()}\n"
    )
    if report.problems:
        text += "\nProblems: " + "; ".join(report.problems) + "\n"
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(text)
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
