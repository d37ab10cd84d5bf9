"""``LeasedJob``: a job that runs in one process per store at a time (the dispatcher, the maintenance
loop), under a store lease.

Every process that could run it tries to take the lease at start and then every third of its ttl:
the holder renews it, the others find it taken and wait. The holder stops the job when the store
says another holds the lease, or when it could not renew in time (the next try would come after the
lease ran out); it releases the lease when it stops. A holder that dies (kill -9) renews no more,
and another process takes over once the lease runs out: within its ttl and one renewal interval.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import socket
import time
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

import structlog

from receiver.errors import StoreUnavailableError
from receiver.ports import Leases

log = structlog.get_logger("receiver.leases")

J = TypeVar("J")


def holder_name() -> str:
    """Who holds a lease, as an operator reads it: host, process id, and a token against reused ids."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


class LeasedJob(Generic[J]):
    """``start()`` makes the job (``begin``) when the lease is ours, ``end`` stops it. Leases are a
    matter between processes, so their times are the wall clock, not an app's clock."""

    def __init__(
        self,
        leases: Leases,
        name: str,
        *,
        holder: str,
        ttl: float,
        begin: Callable[[], Awaitable[J]],
        end: Callable[[J], Awaitable[None]],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.name = name
        self.holder = holder
        self.ttl = ttl
        self.renew_every = ttl / 3
        self._leases = leases
        self._begin = begin
        self._end = end
        self._clock = clock
        self._job: J | None = None
        self._held_until = 0.0  # monotonic: when the lease we hold runs out unless renewed
        self._stopping = asyncio.Event()
        self._keeper: asyncio.Task[None] | None = None

    @property
    def current(self) -> J | None:
        """The job, while this process holds the lease; None otherwise."""
        return self._job

    async def start(self) -> None:
        """Try once now (the job starts before this returns if the lease is free), then keep trying
        in the background. An error starting the job propagates from this first try."""
        await self._try(first=True)
        self._keeper = asyncio.create_task(self._keep(), name=f"lease:{self.name}")

    async def stop(self) -> None:
        """Stop trying; stop the job if it runs here, then let the lease go for the next holder."""
        self._stopping.set()
        if self._keeper is not None:
            await self._keeper
        if self._job is not None:
            await self._halt()
            with contextlib.suppress(StoreUnavailableError):  # then it runs out by itself
                await self._leases.release_lease(self.name, self.holder)
            log.info("lease released", lease=self.name, holder=self.holder)

    async def _keep(self) -> None:
        while not self._stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), timeout=self.renew_every)
            if self._stopping.is_set():
                return
            try:
                await self._try(first=False)
            except Exception:  # a job that fails to start here is tried again at the next renewal
                log.exception("leased job failed to start", lease=self.name)

    async def _try(self, *, first: bool) -> None:
        asked = time.monotonic()
        try:
            held = await self._leases.hold_lease(self.name, self.holder, ttl=self.ttl, now=self._clock())
        except StoreUnavailableError as exc:
            if self._job is None:
                if first:
                    log.warning("lease not taken: store unavailable", lease=self.name, error=str(exc))
                return
            if time.monotonic() + self.renew_every < self._held_until:
                log.warning("lease not renewed: store unavailable; still held", lease=self.name)
                return
            log.error("lease could not be renewed in time; stopping the job", lease=self.name, error=str(exc))
            await self._halt()
            return
        if held:
            self._held_until = asked + self.ttl
            if self._job is None:
                try:
                    self._job = await self._begin()
                except BaseException:
                    with contextlib.suppress(StoreUnavailableError):  # another process may do better
                        await self._leases.release_lease(self.name, self.holder)
                    raise
                log.info("lease taken", lease=self.name, holder=self.holder, ttl=self.ttl)
        elif self._job is not None:
            log.warning("lease lost to another holder; stopping the job", lease=self.name)
            await self._halt()

    async def _halt(self) -> None:
        job, self._job = self._job, None
        if job is not None:
            await self._end(job)
