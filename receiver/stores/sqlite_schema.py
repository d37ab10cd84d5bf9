"""Bringing a SQLite file to the newest schema: each numbered migration not applied yet, in order."""

from __future__ import annotations

import sqlite3
from importlib import resources


def migrate(con: sqlite3.Connection) -> int:
    """Apply each numbered ``migrations/sqlite/*.sql`` file not applied yet, in number order.

    The versions applied are kept one by one (``schema_migrations``), not only the newest, so a
    migration numbered below one already applied (branches number theirs in parallel) is applied
    all the same; ``PRAGMA user_version`` is the newest. Returns it."""
    con.execute("CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY)")
    applied = {row[0] for row in con.execute("SELECT version FROM schema_migrations")}
    current = int(con.execute("PRAGMA user_version").fetchone()[0])
    if current and not applied:
        # Migrated before the versions were kept: those were applied in order, 1 to user_version.
        applied = set(range(1, current + 1))
        con.executemany("INSERT INTO schema_migrations (version) VALUES (?)", [(v,) for v in applied])
    folder = resources.files("receiver.stores") / "migrations" / "sqlite"
    scripts = sorted((p for p in folder.iterdir() if p.name.endswith(".sql")), key=lambda p: p.name)
    for script in scripts:
        version = int(script.name.split("_", 1)[0])
        if version in applied:
            continue
        current = max(current, version)
        # executescript commits first; the bookkeeping sits in the script's own transaction.
        con.executescript(
            f"BEGIN;\n{script.read_text()}\nINSERT INTO schema_migrations (version) VALUES ({version});\n"
            f"PRAGMA user_version = {current};\nCOMMIT;"
        )
        applied.add(version)
    return current
