"""What every benchmark here shares: payloads, servers started and pinned, wrk, CPU and RSS read from
/proc, the quick mode, and the report writer (Markdown to read, JSON beside it to chart).

The pure parts (``parse_wrk``, ``parse_stat``, ``parse_rss``, ``median``, ``percentile``) are tested in
tests/test_bench_harness.py.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "tests" / "data" / "examples"
# BENCH_CHECKOUT=/path/to/a/checkout: benchmark that checkout's receiver (and its shipped
# config) with this harness, e.g. main's "now" against a branch. Servers run from there, so that
# `python -m receiver` finds its package first.
CHECKOUT = Path(os.environ.get("BENCH_CHECKOUT") or ROOT).resolve()
SHIPPED_CONFIG = CHECKOUT / "config" / "receiver.toml"
if CHECKOUT != ROOT:
    sys.path.insert(0, str(CHECKOUT))  # and in-process (the stage breakdown) too
KEY = "bench-notify-key"
TASKS = 64
MIX = [
    "03-AiReviewResult-Image.constructed.json",
    "04-AiRecognitionResult-AsrTrans.adapted-from-doc.json",
    "05-AiRecognitionResult-Face-Ocr-Object-Tag.constructed.json",
    "06-AiAnalysisResult-Segment-Description.constructed.json",
    "07-AiQualityControlResult.constructed.json",
    "08-LiveRecordResult.constructed.json",
    "09-AiSmartSubtitleResult.constructed.json",
]
# BENCH_QUICK=1: a smoke run (short durations, one run each); its reports go to bench/results/quick/.
QUICK = os.environ.get("BENCH_QUICK", "") not in ("", "0")
RESULTS = ROOT / "bench" / "results" / ("quick" if QUICK else "")
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


def quick(normal: Any, smoke: Any) -> Any:
    """The default for a flag: ``smoke`` in a quick run, else ``normal``."""
    return smoke if QUICK else normal


def heading_note() -> str:
    note = "**Quick run (BENCH_QUICK=1): short and noisy, a smoke test, not a measurement.**"
    return f"\n{note}\n" if QUICK else ""


# --- payloads ------------------------------------------------------------------------------------


# As MPS signs: a Timestamp (the expiry) 10 minutes ahead. receiver takes a notification until 60 s
# past it, so a load that could outlast that gets its templates signed again first (``resign``).
SIGNED_FOR = 600


def payloads(path: Path) -> float:
    """Write one template per line (``__SEQ__``/``__TASK__`` filled in by the load); return the mean size."""
    ts = int(time.time()) + SIGNED_FOR
    sign = hashlib.md5(f"{ts}{KEY}".encode()).hexdigest()
    lines = []
    for name in MIX:
        doc = orjson.loads((EXAMPLES / name).read_bytes())
        doc.update(TaskId="bench-task-__TASK__", SessionId="__SEQ__", SessionContext="")
        doc.update(Timestamp=ts, Sign=sign)
        # Bring the two short types up to the size of the others: more files, more subtitle lines.
        if doc.get("LiveRecordResultInfo"):
            doc["LiveRecordResultInfo"]["FileResults"] *= 2
        if "AiSmartSubtitleResultInfo" in doc:
            doc["AiSmartSubtitleResultInfo"]["SmartSubtitleResult"] *= 3
        lines.append(orjson.dumps(doc))
    part = path.with_name(path.name + ".part")  # whole or not at all: loads running beside read it
    part.write_bytes(b"\n".join(lines) + b"\n")
    part.replace(path)
    return sum(len(line) for line in lines) / len(lines)


def resign(path: Path, seconds: float) -> None:
    """Sign the templates again if their Timestamp would expire within a load of ``seconds`` (and a
    margin): an expired notification is answered 401, not measured."""
    with path.open("rb") as f:
        expires = int(orjson.loads(f.readline())["Timestamp"])
    if expires < time.time() + seconds + 30:
        payloads(path)


def fill(template: bytes, seq: str, task: int) -> bytes:
    return template.replace(b"__SEQ__", seq.encode(), 1).replace(b"__TASK__", str(task).encode(), 1)


# --- processes -----------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited with {proc.returncode} (see its log)")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise SystemExit("server did not start")


def pinned(cmd: Sequence[str], cpus: str | None) -> list[str]:
    """``taskset -c cpus cmd`` (taskset execs: the pid is the command's); None: every core (said
    explicitly, since the harness itself runs pinned to core 1 and children inherit that)."""
    return ["taskset", "-c", cpus if cpus is not None else f"0-{(os.cpu_count() or 1) - 1}", *cmd]


def pin_self() -> None:
    """Keep the harness (samplers, polls, reports) off core 0, where the measured server runs."""
    if (os.cpu_count() or 1) > 1:
        os.sched_setaffinity(0, {1})


def serve(
    cmd: Sequence[str],
    port: int | None,
    env: Mapping[str, str],
    log: Path,
    cpus: str | None = "0",
) -> subprocess.Popen[bytes]:
    """Start a server with stdout and stderr to ``log``; wait until ``port`` accepts (when given)."""
    with log.open("ab") as out:
        proc = subprocess.Popen(
            pinned(cmd, cpus), env={**os.environ, **env}, stdout=out, stderr=out, cwd=CHECKOUT
        )
    if port is not None:
        wait_port(port, proc)
    return proc


def stop(proc: subprocess.Popen[bytes], timeout: float = 30) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


RECEIVER = [sys.executable, "-m", "receiver", "--config", str(SHIPPED_CONFIG)]


def receiver_env(port: int, store_url: str, **extra: object) -> dict[str, str]:
    """The shipped config (config/receiver.toml: one ``log`` sink, dispatcher in ``serve``, logs as
    JSON lines since stdout is a file) with only what a benchmark must set: port, store, the key.
    ``extra``: more settings, named as the RECEIVER_ variables are (``SINKS``, ``STORE__...``)."""
    env = {
        "RECEIVER_HTTP__PORT": str(port),
        "RECEIVER_STORE__URL": store_url,
        "RECEIVER_VERIFY__NOTIFY_KEYS": orjson.dumps([KEY]).decode(),
    }
    for name, value in extra.items():
        env[f"RECEIVER_{name}"] = value if isinstance(value, str) else orjson.dumps(value).decode()
    return env


def workers_supported() -> bool:
    """Whether this receiver has ``serve --workers N`` (being built alongside this harness)."""
    out = subprocess.run(
        [sys.executable, "-m", "receiver", "serve", "--help"],
        capture_output=True,
        text=True,
        cwd=CHECKOUT,
    )
    return "--workers" in out.stdout


def register_tasks(port: int, n: int, prefix: str = "bench-task-") -> None:
    """Register tasks ``prefix0 .. prefix{n-1}``, 32 requests in flight."""
    import concurrent.futures

    def one(k: int) -> None:
        req = urllib.request.Request(
            f"http://127.0.0.1:{port}/v1/tasks",
            data=orjson.dumps({"task_id": f"{prefix}{k}", "url": f"rtmp://bench/live/{k}"}),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=60) as resp:
            resp.read()

    with concurrent.futures.ThreadPoolExecutor(32 if n > 64 else 1) as pool:
        list(pool.map(one, range(n)))


def get_json(url: str, timeout: float = 5) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return orjson.loads(resp.read())


# --- /proc ---------------------------------------------------------------------------------------


def parse_stat(text: str) -> tuple[int, int, int, int, int]:
    """From /proc/<pid>/stat: (ppid, utime, stime, cutime, cstime), times in clock ticks.

    The command name is in parentheses and may hold spaces or parentheses itself: split after the
    last ``)``.
    """
    rest = text[text.rindex(")") + 2 :].split()
    # rest[0] is field 3 (state): ppid is field 4, utime..cstime fields 14..17.
    return int(rest[1]), int(rest[11]), int(rest[12]), int(rest[13]), int(rest[14])


def parse_rss(status: str) -> int:
    """VmRSS from /proc/<pid>/status, in bytes (0 for a zombie, which has none)."""
    m = re.search(r"^VmRSS:\s+(\d+) kB", status, re.M)
    return int(m.group(1)) * 1024 if m else 0


def _stats() -> dict[int, tuple[int, int, int, int, int]]:
    out = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                out[int(entry)] = parse_stat(Path(f"/proc/{entry}/stat").read_text())
            except (OSError, ValueError, IndexError):
                continue  # gone meanwhile
    return out


def tree(roots: Iterable[int]) -> list[int]:
    """The roots and every descendant, alive now."""
    stats = _stats()
    children: dict[int, list[int]] = {}
    for pid, st in stats.items():
        children.setdefault(st[0], []).append(pid)
    found: list[int] = []
    todo = [r for r in roots if r in stats]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, []))
    return found


def cpu_snapshot(roots: Iterable[int]) -> dict[int, float]:
    """CPU seconds (utime + stime of every thread, plus reaped children's) of each process in the
    trees under ``roots``."""
    out = {}
    for pid in tree(roots):
        try:
            _, ut, st, cut, cst = parse_stat(Path(f"/proc/{pid}/stat").read_text())
        except (OSError, ValueError, IndexError):
            continue
        out[pid] = (ut + st + cut + cst) / CLK_TCK
    return out


def thread_cpu(pid: int) -> dict[str, float]:
    """CPU seconds by thread of one process, the threads labelled by the name the OS shows
    (receiver names its SQLite threads ``sqlite-writer`` and ``sqlite-reader``); the main thread,
    which runs the event loop, is ``event loop``. Threads of one name are added up."""
    out: dict[str, float] = {}
    base = Path(f"/proc/{pid}/task")
    try:
        tids = os.listdir(base)
    except OSError:
        return out
    for tid in tids:
        try:
            name = "event loop" if tid == str(pid) else (base / tid / "comm").read_text().strip()
            _, ut, st, _, _ = parse_stat((base / tid / "stat").read_text())
        except (OSError, ValueError, IndexError):
            continue  # gone meanwhile
        out[name] = out.get(name, 0.0) + (ut + st) / CLK_TCK
    return out


def cpu_delta(before: Mapping[int, float], after: Mapping[int, float]) -> dict[int, float]:
    """CPU seconds each process spent between two snapshots (a process born between them: all of it)."""
    return {pid: t - before.get(pid, 0.0) for pid, t in after.items()}


def rss_of(pids: Iterable[int]) -> dict[int, int]:
    out = {}
    for pid in pids:
        try:
            out[pid] = parse_rss(Path(f"/proc/{pid}/status").read_text())
        except OSError:
            continue
    return out


# --- wrk -----------------------------------------------------------------------------------------


@dataclass
class Run:
    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    errors: int
    cpu_s: float = 0.0  # CPU seconds of the server's processes over this run
    cpu_us: float = 0.0  # ... per notification answered 200
    cpu_by_pid: dict[int, float] | None = None
    refused: int = 0  # answered, but not 2xx (socket errors, such as the requests a stop cuts, excluded)

    @property
    def ok(self) -> int:
        return self.requests - self.errors


_UNIT = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}


def _ms(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    if not m:
        raise ValueError(f"not a wrk duration: {text!r}")
    return float(m.group(1)) * _UNIT[m.group(2)]


def parse_wrk(out: str) -> Run:
    """wrk's --latency report: requests/s, p50, p99, requests, non-2xx and socket errors."""
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    p50 = re.search(r"^\s+50(?:\.000)?%\s+(\S+)", out, re.M)
    p99 = re.search(r"^\s+99(?:\.000)?%\s+(\S+)", out, re.M)
    requests = re.search(r"(\d+) requests in", out)
    if not (rps and p50 and p99 and requests):
        raise ValueError(f"cannot read wrk's report:\n{out}")
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    socket_errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    refused = int(non2xx.group(1)) if non2xx else 0
    errors = refused + (sum(int(g) for g in socket_errors.groups()) if socket_errors else 0)
    p50_ms, p99_ms = _ms(p50.group(1)), _ms(p99.group(1))
    return Run(float(rps.group(1)), p50_ms, p99_ms, int(requests.group(1)), errors, refused=refused)


def wrk(
    port: int,
    seconds: float,
    connections: int,
    payload_file: Path,
    *,
    server: Sequence[int] = (),
    tasks: int = TASKS,
    limit: int = 0,
    until: Callable[[], bool] | None = None,
) -> Run:
    """wrk on core 1 against ``port``; with ``server`` (root pids), the CPU those processes and their
    children spent during this run, per notification answered 200.

    ``limit``: wrk's thread stops after that many answers; but wrk itself sleeps out its ``-d``, so
    give ``until`` too: polled every half second, once true wrk gets SIGINT (it stops and reports).
    """
    if seconds > SIGNED_FOR - 60:
        raise ValueError(f"a wrk run of {seconds:.0f} s outlasts its payloads' signature: run it in legs")
    resign(payload_file, seconds)
    cmd = ["taskset", "-c", "1", "wrk", "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s"]
    cmd += ["--latency", "-s", str(ROOT / "bench" / "notify.lua")]
    env = {
        **os.environ,
        "BENCH_PAYLOADS": str(payload_file),
        "BENCH_TASKS": str(tasks),
        "BENCH_RUN": f"{time.time_ns()}",
        "BENCH_LIMIT": str(limit),
    }
    before = cpu_snapshot(server) if server else {}
    cmd.append(f"http://127.0.0.1:{port}/v1/notifications")
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if until is not None:
        while proc.poll() is None:
            time.sleep(0.5)
            if until():
                proc.send_signal(signal.SIGINT)
                break
    out, err = proc.communicate()
    if proc.returncode:
        raise RuntimeError(f"wrk exited with {proc.returncode}: {err}")
    after = cpu_snapshot(server) if server else {}
    run = parse_wrk(out)
    if server:
        run.cpu_by_pid = cpu_delta(before, after)
        run.cpu_s = sum(run.cpu_by_pid.values())
        run.cpu_us = run.cpu_s / max(run.ok, 1) * 1e6
    return run


def median_run(runs: Sequence[Run]) -> Run:
    """Each figure the median of the runs' (requests and errors summed)."""
    return Run(
        rps=median([r.rps for r in runs]),
        p50_ms=median([r.p50_ms for r in runs]),
        p99_ms=median([r.p99_ms for r in runs]),
        requests=sum(r.requests for r in runs),
        errors=sum(r.errors for r in runs),
        cpu_s=sum(r.cpu_s for r in runs),
        cpu_us=median([r.cpu_us for r in runs]),
    )


# --- figures -------------------------------------------------------------------------------------


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values)) if values else float("nan")


def percentile(values: Sequence[float], p: float) -> float:
    """The nearest-rank percentile (p in 0..100) of ``values``; NaN for none."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * p // 100))  # ceil(n * p / 100), at least the first
    return float(ordered[int(min(rank, len(ordered))) - 1])


def write_report(name: str, markdown: str, data: Mapping[str, Any]) -> None:
    """bench/results/<name>.md (printed too) and <name>.json beside it; quick runs under quick/."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{name}.md").write_text(markdown)
    payload = {"quick": QUICK, "measured": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **data}
    (RESULTS / f"{name}.json").write_text(json.dumps(payload, indent=2, default=_plain) + "\n")
    print(markdown)


def _plain(obj: object) -> object:
    if hasattr(obj, "__dataclass_fields__"):
        return asdict(obj)  # type: ignore[call-overload]
    raise TypeError(type(obj).__name__)
