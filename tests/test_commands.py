"""The one-shot and side commands as an operator runs them, through the installed console script:
``migrate`` (SQLite and PostgreSQL), ``replay`` (dry run and for real), ``dispatch``, ``submit``."""

from __future__ import annotations

import asyncio
import sqlite3
import time
import uuid
from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import orjson
import pytest
from aiohttp.test_utils import TestClient, TestServer

from receiver import events
from receiver.app import create_app
from receiver.settings import Settings
from tests.databases import PG_URL
from tests.payloads import REVIEW, body
from tests.servers import Running, environment, free_port, run

pytestmark = pytest.mark.slow


@pytest.fixture
def running() -> Iterator[list[Running]]:
    started: list[Running] = []
    yield started
    for r in started:
        if r.proc.poll() is None:
            r.proc.kill()
            r.proc.wait()


def review(task_id: str, n: int) -> dict[str, Any]:
    return {**REVIEW, "TaskId": task_id, "SessionId": f"{task_id}-{n}", "SessionContext": ""}


async def outbox(db: Path, sinks: list[dict[str, Any]], docs: list[dict[str, Any]], *, dead: int) -> None:
    """Through the service itself (unsigned: no keys): ``docs`` stored with one delivery per sink.
    With ``dead``, the dispatcher runs until that many are dead; without, it never runs (pending)."""
    settings = Settings.model_validate(
        {
            "store": {"url": f"sqlite:///{db}"},
            "sinks": sinks,
            "dispatch_in_serve": bool(dead),
            "dispatch_poll_interval": 0.02,
        }
    )
    async with TestClient(TestServer(create_app(settings))) as client:
        for doc in docs:
            resp = await client.post("/v1/notifications", data=body(doc))
            assert resp.status == 200, await resp.text()
        deadline = time.monotonic() + 20
        while dead:
            resp = await client.get("/v1/deliveries", params={"state": "dead", "limit": "1000"})
            if len((await resp.json())["items"]) >= dead:
                break
            assert time.monotonic() < deadline, "the deliveries never went dead"
            await asyncio.sleep(0.02)


# Nothing listens on port 9: each attempt fails at once; no retries, so the first failure is dead.
UNREACHABLE = {
    "name": "hook",
    "kind": "http",
    "options": {"url": "http://127.0.0.1:9/"},
    "retry_schedule": [],
    "breaker_threshold": 1000,
}


def deliveries(db: Path) -> dict[str, tuple[str, int]]:
    """event_id -> (state, attempts)"""
    with sqlite3.connect(db) as con:
        rows = con.execute(
            "SELECT e.event_id, d.state, d.attempts FROM deliveries d JOIN events e ON e.seq = d.event_seq"
        ).fetchall()
    return {event_id: (state, attempts) for event_id, state, attempts in rows}


# --- migrate --------------------------------------------------------------------------------------


def migration_count(kind: str) -> int:
    """The newest migration's number: what the store's version says once all are applied."""
    folder = resources.files("receiver.stores") / "migrations" / kind
    return max(int(p.name.split("_", 1)[0]) for p in folder.iterdir() if p.name.endswith(".sql"))


def test_migrate_creates_a_fresh_sqlite_file_and_a_second_run_changes_nothing(tmp_path: Path) -> None:
    db = tmp_path / "new" / "receiver.db"
    env = environment(RECEIVER_STORE__URL=f"sqlite:///{db}")
    first = run(tmp_path, env, "migrate")
    assert first.returncode == 0, first.stderr
    with sqlite3.connect(db) as con:
        assert con.execute("PRAGMA user_version").fetchone()[0] == migration_count("sqlite")
        tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {"events", "tasks", "deliveries", "quarantine"} <= tables
    again = run(tmp_path, env, "migrate")
    assert again.returncode == 0, again.stderr
    with sqlite3.connect(db) as con:
        assert con.execute("PRAGMA user_version").fetchone()[0] == migration_count("sqlite")


@pytest.mark.postgres
def test_migrate_creates_the_schema_in_a_fresh_postgresql_database(tmp_path: Path) -> None:
    name = f"receiver_migrate_{uuid.uuid4().hex[:12]}"

    async def admin(sql: str) -> None:
        con = await asyncpg.connect(PG_URL)
        try:
            await con.execute(sql)
        finally:
            await con.close()

    async def schema(url: str) -> tuple[int, set[str]]:
        con = await asyncpg.connect(url)
        try:
            version = await con.fetchval("SELECT max(version) FROM schema_migrations")
            rows = await con.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
            return int(version), {r["tablename"] for r in rows}
        finally:
            await con.close()

    asyncio.run(admin(f'CREATE DATABASE "{name}"'))
    try:
        url = PG_URL.rsplit("/", 1)[0] + "/" + name
        env = environment(RECEIVER_STORE__URL=url)
        first = run(tmp_path, env, "migrate")
        assert first.returncode == 0, first.stderr
        version, tables = asyncio.run(schema(url))
        assert version == migration_count("postgres")
        assert {"events", "tasks", "deliveries", "quarantine", "schema_migrations"} <= tables
        again = run(tmp_path, env, "migrate")
        assert again.returncode == 0, again.stderr
        assert asyncio.run(schema(url)) == (version, tables)
    finally:
        asyncio.run(admin(f'DROP DATABASE "{name}" WITH (FORCE)'))


# --- replay -----------------------------------------------------------------------------------------


def test_replay_dry_run_counts_and_changes_nothing_then_replay_makes_the_matching_dead_ones_pending(
    tmp_path: Path,
) -> None:
    db = tmp_path / "replay.db"
    a = [review("T-a", n) for n in range(3)]
    b = [review("T-b", n) for n in range(2)]
    asyncio.run(outbox(db, [UNREACHABLE], [*a, *b], dead=5))
    before = deliveries(db)
    assert {state for state, _ in before.values()} == {"dead"}
    env = environment(RECEIVER_STORE__URL=f"sqlite:///{db}")

    dry = run(tmp_path, env, "replay", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "5 deliveries match" in dry.stderr
    assert deliveries(db) == before  # a dry run changes nothing

    dry_a = run(tmp_path, env, "replay", "--dry-run", "--task", "T-a")
    assert dry_a.returncode == 0, dry_a.stderr
    assert "3 deliveries match" in dry_a.stderr

    real = run(tmp_path, env, "replay", "--task", "T-a", "--sink", "hook")
    assert real.returncode == 0, real.stderr
    after = deliveries(db)
    assert {after[events.event_id(d)] for d in a} == {("pending", 0)}  # due again, attempts reset
    assert {after[events.event_id(d)] for d in b} == {("dead", 1)}  # not matched: left alone

    other_sink = run(tmp_path, env, "replay", "--sink", "elsewhere")
    assert other_sink.returncode == 0, other_sink.stderr
    assert deliveries(db) == after


# --- dispatch -----------------------------------------------------------------------------------------


def test_dispatch_delivers_the_pending_outbox_to_a_jsonl_sink_and_stops_on_sigterm(
    tmp_path: Path, running: list[Running]
) -> None:
    db = tmp_path / "dispatch.db"
    batch = [review(f"T-{n % 3}", n) for n in range(30)]
    out = tmp_path / "out" / "events.jsonl"
    sinks = [{"name": "file", "kind": "jsonl", "options": {"path": str(out)}}]
    asyncio.run(outbox(db, sinks, batch, dead=0))
    assert {state for state, _ in deliveries(db).values()} == {"pending"}
    assert not out.exists()
    port = free_port()
    env = environment(
        RECEIVER_STORE__URL=f"sqlite:///{db}",
        RECEIVER_HTTP__PORT=str(port),
        RECEIVER_DISPATCH_POLL_INTERVAL="0.05",
        RECEIVER_SINKS=orjson.dumps(sinks).decode(),
    )
    dispatcher = Running(tmp_path, env, "dispatch", port)
    running.append(dispatcher)

    def written() -> list[dict[str, Any]]:
        return [orjson.loads(line) for line in out.read_bytes().splitlines()] if out.exists() else []

    deadline = time.monotonic() + 30
    while len(written()) < len(batch):
        assert dispatcher.proc.poll() is None, dispatcher.output()
        assert time.monotonic() < deadline, f"{len(written())} of {len(batch)} delivered"
        time.sleep(0.05)
    assert dispatcher.stop() == 0, dispatcher.output()
    lines = written()
    assert sorted(line["event_id"] for line in lines) == sorted(events.event_id(d) for d in batch)
    for task in ("T-0", "T-1", "T-2"):  # per task, in the order received
        mine = [line["session_id"] for line in lines if line["task_id"] == task]
        assert mine == [d["SessionId"] for d in batch if d["TaskId"] == task]
    assert {state for state, _ in deliveries(db).values()} == {"delivered"}


# --- submit ----------------------------------------------------------------------------------------


KEY = "commands-notify-key"
TOKEN = "commands-token"


def test_submit_through_a_running_receiver_starts_an_emulated_task_that_runs_to_its_end(
    tmp_path: Path, running: list[Running]
) -> None:
    mps_port, port = free_port(), free_port()
    emulator = Running(
        tmp_path,
        environment(
            RECEIVER_EMULATOR__PORT=str(mps_port),
            RECEIVER_EMULATOR__SECRET_ID="AKIDcommands",
            RECEIVER_EMULATOR__SECRET_KEY="commands-secret",
            RECEIVER_EMULATOR__SPEED="4",
            RECEIVER_EMULATOR__SCENARIO='{"duration": 1.0, "rate": 4.0, "seed": 2}',
        ),
        "emulate",
        mps_port,
    )
    running.append(emulator)
    receiver_env = environment(
        RECEIVER_HTTP__PORT=str(port),
        RECEIVER_STORE__URL=f"sqlite:///{tmp_path}/submit.db",
        RECEIVER_VERIFY__NOTIFY_KEYS=orjson.dumps([KEY]).decode(),
        RECEIVER_API__TOKEN=TOKEN,
        RECEIVER_MPS__ENDPOINT=f"127.0.0.1:{mps_port}",
        RECEIVER_MPS__PROTOCOL="http",
        RECEIVER_MPS__SECRET_ID="AKIDcommands",
        RECEIVER_MPS__SECRET_KEY="commands-secret",
    )
    server = Running(tmp_path, receiver_env, "serve", port)
    running.append(server)
    # The operator's shell: the same token, and nothing else needed.
    cli_env = environment(RECEIVER_API__TOKEN=TOKEN)
    hook = f"{server.url}/v1/notifications"

    by_flags = run(
        tmp_path, cli_env, "submit", "--server", server.url, "--url", "rtmp://live.example.com/app/cmd",
        "--notify-url", hook, "--notify-key", KEY, "--review", "10", "--session-id", "cmd-1",
        "--label", "room=a", "--label", "shift=night",
    )  # fmt: skip
    assert by_flags.returncode == 0, by_flags.stderr
    task = orjson.loads(by_flags.stdout)
    assert task["task_id"].startswith("1300000000-procedure-live-")
    assert task["labels"] == {"room": "a", "shift": "night"}
    assert task["session_id"] == "cmd-1"

    request = tmp_path / "request.json"
    request.write_bytes(
        orjson.dumps(
            {
                "Url": "srt://live.example.com:9000?streamid=cmd",
                "TaskNotifyConfig": {"NotifyType": "URL", "NotifyUrl": hook, "NotifyKey": KEY},
                "AiQualityControlTask": {"Definition": 20},
                "Labels": {"room": "b"},
            }
        )
    )
    by_file = run(tmp_path, cli_env, "submit", "--server", server.url, "--json", str(request))
    assert by_file.returncode == 0, by_file.stderr
    second = orjson.loads(by_file.stdout)
    assert second["labels"] == {"room": "b"}

    async def until_ended(task_id: str) -> dict[str, Any]:
        headers = {"Authorization": f"Bearer {TOKEN}"}
        async with aiohttp.ClientSession(headers=headers) as http:
            deadline = time.monotonic() + 30
            while True:
                async with http.get(f"{server.url}/v1/tasks/{task_id}") as r:
                    assert r.status == 200, await r.text()
                    found: dict[str, Any] = await r.json()
                if found["state"] in ("finished", "failed"):
                    return found
                assert time.monotonic() < deadline, found
                await asyncio.sleep(0.05)

    for submitted in (task, second):
        ended = asyncio.run(until_ended(submitted["task_id"]))
        assert (ended["state"], ended["err_code"]) == ("finished", 0)
        assert ended["event_count"] > 1  # its results and ProcessEof came back, signed with its key

    # MPS refuses a SessionId used in the last 7 days: the command fails and says why.
    reused = run(
        tmp_path, cli_env, "submit", "--server", server.url, "--url", "rtmp://live.example.com/app/cmd",
        "--notify-url", hook, "--session-id", "cmd-1",
    )  # fmt: skip
    assert reused.returncode == 1
    assert "InvalidParameterValue.SessionId" in reused.stderr
    assert server.stop() == 0
    assert emulator.stop() == 0
