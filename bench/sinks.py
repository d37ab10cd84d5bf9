"""Benchmark: the outbox, in one run, each figure against a baseline of the same run.

1. Ingest with log + jsonl sinks against none, one core (receiver pinned to core 0). The jsonl sink
   takes batches of up to 64 lines (``max_batch = 64``, ``max_wait = 0.01``), as one would set it
   for throughput; the http sink sends one event per request, 64 tasks at once.
2. Ingest with log + jsonl + http sinks against none: one core; and with the dispatcher on the
   other core (a ``receiver dispatch`` process pinned to core 1; and ``serve --workers 2``, free to
   use both cores, when this receiver has it). GET /v1/sinks every second: is the backlog bounded?
3. The shipped config (one ``log`` sink, dispatcher in ``serve``) at full closed-loop ingest for
   ``--soak`` seconds: the oldest undelivered event at the end.
4. Ingest-to-sink latency, one http sink: open loop (bench/open_loop.py, core 1) at half the
   no-sink closed-loop throughput of (1), for ``--latency-seconds``; latency = arrival at the
   sink's target (bench/sink_target.py, core 1) - the notification's scheduled send time. A run
   whose send lag p99 exceeds 5 ms is void.

wrk (64 connections) and the sink target on core 1; CPU µs per notification = utime + stime of every
receiver process (serve and dispatch, from /proc) over the measured run / notifications answered 200.
Writes bench/results/sinks.{md,json}.

    .venv/bin/python bench/sinks.py [--duration 15] [--soak 60] [--latency-seconds 60]
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import (
    MIX,
    RECEIVER,
    ROOT,
    TASKS,
    Run,
    free_port,
    get_json,
    heading_note,
    payloads,
    percentile,
    pin_self,
    quick,
    receiver_env,
    register_tasks,
    serve,
    stop,
    workers_supported,
    write_report,
    wrk,
)

VOID_LAG_MS = 5.0
SINKS_HEAD = (
    "| sinks | requests/s | vs none | p99 | CPU µs / notification | backlog at end"
    " | oldest undelivered at end | backlog growth, 2nd half | backlog | target |\n"
    "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- |"
)


def hook(port: int, batched: bool = False) -> dict[str, Any]:
    """One http sink to the benchmark's target: one event per request, or (``batched``) up to 64
    per request, waiting 10 ms at most to fill a batch."""
    url = f"http://127.0.0.1:{port}/hook"
    sink = {"name": "hook", "kind": "http", "options": {"url": url}, "concurrency": 64}
    return {**sink, "concurrency": 8, "max_batch": 64, "max_wait": 0.01} if batched else sink


@dataclass
class Sample:
    at: float  # seconds since the measured run started
    backlog: int  # undelivered, the worst sink
    oldest: float | None  # the oldest undelivered event's age, any sink


@dataclass
class Outcome:
    key: str
    name: str
    run: Run
    samples: list[Sample] = field(default_factory=list)
    end: Sample | None = None  # right after the load stopped

    def growth(self) -> float:
        """Backlog growth over the second half of the run, events/s (least squares)."""
        half = [s for s in self.samples if s.at >= self.samples[-1].at / 2] if self.samples else []
        if len(half) < 2:
            return float("nan")
        mx = sum(s.at for s in half) / len(half)
        my = sum(s.backlog for s in half) / len(half)
        var = sum((s.at - mx) ** 2 for s in half)
        return sum((s.at - mx) * (s.backlog - my) for s in half) / var if var else float("nan")

    def bounded(self) -> bool:
        """No more than 2% of the ingest rate added to the backlog per second over the second half,
        or a backlog at the end of at most one second of ingest."""
        end = self.end.backlog if self.end else 0
        growth = self.growth()
        return end <= self.run.rps or (growth == growth and growth <= 0.02 * self.run.rps)


def sinks_sample(port: int) -> tuple[int, float | None]:
    items = get_json(f"http://127.0.0.1:{port}/v1/sinks", timeout=10)["items"]
    ages = [a for i in items if (a := i["oldest_undelivered_age_seconds"]) is not None]
    return max((int(i["backlog"]) for i in items), default=0), max(ages, default=None)


class Sampler(threading.Thread):
    """GET /v1/sinks every second while the load runs."""

    def __init__(self, port: int) -> None:
        super().__init__(daemon=True)
        self.port = port
        self.samples: list[Sample] = []
        self.halt = threading.Event()
        self.started_at = time.monotonic()

    def run(self) -> None:
        while not self.halt.wait(1.0):
            try:
                backlog, oldest = sinks_sample(self.port)
            except OSError:
                continue
            self.samples.append(Sample(time.monotonic() - self.started_at, backlog, oldest))


def wait_drained(port: int, timeout: float) -> tuple[int, float | None]:
    deadline = time.monotonic() + timeout
    backlog, oldest = sinks_sample(port)
    while backlog and time.monotonic() < deadline:
        time.sleep(0.5)
        backlog, oldest = sinks_sample(port)
    return backlog, oldest


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--duration", type=float, default=quick(15, 3), help="seconds of each throughput run")
    parser.add_argument("--warmup", type=float, default=quick(3, 1))
    parser.add_argument("--soak", type=float, default=quick(60, 5), help="seconds of the shipped-config run")
    parser.add_argument("--latency-seconds", type=float, default=quick(60, 5))
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--skip", default="", help="comma-separated parts to leave out (development)")
    parser.add_argument(
        "--latency-rate",
        type=float,
        default=0.0,
        help="notifications/s of the latency runs instead of half the no-sink rate (development: the"
        " same rate for two builds)",
    )
    args = parser.parse_args()
    pin_self()
    skip = set(filter(None, args.skip.split(",")))
    work = Path(tempfile.mkdtemp(prefix="receiver-bench-sinks-"))
    payload_file = work / "payloads.jsonl"
    mean_size = payloads(payload_file)
    procs: list[subprocess.Popen[bytes]] = []

    def target(name: str) -> tuple[int, Path, subprocess.Popen[bytes]]:
        port = free_port()
        out = work / f"arrivals-{name}.jsonl"
        cmd = [sys.executable, str(ROOT / "bench" / "sink_target.py"), str(port), str(out)]
        proc = serve(cmd, port, {}, work / f"target-{name}.log", cpus="1")
        procs.append(proc)
        return port, out, proc

    target_port, _, throughput_target = target("throughput")

    log_sink = {"name": "log", "kind": "log"}

    def jsonl(key: str) -> dict[str, Any]:
        # In batches of up to 64 lines (one write and fsync each), waiting 10 ms at most to fill.
        options = {"path": str(work / f"{key}.jsonl"), "keep": 1}
        return {"name": "file", "kind": "jsonl", "options": options, "max_batch": 64, "max_wait": 0.01}

    def closed_loop(
        key: str, name: str, sinks: list[dict[str, Any]] | None, *, mode: str = "one", seconds: float = 0
    ) -> Outcome:
        """One receiver (fresh store): warm-up, then a measured wrk run sampled each second."""
        port = free_port()
        db = f"sqlite:///{work / f'{key}.db'}"
        extra: dict[str, object] = {} if sinks is None else {"SINKS": sinks}
        started: list[subprocess.Popen[bytes]] = []
        log = work / f"{key}.log"
        try:
            if mode == "dispatch":
                env = receiver_env(port, db, DISPATCH_IN_SERVE="false", **extra)
                started.append(serve([*RECEIVER, "serve"], port, env, log, cpus="0"))
                d_port = free_port()
                d_env = receiver_env(d_port, db, **extra)
                d_log = work / f"{key}-dispatch.log"
                started.append(serve([*RECEIVER, "dispatch"], d_port, d_env, d_log, cpus="1"))
            elif mode == "workers":
                env = receiver_env(port, db, **extra)
                started.append(serve([*RECEIVER, "serve", "--workers", "2"], port, env, log, cpus=None))
            else:
                started.append(serve([*RECEIVER, "serve"], port, receiver_env(port, db, **extra), log))
            register_tasks(port, TASKS)
            wrk(port, args.warmup, args.connections, payload_file)
            sampler = Sampler(port)
            sampler.start()
            roots = [p.pid for p in started]
            run = wrk(port, seconds or args.duration, args.connections, payload_file, server=roots)
            sampler.halt.set()
            backlog, oldest = sinks_sample(port)
            sampler.join()
            end = Sample(time.monotonic() - sampler.started_at, backlog, oldest)
            return Outcome(key, name, run, sampler.samples, end)
        finally:
            for proc in started:
                stop(proc)

    outcomes: dict[str, Outcome] = {}

    def three() -> list[dict[str, Any]]:
        return [log_sink, jsonl("three"), hook(target_port)]

    plan: list[tuple[str, str, Callable[[], Outcome]]] = [
        ("none", "no sinks", lambda: closed_loop("none", "no sinks", [])),
        ("log_jsonl", "log + jsonl, one core", lambda: closed_loop("log_jsonl", "", [log_sink, jsonl("lj")])),
        ("three", "log + jsonl + http, one core", lambda: closed_loop("three", "", three())),
        ("three_dispatch", "log + jsonl + http, `receiver dispatch` on core 1",
         lambda: closed_loop("three_dispatch", "", three(), mode="dispatch")),
    ]  # fmt: skip
    workers = workers_supported()
    if workers:
        plan.append(("three_workers", "log + jsonl + http, `serve --workers 2`, both cores",
                     lambda: closed_loop("three_workers", "", three(), mode="workers")))  # fmt: skip
    plan.append(("shipped", f"shipped config (one log sink), {args.soak:g} s",
                 lambda: closed_loop("shipped", "", None, seconds=args.soak)))  # fmt: skip
    latency: dict[str, Any] = {}
    batched: dict[str, Any] = {}
    try:
        for key, name, step in plan:
            if key in skip:
                continue
            print(f"sinks: {key} ...", file=sys.stderr, flush=True)
            outcome = step()
            outcome.name = name
            outcomes[key] = outcome
        stop(throughput_target)

        rate = args.latency_rate or (outcomes["none"].run.rps / 2 if "none" in outcomes else 0.0)
        if "latency" not in skip and rate:
            print("sinks: latency ...", file=sys.stderr, flush=True)
            latency = measure_latency(work, payload_file, rate, args.latency_seconds, target)
            print("sinks: latency, batched ...", file=sys.stderr, flush=True)
            batched = measure_latency(work, payload_file, rate, args.latency_seconds, target, batched=True)
    finally:
        for proc in procs:
            stop(proc)
        shutil.rmtree(work, ignore_errors=True)

    report, data = render(args, outcomes, latency, batched, mean_size, workers)
    write_report("sinks", report, data)
    return 0


def measure_latency(
    work: Path, payload_file: Path, rate: float, seconds: float, target: Any, batched: bool = False
) -> dict[str, Any]:
    name = "latency-batched" if batched else "latency"
    t_port, arrivals_file, t_proc = target(name)
    port = free_port()
    env = receiver_env(port, f"sqlite:///{work / name}.db", SINKS=[hook(t_port, batched)])
    proc = serve([*RECEIVER, "serve"], port, env, work / f"{name}.log")
    try:
        register_tasks(port, TASKS)
        summary_file = work / f"open-loop-{name}.json"
        # Real-time priority on core 1: the generator sleeps between 1 ms ticks, and without it the
        # scheduler lets the sink target (same core) run for several ms before waking it.
        rt = ["chrt", "-f", "10"] if shutil.which("chrt") and os.geteuid() == 0 else []
        cmd = [*rt, "taskset", "-c", "1", sys.executable, str(ROOT / "bench" / "open_loop.py")]
        cmd += [f"http://127.0.0.1:{port}/v1/notifications", str(payload_file), f"{rate:.1f}", str(seconds)]
        cmd += ["--tasks", str(TASKS), "--out", str(summary_file)]
        subprocess.run(cmd, check=True, capture_output=True, cwd=ROOT)
        sent = orjson.loads(summary_file.read_bytes())
        backlog, _ = wait_drained(port, timeout=max(30.0, seconds))
    finally:
        stop(proc)
    stop(t_proc)
    t0, tag = float(sent["t0"]), f"{sent['tag']}-"
    lat = []
    for line in arrivals_file.read_bytes().splitlines():
        a = orjson.loads(line)
        sid = a.get("session_id") or ""
        if sid.startswith(tag):
            lat.append((a["arrival"] - (t0 + int(sid[len(tag) :]) / rate)) * 1000)
    return {
        "rate": rate,
        "seconds": seconds,
        **{k: sent[k] for k in ("scheduled", "sent", "ok", "errors")},
        "send_lag_p99_ms": sent["send_lag_p99_ms"],
        "void": sent["send_lag_p99_ms"] > VOID_LAG_MS,
        "delivered": len(lat),
        "left_undelivered": backlog,
        "p50_ms": percentile(lat, 50),
        "p99_ms": percentile(lat, 99),
        "max_ms": max(lat, default=float("nan")),
    }


def render(
    args: argparse.Namespace,
    outcomes: dict[str, Outcome],
    latency: dict[str, Any],
    batched: dict[str, Any],
    mean_size: float,
    workers: bool,
) -> tuple[str, dict[str, Any]]:
    none = outcomes.get("none")

    def ratio(o: Outcome) -> str:
        return f"{o.run.rps / none.run.rps:.2f}x" if none and none.run.rps else "–"

    def age(s: Sample | None) -> str:
        return "–" if s is None or s.oldest is None else f"{s.oldest:.1f} s"

    def row(o: Outcome, target: str) -> str:
        end = o.end
        backlog = f"{end.backlog:,}" if end else "–"
        bounded = "–" if o.key == "none" else ("bounded" if o.bounded() else "**growing**")
        growth = o.growth()
        g = f"{growth:+,.0f}/s" if growth == growth and o.key != "none" else "–"
        cells = [o.name, f"{o.run.rps:,.0f}", ratio(o), f"{o.run.p99_ms:.1f} ms", f"{o.run.cpu_us:,.0f}"]
        cells += [backlog, age(end), g, bounded, target]
        return "| " + " | ".join(cells) + " |"

    targets = {"log_jsonl": ">= 0.8x", "three": "report; bounded", "three_dispatch": "report; bounded",
               "three_workers": "report; bounded", "shipped": "oldest <= 1 s"}  # fmt: skip
    rows = "\n".join(row(o, targets.get(k, "baseline")) for k, o in outcomes.items())
    no_workers = (
        "" if workers else "\n`serve --workers 2`: not supported by this receiver (no `--workers`).\n"
    )
    if latency:

        def verdict(run: dict[str, Any]) -> str:
            lag = run["send_lag_p99_ms"]
            return (
                f"**void** (send lag p99 {lag:.1f} ms > {VOID_LAG_MS:g})" if run["void"] else f"{lag:.2f} ms"
            )

        def lat_row(name: str, run: dict[str, Any]) -> str:
            return (
                f"| {name} | {run['p50_ms']:,.1f} ms | {run['p99_ms']:,.1f} ms | {run['max_ms']:,.1f} ms"
                f" | {run['delivered']:,} of {run['scheduled']:,} ({run['left_undelivered']:,} left)"
                f" | {verdict(run)} | p99 <= 100 ms |"
            )

        runs = [lat_row("one event per request (the default)", latency)]
        if batched:
            runs.append(lat_row("`max_batch = 64`, `max_wait = 0.01`, 8 batches in flight", batched))
        table = "\n".join(runs)
        lat_md = f"""Open loop at {latency["rate"]:,.0f} notifications/s (half the no-sink closed-loop rate
above) for {latency["seconds"]:g} s each; a run whose generator's send lag p99 is over
{VOID_LAG_MS:g} ms is void.

| http sink | p50 | p99 | max | delivered (left when the outbox wait ended) | send lag p99 | target |
| --- | ---: | ---: | ---: | ---: | ---: | ---: |
{table}
"""
    else:
        lat_md = "Not measured in this run."
    report = f"""# Sinks benchmark
{heading_note()}
Measured {time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())} on {platform.machine()}, {os.cpu_count()} cores,
Python {platform.python_version()}. receiver (shipped config/receiver.toml, SQLite synchronous=FULL, a
fresh store per row) pinned to core 0 unless the row says otherwise; wrk ({args.connections} connections,
closed loop, {args.duration:g} s after a {args.warmup:g} s warm-up) and the http sink's target on core 1.
Payloads: {len(MIX)} notification types, unique, signed, mean {mean_size:.0f} bytes, {TASKS} registered
tasks. Rerun: `make bench`. Sinks: `log` as shipped; `jsonl` with `max_batch = 64`, `max_wait = 0.01`
(a batch's lines written and fsync'd at once); `http` one event per request, `concurrency = 64`.

## Ingest with sinks, closed loop

{SINKS_HEAD}
{rows}
{no_workers}
CPU µs / notification: every receiver process (serve, and dispatch where it runs apart) over the
measured run / notifications answered 200; wrk and the sink target excluded. Backlog: GET /v1/sinks
each second during the run and once right after it (the worst sink's backlog and oldest age).
"bounded": the backlog grew by at most 2% of the ingest rate per second over the second half of
the run, or ended at most one second of ingest deep.

## Ingest-to-sink latency, one http sink

Latency = arrival at the sink's target - the notification's scheduled send time (one clock).

{lat_md}
"""

    def outcome_json(o: Outcome) -> dict[str, Any]:
        return {
            "key": o.key,
            "name": o.name,
            "rps": o.run.rps,
            "vs_none": o.run.rps / none.run.rps if none and none.run.rps else None,
            "p99_ms": o.run.p99_ms,
            "cpu_us": o.run.cpu_us,
            "ok": o.run.ok,
            "errors": o.run.errors,
            "end_backlog": o.end.backlog if o.end else None,
            "end_oldest_s": o.end.oldest if o.end else None,
            "growth_per_s": o.growth(),
            "bounded": o.bounded() if o.key != "none" else None,
            "samples": [s.__dict__ for s in o.samples],
        }

    data = {
        "duration": args.duration,
        "soak": args.soak,
        "workers_supported": workers,
        "rows": [outcome_json(o) for o in outcomes.values()],
        "latency": latency or None,
        "latency_batched": batched or None,
    }
    return report, data


if __name__ == "__main__":
    sys.exit(main())
