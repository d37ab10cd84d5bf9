"""Benchmark: receiver's HTTP ingest against a bare aiohttp handler and a FastAPI tutorial-style
receiver, in the same run, as requests/s, latency and CPU microseconds per notification.

One-process servers are pinned to core 0 in turn; wrk drives them from core 1 with 64 connections,
POSTing unique signed notifications of seven types (~1.2 KB). receiver runs with the shipped config
(config/receiver.toml: one ``log`` sink, dispatcher in ``serve``, JSON lines to stdout, here a
file), so its figure is the whole path: parse, verify, normalize, match a registered task, commit
(SQLite WAL, synchronous FULL), the summary line, the 200, and the log sink's delivery. With
``serve --workers N`` (when this receiver has it) the server is free to use both cores.

CPU per notification = utime + stime of every server process (threads and children included,
from /proc; wrk excluded) over the measured run / notifications answered 200. Each figure is the
median of ``--runs`` runs after one warm-up. Writes bench/results/ingest-http.{md,json}.

    .venv/bin/python bench/ingest_http.py [--duration 15] [--runs 3] [--connections 64]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import shutil
import sqlite3
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import (
    KEY,
    MIX,
    RECEIVER,
    ROOT,
    TASKS,
    Run,
    cpu_delta,
    cpu_snapshot,
    free_port,
    heading_note,
    median_run,
    payloads,
    pin_self,
    quick,
    receiver_env,
    register_tasks,
    serve,
    stop,
    thread_cpu,
    workers_supported,
    write_report,
)
from harness import wrk as _wrk

__all__ = ["KEY", "MIX", "ROOT", "TASKS", "Run", "free_port", "payloads", "serve", "stop", "wrk"]


def wrk(port: int, seconds: float, connections: int, payload_file: Path) -> Run:
    """The old signature, for scripts that import it from here."""
    return _wrk(port, seconds, connections, payload_file)


PG_ADMIN_URL = os.environ.get("BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")


def create_postgres_database() -> str:
    import asyncpg

    name = f"receiver_bench_{os.getpid()}_{int(time.time())}"

    async def create() -> None:
        con = await asyncpg.connect(PG_ADMIN_URL)
        await con.execute(f'CREATE DATABASE "{name}"')
        await con.close()

    asyncio.run(create())
    return PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + name


def drop_postgres_database(url: str) -> None:
    import asyncpg

    async def drop() -> None:
        con = await asyncpg.connect(PG_ADMIN_URL)
        await con.execute(f'DROP DATABASE IF EXISTS "{url.rsplit("/", 1)[1]}" WITH (FORCE)')
        await con.close()

    asyncio.run(drop())


def postgres_pids(url: str) -> list[int]:
    """The PostgreSQL processes that work for this database: its backends, the background ones
    (WAL writer, checkpointer ...) and the postmaster; not other databases' backends."""
    import asyncpg

    async def pids() -> list[int]:
        con = await asyncpg.connect(PG_ADMIN_URL)
        try:
            rows = await con.fetch(
                "SELECT pid FROM pg_stat_activity WHERE datname = $1 OR backend_type <> 'client backend'",
                url.rsplit("/", 1)[1],
            )
            return [int(r["pid"]) for r in rows]
        finally:
            await con.close()

    found = asyncio.run(pids())
    parents = set()
    for pid in found:
        try:
            parents.add(int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1]))
        except (OSError, ValueError, IndexError):
            continue
    postmaster = [p for p in parents if p > 1 and p not in found]
    return sorted(set(found) | set(postmaster))


def count_events(store_url: str) -> tuple[int, int]:
    sql = "SELECT count(*), count(task_ref) FROM events"
    if store_url.startswith("sqlite:///"):
        row = sqlite3.connect(store_url.removeprefix("sqlite:///")).execute(sql).fetchone()
        return int(row[0]), int(row[1])
    import asyncpg

    async def count() -> tuple[int, int]:
        con = await asyncpg.connect(store_url)
        row = await con.fetchrow(sql)
        await con.close()
        return int(row[0]), int(row[1])

    return asyncio.run(count())


# --- the per-stage breakdown ---------------------------------------------------------------------

CHANGED = "n/a (changed)"
TABLE_HEAD = (
    "| server | requests/s | vs bare | p50 | p99 | CPU µs / notification | CPU vs bare | errors |\n"
    "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n"
)


def guarded(name: str, measure: Callable[[], float]) -> tuple[str, float | str]:
    """One stage's figure, or "n/a (changed)" when receiver's internals no longer fit the call (the
    hot path is being reworked; the report must still come out)."""
    try:
        return name, measure()
    except (AttributeError, TypeError, ImportError, NameError, ValueError, KeyError) as exc:
        print(f"stage {name!r}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return name, CHANGED


def _written_bytes() -> int:
    """Bytes this process has handed to write(2) and its kin so far (/proc/self/io ``wchar``)."""
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("wchar:"):
            return int(line.split()[1])
    return 0


def stages(
    payload_file: Path, work: Path, written: dict[str, float] | None = None
) -> list[tuple[str, float | str]]:
    """Microseconds per notification for each step of the path, measured in-process on one core.

    ``written``, when given, gets what the SQLite stage as shipped wrote per event: ``written_kb``
    (bytes the process wrote meanwhile: WAL frames and checkpoints) and ``stored_kb`` (the
    database's size)."""
    templates = payload_file.read_bytes().splitlines()
    bodies = [
        t.replace(b"__SEQ__", f"stage-{i}".encode()).replace(b"__TASK__", str(i % TASKS).encode())
        for i, t in enumerate(templates * quick(600, 100))
    ]
    n = len(bodies)
    now = time.time()

    def per_item(fn: Callable[[int], object]) -> float:
        started = time.perf_counter()
        for i in range(n):
            fn(i)
        return (time.perf_counter() - started) / n * 1e6

    # Built lazily, once, by the first stage that needs them; a stage whose inputs cannot be built
    # reports "n/a (changed)" like one whose own call fails.
    cache: dict[str, list[Any]] = {}

    def heads() -> list[Any]:
        if "heads" not in cache:
            from receiver import decoder

            cache["heads"] = [decoder.read_head(decoder.unwrap(b)) for b in bodies]
        return cache["heads"]

    def parsed() -> list[Any]:
        if "parsed" not in cache:
            from receiver import events

            cache["parsed"] = [events.parse(b) for b in bodies]
        return cache["parsed"]

    def head_stage() -> float:
        from receiver import decoder

        return per_item(lambda i: decoder.read_head(decoder.unwrap(bodies[i])))

    def decode_stage() -> float:
        from receiver import decoder

        return per_item(lambda i: decoder.read_notification(bodies[i]))

    def strip_stage() -> float:
        from receiver import decoder

        h = heads()
        return per_item(lambda i: decoder.strip_sign(bodies[i], head=h[i]))

    def verify_stage() -> float:
        from receiver import events

        h = heads()
        keys = events.NotifyKeys(static=(KEY,))
        policy = events.SignPolicy.REQUIRED
        return per_item(lambda i: events.verify_sign(h[i], keys=keys, policy=policy, now=now, skew=60))

    def event_id_stage() -> float:
        from receiver import events

        p = parsed()
        return per_item(lambda i: events.event_id(p[i][0]))

    def findings_stage() -> float:
        from receiver.findings import findings

        p = parsed()
        return per_item(lambda i: findings(p[i][1]))

    def log_stage() -> float:
        import structlog

        from receiver.logs import configure_logging

        with (work / "stage.log").open("w") as sink:
            configure_logging("json", "info", sink)
            log = structlog.get_logger("bench")
            line = {"channel": "http", "task_id": "t", "notification_type": "AiReviewResult"}
            line["outcome"] = "stored"
            return per_item(lambda _: log.info("notification", **line))

    def store_stage(shipped: bool) -> float:
        """Events recorded in batches of 32; ``shipped``: as the shipped config records them, each
        matched to one of ``TASKS`` registered tasks and routed to one sink (an outbox row each)."""
        from receiver import decoder, events
        from receiver.events import Channel
        from receiver.register import TaskRegistration, register
        from receiver.routing import SinkFilter, router
        from receiver.stores.sqlite import SqliteStore

        valid = events.Check(events.Verdict.VALID, "static:0")
        h, p = heads(), parsed()
        normalized = [
            events.normalize(
                decoder.strip_sign(b, head=h[i]), p[i][1], channel=Channel.HTTP, received_at=now, check=valid
            )
            for i, b in enumerate(bodies)
        ]
        route = router([("log", SinkFilter())]) if shipped else None
        path = work / f"stage-{'shipped' if shipped else 'alone'}.db"

        async def cost() -> float:
            store = await SqliteStore.open(path)
            try:
                for k in range(TASKS if shipped else 0):  # as POST /v1/tasks registers them
                    spec = TaskRegistration(task_id=f"bench-task-{k}", url=f"rtmp://bench/live/{k}")
                    await register(spec, store, lambda: now, route)
                wrote = _written_bytes()
                started = time.perf_counter()
                for i in range(0, n, 32):
                    await store.record_events(normalized[i : i + 32], route)
                us = (time.perf_counter() - started) / n * 1e6
                written_kb = (_written_bytes() - wrote) / n / 1024
            finally:
                await store.aclose()
            with sqlite3.connect(path) as con:
                pages = con.execute("PRAGMA page_count").fetchone()[0]
                size = con.execute("PRAGMA page_size").fetchone()[0]
            if written is not None and shipped:
                written["written_kb"], written["stored_kb"] = written_kb, pages * size / n / 1024
            return us

        return asyncio.run(cost())

    return [
        guarded("read head (unwrap, depth, top level)", head_stage),
        guarded("decode and validate: msgspec Structs", decode_stage),
        guarded("cut the Sign out of the bytes", strip_stage),
        guarded("verify Sign", verify_stage),
        guarded("event id (canonical JSON, sha256)", event_id_stage),
        guarded("findings (normalize)", findings_stage),
        guarded("summary log line", log_stage),
        guarded("SQLite commit, batches of 32 (FULL)", lambda: store_stage(shipped=False)),
        guarded(
            f"... each matched to one of {TASKS} tasks, one outbox row each (as shipped)",
            lambda: store_stage(shipped=True),
        ),
    ]


# --- the servers ---------------------------------------------------------------------------------


@dataclass
class Row:
    key: str
    name: str
    result: Run
    runs: list[Run]
    side_cpu_us: float | None = None  # the PostgreSQL server's CPU per notification, for that row
    threads: dict[str, float] = field(default_factory=dict)  # one-process rows: thread -> µs / notification
    shares: dict[str, float] = field(default_factory=dict)  # the 2-worker row: pid -> share
    share_source: str = ""


def measure(
    port: int,
    roots: Sequence[int],
    args: argparse.Namespace,
    payload_file: Path,
    seconds: float,
    side: Callable[[], list[int]] | None = None,
    threads: dict[str, float] | None = None,
) -> tuple[Run, list[Run], float | None]:
    """A warm-up, then ``args.runs`` measured runs; the median of each figure. With ``threads``
    (one-process servers), it is filled with the median CPU µs per notification of each thread of
    the first root."""
    _wrk(port, args.warmup, args.connections, payload_file)
    runs: list[Run] = []
    side_us: list[float] = []
    by_thread: dict[str, list[float]] = {}
    for _ in range(args.runs):
        side_pids = side() if side else []
        before = cpu_snapshot(side_pids) if side_pids else {}
        thread_before = thread_cpu(roots[0]) if threads is not None else {}
        run = _wrk(port, seconds, args.connections, payload_file, server=roots)
        if threads is not None:
            for name, t in thread_cpu(roots[0]).items():
                spent = t - thread_before.get(name, 0.0)
                by_thread.setdefault(name, []).append(spent / max(run.ok, 1) * 1e6)
        if side_pids:
            spent = sum(cpu_delta(before, cpu_snapshot(side_pids)).values())
            side_us.append(spent / max(run.ok, 1) * 1e6)
        runs.append(run)
    if threads is not None:
        threads.update({name: sorted(us)[len(us) // 2] for name, us in by_thread.items()})
    side_cpu = sorted(side_us)[len(side_us) // 2] if side_us else None
    return median_run(runs), runs, side_cpu


def worker_shares(log: Path, run: Run, parent: int) -> tuple[dict[str, float], str]:
    """Each worker's share of requests, from the pid on the summary lines when they carry one;
    otherwise each process's share of the CPU the server spent (from /proc)."""
    counts: Counter[str] = Counter()
    for line in log.read_bytes().splitlines():
        if b'"notification"' not in line:
            continue
        try:
            doc = orjson.loads(line)
        except orjson.JSONDecodeError:
            continue
        if doc.get("event") == "notification" and "pid" in doc:
            counts[str(doc["pid"])] += 1
    total = sum(counts.values())
    if total:
        return {pid: n / total for pid, n in sorted(counts.items())}, "summary log lines' pid"
    spent = run.cpu_by_pid or {}
    whole = sum(spent.values()) or 1.0
    shares = {f"{pid}{' (parent)' if pid == parent else ''}": t / whole for pid, t in sorted(spent.items())}
    return shares, "each process's share of the server's CPU (/proc; the summary lines carry no pid)"


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--duration", type=float, default=quick(15, 3), help="seconds of each measured run")
    parser.add_argument("--pg-duration", type=float, default=quick(30, 3), help="... of each PostgreSQL run")
    parser.add_argument("--runs", type=int, default=quick(3, 1), help="measured runs per server (median)")
    parser.add_argument("--warmup", type=float, default=quick(3, 1))
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--skip", default="", help="comma-separated row keys to leave out (for development)")
    args = parser.parse_args()
    pin_self()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed: apt-get install -y wrk (make bench does it)")
    skip = set(filter(None, args.skip.split(",")))

    work = Path(tempfile.mkdtemp(prefix="receiver-bench-"))
    payload_file = work / "payloads.jsonl"
    mean_size = payloads(payload_file)
    rows: list[Row] = []
    checks: list[str] = []
    ok = True

    def bare() -> None:
        port = free_port()
        cmd = [sys.executable, str(ROOT / "bench" / "bare_server.py"), str(port)]
        proc = serve(cmd, port, {}, work / "bare.log")
        try:
            result, runs, _ = measure(port, [proc.pid], args, payload_file, args.duration)
        finally:
            stop(proc)
        rows.append(Row("bare", "bare aiohttp handler (reads the body, answers 200)", result, runs))

    def fastapi() -> None:
        port = free_port()
        db = work / "fastapi.db"
        cmd = [sys.executable, "-m", "uvicorn", "fastapi_app:app", "--app-dir", str(ROOT / "bench")]
        cmd += ["--loop", "uvloop", "--http", "httptools", "--workers", "1", "--no-access-log"]
        cmd += ["--log-level", "warning", "--host", "127.0.0.1", "--port", str(port)]
        env = {"BENCH_FASTAPI_DB": str(db), "BENCH_FASTAPI_KEY": KEY}
        proc = serve(cmd, port, env, work / "fastapi.log")
        try:
            result, runs, _ = measure(port, [proc.pid], args, payload_file, args.duration)
        finally:
            stop(proc)
        stored = sqlite3.connect(db).execute("SELECT count(*) FROM notifications").fetchone()[0]
        answered = sum(r.ok for r in runs)
        checks.append(f"fastapi: {answered:,} answered 200 in the measured runs, {stored:,} stored")
        name = "FastAPI tutorial style (sync def, SQLAlchemy Session, SQLite WAL FULL), uvicorn"
        rows.append(Row("fastapi", name, result, runs))

    def receiver(
        key: str, name: str, store_url: str, *, sync: str = "FULL", workers: int | None = None
    ) -> None:
        nonlocal ok
        port = free_port()
        env = receiver_env(port, store_url, STORE__SQLITE_SYNCHRONOUS=sync)
        cmd = [*RECEIVER, "serve"] + (["--workers", str(workers)] if workers else [])
        log = work / f"receiver-{key}.log"
        proc = serve(cmd, port, env, log, cpus=None if workers else "0")
        pg = store_url.startswith("postgresql")
        try:
            register_tasks(port, TASKS)
            seconds = max(args.duration, args.pg_duration) if pg else args.duration
            side = (lambda: postgres_pids(store_url)) if pg else None
            threads: dict[str, float] | None = None if workers else {}
            result, runs, side_cpu = measure(port, [proc.pid], args, payload_file, seconds, side, threads)
        finally:
            stop(proc)
        stored, matched = count_events(store_url)
        row = Row(key, name, result, runs, side_cpu_us=side_cpu, threads=threads or {})
        if workers == 2:
            row.shares, row.share_source = worker_shares(log, runs[len(runs) // 2], proc.pid)
        rows.append(row)
        # The warm-up's answers are stored too; wrk stops with requests in flight, which may be
        # stored without wrk counting the answer: stored >= answered in the measured runs.
        answered = sum(r.ok for r in runs)
        ok = ok and stored >= answered and matched == stored
        checks.append(
            f"{key}: {answered:,} answered 200 in the measured runs, {stored:,} stored (warm-up included), "
            f"{matched:,} matched to their task"
        )

    def sqlite(name: str) -> str:
        return f"sqlite:///{work / name}"

    shipped = "receiver, shipped config,"
    plan: list[tuple[str, Callable[[], None]]] = [
        ("bare", bare),
        ("full", lambda: receiver("full", f"{shipped} SQLite synchronous=FULL", sqlite("full.db"))),
        (
            "normal",
            lambda: receiver("normal", f"{shipped} SQLite NORMAL", sqlite("n.db"), sync="NORMAL"),
        ),
        ("fastapi", fastapi),
    ]
    pg_db = create_postgres_database() if "pg" not in skip else ""
    if pg_db:
        plan.insert(3, ("pg", lambda: receiver("pg", f"{shipped} PostgreSQL (same machine)", pg_db)))
    workers = workers_supported()
    if workers:
        for n in (1, 2):

            def on_workers(n: int = n) -> None:
                name = f"receiver serve --workers {n}, SQLite FULL, free to use both cores"
                receiver(f"workers{n}", name, sqlite(f"workers{n}.db"), workers=n)

            plan.append((f"workers{n}", on_workers))
    try:
        for key, step in plan:
            if key not in skip:
                print(f"ingest_http: {key} ...", file=sys.stderr, flush=True)
                step()
    finally:
        if pg_db:
            drop_postgres_database(pg_db)
    written: dict[str, float] = {}
    breakdown = stages(payload_file, work, written) if "stages" not in skip else []
    shutil.rmtree(work, ignore_errors=True)

    by_key = {r.key: r for r in rows}
    base = by_key.get("bare")

    def row_md(r: Row) -> str:
        x = r.result
        ratio = f"{x.rps / base.result.rps:.2f}x" if base else "–"
        cpu_ratio = f"{x.cpu_us / base.result.cpu_us:.1f}x" if base and base.result.cpu_us else "–"
        cells = [r.name, f"{x.rps:,.0f}", ratio, f"{x.p50_ms:.2f} ms", f"{x.p99_ms:.2f} ms"]
        cells += [f"{x.cpu_us:,.0f}", cpu_ratio, str(x.errors)]
        return "| " + " | ".join(cells) + " |"

    one_core = [r for r in rows if not r.key.startswith("workers")]
    lines = [row_md(r) for r in one_core]
    if workers:
        workers_md = TABLE_HEAD + "\n".join(row_md(r) for r in rows if r.key.startswith("workers"))
        w1, w2 = by_key.get("workers1"), by_key.get("workers2")
        if w1 and w2 and w1.result.cpu_us:
            scale = w2.result.cpu_us / w1.result.cpu_us
            workers_md += f"\n\nCPU per notification, 2 workers against 1: **{scale:.2f}x** (target <= 1.15x)"
        if w2 and w2.shares:
            shares = ", ".join(f"{pid}: {s:.0%}" for pid, s in w2.shares.items())
            workers_md += f"\n\nEach process's share with 2 workers ({w2.share_source}): {shares}."
    else:
        workers_md = "workers: not supported by this receiver (`receiver serve --help` has no `--workers`)."
    threaded = [r for r in rows if r.threads]
    busy = {n for r in threaded for n, us in r.threads.items() if us >= 0.5}  # idle helper threads left out
    thread_names = sorted(busy, key=lambda n: (n != "event loop", n))
    threads_md = (
        "## By thread\n\nCPU µs per notification of each thread of the one-process rows (utime + stime"
        " from /proc/<pid>/task; threads of one name added up):\n\n"
        f"| server | {' | '.join(thread_names)} |\n| --- |{' ---: |' * len(thread_names)}\n"
        + "\n".join(
            f"| {r.name} | " + " | ".join(f"{r.threads.get(n, 0.0):,.0f}" for n in thread_names) + " |"
            for r in threaded
        )
        + "\n\n"
        if threaded
        else ""
    )
    written_md = (
        f"\nThe SQLite stage as shipped wrote"
        f" **{written['written_kb']:.1f} KB per event** (WAL frames and checkpoints) for"
        f" {written['stored_kb']:.1f} KB of database per event: a commit writes every page it"
        " changed whole, as a WAL frame (two write(2) calls each), and the hashed event id and the"
        " indexes keyed by task (events by task, deliveries by task) change a page of their own for"
        " nearly every event.\n"
        if "written_kb" in written and "stored_kb" in written
        else ""
    )
    pg_row = by_key.get("pg")
    pg_md = (
        f"PostgreSQL row: the PostgreSQL server's own CPU (this database's backends, the background"
        f" processes and the postmaster) was **{pg_row.side_cpu_us:,.0f} µs** per notification on top of"
        f" receiver's {pg_row.result.cpu_us:,.0f} µs; runs of {max(args.duration, args.pg_duration):g} s."
        "\n\n"
        if pg_row and pg_row.side_cpu_us is not None
        else ""
    )

    def stage_md(name: str, us: float | str) -> str:
        return f"| {name} | {us:.1f} |" if isinstance(us, float) else f"| {name} | {us} |"

    report = f"""# HTTP ingest benchmark
{heading_note()}
Measured {time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())} on {platform.machine()}, {os.cpu_count()} cores,
Python {platform.python_version()}, SQLite {sqlite3.sqlite_version}. One-process servers pinned to core 0
in turn; wrk (1 thread, {args.connections} connections) on core 1, {args.runs} run(s) of {args.duration:g} s
each after a {args.warmup:g} s warm-up; every figure is the median of the runs. Payloads: {len(MIX)}
notification types, unique per request, signed, mean {mean_size:.0f} bytes, spread over {TASKS}
registered tasks. receiver runs with the shipped config/receiver.toml (one `log` sink, the
dispatcher in `serve`, JSON log lines to a file). Rerun: `make bench`.

{TABLE_HEAD}{chr(10).join(lines)}

CPU µs / notification = utime + stime of every server process (all threads and children, from
/proc; wrk's excluded) over the measured runs / notifications answered 200.
Targets (issue #10): SQLite FULL, shipped config >= 0.25x the bare handler, p99 <= 15 ms,
<= 100 µs per notification; PostgreSQL >= 0.12x.

{pg_md}{threads_md}## Every core

Server not pinned (free to use both cores), wrk still on core 1.

{workers_md}

## Where a notification's time goes

In-process, microseconds each, same payloads (a stage whose receiver internals changed shape shows
"{CHANGED}"):

| step | µs |
| --- | ---: |
{chr(10).join(stage_md(n, us) for n, us in breakdown)}
{written_md}
Checks: {"; ".join(checks)}.
"""

    def run_json(r: Run) -> dict[str, Any]:
        return {k: v for k, v in r.__dict__.items() if k != "cpu_by_pid"}

    data = {
        "connections": args.connections,
        "duration": args.duration,
        "runs": args.runs,
        "workers_supported": workers,
        "rows": [
            {
                "key": r.key,
                "name": r.name,
                **run_json(r.result),
                "vs_bare": r.result.rps / base.result.rps if base else None,
                "server_cpu_us": r.side_cpu_us,
                "shares": r.shares or None,
                "threads": r.threads or None,
                "runs": [run_json(x) for x in r.runs],
            }
            for r in rows
        ],
        "stages": [{"step": n, "us": us if isinstance(us, float) else None} for n, us in breakdown],
        "store_stage_written": written or None,
        "checks": checks,
    }
    write_report("ingest-http", report, data)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
