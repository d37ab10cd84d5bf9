"""Row shapes both stores share: column lists, row to record, query filters; and SQLite migrations."""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any, Final

import orjson

from receiver.events import Channel, Event, Verdict
from receiver.findings import Finding
from receiver.ports import (
    QUARANTINE_BODY_BYTES,
    DeliveryQuery,
    EventRecord,
    Quarantined,
    Router,
    SinkStats,
)
from receiver.tasks import MatchedBy, Task

DELIVERIES_WITH_EVENTS: Final = "FROM deliveries d JOIN events e ON e.seq = d.event_seq"

# The orphans a task would have matched had it been registered first, in the order received.
ORPHANS_OF: Final = (
    "SELECT seq, task_id, session_context, notification_type, received_at, err_code, err_message"
    " FROM events WHERE task_ref IS NULL AND (task_id = ? OR (session_context <> '' AND session_context = ?))"
    " ORDER BY seq"
)
ADOPT: Final = "UPDATE events SET task_ref = ?, matched_by = ?, late = ? WHERE seq = ?"
# An adopted event routed again, now that its task is known: only the sinks that lacked it.
ROUTE_AGAIN: Final = (
    "INSERT INTO deliveries (sink, event_seq, task_key, state, next_attempt_at, created_at, updated_at)"
    " VALUES (?, ?, ?, 'pending', ?, ?, ?) ON CONFLICT (sink, event_seq) DO NOTHING"
)


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


EVENT_BY_SEQ: Final = f"SELECT {EVENT_COLUMNS} FROM events WHERE seq = ?"


def stored_event(r: EventRecord) -> Event:
    """A stored event as the router reads it (what ingest routed before it was stored)."""
    return Event(
        event_id=r.event_id,
        task_id=r.task_id,
        notification_type=r.notification_type,
        session_id=r.session_id,
        session_context=r.session_context,
        channel=Channel(r.channel),
        received_at=r.received_at,
        verdict=Verdict(r.verdict),
        findings=[Finding(**f) for f in r.findings],
        raw=r.raw,
        body=orjson.dumps(r.raw),
        sign_key=r.sign_key,
        err_code=r.err_code,
        err_message=r.err_message,
    )


def routed_again(record: EventRecord, task: Task, route: Router, now: float) -> list[tuple[Any, ...]]:
    """The ``ROUTE_AGAIN`` rows for one adopted event."""
    return [(sink, record.seq, record.task_id, now, now, now) for sink in route(stored_event(record), task)]


def delivery_filter(q: DeliveryQuery) -> tuple[str, list[Any]]:
    """The WHERE clause (over deliveries ``d`` joined with events ``e``) for a delivery query."""
    clauses = ["1 = 1"]
    args: list[Any] = []
    for clause, value in (
        ("d.id = ?", q.id),
        ("d.sink = ?", q.sink),
        ("d.state = ?", q.state),
        ("d.task_key = ?", q.task_id),  # the event's TaskId, kept on the row (and indexed there)
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


QUARANTINE_PAGE: Final = (
    "SELECT id, channel, received_at, reason, detail, field, body, meta, body_sha256, body_size"
    " FROM quarantine WHERE id > ? ORDER BY id LIMIT ?"
)
QUARANTINE_INSERT: Final = (
    "INSERT INTO quarantine (channel, received_at, reason, detail, field, body, meta, body_sha256,"
    " body_size) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
QUARANTINE_PURGE: Final = (
    "DELETE FROM quarantine WHERE id IN (SELECT id FROM quarantine WHERE received_at < ? LIMIT ?)"
)


def quarantine_values(q: Quarantined) -> tuple[Any, ...]:
    """The ``QUARANTINE_INSERT`` arguments: the body cut to its first 64 KiB, with the whole
    body's sha256 and size (what a flood can cost is bounded; what it was can still be matched)."""
    return (
        q.channel,
        q.received_at,
        q.reason,
        q.detail,
        q.field,
        q.body[:QUARANTINE_BODY_BYTES],
        orjson.dumps(q.meta).decode(),
        hashlib.sha256(q.body).hexdigest(),
        len(q.body),
    )


def quarantine_record(r: Sequence[Any]) -> Quarantined:
    """From the columns of ``QUARANTINE_PAGE``."""
    return Quarantined(
        id=r[0],
        channel=r[1],
        received_at=r[2],
        reason=r[3],
        detail=r[4],
        field=r[5],
        body=bytes(r[6]),
        meta=orjson.loads(r[7]),
        body_sha256=r[8],
        body_size=r[9],
    )


# Raw payloads past retention, except those a pending or dead delivery still has to send.
PURGE_PAYLOADS: Final = (
    "UPDATE events SET raw = '{}' WHERE seq IN (SELECT seq FROM events WHERE received_at < ?"
    " AND raw <> '{}' AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.event_seq = events.seq"
    " AND d.state <> 'delivered') LIMIT ?)"
)
PURGE_DELIVERED: Final = (
    "DELETE FROM deliveries WHERE id IN (SELECT id FROM deliveries WHERE state = 'delivered'"
    " AND delivered_at < ? LIMIT ?)"
)


SINK_COUNTS: Final = "SELECT sink, state, count(*), min(created_at) FROM deliveries GROUP BY sink, state"
SINKS_DISABLED: Final = "SELECT sink, reason FROM sink_state WHERE disabled_at IS NOT NULL"

# Take the lease, or renew it, when it is free, expired or already ours; RETURNING says if we hold it.
HOLD_LEASE: Final = (
    "INSERT INTO leases (name, holder, expires_at) VALUES (?, ?, ?) ON CONFLICT (name) DO UPDATE"
    " SET holder = excluded.holder, expires_at = excluded.expires_at"
    " WHERE leases.holder = excluded.holder OR leases.expires_at <= ? RETURNING holder"
)
RELEASE_LEASE: Final = "DELETE FROM leases WHERE name = ? AND holder = ?"
LEASE_HOLDER: Final = "SELECT holder, expires_at FROM leases WHERE name = ?"


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
