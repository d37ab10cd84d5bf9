"""Running the applications on their sockets: one listener, or the webhook's and the management's
(bound here, or inherited from the parent of ``serve --workers``), and which listens where.

What ``web.run_app`` does, for several applications: start each on its own ``TCPSite`` in order,
wait for SIGTERM or SIGINT, then stop them in reverse order, each bounded by the shutdown timeout
(stop accepting, finish the requests in hand, then run the cleanup contexts).
"""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import structlog
from aiohttp import web

from receiver.http.webhook import webhook_app
from receiver.settings import Settings

if TYPE_CHECKING:
    from receiver.app import Role

log = structlog.get_logger("receiver.listeners")


@dataclass
class Listener:
    """One application on one address (port 0: any free port, see ``Listening.addresses``), or on
    ``sockets`` bound already (by the parent of ``serve --workers``), which it then serves instead."""

    name: str
    app: web.Application
    host: str
    port: int
    sockets: list[socket.socket] = field(default_factory=list)


@dataclass
class Listening:
    """Listeners that have started; ``stop()`` ends them, last started first."""

    runners: list[tuple[str, web.AppRunner]] = field(default_factory=list)
    addresses: dict[str, tuple[str, int]] = field(default_factory=dict)

    @classmethod
    async def start(
        cls,
        listeners: list[Listener],
        *,
        access_log: logging.Logger | None = None,
        shutdown_timeout: float = 10.0,
    ) -> Listening:
        """Start each in turn: a later one may use what an earlier one's start-up opened."""
        started = cls()
        try:
            for listener in listeners:
                runner = web.AppRunner(
                    listener.app,
                    handle_signals=False,  # one handler for all of them, in serve()
                    access_log=access_log,
                    shutdown_timeout=shutdown_timeout,
                    handler_cancellation=False,
                )
                await runner.setup()
                started.runners.append((listener.name, runner))
                sites: list[web.BaseSite] = [web.SockSite(runner, sock) for sock in listener.sockets]
                for site in sites or [web.TCPSite(runner, listener.host, listener.port)]:
                    await site.start()
                host, port = runner.addresses[-1][:2]
                started.addresses[listener.name] = (host, port)
                log.info("listening", listener=listener.name, host=host, port=port)
        except BaseException:
            await started.stop()
            raise
        return started

    async def stop(self) -> None:
        while self.runners:
            _, runner = self.runners.pop()
            await runner.cleanup()


async def serve(
    listeners: list[Listener],
    *,
    access_log: logging.Logger | None = None,
    shutdown_timeout: float = 10.0,
    parent_fd: int | None = None,
) -> None:
    """Run until SIGTERM or SIGINT, then shut down gracefully. ``parent_fd``: a worker's end of a pipe
    from its parent, which reads end-of-file once the parent is gone: the worker stops then too."""
    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stopping.set)
    if parent_fd is not None:

        def orphaned() -> None:
            loop.remove_reader(parent_fd)
            log.warning("the parent process is gone; stopping")
            stopping.set()

        loop.add_reader(parent_fd, orphaned)
    try:
        listening = await Listening.start(listeners, access_log=access_log, shutdown_timeout=shutdown_timeout)
        try:
            await stopping.wait()
            log.info("stopping", listeners=[name for name, _ in listening.runners])
        finally:
            await listening.stop()
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)
        if parent_fd is not None:
            loop.remove_reader(parent_fd)


def listen_addresses(settings: Settings, role: Role = "serve") -> list[tuple[str, str, int]]:
    """Each listener's name, host and port, in start order (the management app first, as the
    webhook's uses what it opened)."""
    if not settings.http.split:
        return [("http", settings.http.host, settings.http.port)]
    host, port = settings.http.management_address
    addresses = [("management", host, port)]
    if role == "serve":
        addresses.append(("webhook", settings.http.host, settings.http.port))
    return addresses


def listeners_for(settings: Settings, app: web.Application, role: Role = "serve") -> list[Listener]:
    """Where ``app`` (from ``create_app``) listens: in start order, stopped in reverse."""
    apps = {"http": app, "management": app}
    if settings.http.split and role == "serve":
        apps["webhook"] = webhook_app(settings, app)
    return [Listener(name, apps[name], host, port) for name, host, port in listen_addresses(settings, role)]
