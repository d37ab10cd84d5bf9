"""Benchmark: one receiver against three, all on one PostgreSQL database, same load, same run.

Every receiver is pinned to core 0 (this machine has two cores, and wrk needs the other), so the
three replicas share the CPU one had: the figure shows what coordinating through PostgreSQL costs,
not how far replicas scale out; on a machine with a core per replica, each replica adds its own.

    .venv/bin/python bench/replicas.py [--duration 10]
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import (
    KEY,
    TASKS,
    Run,
    free_port,
    heading_note,
    payloads,
    pin_self,
    quick,
    serve,
    stop,
    write_report,
    wrk,
)
from ingest_http import count_events, create_postgres_database, drop_postgres_database


def start(n: int, store_url: str, work: Path) -> list[tuple[int, subprocess.Popen[bytes]]]:
    out = []
    for k in range(n):
        port = free_port()
        env = {
            "RECEIVER_HTTP__PORT": str(port),
            "RECEIVER_STORE__URL": store_url,
            "RECEIVER_VERIFY__NOTIFY_KEYS": orjson.dumps([KEY]).decode(),
            "RECEIVER_LOG__FORMAT": "json",
        }
        out.append(
            (port, serve([sys.executable, "-m", "receiver", "serve"], port, env, work / f"r{n}-{k}.log"))
        )
    return out


def load(ports: list[int], seconds: int, connections: int, payload_file: Path) -> list[Run]:
    """One wrk per replica, side by side, the connections split between them."""
    import concurrent.futures

    share = max(1, connections // len(ports))
    with concurrent.futures.ThreadPoolExecutor(len(ports)) as pool:
        return list(pool.map(lambda p: wrk(p, seconds, share, payload_file), ports))


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--duration", type=float, default=quick(10, 3))
    parser.add_argument("--connections", type=int, default=63)
    args = parser.parse_args()
    pin_self()
    work = Path(tempfile.mkdtemp(prefix="receiver-bench-replicas-"))
    payload_file = work / "payloads.jsonl"
    payloads(payload_file)
    results: dict[int, tuple[float, int]] = {}
    for n in (1, 3):
        db = create_postgres_database()
        fleet = start(n, db, work)
        try:
            for k in range(TASKS):
                req = urllib.request.Request(
                    f"http://127.0.0.1:{fleet[0][0]}/v1/tasks",
                    data=orjson.dumps({"task_id": f"bench-task-{k}"}),
                    headers={"Content-Type": "application/json"},
                )
                urllib.request.urlopen(req).read()
            load([p for p, _ in fleet], quick(3, 1), args.connections, payload_file)
            runs = load([p for p, _ in fleet], args.duration, args.connections, payload_file)
        finally:
            for _, proc in fleet:
                stop(proc)
        stored, _ = count_events(db)
        drop_postgres_database(db)
        results[n] = (sum(r.rps for r in runs), stored)
    one, three = results[1][0], results[3][0]
    report = f"""# Replicas benchmark
{heading_note()}
Measured {time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())} on {platform.machine()}, {os.cpu_count()} cores,
Python {platform.python_version()}. PostgreSQL on the same machine; every receiver pinned to core 0,
wrk on core 1 ({args.connections} connections in all, split between the replicas), {args.duration:g} s.

| replicas | requests/s in all | events stored |
| ---: | ---: | ---: |
| 1 | {one:,.0f} | {results[1][1]:,} |
| 3 | {three:,.0f} | {results[3][1]:,} |

**{three / one:.2f}x** with three replicas sharing one core: the cost of coordinating through
PostgreSQL, not scale-out (each replica on its own core adds its own throughput).
"""
    write_report("replicas", report, {"one": {"rps": one, "stored": results[1][1]},
                                      "three": {"rps": three, "stored": results[3][1]}})  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
