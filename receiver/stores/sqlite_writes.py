"""The SQLite writes that touch no task: redrive, sinks' switches, own events, counters, leases, retention.

Each is one transaction on the store's writer (``SqliteWriter.transaction``), run on its thread.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson

from receiver.ports import OperatorEvent, OwnEvent, Quarantined
from receiver.stores import reads, rows
from receiver.stores.rows import DELIVERIES_WITH_EVENTS
from receiver.stores.sqlite_writer import SqliteWriter


def redrive_chunk(
    w: SqliteWriter, where: str, args: Sequence[Any], now: float, after: int, limit: int
) -> tuple[int, int]:
    """Make up to ``limit`` matching deliveries with id > ``after`` pending again; returns how many
    and the last id (to continue from)."""

    def run() -> tuple[int, int]:
        ids = [
            row[0]
            for row in w.con.execute(
                f"SELECT d.id {DELIVERIES_WITH_EVENTS} WHERE {where} AND d.id > ? ORDER BY d.id LIMIT ?",
                (*args, after, limit),
            )
        ]
        w.con.executemany(reads.KEEP_DELIVERED, [(i,) for i in ids])
        w.con.executemany(
            "UPDATE deliveries SET state = 'pending', attempts = 0, next_attempt_at = ?,"
            " last_error = NULL, updated_at = ?, batch_id = NULL, batch_size = NULL WHERE id = ?",
            [(now, now, i) for i in ids],
        )
        if ids:
            w.outbox_changed()
        return len(ids), (ids[-1] if ids else after)

    return w.transaction(run)


def set_sink_disabled(w: SqliteWriter, sink: str, reason: str | None, now: float) -> None:
    w.transaction(
        lambda: w.con.execute(
            "INSERT INTO sink_state (sink, disabled_at, reason) VALUES (?, ?, ?) ON CONFLICT (sink)"
            " DO UPDATE SET disabled_at = excluded.disabled_at, reason = excluded.reason",
            (sink, now if reason else None, reason),
        )
    )


def record_own_event(
    w: SqliteWriter, event: OwnEvent, sinks: Sequence[str], operator: OperatorEvent | None = None
) -> bool:
    def run() -> bool:
        op_id = None
        if operator is not None:
            row = w.con.execute(
                rows.OPERATOR_EVENT_INSERT,
                (
                    operator.kind,
                    operator.subject,
                    operator.window_start,
                    operator.at,
                    orjson.dumps(operator.detail).decode(),
                ),
            ).fetchone()
            if row is None:
                return False  # this kind, subject and window are told already
            op_id = row[0]
        if not sinks:
            return operator is not None
        row = w.con.execute(rows.OWN_EVENT_INSERT, rows.own_event_values(event)).fetchone()
        if row is None:
            return False
        at = event.at
        w.con.executemany(
            rows.OWN_DELIVERY_INSERT, [(sink, row[0], event.task_key, at, at, at) for sink in sinks]
        )
        w.outbox_changed()
        if op_id is not None:
            w.con.execute(rows.OPERATOR_EVENT_LINK, (row[0], op_id))
        return True

    return w.transaction(run)


def count_up(w: SqliteWriter, name: str, window_start: float, n: int) -> int:
    def run() -> int:
        (total,) = w.con.execute(rows.COUNT_UP, (name, window_start, n)).fetchone()
        w.con.execute(rows.COUNTERS_PURGE, (window_start - 86400,))  # old windows: nobody asks
        return int(total)

    return w.transaction(run)


def hold_lease(w: SqliteWriter, name: str, holder: str, ttl: float, now: float) -> bool:
    return w.transaction(
        lambda: w.con.execute(rows.HOLD_LEASE, (name, holder, now + ttl, now)).fetchone() is not None
    )


def release_lease(w: SqliteWriter, name: str, holder: str) -> None:
    w.transaction(lambda: w.con.execute(rows.RELEASE_LEASE, (name, holder)))


def purge(w: SqliteWriter, before: float, limit: int) -> tuple[int, int]:
    """Drop the raw payload of events received before ``before`` (their normalized form stays)
    unless a pending or dead delivery still needs it, and delivered outbox rows; dead letters
    stay until redriven."""

    def run() -> tuple[int, int]:
        payloads = w.con.execute(rows.PURGE_PAYLOADS, (before, limit)).rowcount
        deliveries = w.con.execute(rows.PURGE_DELIVERED, (before, limit)).rowcount
        return int(payloads), int(deliveries)

    return w.transaction(run)


def purge_quarantine(w: SqliteWriter, before: float, limit: int) -> int:
    purge = rows.QUARANTINE_PURGE
    return w.transaction(lambda: int(w.con.execute(purge, (before, limit)).rowcount))


def quarantine(w: SqliteWriter, q: Quarantined) -> None:
    w.transaction(lambda: w.con.execute(rows.QUARANTINE_INSERT, rows.quarantine_values(q)))
