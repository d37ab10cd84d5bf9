"""The outbox across a kill -9: a backlog waiting for a slow sink drains after the restart, nothing lost."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import orjson
import pytest
from aiohttp import web

from receiver import events
from tests.payloads import REVIEW
from tests.servers import KEY, HookTarget, Server, free_port, live

pytestmark = pytest.mark.slow
N = 200


async def test_receiver_killed_mid_backlog_delivers_everything_after_restart(tmp_path: Path) -> None:
    target = await HookTarget(delay=0.02, enough=20).start()
    db = tmp_path / "outbox.db"
    env = {
        "RECEIVER_STORE__URL": f"sqlite:///{db}",
        "RECEIVER_VERIFY__NOTIFY_KEYS": orjson.dumps([KEY]).decode(),
        # The killed process's dispatch lease runs out before the restarted one dispatches: soon.
        "RECEIVER_LEASE_SECONDS": "2",
        "RECEIVER_SINKS": orjson.dumps(
            [
                {
                    "name": "hook",
                    "kind": "http",
                    "options": {"url": target.url},
                    "concurrency": 2,
                }
            ]
        ).decode(),
    }
    servers: list[Server] = []
    try:
        first = await asyncio.to_thread(Server, tmp_path, env, [])
        servers.append(first)
        docs = [
            live({**REVIEW, "TaskId": f"t-{i % 7}", "SessionContext": "", "SessionId": f"b-{i}"})
            for i in range(N)
        ]
        async with aiohttp.ClientSession() as http:
            for doc in docs:
                async with http.post(f"{first.url}/v1/notifications", data=orjson.dumps(doc)) as r:
                    assert r.status == 200
        await asyncio.wait_for(target.reached.wait(), timeout=30)
        first.proc.send_signal(signal.SIGKILL)
        assert await asyncio.to_thread(first.proc.wait, 10) == -signal.SIGKILL
        pending = (
            sqlite3.connect(db)
            .execute("SELECT count(*) FROM deliveries WHERE state = 'pending'")
            .fetchone()[0]
        )
        assert pending > 0  # killed with a backlog

        second = await asyncio.to_thread(Server, tmp_path, env, [])
        servers.append(second)
        expected = {events.event_id(d) for d in docs}
        deadline = time.monotonic() + 60
        while not expected <= set(target.got):
            assert time.monotonic() < deadline, (
                f"{len(expected - set(target.got))} events never reached the sink"
            )
            await asyncio.sleep(0.05)
        assert await asyncio.to_thread(second.stop) == 0
        assert set(target.got) == expected  # every event at least once, and nothing that was not sent
        left = (
            sqlite3.connect(db)
            .execute("SELECT count(*) FROM deliveries WHERE state != 'delivered'")
            .fetchone()
        )
        assert left[0] == 0
    finally:
        for s in servers:
            if s.proc.poll() is None:
                s.proc.kill()
        await target.close()


class _Command(Server):
    """``receiver <command>`` (``Server`` runs ``serve``): here, ``receiver dispatch`` on its own."""

    def __init__(self, cwd: Path, env: dict[str, str], command: str) -> None:
        self.port = free_port()
        self.log = cwd / f"{command}-{self.port}.log"
        script = Path(sys.executable).with_name("receiver")
        argv = [str(script)] if script.exists() else [sys.executable, "-m", "receiver"]
        full_env = {
            **os.environ,
            **env,
            "RECEIVER_HTTP__PORT": str(self.port),
            "RECEIVER_LOG__FORMAT": "json",
        }
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                [*argv, command], cwd=cwd, env=full_env, stdout=out, stderr=subprocess.STDOUT
            )
        self.url = f"http://127.0.0.1:{self.port}"
        self._wait_healthy()


async def test_a_sink_re_enabled_through_the_api_resumes_in_a_separate_dispatch_process(
    tmp_path: Path,
) -> None:
    answers = [410]  # what the target answers now
    got: list[str] = []
    arrived = asyncio.Event()

    async def hook(request: web.Request) -> web.Response:
        if answers[0] == 200:
            got.append(request.headers["webhook-id"])
            arrived.set()
        return web.Response(status=answers[0])

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    env = {
        "RECEIVER_STORE__URL": f"sqlite:///{tmp_path / 'split.db'}",
        "RECEIVER_VERIFY__NOTIFY_KEYS": orjson.dumps([KEY]).decode(),
        "RECEIVER_DISPATCH_IN_SERVE": "false",
        "RECEIVER_DISPATCH_POLL_INTERVAL": "0.1",
        "RECEIVER_SINKS": orjson.dumps(
            [{"name": "hook", "kind": "http", "options": {"url": f"http://127.0.0.1:{port}/hook"}}]
        ).decode(),
    }
    processes: list[Server] = []
    try:
        api = await asyncio.to_thread(Server, tmp_path, env, [])
        processes.append(api)
        dispatcher = await asyncio.to_thread(_Command, tmp_path, env, "dispatch")
        processes.append(dispatcher)
        doc = live({**REVIEW, "SessionId": "split"})
        async with aiohttp.ClientSession() as http:
            async with http.post(f"{api.url}/v1/notifications", data=orjson.dumps(doc)) as r:
                assert r.status == 200
            deadline = time.monotonic() + 20
            while True:  # the dispatch process got the 410 and switched the sink off in the store
                async with http.get(f"{api.url}/v1/sinks") as r:
                    [hook_stats] = (await r.json())["items"]
                if hook_stats["disabled"]:
                    break
                assert time.monotonic() < deadline, dispatcher.output()
                await asyncio.sleep(0.05)
            assert "410" in hook_stats["disabled"]
            answers[0] = 200
            async with http.post(f"{api.url}/v1/sinks/hook/enable", json={}) as r:
                assert r.status == 200
            await asyncio.wait_for(arrived.wait(), timeout=20)
        assert got == [events.event_id(doc)]
    finally:
        for p in processes:
            await asyncio.to_thread(p.stop)
        await runner.cleanup()
