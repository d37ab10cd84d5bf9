"""Row shapes both stores share: column lists, row to record, claims, query filters, quarantine rows."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final

import msgspec
import orjson

from receiver import documents
from receiver.events import Channel, Event, Verdict
from receiver.findings import Finding
from receiver.ports import (
    QUARANTINE_BODY_BYTES,
    Delivery,
    DeliveryQuery,
    DeliveryRow,
    DeliveryState,
    EventRecord,
    OperatorEvent,
    OwnEvent,
    Quarantined,
    ReconcileQuery,
    Router,
    SinkStats,
)
from receiver.tasks import MatchedBy, Step, Task, outbox_key

# Findings as stored: the same JSON as orjson's, in about half the time (msgspec knows dataclasses).
encode_findings: Final = msgspec.json.Encoder().encode

DELIVERIES_WITH_EVENTS: Final = "FROM deliveries d JOIN events e ON e.seq = d.event_seq"

# The channel of the events receiver makes itself (digests, operator events): never orphans.
OWN_CHANNEL: Final = documents.OWN_CHANNEL


# The orphans a task would have matched had it been registered first, in the order received.
ORPHANS_OF: Final = (
    "SELECT seq, task_id, session_context, notification_type, received_at, err_code, err_message, channel"
    " FROM events WHERE task_ref IS NULL AND (task_id = ? OR (session_context <> '' AND session_context = ?))"
    f" AND channel <> '{OWN_CHANNEL}' ORDER BY seq"
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
    channel: str


EVENT_COLUMNS = (
    "seq, event_id, task_id, task_ref, matched_by, notification_type, session_id, session_context,"
    " channel, received_at, verdict, late, duplicates, err_code, err_message, findings, raw, sign_key,"
    " traceparent"
)


EVENT_BY_SEQ: Final = f"SELECT {EVENT_COLUMNS} FROM events WHERE seq = ?"

# The head of each task's line: due, and the oldest pending delivery of its key (one probe of
# deliveries_head per candidate; left to itself the planner may pick deliveries_by_state and scan
# the sink's whole backlog per candidate).
CLAIM_HEADS: Final = (
    "SELECT d.id, d.task_key FROM deliveries d WHERE d.sink = ? AND d.state = 'pending'"
    " AND d.next_attempt_at <= ? AND d.id = (SELECT min(p.id) FROM deliveries p INDEXED BY deliveries_head"
    " WHERE p.sink = d.sink AND p.task_key = d.task_key AND p.state = 'pending') ORDER BY d.id LIMIT ?"
)
# One task's line, from its head: the pending deliveries of one key, oldest first.
LINE_COLUMNS: Final = "d.id, d.task_key, d.attempts, d.next_attempt_at, d.event_seq, d.batch_id, d.batch_size"
CLAIM_LINE: Final = (
    f"SELECT {LINE_COLUMNS} FROM deliveries d WHERE d.sink = ? AND d.task_key = ?"
    " AND d.state = 'pending' AND d.id >= ? ORDER BY d.id LIMIT ?"
)
HAS_PENDING: Final = "SELECT 1 FROM deliveries WHERE sink = ? AND state = 'pending' LIMIT 1"
EVENTS_BY_SEQ: Final = f"SELECT {EVENT_COLUMNS} FROM events WHERE seq IN ({{marks}})"

# What a claim is given to read events from before the store: the dispatcher's recent events.
Known = Callable[[int], "EventRecord | None"]


def due_line(rows: Sequence[Sequence[Any]], now: float) -> list[Sequence[Any]]:
    """One line's ``CLAIM_LINE`` rows up to the first that is not due (a delivery waiting for its
    retry holds back every later one of its task)."""
    out = []
    for r in rows:
        if r[3] > now:
            break
        out.append(r)
    return out


def known_events(
    lines: Sequence[Sequence[Any]], known: Known | None
) -> tuple[dict[int, EventRecord], list[int]]:
    """The events of claimed ``CLAIM_LINE`` rows this process holds in memory (``known``), by seq,
    and the seqs of the others, to read from the store."""
    found: dict[int, EventRecord] = {}
    missing: list[int] = []
    for line in lines:
        seq = line[4]
        record = known(seq) if known is not None else None
        if record is None:
            missing.append(seq)
        else:
            found[seq] = record
    return found, missing


def claimed(
    sink: str, lines: Sequence[Sequence[Any]], events: Callable[[int], EventRecord]
) -> list[Delivery]:
    return [
        Delivery(
            id=r[0],
            sink=sink,
            task_key=r[1],
            attempts=r[2],
            event=events(r[4]),
            batch_id=r[5],
            batch_size=r[6],
        )
        for r in lines
    ]


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
        body=r.body,
        sign_key=r.sign_key,
        traceparent=r.traceparent,
        err_code=r.err_code,
        err_message=r.err_message,
    )


def routed_again(record: EventRecord, task: Task, route: Router, now: float) -> list[tuple[Any, ...]]:
    """The ``ROUTE_AGAIN`` rows for one adopted event."""
    event = stored_event(record)
    key = outbox_key(event)
    return [(sink, record.seq, key, now, now, now) for sink in route(event, task)]


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


def delivery_row(r: Sequence[Any]) -> DeliveryRow:
    """A row of a delivery listing (``DeliveryRow``'s columns in order), its state decoded."""
    return DeliveryRow(r[0], r[1], DeliveryState(r[2]), *r[3:])


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
        body=row[16].encode() if type(row[16]) is str else row[16],  # both stores keep text
        sign_key=row[17],
        traceparent=row[18],
    )


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


# The tasks to ask MPS about (``ports.ReconcileQuery``): arguments since, checked_before,
# overdue_before, silent_before, limit. Never asked first, then the longest unasked, then the oldest.
RECONCILE_CANDIDATES: Final = (
    "SELECT {columns} FROM tasks WHERE task_id IS NOT NULL"
    " AND state IN ('submitted', 'running', 'stalled', 'aborting') AND created_at >= ?"
    " AND (checked_at IS NULL OR checked_at < ?)"
    " AND (state IN ('stalled', 'aborting') OR created_at < ?"
    " OR (state = 'submitted' AND first_event_at IS NULL AND created_at < ?))"
    " ORDER BY coalesce(checked_at, 0), created_at, id LIMIT ?"
)


def reconcile_arguments(q: ReconcileQuery) -> tuple[Any, ...]:
    return (q.since, q.checked_before, q.overdue_before, q.silent_before, q.limit)


# --- receiver's own events: digests and operator events ----------------------------------------

OWN_EVENT_INSERT: Final = (
    "INSERT INTO events (event_id, task_id, task_ref, notification_type, session_id, session_context,"
    " channel, received_at, verdict, late, findings, raw)"
    f" VALUES (?, ?, ?, ?, ?, ?, '{OWN_CHANNEL}', ?, 'own', ?, '[]', ?) ON CONFLICT (event_id) DO NOTHING"
    " RETURNING seq"
)
OWN_DELIVERY_INSERT: Final = (
    "INSERT INTO deliveries (sink, event_seq, task_key, state, next_attempt_at, created_at, updated_at)"
    " VALUES (?, ?, ?, 'pending', ?, ?, ?)"
)
OPERATOR_EVENT_INSERT: Final = (
    "INSERT INTO operator_events (kind, subject, window_start, at, detail) VALUES (?, ?, ?, ?, ?)"
    " ON CONFLICT (kind, subject, window_start) DO NOTHING RETURNING id"
)
OPERATOR_EVENT_LINK: Final = "UPDATE operator_events SET event_seq = ? WHERE id = ?"
OPERATOR_EVENTS_PAGE: Final = (
    "SELECT o.id, o.kind, o.subject, o.window_start, o.at, o.detail, e.event_id FROM operator_events o"
    " LEFT JOIN events e ON e.seq = o.event_seq WHERE o.id > ? AND (? IS NULL OR o.kind = ?)"
    " ORDER BY o.id LIMIT ?"
)
COUNT_UP: Final = (
    "INSERT INTO counters (name, window_start, n) VALUES (?, ?, ?) ON CONFLICT (name, window_start)"
    " DO UPDATE SET n = counters.n + excluded.n RETURNING n"
)
COUNTERS_PURGE: Final = "DELETE FROM counters WHERE window_start < ?"
# Ended tasks with no digest yet (its event id is "receiver:digest:<our task id>").
UNDIGESTED: Final = (
    "SELECT {columns} FROM tasks t WHERE t.ended_at IS NOT NULL AND t.ended_at >= ? AND NOT EXISTS"
    " (SELECT 1 FROM events e WHERE e.event_id = 'receiver:digest:' || t.id) ORDER BY t.ended_at LIMIT ?"
)
# Tasks an operator may want to hear of: failed or stalled lately, or lately overdue (started in a range).
TO_ALERT: Final = (
    "SELECT {columns} FROM tasks t WHERE t.state = 'failed' AND t.ended_at >= ?"
    " UNION ALL SELECT {columns} FROM tasks t WHERE t.state = 'stalled' AND t.updated_at >= ?"
    " UNION ALL SELECT {columns} FROM tasks t WHERE t.ended_at IS NULL"
    " AND t.state NOT IN ('finished', 'failed') AND t.created_at >= ? AND t.created_at < ? LIMIT ?"
)


def own_event_values(e: OwnEvent) -> tuple[Any, ...]:
    """The ``OWN_EVENT_INSERT`` arguments."""
    return (
        e.event_id,
        e.task_id,
        e.task_ref,
        e.notification_type,
        e.session_id,
        e.session_context,
        e.at,
        False,
        orjson.dumps(e.document).decode(),
    )


def operator_event(r: Sequence[Any]) -> OperatorEvent:
    """From the columns of ``OPERATOR_EVENTS_PAGE``."""
    return OperatorEvent(
        kind=r[1], subject=r[2], window_start=r[3], at=r[4], detail=orjson.loads(r[5]), id=r[0], event_id=r[6]
    )


def foreign_task_id(step: Step) -> int | None:
    """0 if the event's TaskId is its task's (a task's TaskId never changes once it has one), 1 if
    it is not, None for an orphan: the index by TaskId keeps all but the 0s (SQLite's migration
    0014, PostgreSQL's 0012)."""
    task = step.task
    if task is None:
        return None
    return 0 if step.event.task_id and task.task_id == step.event.task_id else 1


def row_seq(row: Sequence[Any]) -> int:
    """The seq of a row of ``EVENT_COLUMNS`` (they lead with it)."""
    seq: int = row[0]
    return seq
