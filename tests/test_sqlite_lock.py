"""Processes writing one SQLite file queue on its write lock: none is turned away busy."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from receiver.stores.sqlite import SqliteStore
from tests.databases import mps_events

ROOT = Path(__file__).resolve().parents[1]
WRITES = 300

# One writer process: opens the store with no busy timeout at all (so any wait for SQLite's own
# lock would fail at once, as "database is locked"), says it is ready, waits for the go, then
# commits WRITES transactions back to back and prints how many the store refused.
WRITER = """
import asyncio, sys
from pathlib import Path
from receiver.errors import StoreUnavailableError
from receiver.stores.sqlite import SqliteStore
from receiver.stores import sqlite_lock
from tests.builders import event
from tests.payloads import REVIEW

name, db, n, locked = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3]), sys.argv[4] == "locked"
if not locked:  # the control: what two writers see without the lock
    sqlite_lock.WriteLock.__enter__ = lambda self: None
    sqlite_lock.WriteLock.__exit__ = lambda self, *exc: None

async def main() -> None:
    store = await SqliteStore.open(db, busy_timeout_ms=0)
    print("ready", flush=True)
    sys.stdin.readline()
    refused = 0
    for i in range(n):
        try:
            await store.record_events([event(REVIEW, SessionId=f"{name}-{i}")])
        except StoreUnavailableError:
            refused += 1
    await store.aclose()
    print(refused, flush=True)

asyncio.run(main())
"""


def race(db: Path, locked: bool) -> list[int]:
    """Two writer processes let go at the same moment; how many writes each was refused."""
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, name, str(db), str(WRITES), "locked" if locked else "bare"],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for name in ("a", "b")
    ]
    try:
        for p in procs:
            assert p.stdout is not None
            assert p.stdout.readline().strip() == "ready"
        for p in procs:
            assert p.stdin is not None
            p.stdin.write("go\n")
            p.stdin.flush()
        out = [p.communicate(timeout=120)[0] for p in procs]
        assert [p.returncode for p in procs] == [0, 0]
        return [int(o.strip()) for o in out]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()


@pytest.fixture
async def db(tmp_path: Path) -> Path:
    path = tmp_path / "shared.db"
    await (await SqliteStore.open(path)).aclose()  # created and migrated before the race
    return path


@pytest.mark.slow
async def test_two_processes_writing_one_file_are_never_refused_busy(db: Path) -> None:
    assert race(db, locked=True) == [0, 0]
    store = await SqliteStore.open(db)
    try:
        assert await mps_events(store) == 2 * WRITES  # every write of both went in
    finally:
        await store.aclose()


@pytest.mark.slow
async def test_without_the_lock_the_same_race_is_refused_busy(db: Path) -> None:
    """The control: the race above does contend for SQLite's lock, so the lock is what wins it."""
    assert sum(race(db, locked=False)) > 0
