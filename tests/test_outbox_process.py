"""The outbox across a kill -9: a backlog waiting for a slow sink drains after the restart, nothing lost."""

from __future__ import annotations

import asyncio
import signal
import sqlite3
import time
from pathlib import Path

import aiohttp
import orjson
import pytest
from aiohttp import web

from receiver import events
from tests.test_process import KEY, REVIEW, Server, free_port, live

pytestmark = pytest.mark.slow
N = 200


async def test_receiver_killed_mid_backlog_delivers_everything_after_restart(tmp_path: Path) -> None:
    got: list[str] = []
    twenty = asyncio.Event()

    async def hook(request: web.Request) -> web.Response:
        await asyncio.sleep(0.02)  # a slow target: the backlog builds up
        got.append(request.headers["webhook-id"])
        if len(got) >= 20:
            twenty.set()
        return web.Response(status=200)

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    db = tmp_path / "outbox.db"
    env = {
        "RECEIVER_STORE__URL": f"sqlite:///{db}",
        "RECEIVER_VERIFY__NOTIFY_KEYS": orjson.dumps([KEY]).decode(),
        "RECEIVER_SINKS": orjson.dumps(
            [
                {
                    "name": "hook",
                    "kind": "http",
                    "options": {"url": f"http://127.0.0.1:{port}/hook"},
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
        await asyncio.wait_for(twenty.wait(), timeout=30)
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
        while not expected <= set(got):
            assert time.monotonic() < deadline, f"{len(expected - set(got))} events never reached the sink"
            await asyncio.sleep(0.05)
        assert await asyncio.to_thread(second.stop) == 0
        assert set(got) == expected  # every event at least once, and nothing that was not sent
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
        await runner.cleanup()
