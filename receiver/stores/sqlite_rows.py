"""Row shapes of the SQLite schema: column lists, row to record, query filters, and migrations."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from importlib import resources
from typing import Any, Final

import orjson

from receiver.ports import DeliveryQuery, EventRecord
from receiver.tasks import MatchedBy

DELIVERIES_WITH_EVENTS: Final = "FROM deliveries d JOIN events e ON e.seq = d.event_seq"

EVENT_COLUMNS = (
    "seq, event_id, task_id, task_ref, matched_by, notification_type, session_id, session_context,"
    " channel, received_at, verdict, late, duplicates, err_code, err_message, findings, raw"
)


def delivery_filter(q: DeliveryQuery) -> tuple[str, list[Any]]:
    """The WHERE clause (over deliveries ``d`` joined with events ``e``) for a delivery query."""
    clauses = ["1 = 1"]
    args: list[Any] = []
    for clause, value in (
        ("d.sink = ?", q.sink),
        ("d.state = ?", q.state),
        ("e.task_id = ?", q.task_id),
        ("e.notification_type = ?", q.notification_type),
        ("e.received_at >= ?", q.since),
        ("e.received_at < ?", q.until),
    ):
        if value is not None:
            clauses.append(clause)
            args.append(value)
    return " AND ".join(clauses), args


def event_record(row: Sequence[Any]) -> EventRecord:
    return EventRecord(
        seq=row[0],
        event_id=row[1],
        task_id=row[2],
        task_ref=row[3],
        matched_by=MatchedBy(row[4]) if row[4] else None,
        notification_type=row[5],
        session_id=row[6],
        session_context=row[7],
        channel=row[8],
        received_at=row[9],
        verdict=row[10],
        late=bool(row[11]),
        duplicates=row[12],
        err_code=row[13],
        err_message=row[14],
        findings=orjson.loads(row[15]),
        raw=orjson.loads(row[16]),
    )


def migrate(con: sqlite3.Connection) -> int:
    """Apply the numbered ``migrations/sqlite/*.sql`` files newer than ``PRAGMA user_version``."""
    current = con.execute("PRAGMA user_version").fetchone()[0]
    folder = resources.files("receiver.stores") / "migrations" / "sqlite"
    scripts = sorted((p for p in folder.iterdir() if p.name.endswith(".sql")), key=lambda p: p.name)
    for script in scripts:
        version = int(script.name.split("_", 1)[0])
        if version <= current:
            continue
        # executescript commits first; the version bump sits in the script's own transaction.
        con.executescript(f"BEGIN;\n{script.read_text()}\nPRAGMA user_version = {version};\nCOMMIT;")
        current = version
    return int(current)
