"""Shared fixtures: the real broker, both stores, a settable clock, server processes cleaned up."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from receiver.stores.postgres import PostgresStore
from receiver.stores.sqlite import SqliteStore
from tests.amqp_broker import Broker, broker_session
from tests.databases import postgres_database
from tests.payloads import FROZEN_NOW
from tests.servers import Server


@pytest.fixture(name="broker")
async def broker_fixture() -> AsyncIterator[Broker]:
    """A publishing connection to the real broker and a fresh queue name, cleaned up afterwards."""
    async for b in broker_session():
        yield b


@pytest.fixture
def clock() -> list[float]:
    """A settable clock: ``clock[0]`` is now."""
    return [FROZEN_NOW]


@pytest.fixture
async def sqlite_store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    s = await SqliteStore.open(tmp_path / "var" / "receiver.db", busy_timeout_ms=100)
    yield s
    await s.aclose()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Any]:
    """Each test that takes it runs on a real SQLite file and on a fresh PostgreSQL database."""
    if request.param == "sqlite":
        s: Any = await SqliteStore.open(tmp_path / "var" / "receiver.db", busy_timeout_ms=100)
        yield s
        await s.aclose()
        return
    async with postgres_database() as url:
        s = await PostgresStore.open(url)
        yield s
        await s.aclose()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """The URL of an empty store: a SQLite file, then a fresh PostgreSQL database."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/receiver.db"
        return
    async with postgres_database() as url:
        yield url


@pytest.fixture
def servers() -> Iterator[list[Server]]:
    """Server processes a test starts: killed afterwards if still running."""
    started: list[Server] = []
    yield started
    for s in started:
        if s.proc.poll() is None:
            s.proc.kill()
            s.proc.wait()
