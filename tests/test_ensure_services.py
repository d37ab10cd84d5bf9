"""``scripts/ensure-services`` on a machine whose PostgreSQL lacks the tests' database: it creates
it, and run again it finds it (idempotent)."""

from __future__ import annotations

import asyncio
import os
import uuid
from pathlib import Path

import asyncpg
import pytest

from tests.databases import PG_URL

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "ensure-services"

pytestmark = pytest.mark.postgres


async def run(url: str) -> str:
    env = {**os.environ, "TEST_PG_URL": url}
    process = await asyncio.create_subprocess_exec(
        str(SCRIPT), env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    out, _ = await asyncio.wait_for(process.communicate(), timeout=120)
    assert process.returncode == 0, out.decode()
    return out.decode()


async def test_the_tests_database_is_created_when_missing_and_found_when_there() -> None:
    name = f"receiver_ensure_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(PG_URL)
    try:
        first = await run(PG_URL.rsplit("/", 1)[0] + "/" + name)
        assert f'creating the PostgreSQL database "{name}"' in first
        assert await admin.fetchval("SELECT count(*) FROM pg_database WHERE datname = $1", name) == 1
        again = await run(PG_URL.rsplit("/", 1)[0] + "/" + name)
        assert "creating" not in again
        assert f'database "{name}") and RabbitMQ answer' in again
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()
