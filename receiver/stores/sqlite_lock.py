"""``WriteLock``: the lock every process writing one SQLite file queues on, so none busy-polls.

SQLite's own write lock is a try: a connection that finds it taken sleeps and tries again until the
busy timeout, so two processes writing one file spend their time waiting in steps. This lock is
taken around each write transaction, before ``BEGIN IMMEDIATE``, and a waiter sleeps in the kernel
until the holder lets go. It is an ``flock`` on ``<db>.lock``, a file of its own: ``flock`` locks
belong to the open file description, unlike POSIX ``fcntl`` locks (which belong to the process, and
which any ``close`` of the file releases, SQLite's own among them). Threads of one process share
the descriptor, so a ``threading.Lock`` lines them up first. The kernel drops the lock of a process
that dies, kill -9 included.
"""

from __future__ import annotations

import fcntl
import os
import threading
from pathlib import Path
from types import TracebackType


class WriteLock:
    def __init__(self, db: Path) -> None:
        self.path = db.with_name(db.name + ".lock")
        self._threads = threading.Lock()
        self._fd: int | None = None
        self._pid = -1

    def _descriptor(self) -> int:
        # A forked child shares the parent's open file description, and with it the lock: it opens its own.
        if self._fd is None or self._pid != os.getpid():
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            self._pid = os.getpid()
        return self._fd

    def __enter__(self) -> None:
        self._threads.acquire()
        try:
            fcntl.flock(self._descriptor(), fcntl.LOCK_EX)  # sleeps until free; the GIL is let go
        except BaseException:
            self._threads.release()
            raise

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            if self._fd is not None:
                fcntl.flock(self._fd, fcntl.LOCK_UN)
        finally:
            self._threads.release()

    def close(self) -> None:
        with self._threads:
            fd, self._fd = self._fd, None
            if fd is not None and self._pid == os.getpid():
                os.close(fd)
