"""An open-loop load generator: POSTs unique signed notifications at fixed intervals, whatever the
answers take (no coordinated omission), and records how late it sent each one (its send lag).

Notification i is scheduled at ``t0 + i / rate`` (t0: unix time at the start) and carries SessionId
``<run>-<i>``, so whoever sees it later (a sink's target) can tell when it was meant to be sent.
Raw keep-alive HTTP/1.1 connections on uvloop, no HTTP client library: the generator must cost
little next to what it measures. Prints a JSON summary (and writes it to OUT when given):

    python bench/open_loop.py URL PAYLOADS RATE SECONDS [--tasks 64] [--out FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

import orjson
import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import fill, percentile

TICK = 0.001


def parse_response(buffer: bytes) -> tuple[int, int] | None:
    """(status, bytes the whole response takes) once ``buffer`` holds a whole response, else None."""
    end = buffer.find(b"\r\n\r\n")
    if end < 0:
        return None
    head = buffer[:end].decode("latin-1")
    lines = head.split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    length = 0
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-length":
            length = int(value.strip())
    total = end + 4 + length
    return (status, total) if len(buffer) >= total else None


class Connection(asyncio.Protocol):
    """One keep-alive connection, one request at a time."""

    def __init__(self, pool: Pool) -> None:
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        self.buffer = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is no asyncio.Transport subclass

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while (done := parse_response(self.buffer)) is not None:
            status, size = done
            self.buffer = self.buffer[size:]
            self.pool.answered(self, status)

    def connection_lost(self, exc: Exception | None) -> None:
        self.pool.lost(self)


class Pool:
    def __init__(self, host: str, port: int, path: str, limit: int) -> None:
        self.host, self.port, self.limit = host, port, limit
        self.prefix = f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
        self.idle: collections.deque[Connection] = collections.deque()
        self.busy: set[Connection] = set()
        self.waiting: collections.deque[tuple[bytes, float]] = collections.deque()  # (body, due)
        self.opening = 0
        self.lags: list[float] = []
        self.statuses: collections.Counter[int] = collections.Counter()
        self.errors = 0
        self.all_answered = asyncio.Event()
        self.sent = 0
        self.expected = -1

    async def open(self) -> None:
        self.opening += 1
        try:
            loop = asyncio.get_running_loop()
            _, conn = await loop.create_connection(lambda: Connection(self), self.host, self.port)
        except OSError:
            self.errors += 1
            return
        finally:
            self.opening -= 1
        self._ready(conn)

    def _ready(self, conn: Connection) -> None:
        if self.waiting:
            body, due = self.waiting.popleft()
            self._write(conn, body, due)
        else:
            self.idle.append(conn)

    def _write(self, conn: Connection, body: bytes, due: float) -> None:
        assert conn.transport is not None
        self.busy.add(conn)
        self.lags.append(time.perf_counter() - due)
        conn.transport.write(f"{self.prefix}Content-Length: {len(body)}\r\n\r\n".encode() + body)
        self.sent += 1

    def send(self, body: bytes, due: float) -> None:
        if self.idle:
            self._write(self.idle.popleft(), body, due)
            return
        self.waiting.append((body, due))
        if len(self.busy) + len(self.idle) + self.opening < self.limit:
            asyncio.get_running_loop().create_task(self.open())

    def answered(self, conn: Connection, status: int) -> None:
        self.statuses[status] += 1
        self.busy.discard(conn)
        self._ready(conn)
        self._check_done()

    def lost(self, conn: Connection) -> None:
        if conn in self.busy:
            self.errors += 1
            self.busy.discard(conn)
        if conn in self.idle:
            self.idle.remove(conn)
        self._check_done()

    def _check_done(self) -> None:
        if self.expected >= 0 and sum(self.statuses.values()) + self.errors >= self.expected:
            self.all_answered.set()

    def close(self) -> None:
        for conn in [*self.idle, *self.busy]:
            if conn.transport is not None:
                conn.transport.close()


async def run(
    url: str, templates: list[bytes], rate: float, seconds: float, tasks: int, connections: int, tag: str
) -> dict[str, object]:
    parts = urlsplit(url)
    pool = Pool(parts.hostname or "127.0.0.1", parts.port or 80, parts.path or "/", connections)
    await asyncio.gather(*(pool.open() for _ in range(min(64, connections))))
    n = int(rate * seconds)
    t0_wall, start = time.time(), time.perf_counter()
    i = 0
    while i < n:
        due_count = min(n, int((time.perf_counter() - start) * rate) + 1)
        while i < due_count:
            pool.send(fill(templates[i % len(templates)], f"{tag}-{i}", i % tasks), start + i / rate)
            i += 1
        # At least a millisecond: shorter sleeps spin (the loop's timers have ms resolution) and would
        # take the core from the sink target beside us; sends due meanwhile go out together.
        await asyncio.sleep(max(TICK, start + i / rate - time.perf_counter()))
    sending = time.perf_counter() - start
    pool.expected = n
    pool._check_done()
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(pool.all_answered.wait(), timeout=60)
    pool.close()
    lags_ms = [lag * 1000 for lag in pool.lags]
    return {
        "t0": t0_wall,
        "rate": rate,
        "tag": tag,
        "scheduled": n,
        "sent": pool.sent,
        "ok": pool.statuses.get(200, 0),
        "statuses": {str(k): v for k, v in pool.statuses.items()},
        "errors": pool.errors,
        "sending_seconds": sending,
        "send_lag_p50_ms": percentile(lags_ms, 50),
        "send_lag_p99_ms": percentile(lags_ms, 99),
        "send_lag_max_ms": max(lags_ms, default=float("nan")),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("url")
    parser.add_argument("payloads", type=Path)
    parser.add_argument("rate", type=float)
    parser.add_argument("seconds", type=float)
    parser.add_argument("--tasks", type=int, default=64)
    parser.add_argument("--connections", type=int, default=512, help="at most this many open at once")
    parser.add_argument("--tag", default=f"open-{time.time_ns()}", help="SessionId prefix")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    templates = args.payloads.read_bytes().splitlines()
    summary = uvloop.run(
        run(args.url, templates, args.rate, args.seconds, args.tasks, args.connections, args.tag)
    )
    text = orjson.dumps(summary).decode()
    if args.out:
        args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
