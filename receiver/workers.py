"""The parent of ``serve --workers N``: binds the listening sockets once, runs N worker processes on
them, restarts a worker that dies, and drains them all on SIGTERM or SIGINT.

The workers inherit the sockets, so one accept queue feeds them all: while a worker restarts, the
others go on taking connections from it, and none queued is lost. (``SO_REUSEPORT`` would give
each worker its own queue, and the kernel resets the connections queued on one that closes.)
Each worker is a whole ``receiver serve``: webhook, API, consumer; the store leases leave the
dispatcher and the maintenance loop to one of them, which the others ring (``Bell``) when they
commit outbox rows. The parent gives them a fresh directory for
prometheus_client's multiprocess mode, so that any worker's ``/metrics`` adds up all of them.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import structlog
from prometheus_client.multiprocess import mark_process_dead

from receiver.bell import Bell
from receiver.errors import ConfigError

log = structlog.get_logger("receiver.workers")

CANNOT_START = 2  # what ``receiver`` exits with when it cannot start: restarting will not help
FIRST_BACKOFF = 0.5  # seconds before a dead worker's first restart; doubled for each quick death
MAX_BACKOFF = 30.0
STEADY = 30.0  # a worker that ran this long died of something new: its backoff starts over
METRICS_PREFIX = "receiver-metrics-"


def bind(host: str, port: int, backlog: int = 1024) -> list[socket.socket]:
    """Listening sockets on every address ``host`` names, as asyncio's ``create_server`` binds them
    (``SO_REUSEADDR``; IPv6 sockets IPv6 only); port 0: one free port, the same on each."""
    infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    bound: list[socket.socket] = []
    try:
        for family, kind, proto, _, address in dict.fromkeys(infos):
            sock = socket.socket(family, kind, proto)
            bound.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            if port == 0 and len(bound) > 1:
                address = (address[0], bound[0].getsockname()[1], *address[2:])
            sock.bind(address)
            sock.listen(backlog)
    except BaseException:
        for sock in bound:
            sock.close()
        raise
    return bound


def metrics_directory(parent: Path | None = None) -> Path:
    """A new directory for this run's metrics files, named after this process. Those of parents
    that died without removing theirs (kill -9) are removed first."""
    parent = parent or Path(tempfile.gettempdir())
    for old in parent.glob(f"{METRICS_PREFIX}*-*"):
        pid = old.name.removeprefix(METRICS_PREFIX).split("-", 1)[0]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(old, ignore_errors=True)
    return Path(tempfile.mkdtemp(prefix=f"{METRICS_PREFIX}{os.getpid()}-", dir=parent))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's
        return True
    return True


class Supervisor:
    """Runs ``count`` copies of ``command`` (each told its index, its sockets and the parent pipe)."""

    def __init__(
        self,
        command: Sequence[str],
        count: int,
        listening: dict[str, list[socket.socket]],
        *,
        stop_timeout: float,
    ) -> None:
        self._command = list(command)
        self._count = count
        self._listening = listening
        self._stop_timeout = stop_timeout
        self._procs: dict[int, asyncio.subprocess.Process] = {}
        self._stopping = asyncio.Event()
        self._cannot_start: int | None = None
        self._metrics_dir = Path()
        self._parent_end = -1
        self._bell = Bell(-1, -1)

    async def run(self) -> int:
        """Until SIGTERM or SIGINT (or a worker that cannot start): 0 once every worker drained."""
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, self._stop, signum)
        # A fresh directory per run: counts from an earlier run must not be added to this one's.
        self._metrics_dir = metrics_directory()
        # The workers hold the read end of this pipe: it reads end-of-file when the parent is gone
        # (even by kill -9), and they stop rather than serve on unsupervised.
        worker_end, self._parent_end = os.pipe()
        self._bell = Bell.new()
        try:
            for name, socks in self._listening.items():
                host, port = socks[0].getsockname()[:2]
                log.info("listening", listener=name, host=host, port=port, workers=self._count)
            slots = [asyncio.create_task(self._keep(i, worker_end)) for i in range(self._count)]
            await self._stopping.wait()
            log.info("stopping workers", workers=len(self._procs))
            for proc in self._procs.values():
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGTERM)
            codes = await asyncio.gather(*slots)
        finally:
            os.close(worker_end)
            os.close(self._parent_end)
            self._bell.close()
            shutil.rmtree(self._metrics_dir, ignore_errors=True)
            for signum in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(signum)
        if self._cannot_start is not None:
            return self._cannot_start
        clean = all(code in (0, -signal.SIGTERM, -signal.SIGINT) for code in codes)
        log.info("workers stopped", returncodes=codes)
        return 0 if clean else 1

    def _stop(self, signum: int | None = None) -> None:
        if not self._stopping.is_set() and signum is not None:
            log.info("signal received", signal=signal.Signals(signum).name)
        self._stopping.set()

    async def _keep(self, index: int, worker_end: int) -> int:
        """Keep worker ``index`` running until the parent stops; its last return code."""
        backoff = FIRST_BACKOFF
        while True:
            fds = {name: [s.fileno() for s in socks] for name, socks in self._listening.items()}
            spec = WorkerSpec(index, worker_end, self._bell.fds, fds)
            started = time.monotonic()
            proc = await asyncio.create_subprocess_exec(
                *self._command,
                "--worker",
                str(spec),
                pass_fds=[worker_end, *self._bell.fds, *(fd for fdlist in fds.values() for fd in fdlist)],
                stdin=asyncio.subprocess.DEVNULL,
                env={**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(self._metrics_dir)},
            )
            self._procs[index] = proc
            log.info("worker started", worker=index, pid=proc.pid)
            if self._stopping.is_set():  # asked to stop while it was being started
                proc.send_signal(signal.SIGTERM)
            code = await self._wait(proc)
            del self._procs[index]
            # Its live gauges go (there are none yet); its counts stay in the sums.
            mark_process_dead(proc.pid, str(self._metrics_dir))  # type: ignore[no-untyped-call]
            if self._stopping.is_set():
                log.info("worker stopped", worker=index, pid=proc.pid, returncode=code)
                return code
            if code == CANNOT_START and time.monotonic() - started < STEADY:
                log.error("worker cannot start; stopping every worker", worker=index, pid=proc.pid)
                self._cannot_start = CANNOT_START
                self._stop()
                return code
            if time.monotonic() - started >= STEADY:
                backoff = FIRST_BACKOFF
            log.error("worker died; restarting", worker=index, pid=proc.pid, returncode=code, backoff=backoff)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), timeout=backoff)
            if self._stopping.is_set():
                return code
            backoff = min(backoff * 2, MAX_BACKOFF)

    async def _wait(self, proc: asyncio.subprocess.Process) -> int:
        """The worker's return code; one still draining ``stop_timeout`` after the stop is killed."""
        waiting = asyncio.ensure_future(proc.wait())
        stopping = asyncio.ensure_future(self._stopping.wait())
        await asyncio.wait({waiting, stopping}, return_when=asyncio.FIRST_COMPLETED)
        stopping.cancel()
        if not waiting.done():
            try:
                return await asyncio.wait_for(asyncio.shield(waiting), timeout=self._stop_timeout)
            except TimeoutError:
                log.error("worker did not drain in time; killed", pid=proc.pid, timeout=self._stop_timeout)
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
        return await waiting


def supervise(
    command: Sequence[str], count: int, addresses: Sequence[tuple[str, str, int]], *, stop_timeout: float
) -> int:
    """Bind every listener's address, then run the workers on the sockets until told to stop."""
    listening = {name: bind(host, port) for name, host, port in addresses}
    try:
        return asyncio.run(Supervisor(command, count, listening, stop_timeout=stop_timeout).run())
    finally:
        for socks in listening.values():
            for sock in socks:
                sock.close()


@dataclass(frozen=True)
class WorkerSpec:
    """What the parent tells each worker it starts (``serve --worker``)."""

    index: int
    parent_fd: int  # the read end of the parent's pipe: end-of-file once the parent is gone
    bell: tuple[int, int]  # the shared ``Bell``'s read and write ends
    sockets: dict[str, list[int]]  # listener name -> inherited descriptors

    def __str__(self) -> str:
        """``0:7:8/9:http=5,http=6``: index, parent pipe, bell, sockets."""
        sockets = ",".join(f"{name}={fd}" for name, fds in self.sockets.items() for fd in fds)
        return f"{self.index}:{self.parent_fd}:{self.bell[0]}/{self.bell[1]}:{sockets}"

    @classmethod
    def parse(cls, spec: str) -> WorkerSpec:
        try:
            index, parent_fd, bell, pairs = spec.split(":", 3)
            bell_read, bell_write = bell.split("/")
            sockets: dict[str, list[int]] = {}
            for pair in pairs.split(","):
                name, fd = pair.split("=")
                sockets.setdefault(name, []).append(int(fd))
            return cls(int(index), int(parent_fd), (int(bell_read), int(bell_write)), sockets)
        except ValueError:
            raise ConfigError(
                f"--worker: expected INDEX:PARENT_FD:BELL_READ/BELL_WRITE:NAME=FD[,NAME=FD...]; got {spec!r}"
            ) from None


def worker_command(config: Path | None) -> list[str]:
    """How the parent starts a worker: this interpreter, this package, the same settings file."""
    return [sys.executable, "-m", "receiver", *(["--config", str(config)] if config else []), "serve"]
