"""`receiver consume` as a process: SIGKILL mid-stream loses nothing and stores nothing twice."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from receiver import events
from tests.amqp_broker import AMQP_URL, publish_all, queue_depth, queue_for_a_process
from tests.payloads import REVIEW, body, signed
from tests.servers import free_port

pytestmark = [pytest.mark.amqp, pytest.mark.slow]
KEY = "consumer-process-key"
N = 10_000


class ConsumerProcess:
    def __init__(self, tmp_path: Path, queue: str, db: Path) -> None:
        self.log = tmp_path / f"consume-{time.monotonic_ns()}.log"
        env = {
            **os.environ,
            "RECEIVER_STORE__URL": f"sqlite:///{db}",
            "RECEIVER_VERIFY__NOTIFY_KEYS": orjson.dumps([KEY]).decode(),
            "RECEIVER_AMQP__URL": AMQP_URL,
            "RECEIVER_AMQP__QUEUE": queue,
            "RECEIVER_HTTP__PORT": str(free_port()),
            "RECEIVER_LOG__FORMAT": "json",
        }
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "receiver", "consume"], cwd=tmp_path, env=env, stdout=out, stderr=out
            )

    def output(self) -> str:
        return self.log.read_text(errors="replace")


def stored(db: Path) -> int:
    if not db.exists():
        return 0
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
    try:
        return int(con.execute("SELECT count(*) FROM events").fetchone()[0])
    except sqlite3.OperationalError:  # not migrated yet
        return 0
    finally:
        con.close()


def wait_until(check: object, timeout: float, what: str, proc: ConsumerProcess) -> None:
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        if proc.proc.poll() is not None:
            raise AssertionError(
                f"consumer exited ({proc.proc.returncode}) while waiting for {what}:\n{proc.output()}"
            )
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}:\n{proc.output()[-3000:]}")
        time.sleep(0.02)


@pytest.fixture
def queue() -> Iterator[str]:
    yield from queue_for_a_process("test.kill")


def test_consumer_killed_mid_stream_then_restarted_stores_every_message_exactly_once(
    tmp_path: Path, queue: str
) -> None:
    db = tmp_path / "receiver.db"
    expires = int(time.time()) + 600  # as MPS signs: valid for 10 minutes
    docs = [signed({**REVIEW, "SessionId": f"k-{i}"}, key=KEY, timestamp=expires) for i in range(N)]
    expected_ids = {events.event_id(d) for d in docs}
    assert len(expected_ids) == N

    # The whole stream waits in the queue first, so that the kill lands in the middle of it.
    asyncio.run(publish_all(queue, [body(d) for d in docs]))
    first = ConsumerProcess(tmp_path, queue, db)
    try:
        wait_until(lambda: stored(db) >= 2000, 60, "2000 events stored", first)
        first.proc.send_signal(signal.SIGKILL)  # mid-stream: deliveries in hand, some committed, not acked
        assert first.proc.wait(timeout=10) == -signal.SIGKILL
    finally:
        if first.proc.poll() is None:
            first.proc.kill()
    at_kill = stored(db)
    assert 2000 <= at_kill < N - 2000  # well inside the stream

    second = ConsumerProcess(tmp_path, queue, db)
    try:
        wait_until(lambda: stored(db) == N, 120, f"all {N} events stored", second)
        wait_until(lambda: asyncio.run(queue_depth(queue)) == 0, 30, "the queue to drain", second)
        # SIGTERM drains what is in hand: once it has exited 0, any redelivery that was in flight has
        # been handled (as a duplicate, never as a new row).
        second.proc.send_signal(signal.SIGTERM)
        assert second.proc.wait(timeout=30) == 0, second.output()[-3000:]
    finally:
        if second.proc.poll() is None:
            second.proc.kill()

    con = sqlite3.connect(db)
    ids = {row[0] for row in con.execute("SELECT event_id FROM events")}
    assert ids == expected_ids  # every message, none missing, none extra
    assert con.execute("SELECT count(*) FROM events").fetchone()[0] == N  # none twice
    assert con.execute("SELECT count(*) FROM quarantine").fetchone()[0] == 0
    assert '"event":"consumer stopped"' in second.output()
    duplicates = con.execute("SELECT coalesce(sum(duplicates), 0) FROM events").fetchone()[0]
    print(f"killed with {at_kill} stored; {duplicates} redeliveries absorbed as duplicates")
