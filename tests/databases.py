"""The real PostgreSQL the tests use: its URL, and a fresh database per test."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg

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
