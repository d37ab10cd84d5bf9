"""``Bell``: a pipe the workers of ``serve --workers`` share, so that the one dispatching hears of
outbox rows another worker committed at once, not at its next poll.

Any worker rings it after a commit (one non-blocking byte; a full pipe means a ring is pending
already); the worker holding the dispatch lease listens, drains it, and wakes its dispatcher.
Bytes rung while nobody listens wait in the pipe for the next holder. Across hosts there is no
bell: replicas elsewhere are found by the dispatcher's poll.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Callable


class Bell:
    def __init__(self, read_fd: int, write_fd: int) -> None:
        self._read = read_fd
        self._write = write_fd
        self._loop: asyncio.AbstractEventLoop | None = None

    @classmethod
    def new(cls) -> Bell:
        """A new pipe, both ends non-blocking (the parent makes it and hands both ends down)."""
        read_fd, write_fd = os.pipe()
        for fd in (read_fd, write_fd):
            os.set_blocking(fd, False)
        return cls(read_fd, write_fd)

    @property
    def fds(self) -> tuple[int, int]:
        return self._read, self._write

    def ring(self) -> None:
        with contextlib.suppress(BlockingIOError, InterruptedError):  # full: rings enough are pending
            os.write(self._write, b"\0")

    def listen(self, heard: Callable[[], None]) -> None:
        """Call ``heard`` (on this loop) whenever another worker rang; until ``stop_listening``."""

        def drain() -> None:
            try:
                while os.read(self._read, 4096):
                    pass
            except (BlockingIOError, InterruptedError):
                pass  # empty now (another listener, in a handover, may have taken some)
            heard()

        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(self._read, drain)

    def stop_listening(self) -> None:
        if self._loop is not None:
            self._loop.remove_reader(self._read)
            self._loop = None

    def close(self) -> None:
        for fd in (self._read, self._write):
            os.close(fd)
