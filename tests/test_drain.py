"""SIGTERM with work in flight: an HTTP request waiting on a locked store, AMQP deliveries in hand.

Drain means: stop taking new work, finish what is in flight within the shutdown timeout, leave the
rest for redelivery, exit 0 with the counts logged.
"""

from __future__ import annotations

import asyncio
import http.client
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson
import pytest

from receiver import events
from tests.amqp_broker import AMQP_URL, publish_all, queue_depth, queue_for_a_process
from tests.payloads import REVIEW, body, signed
from tests.servers import free_port

pytestmark = pytest.mark.slow
KEY = "drain-test-key"


def live(session: str) -> dict[str, Any]:
    return signed({**REVIEW, "SessionId": session}, key=KEY, timestamp=int(time.time()) + 600)  # as MPS


class Receiver:
    """``receiver <command>`` as a process, JSON logs to a file."""

    def __init__(self, tmp_path: Path, command: str, env: dict[str, str]) -> None:
        self.port = free_port()
        self.log = tmp_path / f"{command}-{self.port}.log"
        full = {
            **os.environ,
            "RECEIVER_STORE__URL": f"sqlite:///{tmp_path / 'receiver.db'}",
            "RECEIVER_VERIFY__NOTIFY_KEYS": orjson.dumps([KEY]).decode(),
            "RECEIVER_HTTP__PORT": str(self.port),
            "RECEIVER_LOG__FORMAT": "json",
            **env,
        }
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "receiver", command], cwd=tmp_path, env=full, stdout=out, stderr=out
            )

    def lines(self) -> list[dict[str, Any]]:
        out = []
        for line in self.log.read_bytes().splitlines():
            try:
                out.append(orjson.loads(line))
            except orjson.JSONDecodeError:
                out.append({"event": line.decode(errors="replace")})
        return out

    def readyz(self) -> dict[str, Any]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/readyz", timeout=5) as r:
                return dict(orjson.loads(r.read()))
        except urllib.error.HTTPError as exc:  # 503 while the store is down: the body still says why
            return dict(orjson.loads(exc.read()))
        except (OSError, ValueError):
            return {}

    def wait_until(self, check: Callable[[], bool], what: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while not check():
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"exited ({self.proc.returncode}) waiting for {what}:\n{self.log.read_text()}"
                )
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}:\n{self.log.read_text()[-3000:]}")
            time.sleep(0.02)

    def stop(self, timeout: float = 60) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=timeout)


@contextmanager
def store_locked(db: Path) -> Iterator[Callable[[], None]]:
    """Hold the SQLite write lock from outside; yields the release (also done on exit)."""
    blocker = sqlite3.connect(db, isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")
    released = False

    def release() -> None:
        nonlocal released
        if not released:
            released = True
            blocker.execute("ROLLBACK")
            blocker.close()

    try:
        yield release
    finally:
        release()


def server_has_read(server_port: int, client_port: int) -> bool:
    """The server's end of our connection has nothing left unread: it has taken the request."""
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, remote, queues = fields[1], fields[2], fields[4]
        if int(local.split(":")[1], 16) == server_port and int(remote.split(":")[1], 16) == client_port:
            return int(queues.split(":")[1], 16) == 0
    return False


def listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


def test_sigterm_lets_an_http_request_waiting_on_a_locked_store_finish_then_exits_0(tmp_path: Path) -> None:
    server = Receiver(
        tmp_path,
        "serve",
        {"RECEIVER_STORE__BUSY_TIMEOUT_MS": "20000", "RECEIVER_HTTP__SHUTDOWN_TIMEOUT": "20"},
    )
    try:
        server.wait_until(lambda: server.readyz().get("status") == "ready", "the store to be ready")
        doc = live("in-flight")
        with store_locked(tmp_path / "receiver.db") as release:
            conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
            conn.request(
                "POST", "/v1/notifications", body=body(doc), headers={"Content-Type": "application/json"}
            )
            answer: list[tuple[int, bytes]] = []
            reader = threading.Thread(target=lambda: answer.append(_read(conn)))
            reader.start()
            client_port = conn.sock.getsockname()[1]
            server.wait_until(lambda: server_has_read(server.port, client_port), "the request to be taken")
            server.proc.send_signal(signal.SIGTERM)
            server.wait_until(lambda: not listening(server.port), "the listener to close")
            assert answer == []  # still waiting on the store, and the process still running
            assert server.proc.poll() is None
            release()
            reader.join(timeout=30)
            conn.close()
        assert answer == [(200, b'{"code":0}')]
        assert server.proc.wait(timeout=30) == 0, server.log.read_text()[-3000:]
    finally:
        if server.proc.poll() is None:
            server.proc.kill()
            server.proc.wait()
    lines = server.lines()
    summaries = [e for e in lines if e["event"] == "notification"]
    assert [(e["outcome"], e["event_id"]) for e in summaries] == [("stored", events.event_id(doc))]
    assert any(e["event"] == "store closed" for e in lines)
    con = sqlite3.connect(tmp_path / "receiver.db")
    assert con.execute("SELECT count(*) FROM events").fetchone()[0] == 1


def _read(conn: http.client.HTTPConnection) -> tuple[int, bytes]:
    response = conn.getresponse()
    return response.status, response.read()


@pytest.fixture
def queue() -> Iterator[str]:
    yield from queue_for_a_process("test.drain")


@pytest.mark.amqp
@pytest.mark.parametrize("store_back_in_time", [True, False], ids=["store-back", "store-still-down"])
def test_sigterm_with_deliveries_in_hand_commits_or_returns_each_none_lost_none_twice(
    tmp_path: Path, queue: str, store_back_in_time: bool
) -> None:
    prefetch, sent = 20, 50
    env = {
        "RECEIVER_AMQP__URL": AMQP_URL,
        "RECEIVER_AMQP__QUEUE": queue,
        "RECEIVER_AMQP__PREFETCH": str(prefetch),
        "RECEIVER_AMQP__SHUTDOWN_TIMEOUT": "15" if store_back_in_time else "2",
        "RECEIVER_AMQP__STORE_RETRY_MAX": "0.2",
        "RECEIVER_STORE__BUSY_TIMEOUT_MS": "100",
    }
    docs = [live(f"d-{i}") for i in range(sent)]
    first = Receiver(tmp_path, "consume", env)
    try:
        first.wait_until(lambda: first.readyz().get("status") == "ready", "the consumer to be ready")
        with store_locked(tmp_path / "receiver.db") as release:
            asyncio.run(publish_all(queue, [body(d) for d in docs]))

            def all_in_hand_and_checked() -> bool:
                amqp = first.readyz().get("amqp", {})
                return bool(amqp.get("held_retries", 0) >= prefetch and amqp.get("store_checks", 0) >= 2)

            first.wait_until(all_in_hand_and_checked, "the prefetch window held against the store")
            first.proc.send_signal(signal.SIGTERM)
            first.wait_until(
                lambda: _logged(first, "consumer stopping: no new deliveries"), "the consumer to be stopping"
            )
            if store_back_in_time:
                release()
            assert first.proc.wait(timeout=30) == 0, first.log.read_text()[-3000:]
    finally:
        if first.proc.poll() is None:
            first.proc.kill()
            first.proc.wait()
    [drained] = [e for e in first.lines() if e["event"] == "consumer drained"]
    [stopped] = [e for e in first.lines() if e["event"] == "consumer stopped"]
    stored_then = _stored(tmp_path)
    assert stopped["consumed"] == prefetch  # nothing taken after SIGTERM, nor while paused
    if store_back_in_time:  # finished within the timeout: committed and acknowledged
        assert (drained["finished"], drained["returned_to_queue"]) == (prefetch, 0)
        assert stopped["acked"] == prefetch
        assert len(stored_then) == prefetch
    else:  # not committed: left unacknowledged, back in the queue for the next consumer
        assert (drained["finished"], drained["returned_to_queue"]) == (0, prefetch)
        assert stopped.get("acked", 0) == 0
        assert stored_then == {}
    assert asyncio.run(queue_depth(queue)) == sent - len(stored_then)  # the rest wait for redelivery

    second = Receiver(tmp_path, "consume", env)
    try:
        second.wait_until(lambda: len(_stored(tmp_path)) == sent, f"all {sent} stored")
        second.wait_until(lambda: asyncio.run(queue_depth(queue)) == 0, "the queue to drain")
        assert second.stop() == 0
    finally:
        if second.proc.poll() is None:
            second.proc.kill()
            second.proc.wait()
    stored = _stored(tmp_path)
    assert set(stored) == {events.event_id(d) for d in docs}  # none lost
    assert sum(stored.values()) == 0  # none committed and then delivered again


def _logged(receiver: Receiver, event: str) -> bool:
    return any(e["event"] == event for e in receiver.lines())


def _stored(tmp_path: Path) -> dict[str, int]:
    con = sqlite3.connect(f"file:{tmp_path / 'receiver.db'}?mode=ro", uri=True, timeout=5)
    try:
        return {r[0]: r[1] for r in con.execute("SELECT event_id, duplicates FROM events")}
    finally:
        con.close()
