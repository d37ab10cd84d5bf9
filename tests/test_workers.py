"""``serve --workers 2`` as processes on a real SQLite file: the workers share the socket, the
queue and the metrics; one dispatches, and another takes over when it is killed; a worker killed
is restarted while the others keep the socket answering; a signal to the parent drains them all."""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import socket
import sqlite3
import subprocess
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aio_pika
import aiohttp
import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from receiver import events
from receiver.bell import Bell
from receiver.errors import ConfigError
from receiver.workers import WorkerSpec, bind, metrics_directory
from tests.amqp_broker import AMQP_URL, queue_for_a_process
from tests.payloads import REVIEW, body
from tests.servers import KEY, RECEIVER, HookTarget, Server, free_port, live

LEASE = 1.5  # seconds: renewed every 0.5 s
_serial = itertools.count()


def settings(db: Path, **more: str) -> dict[str, str]:
    return {
        "RECEIVER_STORE__URL": f"sqlite:///{db}",
        "RECEIVER_VERIFY__NOTIFY_KEYS": orjson.dumps([KEY]).decode(),
        "RECEIVER_HTTP__WORKERS": "2",
        "RECEIVER_LEASE_SECONDS": str(LEASE),
        **more,
    }


def doc() -> dict[str, Any]:
    return live({**REVIEW, "SessionId": f"w-{next(_serial)}"})


def lines(server: Server) -> list[dict[str, Any]]:
    out = []
    for line in server.output().splitlines():
        if line.startswith("{") and line.endswith("}"):
            out.append(orjson.loads(line))
    return out


def until(server: Server, check: Callable[[list[dict[str, Any]]], bool], within: float = 20) -> None:
    """Until the server's log shows what ``check`` looks for (a positive event, no sleep)."""
    deadline = time.monotonic() + within
    while not check(lines(server)):
        assert server.proc.poll() is None, server.output()[-3000:]
        assert time.monotonic() < deadline, server.output()[-3000:]
        time.sleep(0.05)


def workers(server: Server) -> dict[int, int]:
    """Worker index -> pid of its latest start, as the parent logs them."""
    return {line["worker"]: line["pid"] for line in lines(server) if line["event"] == "worker started"}


def serving(log: list[dict[str, Any]]) -> int:
    """How many workers have announced they serve (their starts, restarts included)."""
    return sum(1 for line in log if line["event"] == "listening" and "worker" in line)


def answered_by(log: list[dict[str, Any]], channel: str = "http") -> Counter[int]:
    return Counter(
        line["worker"]
        for line in log
        if line["event"] == "notification" and line["channel"] == channel and line["outcome"] == "stored"
    )


def stopped(pid: int) -> None:
    """Wait until ``pid`` is stopped (SIGSTOP): then it accepts no connection."""
    deadline = time.monotonic() + 5
    while Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "T":
        assert time.monotonic() < deadline
        time.sleep(0.01)


def lease_pid(db: Path, name: str) -> int | None:
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
    try:
        row = con.execute("SELECT holder FROM leases WHERE name = ?", (name,)).fetchone()
    finally:
        con.close()
    return None if row is None else int(row[0].rsplit(":", 2)[1])  # host:pid:token


async def post(url: str, n: int = 1, connections: int = 1) -> int:
    """``n`` notifications, each on a new connection (so any worker may take it); all answered 200."""
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as http:

        async def one() -> None:
            async with http.post(f"{url}/v1/notifications", data=body(doc())) as r:
                assert (r.status, await r.json()) == (200, {"code": 0})

        for start in range(0, n, connections):
            await asyncio.gather(*(one() for _ in range(min(connections, n - start))))
    return n


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    async def get() -> str:
        async with (
            aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as http,
            http.get(f"{url}/metrics") as r,
        ):
            assert r.status == 200
            return await r.text()

    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(asyncio.run(get()))
        for s in family.samples
    }


def stored(channel: str) -> tuple[str, tuple[tuple[str, str], ...]]:
    return ("receiver_notifications_total", (("channel", channel), ("outcome", "stored")))


@pytest.fixture
def queue() -> Iterator[str]:
    yield from queue_for_a_process("test.workers")


@pytest.mark.slow
@pytest.mark.amqp
def test_two_workers_share_the_requests_and_the_queue_and_either_reports_all_of_them_in_metrics(
    tmp_path: Path, servers: list[Server], queue: str
) -> None:
    db = tmp_path / "shared.db"
    env = settings(db, RECEIVER_AMQP__URL=AMQP_URL, RECEIVER_AMQP__QUEUE=queue)
    server = Server(tmp_path, env, [])
    servers.append(server)
    until(server, lambda log: sum(line["event"] == "consuming" for line in log) == 2 and serving(log) == 2)

    # HTTP: new connections, 16 at a time, until both workers have answered some.
    posted = 0
    while len(answered_by(lines(server))) < 2:
        assert posted < 2000, "one worker took every connection"
        posted += asyncio.run(post(server.url, 32, connections=16))
    until(server, lambda log: sum(answered_by(log).values()) == posted)  # each logged once, by its worker

    # AMQP: each worker consumes from the queue (competing consumers).
    async def publish(n: int) -> None:
        async with await aio_pika.connect(AMQP_URL) as connection:
            channel = await connection.channel()
            for _ in range(n):
                await channel.default_exchange.publish(aio_pika.Message(body(doc())), routing_key=queue)

    asyncio.run(publish(40))
    until(server, lambda log: sum(answered_by(log, "amqp").values()) == 40)
    assert len(answered_by(lines(server), "amqp")) == 2

    # Whichever worker answers the scrape adds up both: the other is stopped for each scrape.
    acked = ("receiver_amqp_messages", (("outcome", "acked"),))
    deadline = time.monotonic() + 10
    while scrape(server.url).get(acked) != 40:  # each worker publishes its consumer's counts every second
        assert time.monotonic() < deadline, scrape(server.url)
        time.sleep(0.1)
    pids = workers(server)
    for answering, other in ((0, 1), (1, 0)):
        os.kill(pids[other], signal.SIGSTOP)
        try:
            stopped(pids[other])
            scraped = scrape(server.url)
        finally:
            os.kill(pids[other], signal.SIGCONT)
        assert scraped[stored("http")] == posted, answering
        assert scraped[stored("amqp")] == 40, answering
        assert scraped[acked] == 40, answering
        assert scraped[("receiver_ingest_seconds_count", (("channel", "http"),))] == posted
    assert server.stop() == 0


@pytest.mark.slow
async def test_kill_9_of_the_dispatching_worker_hands_dispatch_over_within_the_lease_losing_nothing(
    tmp_path: Path,
) -> None:
    target = await HookTarget(delay=0.02, enough=20).start()
    db = tmp_path / "dispatch.db"
    sinks = [{"name": "hook", "kind": "http", "options": {"url": target.url}}]
    env = settings(db, RECEIVER_SINKS=orjson.dumps(sinks).decode(), RECEIVER_DISPATCH_POLL_INTERVAL="0.1")
    server: Server | None = None
    try:
        server = await asyncio.to_thread(Server, tmp_path, env, [])
        await asyncio.to_thread(until, server, lambda log: serving(log) == 2)
        docs = [doc() for _ in range(150)]
        async with aiohttp.ClientSession() as http:
            for d in docs:
                async with http.post(f"{server.url}/v1/notifications", data=body(d)) as r:
                    assert r.status == 200
        await asyncio.wait_for(target.reached.wait(), timeout=30)
        holder = lease_pid(db, "dispatch")
        assert holder in workers(server).values()
        assert holder is not None
        assert sum(line["event"] == "dispatching" for line in lines(server)) == 1  # one of the two
        os.kill(holder, signal.SIGKILL)
        killed = time.monotonic()
        while lease_pid(db, "dispatch") in (holder, None):
            assert time.monotonic() - killed < 10, server.output()[-3000:]
            await asyncio.sleep(0.02)
        taken_over = time.monotonic() - killed
        assert taken_over <= LEASE + LEASE / 3 + 1.0  # the ttl, one renewal, and slack for a busy machine

        def dispatching(log: list[dict[str, Any]]) -> int:
            return sum(line["event"] == "dispatching" for line in log)

        await asyncio.to_thread(until, server, lambda log: dispatching(log) == 2)  # the one that took over
        print(f"dispatch taken over {taken_over:.2f} s after the kill (lease {LEASE} s)")
        expected = {events.event_id(d) for d in docs}
        deadline = time.monotonic() + 60
        while not expected <= set(target.got):
            assert time.monotonic() < deadline, (
                f"{len(expected - set(target.got))} events never reached the sink"
            )
            await asyncio.sleep(0.05)
        assert set(target.got) == expected  # each at least once, and nothing that was not sent
        assert dispatching(lines(server)) == 2  # and only that one: the restarted worker stands by
        assert await asyncio.to_thread(server.stop) == 0
        left = sqlite3.connect(db).execute("SELECT count(*) FROM deliveries WHERE state != 'delivered'")
        assert left.fetchone()[0] == 0
    finally:
        if server is not None and server.proc.poll() is None:
            server.proc.kill()
        await target.close()


@pytest.mark.slow
async def test_what_a_standby_worker_commits_is_dispatched_at_once_not_at_the_next_poll(
    tmp_path: Path,
) -> None:
    target = await HookTarget().start()
    db = tmp_path / "bell.db"
    sinks = [{"name": "hook", "kind": "http", "options": {"url": target.url}}]
    # A poll far longer than the test: only a wake-up gets the event out in time.
    env = settings(db, RECEIVER_SINKS=orjson.dumps(sinks).decode(), RECEIVER_DISPATCH_POLL_INTERVAL="60")
    env["RECEIVER_LEASE_SECONDS"] = "10"  # held through the pause below
    server: Server | None = None
    try:
        server = await asyncio.to_thread(Server, tmp_path, env, [])
        await asyncio.to_thread(until, server, lambda log: serving(log) == 2)
        holder = lease_pid(db, "dispatch")
        assert holder is not None
        os.kill(holder, signal.SIGSTOP)  # so that the other worker takes the notification in
        try:
            await asyncio.to_thread(stopped, holder)
            await post(server.url)
        finally:
            os.kill(holder, signal.SIGCONT)
        await asyncio.to_thread(until, server, lambda log: len(answered_by(log)) == 1)
        [taker] = answered_by(lines(server))
        assert workers(server)[taker] != holder
        await asyncio.wait_for(target.reached.wait(), timeout=5)
        assert await asyncio.to_thread(server.stop) == 0
    finally:
        if server is not None and server.proc.poll() is None:
            server.proc.kill()
        await target.close()


@pytest.mark.slow
def test_a_worker_killed_is_restarted_and_meanwhile_the_other_answers_every_connection(
    tmp_path: Path, servers: list[Server]
) -> None:
    server = Server(tmp_path, settings(tmp_path / "restart.db"), [])
    servers.append(server)
    until(server, lambda log: serving(log) == 2)
    victim, survivor = workers(server)[0], workers(server)[1]
    os.kill(victim, signal.SIGKILL)
    until(server, lambda log: any(line["event"] == "worker died; restarting" for line in log))
    answered = 0
    while serving(lines(server)) < 3:  # until the replacement serves: new connections, all answered
        answered += asyncio.run(post(server.url))
    assert answered > 0
    [died] = [line for line in lines(server) if line["event"] == "worker died; restarting"]
    assert (died["worker"], died["pid"], died["returncode"]) == (0, victim, -signal.SIGKILL)
    replacement = workers(server)[0]
    assert replacement != victim
    # The replacement serves too: with the other stopped, it answers alone.
    os.kill(survivor, signal.SIGSTOP)
    try:
        stopped(survivor)
        asyncio.run(post(server.url, 5))
    finally:
        os.kill(survivor, signal.SIGCONT)
    until(server, lambda log: answered_by(log)[0] >= 5)
    assert server.stop() == 0


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_to_the_parent_drains_every_worker_and_exits_0(
    tmp_path: Path, servers: list[Server], signum: signal.Signals
) -> None:
    env = settings(tmp_path / "drain.db")
    del env["RECEIVER_HTTP__WORKERS"]  # the option instead
    server = Server(tmp_path, env, [], command_args=["--workers", "2"])
    servers.append(server)
    until(server, lambda log: serving(log) == 2)
    asyncio.run(post(server.url, 8, connections=4))
    pids = workers(server)
    server.proc.send_signal(signum)
    assert server.proc.wait(timeout=30) == 0
    log = lines(server)
    assert {line["worker"] for line in log if line["event"] == "store closed"} == {0, 1}
    assert {line["worker"] for line in log if line["event"] == "lease released"} <= {0, 1}
    done = {line["worker"]: line["returncode"] for line in log if line["event"] == "worker stopped"}
    assert done == {0: 0, 1: 0}
    for pid in pids.values():
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    assert sqlite3.connect(tmp_path / "drain.db").execute("SELECT count(*) FROM events").fetchone()[0] == 8


@pytest.mark.slow
def test_workers_that_cannot_start_stop_the_parent_with_2(tmp_path: Path) -> None:
    sinks = [{"name": "odd", "kind": "no-such-kind"}]
    env = {
        **os.environ,
        **settings(tmp_path / "bad.db", RECEIVER_SINKS=orjson.dumps(sinks).decode()),
        "RECEIVER_HTTP__PORT": str(free_port()),
        "RECEIVER_LOG__FORMAT": "json",
    }
    done = subprocess.run(
        [*RECEIVER, "serve"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2, done.stdout[-3000:]
    assert "worker cannot start; stopping every worker" in done.stdout
    assert "no-such-kind" in done.stdout


# --- the parts ----------------------------------------------------------------------------------


def test_a_worker_spec_reads_back_what_the_parent_wrote() -> None:
    spec = WorkerSpec(1, 7, (9, 10), {"management": [5], "webhook": [6, 8]})
    assert WorkerSpec.parse(str(spec)) == spec
    with pytest.raises(ConfigError, match="--worker: expected INDEX:PARENT_FD:BELL_READ/BELL_WRITE:NAME=FD"):
        WorkerSpec.parse("1:7:http=5")


async def test_a_bell_rung_anywhere_wakes_its_listener_and_rings_while_nobody_listens_wait() -> None:
    bell = Bell.new()
    try:
        heard = asyncio.Event()
        for _ in range(3):
            bell.ring()  # nobody listens yet: they wait in the pipe
        bell.listen(heard.set)
        await asyncio.wait_for(heard.wait(), timeout=5)
        heard.clear()
        for _ in range(100_000):  # more than the pipe holds: rings are dropped, never blocking
            bell.ring()
        await asyncio.wait_for(heard.wait(), timeout=5)
        bell.stop_listening()
    finally:
        bell.close()


def test_binding_port_0_on_every_address_of_a_name_gives_one_port() -> None:
    socks = bind("localhost", 0)
    try:
        ports = {s.getsockname()[1] for s in socks}
        assert len(ports) == 1
        assert 0 not in ports
        with socket.create_connection(("127.0.0.1", ports.pop()), timeout=2):
            pass  # listening already: the kernel queues it until a worker accepts
    finally:
        for s in socks:
            s.close()


def test_a_run_gets_a_fresh_metrics_directory_and_sweeps_those_of_dead_parents(tmp_path: Path) -> None:
    stale = tmp_path / f"receiver-metrics-{os.getpid() + 10_000_000}-x"  # a parent gone (no such pid)
    stale.mkdir()
    (stale / "counter_1.db").write_bytes(b"old")
    mine = metrics_directory(tmp_path)
    again = metrics_directory(tmp_path)
    assert not stale.exists()
    assert mine != again
    assert mine.is_dir()  # a living parent's is kept
    assert again.is_dir()
    assert list(mine.iterdir()) == []
