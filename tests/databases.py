"""The real PostgreSQL the tests use: its URL, a fresh database per test; and what a store holds."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg

from receiver.documents import OWN_CHANNEL
from receiver.ports import EventQuery

PG_URL = os.environ.get("TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")


@asynccontextmanager
async def postgres_database() -> AsyncIterator[str]:
    """A fresh, empty database on the real PostgreSQL, dropped afterwards."""
    admin = await asyncpg.connect(PG_URL)
    name = f"receiver_test_{uuid.uuid4().hex[:12]}"
    await admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield PG_URL.rsplit("/", 1)[0] + "/" + name
    finally:
        await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        await admin.close()


async def mps_events(store: Any) -> int:
    """How many of MPS's events a store holds (receiver's own operator events left out), read
    through the event listing as the API reads it."""
    count, after = 0, 0
    while True:
        page = await store.list_events(EventQuery(after=after, limit=1000))
        count += sum(1 for e in page.items if e.channel != OWN_CHANNEL)
        if page.next is None:
            return count
        after = int(page.next)
