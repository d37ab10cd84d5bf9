"""Receiver processes for tests (the installed console script, a free port, a signed document
that expires from now) and a local http sink target."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from aiohttp import web

from tests.payloads import signed

KEY = "process-test-key"

# The console script the package installs (what the image's ENTRYPOINT runs), if there.
SCRIPT = Path(sys.executable).with_name("receiver")
RECEIVER = [str(SCRIPT)] if SCRIPT.exists() else [sys.executable, "-m", "receiver"]


def live(doc: dict[str, object], key: str = KEY) -> dict[str, object]:
    """Signed to expire ten minutes from now, as MPS does (the examples' own Timestamps are past)."""
    return signed(doc, key=key, timestamp=int(time.time()) + 600)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    def __init__(
        self,
        cwd: Path,
        env: dict[str, str],
        args: list[str],
        command: str = "serve",
        port_setting: str = "RECEIVER_HTTP__PORT",
        command_args: Sequence[str] = (),
    ) -> None:
        self.port = free_port()
        self.log = cwd / f"server-{self.port}.log"
        full_env = {
            **os.environ,
            **env,
            port_setting: str(self.port),
            "RECEIVER_LOG__FORMAT": "json",
        }
        with self.log.open("wb") as out:  # the child keeps its own copy of the descriptor
            self.proc = subprocess.Popen(
                [*RECEIVER, *args, command, *command_args],
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


def environment(**settings: str) -> dict[str, str]:
    # Nothing of this process's own RECEIVER_* settings (or test knobs) may leak into the child.
    inherited = {k: v for k, v in os.environ.items() if not k.startswith("RECEIVER_")}
    return {**inherited, "RECEIVER_LOG__FORMAT": "json", **settings}


def run(cwd: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    assert SCRIPT.exists(), "make install puts the console script beside the interpreter"
    return subprocess.run(
        [str(SCRIPT), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120, check=False
    )


class Running:
    """A long-running command (``serve``, ``dispatch``, ``emulate``), up once its port answers."""

    def __init__(self, cwd: Path, env: dict[str, str], command: str, port: int) -> None:
        self.port = port
        self.log = cwd / f"{command}-{port}.log"
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                [str(SCRIPT), command], cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT
            )
        self.url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 20
        while True:
            assert self.proc.poll() is None, self.output()
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                    return
            except OSError:
                assert time.monotonic() < deadline, f"{command} did not start:\n{self.output()}"
                time.sleep(0.05)

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=20)


class HookTarget:
    """A local http sink target for process tests: records each ``webhook-id`` in arrival order,
    answers after ``delay`` (a slow target lets a backlog build up), and sets ``reached`` once
    ``enough`` have arrived."""

    def __init__(self, *, delay: float = 0.0, enough: int = 1) -> None:
        self.got: list[str] = []
        self.reached = asyncio.Event()
        self._delay = delay
        self._enough = enough
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def _hook(self, request: web.Request) -> web.Response:
        if self._delay:
            await asyncio.sleep(self._delay)
        self.got.append(request.headers["webhook-id"])
        if len(self.got) >= self._enough:
            self.reached.set()
        return web.Response(status=200)

    async def start(self) -> HookTarget:
        app = web.Application()
        app.router.add_post("/hook", self._hook)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}/hook"
        return self

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
