"""Benchmark: does receiver's memory stay flat? RSS of every receiver process every ``--interval``
seconds while it ingests ``--notifications`` unique notifications spread over ``--tasks`` tasks and
delivers them to a jsonl and an http sink (bench/sink_target.py), then drains the outbox.

receiver (shipped config plus the two sinks, SQLite FULL) pinned to core 0; wrk (64 connections,
stopping after N answers) and the sink's target on core 1. From the sample where half the
notifications are stored to the last one: max, min, mean and (max - min) / mean per process.
Writes bench/results/rss.{md,json}.

    .venv/bin/python bench/rss.py [--notifications 1000000] [--tasks 10000] [--interval 5]
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import (
    RECEIVER,
    ROOT,
    Run,
    free_port,
    get_json,
    heading_note,
    payloads,
    pin_self,
    quick,
    receiver_env,
    register_tasks,
    rss_of,
    serve,
    stop,
    tree,
    workers_supported,
    write_report,
    wrk,
)

MB = 1024 * 1024
LEG = 300  # seconds of one wrk run (its payloads signed just before it)
LIMIT_MB = 150
SPREAD = 0.10


@dataclass
class Sample:
    at: float  # seconds since the load started
    stored: int  # events routed to the jsonl sink so far (delivered + backlog)
    backlog: int  # the worst sink's undelivered
    rss: dict[int, int]  # pid -> bytes


def outbox(port: int) -> tuple[int, int]:
    """(events routed to the jsonl sink, the worst sink's backlog)."""
    items = get_json(f"http://127.0.0.1:{port}/v1/sinks", timeout=30)["items"]
    stored = max((int(i["backlog"]) + int(i["delivered"]) for i in items), default=0)
    return stored, max((int(i["backlog"]) for i in items), default=0)


class Sampler(threading.Thread):
    def __init__(self, port: int, root: int, interval: float) -> None:
        super().__init__(daemon=True)
        self.port, self.root, self.interval = port, root, interval
        self.samples: list[Sample] = []
        self.halt = threading.Event()
        self.started = time.monotonic()

    def take(self) -> Sample | None:
        rss = rss_of(tree([self.root]))
        try:
            stored, backlog = outbox(self.port)
        except OSError:
            return None
        sample = Sample(time.monotonic() - self.started, stored, backlog, rss)
        self.samples.append(sample)
        return sample

    def run(self) -> None:
        self.take()
        while not self.halt.wait(self.interval):
            self.take()


def spread(samples: list[Sample], pid: int) -> dict[str, float]:
    values = [s.rss[pid] / MB for s in samples if pid in s.rss]
    if not values:
        return {}
    mean = sum(values) / len(values)
    top, bottom = max(values), min(values)
    return {"max": top, "min": bottom, "mean": mean, "spread": (top - bottom) / mean}


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--notifications", type=int, default=quick(1_000_000, 20_000))
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument("--interval", type=float, default=quick(5, 1), help="seconds between samples")
    parser.add_argument(
        "--no-register", action="store_true", help="send to unregistered tasks (orphans) instead"
    )
    parser.add_argument("--workers", type=int, default=0, help="serve --workers N (when supported)")
    parser.add_argument("--drain-timeout", type=float, default=quick(300, 60))
    args = parser.parse_args()
    pin_self()
    if args.workers and not workers_supported():
        raise SystemExit("--workers: not supported by this receiver")
    work = Path(tempfile.mkdtemp(prefix="receiver-bench-rss-"))
    payload_file = work / "payloads.jsonl"
    mean_size = payloads(payload_file)
    t_port = free_port()
    cmd = [sys.executable, str(ROOT / "bench" / "sink_target.py"), str(t_port), str(work / "arrivals.jsonl")]
    target = serve(cmd, t_port, {}, work / "target.log", cpus="1")
    hook = {"url": f"http://127.0.0.1:{t_port}/hook"}
    sinks = [
        {"name": "file", "kind": "jsonl", "options": {"path": str(work / "events.jsonl"), "keep": 1}},
        {"name": "hook", "kind": "http", "options": hook, "concurrency": 64},
    ]
    port = free_port()
    env = receiver_env(port, f"sqlite:///{work / 'rss.db'}", SINKS=sinks)
    serve_cmd = [*RECEIVER, "serve"] + (["--workers", str(args.workers)] if args.workers else [])
    proc = serve(serve_cmd, port, env, work / "receiver.log", cpus=None if args.workers else "0")
    registered = 0
    try:
        if not args.no_register:
            started = time.monotonic()
            register_tasks(port, args.tasks)
            registered = args.tasks
            took = time.monotonic() - started
            print(f"rss: {args.tasks:,} tasks registered in {took:.1f} s", file=sys.stderr)
        sampler = Sampler(port, proc.pid, args.interval)
        sampler.start()
        # In legs of at most LEG seconds (each with payloads signed afresh: a signature lasts ten
        # minutes); -d is only a ceiling, wrk stops after the answers still wanted (BENCH_LIMIT).
        deadline = time.monotonic() + args.notifications / 200 + 60

        def enough() -> bool:
            return bool(sampler.samples) and sampler.samples[-1].stored >= args.notifications

        legs: list[Run] = []
        while not enough() and time.monotonic() < deadline:
            wanted = args.notifications - sum(leg.ok for leg in legs)
            if wanted <= 0:
                break
            legs.append(wrk(port, LEG, 64, payload_file, tasks=args.tasks, limit=wanted, until=enough))
            if legs[-1].refused:  # (not the requests in flight when a leg stops: socket errors)
                raise SystemExit(f"rss: {legs[-1].refused:,} refused in leg {len(legs)}: not measured")
        load_seconds = time.monotonic() - sampler.started
        answered = sum(leg.ok for leg in legs)
        run = Run(answered / load_seconds, 0.0, 0.0, answered, 0)
        deadline = time.monotonic() + args.drain_timeout
        while time.monotonic() < deadline:
            last = sampler.take()
            if last is not None and last.backlog == 0:
                break
            time.sleep(min(args.interval, 1.0))
        sampler.halt.set()
        sampler.join()
    finally:
        stop(proc)
        stop(target)
        shutil.rmtree(work, ignore_errors=True)

    samples = sampler.samples
    half = next((i for i, s in enumerate(samples) if s.stored >= run.ok / 2), len(samples) - 1)
    tail = samples[half:]
    pids = sorted({pid for s in samples for pid in s.rss})
    per_pid = {pid: spread(tail, pid) for pid in pids}
    first = {pid: next((s.rss[pid] / MB for s in samples if pid in s.rss), 0.0) for pid in pids}
    ok = all(p and p["max"] <= LIMIT_MB and p["spread"] <= SPREAD for p in per_pid.values())
    end = samples[-1] if samples else None

    def row(pid: int) -> str:
        p = per_pid[pid]
        if not p:
            return f"| {pid} | – | – | – | – | – | – |"
        verdict = "ok" if p["max"] <= LIMIT_MB and p["spread"] <= SPREAD else "**over**"
        cells = [str(pid), f"{first[pid]:.0f}", f"{p['min']:.0f}", f"{p['mean']:.0f}", f"{p['max']:.0f}"]
        cells += [f"{p['spread']:.1%}", verdict]
        return "| " + " | ".join(cells) + " |"

    tasks_said = (
        f"{registered:,} tasks registered before the load"
        if registered
        else f"{args.tasks:,} task ids, not registered (every event an orphan)"
    )
    where = "free to use both cores" if args.workers else "pinned to core 0"
    left = f"{end.backlog:,}" if end else "?"
    from_stored = tail[0].stored if tail else 0
    report = f"""# Memory (RSS) benchmark
{heading_note()}
Measured {time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())} on {platform.machine()}, {os.cpu_count()} cores,
Python {platform.python_version()}. receiver (shipped config plus a jsonl and an http sink, SQLite FULL)
{where}; wrk (64 connections) and the http sink's target on core 1.
{run.ok:,} unique notifications answered 200 (mean {mean_size:.0f} bytes) over {tasks_said},
in {load_seconds:.0f} s ({run.rps:,.0f}/s), then the outbox drained ({left} left undelivered).
RSS (VmRSS from /proc) of every receiver process every {args.interval:g} s: {len(samples)} samples;
the figures from the sample where half the notifications were stored ({from_stored:,}) to the last.
Rerun: `make bench`.

| process | RSS at start, MB | min | mean | max | (max - min) / mean | |
| --- | ---: | ---: | ---: | ---: | ---: | --- |
{chr(10).join(row(pid) for pid in pids)}

Target: each process <= {LIMIT_MB} MB, (max - min) / mean <= {SPREAD:.0%} over the second half.
"""
    data: dict[str, Any] = {
        "notifications": run.ok,
        "tasks": args.tasks,
        "registered": registered,
        "interval": args.interval,
        "load_seconds": load_seconds,
        "rps": run.rps,
        "half_sample": half,
        "per_process": {str(pid): {"start_mb": first[pid], **per_pid[pid]} for pid in pids},
        "samples": [{"at": s.at, "stored": s.stored, "backlog": s.backlog, "rss": s.rss} for s in samples],
        "ok": ok,
    }
    write_report("rss", report, data)
    return 0


if __name__ == "__main__":
    sys.exit(main())
