"""The service as a process: starts from the shipped config, stops on SIGTERM, loses nothing on kill -9."""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import orjson
import pytest

from receiver import events
from tests.conftest import body, example, signed

ROOT = Path(__file__).resolve().parents[1]
KEY = "process-test-key"
TOKEN = "process-test-token"
REVIEW = example("03-AiReviewResult-Image.constructed.json")

pytestmark = pytest.mark.slow


def live(doc: dict[str, object], key: str = KEY) -> dict[str, object]:
    """Signed to expire ten minutes from now, as MPS does (the examples' own Timestamps are past)."""
    return signed(doc, key=key, timestamp=int(time.time()) + 600)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    def __init__(self, cwd: Path, env: dict[str, str], args: list[str]) -> None:
        self.port = free_port()
        self.log = cwd / f"server-{self.port}.log"
        full_env = {
            **os.environ,
            **env,
            "RECEIVER_HTTP__PORT": str(self.port),
            "RECEIVER_LOG__FORMAT": "json",
        }
        # The console script the package installs (what the image's ENTRYPOINT runs), if there.
        script = Path(sys.executable).with_name("receiver")
        command = [str(script)] if script.exists() else [sys.executable, "-m", "receiver"]
        with self.log.open("wb") as out:  # the child keeps its own copy of the descriptor
            self.proc = subprocess.Popen(
                [*command, *args, "serve"],
                cwd=cwd,
                env=full_env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        self.url = f"http://127.0.0.1:{self.port}"
        self._wait_healthy()

    def _wait_healthy(self) -> None:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.output()
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.05)
        raise AssertionError(f"server did not start:\n{self.output()}")

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                return self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise
        return int(self.proc.returncode)


@pytest.fixture
def servers() -> Iterator[list[Server]]:
    started: list[Server] = []
    yield started
    for s in started:
        if s.proc.poll() is None:
            s.proc.kill()
            s.proc.wait()


def test_make_run_config_starts_on_sqlite_warns_about_missing_keys_and_stops_cleanly(
    tmp_path: Path, servers: list[Server]
) -> None:
    server = Server(tmp_path, {}, ["--config", str(ROOT / "config" / "receiver.toml")])
    servers.append(server)

    async def exercise() -> None:
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{server.url}/healthz") as r:
                assert r.status == 200
            async with http.get(f"{server.url}/readyz") as r:
                assert r.status == 200
            async with http.post(f"{server.url}/v1/notifications", data=body(REVIEW)) as r:
                assert (r.status, await r.json()) == (200, {"code": 0})

    asyncio.run(exercise())
    assert server.stop() == 0
    assert (tmp_path / "var" / "receiver.db").is_file()
    lines = [orjson.loads(line) for line in server.output().splitlines() if line.startswith("{")]
    assert any("signature checking is off" in line["event"] for line in lines)
    [summary] = [line for line in lines if line["event"] == "notification"]
    assert summary["outcome"] == "stored"
    assert summary["task_id"] == REVIEW["TaskId"]
    assert summary["notification_type"] == "AiReviewResult"
    assert summary["channel"] == "http"
    assert "duration_ms" in summary


def test_secrets_never_reach_the_log(tmp_path: Path, servers: list[Server]) -> None:
    env = {
        "RECEIVER_VERIFY__NOTIFY_KEYS": orjson.dumps([KEY, "older-key-2025"]).decode(),
        "RECEIVER_API__TOKEN": TOKEN,
        "RECEIVER_LOG__LEVEL": "debug",
    }
    server = Server(tmp_path, env, [])
    servers.append(server)

    async def exercise() -> None:
        async with aiohttp.ClientSession() as http:
            for doc in (live(REVIEW), live(REVIEW, key="wrong"), REVIEW):
                async with http.post(f"{server.url}/v1/notifications", data=body(doc)) as r:
                    await r.read()
            async with http.get(f"{server.url}/v1/events", headers={"Authorization": "Bearer nope"}) as r:
                assert r.status == 401
                assert TOKEN not in await r.text()

    asyncio.run(exercise())
    assert server.stop() == 0
    out = server.output()
    assert '"outcome":"unauthorized"' in out
    for secret in (KEY, "older-key-2025", TOKEN):
        assert secret not in out


def test_kill_9_during_load_loses_no_notification_that_was_answered_200(
    tmp_path: Path, servers: list[Server]
) -> None:
    db = tmp_path / "kill.db"
    env = {
        "RECEIVER_STORE__URL": f"sqlite:///{db}",
        "RECEIVER_VERIFY__NOTIFY_KEYS": orjson.dumps([KEY]).decode(),
    }
    server = Server(tmp_path, env, [])
    servers.append(server)
    answered: set[str] = set()
    sent = 0

    async def load() -> None:
        nonlocal sent
        stop = asyncio.Event()
        enough = asyncio.Event()
        counter = itertools.count()

        async def sender(http: aiohttp.ClientSession) -> None:
            nonlocal sent
            while not stop.is_set():
                doc = live({**REVIEW, "SessionId": f"kill-{next(counter)}"})
                sent += 1
                try:
                    async with http.post(f"{server.url}/v1/notifications", data=body(doc)) as r:
                        if r.status == 200 and (await r.json()) == {"code": 0}:
                            answered.add(events.event_id(doc))
                            if len(answered) >= 1500:
                                enough.set()
                        else:
                            assert r.status == 503, await r.text()
                except (TimeoutError, aiohttp.ClientError):
                    return  # the server is gone

        async def killer() -> None:
            await asyncio.wait_for(enough.wait(), timeout=60)
            os.kill(server.proc.pid, signal.SIGKILL)  # mid-load: requests are in flight
            await asyncio.sleep(0.5)
            stop.set()

        timeout = aiohttp.ClientTimeout(total=10)
        async with aiohttp.ClientSession(timeout=timeout, connector=aiohttp.TCPConnector(limit=64)) as http:
            await asyncio.gather(killer(), *(sender(http) for _ in range(48)))

    asyncio.run(load())
    assert server.proc.wait(timeout=10) == -signal.SIGKILL
    assert sent > len(answered) >= 1500  # some requests were cut off unanswered

    stored = {row[0] for row in sqlite3.connect(db).execute("SELECT event_id FROM events")}
    lost = answered - stored
    assert not lost, f"{len(lost)} notifications answered 200 are not in the store"

    # And the service comes back on the same file, with everything there.
    restarted = Server(tmp_path, env, [])
    servers.append(restarted)

    async def count() -> int:
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"{restarted.url}/v1/events", params={"limit": "1000"}) as r,
        ):
            assert r.status == 200
            return len((await r.json())["items"])

    assert asyncio.run(count()) == min(1000, len(stored))
    assert restarted.stop() == 0
