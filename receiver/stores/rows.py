"""Row shapes both stores share: column lists, row to record, query filters; and SQLite migrations."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any, Final

import orjson

from receiver.ports import DeliveryQuery, EventQuery, EventRecord, Quarantined, SinkStats
from receiver.tasks import MatchedBy

DELIVERIES_WITH_EVENTS: Final = "FROM deliveries d JOIN events e ON e.seq = d.event_seq"

# The orphans a task would have matched had it been registered first, in the order received.
ORPHANS_OF: Final = (
    "SELECT seq, task_id, session_context, notification_type, received_at, err_code, err_message"
    " FROM events WHERE task_ref IS NULL AND (task_id = ? OR (session_context <> '' AND session_context = ?))"
    " ORDER BY seq"
)
ADOPT: Final = "UPDATE events SET task_ref = ?, matched_by = ?, late = ? WHERE seq = ?"


@dataclass(frozen=True, slots=True)
class Orphan:
    """A row of ``ORPHANS_OF``: what the task rules read of an orphan event."""

    seq: int
    task_id: str
    session_context: str
    notification_type: str
    received_at: float
    err_code: int | None
    err_message: str | None


EVENT_COLUMNS = (
    "seq, event_id, task_id, task_ref, matched_by, notification_type, session_id, session_context,"
    " channel, received_at, verdict, late, duplicates, err_code, err_message, findings, raw, sign_key"
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
        sign_key=row[17],
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


EVENT_QUERY_STATEMENT: Final = "SELECT {columns} FROM events WHERE {where} ORDER BY seq LIMIT ?"


def event_filter(q: EventQuery) -> tuple[str, list[Any]]:
    """The WHERE clause (``?`` placeholders) and its arguments for an event query, cursor included."""
    clauses = ["seq > ?"]
    args: list[Any] = [q.after]
    for column, value in (
        ("task_id", q.task_id),
        ("task_ref", q.task_ref),
        ("notification_type", q.notification_type),
    ):
        if value is not None:
            clauses.append(f"{column} = ?")
            args.append(value)
    if q.since is not None:
        clauses.append("received_at >= ?")
        args.append(q.since)
    if q.orphan is not None:
        clauses.append("task_ref IS NULL" if q.orphan else "task_ref IS NOT NULL")
    return " AND ".join(clauses), args


QUARANTINE_PAGE: Final = (
    "SELECT id, channel, received_at, reason, detail, field, body, meta FROM quarantine"
    " WHERE id > ? ORDER BY id LIMIT ?"
)


def quarantine_record(r: Sequence[Any]) -> Quarantined:
    """From ``id, channel, received_at, reason, detail, field, body, meta``."""
    return Quarantined(
        id=r[0],
        channel=r[1],
        received_at=r[2],
        reason=r[3],
        detail=r[4],
        field=r[5],
        body=bytes(r[6]),
        meta=orjson.loads(r[7]),
    )


SINK_COUNTS: Final = "SELECT sink, state, count(*), min(created_at) FROM deliveries GROUP BY sink, state"
SINKS_DISABLED: Final = "SELECT sink, reason FROM sink_state WHERE disabled_at IS NOT NULL"


def sink_stats(counts: Sequence[Sequence[Any]], disabled: Sequence[Sequence[Any]]) -> list[SinkStats]:
    """Per sink, from the rows of ``SINK_COUNTS`` and ``SINKS_DISABLED``."""
    by_sink: dict[str, dict[str, Any]] = {}
    for sink, state, n, oldest in counts:
        entry = by_sink.setdefault(sink, {"pending": 0, "delivered": 0, "dead": 0, "oldest": None})
        entry[state] = n
        if state == "pending":
            entry["oldest"] = oldest
    reasons = {sink: reason for sink, reason in disabled}
    empty = {"pending": 0, "delivered": 0, "dead": 0, "oldest": None}
    return [
        SinkStats(
            sink=name,
            pending=by_sink.get(name, empty)["pending"],
            delivered=by_sink.get(name, empty)["delivered"],
            dead=by_sink.get(name, empty)["dead"],
            oldest_pending_at=by_sink.get(name, empty)["oldest"],
            disabled=reasons.get(name),
        )
        for name in sorted(set(by_sink) | set(reasons))
    ]
