"""``receiver reconcile`` and ``receiver abort`` as an operator runs them, against ``receiver emulate``:
a dry run that asks and changes nothing, a pass for real, a pass refused while another holds the
lease, and an abort MPS refuses, said clearly."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import orjson
import pytest

from receiver.stores.sqlite import SqliteStore
from receiver.tasks import Task, TaskState, new_id
from tests.servers import Running, environment, free_port, run

pytestmark = pytest.mark.slow
UNKNOWN = "1300000000-procedure-live-unknown-to-mps"


async def prepare(db: Path, *, lease_holder: str | None = None) -> None:
    store = await SqliteStore.open(db)
    try:
        now = time.time()
        task = Task(id=new_id(), task_id=UNKNOWN, session_id="", session_context="", url="", labels={},
                    state=TaskState.STALLED, created_at=now - 60, updated_at=now - 60)  # fmt: skip
        await store.register_task(task)
        if lease_holder:
            assert await store.hold_lease("reconcile", lease_holder, ttl=600, now=now)
    finally:
        await store.aclose()


async def checks(db: Path) -> list[str]:
    store = await SqliteStore.open(db)
    try:
        task = await store.get_task(UNKNOWN)
        assert task is not None
        return [c.answer.value for c in task.checks]
    finally:
        await store.aclose()


def test_reconcile_by_hand_dry_run_then_for_real_and_abort_refused_by_mps(tmp_path: Path) -> None:
    port = free_port()
    mps = {"RECEIVER_EMULATOR__PORT": str(port), "RECEIVER_EMULATOR__SECRET_ID": "AKIDcli",
           "RECEIVER_EMULATOR__SECRET_KEY": "cli-secret"}  # fmt: skip
    emulate = Running(tmp_path, environment(**mps), "emulate", port)
    try:
        db = tmp_path / "cli.db"
        asyncio.run(prepare(db))
        env = environment(
            RECEIVER_STORE__URL=f"sqlite:///{db}",
            RECEIVER_MPS__ENDPOINT=f"127.0.0.1:{port}",
            RECEIVER_MPS__PROTOCOL="http",
            RECEIVER_MPS__SECRET_ID="AKIDcli",
            RECEIVER_MPS__SECRET_KEY="cli-secret",
        )
        dry = run(tmp_path, env, "reconcile", "--dry-run")
        assert dry.returncode == 0, dry.stderr
        report = orjson.loads(dry.stdout)
        assert (report["dry_run"], report["asked"], report["not_found"]) == (True, 1, 1)
        assert "1/1" in dry.stderr  # the progress bar
        assert "1 asked: 0 would end" in dry.stderr
        assert asyncio.run(checks(db)) == []  # nothing written
        time.sleep(
            1.0 - time.time() % 1.0 + 0.01
        )  # the same request in one second: one signature, taken once
        real = run(tmp_path, env, "reconcile")
        assert real.returncode == 0, real.stderr
        assert orjson.loads(real.stdout)["not_found"] == 1
        assert asyncio.run(checks(db)) == ["NOT_FOUND"]
        refused = run(tmp_path, env, "abort", UNKNOWN)
        assert refused.returncode == 1
        assert "InvalidParameterValue.TaskId" in refused.stderr
        assert "cli-secret" not in refused.stderr + refused.stdout + real.stderr + dry.stderr
        assert run(tmp_path, env, "abort", "no-such-task").returncode == 1
    finally:
        emulate.proc.kill()
        emulate.proc.wait()


def test_reconcile_by_hand_waits_for_no_one_while_another_pass_holds_the_lease(tmp_path: Path) -> None:
    db = tmp_path / "busy.db"
    asyncio.run(prepare(db, lease_holder="host-a:42:abcd"))
    env = environment(
        RECEIVER_STORE__URL=f"sqlite:///{db}",
        RECEIVER_MPS__ENDPOINT="127.0.0.1:9",  # never reached
        RECEIVER_MPS__PROTOCOL="http",
        RECEIVER_MPS__SECRET_ID="AKIDcli",
        RECEIVER_MPS__SECRET_KEY="cli-secret",
    )
    busy = run(tmp_path, env, "reconcile")
    assert busy.returncode == 1
    assert "another pass is running" in busy.stderr
    assert "host-a:42:abcd" in busy.stderr
    no_credentials = run(tmp_path, environment(RECEIVER_STORE__URL=f"sqlite:///{db}"), "reconcile")
    assert no_credentials.returncode == 2
    assert "credentials" in no_credentials.stderr
