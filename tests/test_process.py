"""The service as a process: starts from the shipped config, stops on SIGTERM, loses nothing on kill -9."""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import sqlite3
import subprocess
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import aiohttp
import asyncpg
import orjson
import pytest

from receiver import events
from tests.payloads import REVIEW, body
from tests.servers import KEY, RECEIVER, Server, free_port, live

ROOT = Path(__file__).resolve().parents[1]
TOKEN = "process-test-token"

pytestmark = pytest.mark.slow


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


# Every secret receiver can be given, each distinct so that a leak can be told apart.
SECRETS = {
    "store password": "pg-store-pass-4f1c",
    "amqp password": "amqp-pass-8d2e",
    "mps secret id": "AKIDsecret-id-77b3",
    "mps secret key": "mps-secret-key-19a6",
    "http sink secret": "sink-hmac-secret-3b1e",
    "http sink url password": "sink-url-pass-0c4d",
    "http sink url token": "sink-query-token-aa12",
    "amqp sink url password": "amqp-sink-pass-6e7f",
    "api token": TOKEN,
    "notify key": KEY,
    "older notify key": "older-key-2025",
    "master key": "master-key-5e21",
}


@contextmanager
def postgres_database(password: str) -> Iterator[str]:
    """A fresh database on the real PostgreSQL (trust: any password is taken), dropped afterwards."""
    from tests.databases import PG_URL

    name = f"receiver_secrets_{uuid.uuid4().hex[:12]}"

    async def admin(sql: str) -> None:
        con = await asyncpg.connect(PG_URL)
        try:
            await con.execute(sql)
        finally:
            await con.close()

    asyncio.run(admin(f'CREATE DATABASE "{name}"'))
    try:
        yield f"postgresql://postgres:{password}@127.0.0.1:5432/{name}"
    finally:
        asyncio.run(admin(f'DROP DATABASE "{name}" WITH (FORCE)'))


def one_shot(cwd: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*RECEIVER, *args],
        cwd=cwd,
        env={**os.environ, **env, "RECEIVER_LOG__FORMAT": "json"},
        capture_output=True,
        text=True,
        timeout=60,
    )


def wait_for(server: Server, text: str, count: int = 1) -> None:
    """Until ``text`` shows ``count`` times in the server's output (a positive event, no sleep)."""
    deadline = time.monotonic() + 20
    while server.output().count(text) < count:
        assert server.proc.poll() is None, server.output()[-3000:]
        assert time.monotonic() < deadline, server.output()[-3000:]
        time.sleep(0.05)


@pytest.mark.postgres
def test_no_secret_reaches_the_output_of_any_command(tmp_path: Path, servers: list[Server]) -> None:
    closed = free_port()  # nothing listens there: the sinks and the broker fail, and say so
    sinks = [
        {
            "name": "hook",
            "kind": "http",
            "options": {
                "url": f"http://hookuser:{SECRETS['http sink url password']}@127.0.0.1:{closed}/hook"
                f"?token={SECRETS['http sink url token']}",
                "secret": SECRETS["http sink secret"],
            },
            "retry_schedule": [0.05],
        },
        {
            "name": "bus",
            "kind": "amqp",
            "options": {"url": f"amqp://guest:{SECRETS['amqp sink url password']}@127.0.0.1:{closed}/"},
            "retry_schedule": [0.05],
        },
    ]
    mps = {
        "RECEIVER_MPS__SECRET_ID": SECRETS["mps secret id"],
        "RECEIVER_MPS__SECRET_KEY": SECRETS["mps secret key"],
    }
    emulator = Server(
        tmp_path,
        {
            "RECEIVER_EMULATOR__SECRET_ID": SECRETS["mps secret id"],
            "RECEIVER_EMULATOR__SECRET_KEY": SECRETS["mps secret key"],
            "RECEIVER_EMULATOR__SPEED": "10",
            "RECEIVER_LOG__LEVEL": "debug",
        },
        [],
        command="emulate",
        port_setting="RECEIVER_EMULATOR__PORT",
    )
    servers.append(emulator)
    outputs: dict[str, str] = {}
    with postgres_database(SECRETS["store password"]) as store_url:
        env = {
            "RECEIVER_STORE__URL": store_url,
            "RECEIVER_VERIFY__NOTIFY_KEYS": orjson.dumps([KEY, SECRETS["older notify key"]]).decode(),
            "RECEIVER_VERIFY__MASTER_KEYS": orjson.dumps([SECRETS["master key"]]).decode(),
            "RECEIVER_API__TOKEN": TOKEN,
            "RECEIVER_SINKS": orjson.dumps(sinks).decode(),
            "RECEIVER_MPS__ENDPOINT": f"127.0.0.1:{emulator.port}",
            "RECEIVER_MPS__PROTOCOL": "http",
            **mps,
            "RECEIVER_LOG__LEVEL": "debug",
            "RECEIVER_DISPATCH_POLL_INTERVAL": "0.05",
        }
        migrate = one_shot(tmp_path, env, "migrate")
        assert migrate.returncode == 0, migrate.stderr
        outputs["migrate"] = migrate.stdout + migrate.stderr

        server = Server(tmp_path, env, [])
        servers.append(server)

        async def exercise() -> None:
            async with aiohttp.ClientSession() as http:
                for doc in (
                    live(REVIEW),
                    live({**REVIEW, "SessionId": "2"}, key=SECRETS["older notify key"]),
                ):
                    async with http.post(f"{server.url}/v1/notifications", data=body(doc)) as r:
                        assert r.status == 200, await r.text()
                for doc in (live(REVIEW, key="wrong"), REVIEW):
                    async with http.post(f"{server.url}/v1/notifications", data=body(doc)) as r:
                        assert r.status == 401
                for token in ("nope", TOKEN):
                    auth = {"Authorization": f"Bearer {token}"}
                    async with http.get(f"{server.url}/v1/events", headers=auth) as r:
                        assert r.status == (200 if token == TOKEN else 401)

        asyncio.run(exercise())
        submit = one_shot(
            tmp_path,
            {**env, "RECEIVER_HTTP__PORT": str(server.port)},
            "submit",
            "--url",
            "rtmp://live.example.com/app/secrets",
            "--notify-url",
            f"{server.url}/v1/notifications",
            "--review",
            "10",
        )  # no --notify-key: with a master key set, the task gets a key of its own
        assert submit.returncode == 0, submit.stderr
        outputs["submit"] = submit.stdout + submit.stderr
        wait_for(server, '"delivery dead"', 4)  # both sinks failed both events, and said why
        assert server.stop() == 0
        outputs["serve"] = server.output()

        replay = one_shot(tmp_path, env, "replay", "--state", "dead")
        assert replay.returncode == 0, replay.stderr
        outputs["replay"] = replay.stdout + replay.stderr
        reconcile = one_shot(tmp_path, env, "reconcile", "--discover")
        assert reconcile.returncode == 0, reconcile.stderr
        outputs["reconcile"] = reconcile.stdout + reconcile.stderr
        abort = one_shot(tmp_path, env, "abort", orjson.loads(submit.stdout)["task_id"])
        outputs["abort"] = abort.stdout + abort.stderr  # aborted, or refused: over already
        dispatcher = Server(tmp_path, env, [], command="dispatch")
        servers.append(dispatcher)
        wait_for(dispatcher, '"delivery dead"', 1)
        assert dispatcher.stop() == 0
        outputs["dispatch"] = dispatcher.output()

        # A broker that cannot be reached: consume fails to start, and says so without the password.
        broker = f"amqp://guest:{SECRETS['amqp password']}@127.0.0.1:{closed}/"
        consume = one_shot(
            tmp_path, {**env, "RECEIVER_AMQP__URL": broker, "RECEIVER_HTTP__PORT": "0"}, "consume"
        )
        assert consume.returncode != 0
        outputs["consume"] = consume.stdout + consume.stderr
    assert emulator.stop() == 0
    outputs["emulate"] = emulator.output()

    assert '"outcome":"unauthorized"' in outputs["serve"]
    assert "postgres:***@127.0.0.1" in outputs["serve"] + outputs["migrate"]  # logged, redacted
    for command, out in outputs.items():
        for what, secret in SECRETS.items():
            assert secret not in out, f"{what} in the output of {command}"


def test_a_tokenless_management_api_on_every_interface_is_refused_before_listening(tmp_path: Path) -> None:
    refused = subprocess.run(
        [*RECEIVER, "serve"],
        cwd=tmp_path,
        env={**os.environ, "RECEIVER_HTTP__HOST": "0.0.0.0", "RECEIVER_HTTP__PORT": str(free_port())},
        capture_output=True,
        text=True,
        timeout=20,  # had it started, it would still be serving
    )
    assert refused.returncode == 2
    out = refused.stdout + refused.stderr
    assert "cannot start" in out
    assert "api.token" in out
    assert "api.open" in out
    assert '"listening"' not in out


def test_a_management_port_splits_the_listeners_and_sigterm_stops_both(
    tmp_path: Path, servers: list[Server]
) -> None:
    management = free_port()
    server = Server(tmp_path, {"RECEIVER_HTTP__MANAGEMENT_PORT": str(management)}, [])
    servers.append(server)
    admin = f"http://127.0.0.1:{management}"

    async def exercise() -> None:
        async with aiohttp.ClientSession() as http:
            async with http.post(f"{server.url}/v1/notifications", data=body(REVIEW)) as r:
                assert (r.status, await r.json()) == (200, {"code": 0})
            async with http.get(f"{server.url}/v1/events") as r:
                assert r.status == 404
            async with http.get(f"{admin}/v1/events") as r:
                assert r.status == 200
                assert len((await r.json())["items"]) == 1
            async with http.get(f"{admin}/readyz") as r:
                assert r.status == 200

    asyncio.run(exercise())
    assert server.stop() == 0
    lines = [orjson.loads(line) for line in server.output().splitlines() if line.startswith("{")]
    listening = {line["listener"]: line["port"] for line in lines if line["event"] == "listening"}
    assert listening == {"management": management, "webhook": server.port}
    assert any(line["event"] == "store closed" for line in lines)


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
