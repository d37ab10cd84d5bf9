"""How the SQLite store writes an event and a task: the statements and the rows they take."""

from __future__ import annotations

import operator
from typing import Any, Final

import orjson

from receiver import tasks
from receiver.stores.rows import encode_findings, foreign_task_id
from receiver.stores.task_rows import TASK_COLUMN_COUNT, TASK_COLUMNS, checks_json
from receiver.tasks import Task

INSERT_EVENT = (
    "INSERT INTO events (seq, event_id, task_id, task_ref, matched_by, notification_type, session_id,"
    " session_context, channel, received_at, verdict, late, err_code, err_message, findings, raw, sign_key,"
    " traceparent, foreign_task_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
UPDATE_TASK = (
    "UPDATE tasks SET task_id = ?, state = ?, err_code = ?, err_message = ?, event_count = ?,"
    " late_count = ?, updated_at = ?, first_event_at = ?, last_event_at = ?, ended_at = ?, request_id = ?,"
    " checks = ?, checked_at = ?, live_at = ?, reconciled_at = ? WHERE id = ?"
)
# A task whose event changed only its counts and times: no indexed column is in the SET list, so
# SQLite rewrites the row alone, not an entry of each index on tasks (it decides by the SET list,
# not by whether a value changed).
COUNT_TASK: Final = (
    "UPDATE tasks SET event_count = ?, late_count = ?, updated_at = ?, first_event_at = ?,"
    " last_event_at = ? WHERE id = ?"
)
INSERT_TASK: Final = f"INSERT INTO tasks ({TASK_COLUMNS}) VALUES ({', '.join('?' * TASK_COLUMN_COUNT)})"


def event_row(seq: int, step: tasks.Step) -> tuple[Any, ...]:
    """A new event as ``INSERT_EVENT`` takes it."""
    e = step.event
    return (
        seq,
        e.event_id,
        e.task_id,
        step.task.id if step.task else None,
        step.matched_by.value if step.matched_by else None,
        e.notification_type,
        e.session_id,
        e.session_context,
        e.channel.value,
        e.received_at,
        e.verdict.value,
        step.late,
        e.err_code,
        e.err_message,
        encode_findings(e.findings),
        e.body.decode(),
        e.sign_key,
        e.traceparent,
        foreign_task_id(step),
    )


def task_update(t: Task) -> tuple[Any, ...]:
    """A changed task as ``UPDATE_TASK`` takes it."""
    return (
        t.task_id,
        t.state.value,
        t.err_code,
        t.err_message,
        t.event_count,
        t.late_count,
        t.updated_at,
        t.first_event_at,
        t.last_event_at,
        t.ended_at,
        t.request_id,
        checks_json(t.checks),
        t.checked_at,
        t.live_at,
        t.reconciled_at,
        t.id,
    )


# What COUNT_TASK writes, and every other field of a task: a task whose event changed none of the
# latter is written by COUNT_TASK. (tests/test_sqlite_rows.py: together they are all of Task's.)
COUNTED_FIELDS: Final = ("event_count", "late_count", "updated_at", "first_event_at", "last_event_at")
KEPT_FIELDS: Final = (
    "id", "task_id", "session_id", "session_context", "url", "labels", "state", "err_code", "err_message",
    "created_at", "ended_at", "request_id", "checks", "checked_at", "live_at", "reconciled_at",
)  # fmt: skip
_kept = operator.attrgetter(*KEPT_FIELDS)


def counted_only(before: Task, after: Task) -> bool:
    """Whether ``after`` differs from the stored ``before`` in no more than ``COUNT_TASK`` writes."""
    return bool(_kept(after) == _kept(before))


def task_count(t: Task) -> tuple[Any, ...]:
    """A task changed only in its counts and times, as ``COUNT_TASK`` takes it."""
    return (t.event_count, t.late_count, t.updated_at, t.first_event_at, t.last_event_at, t.id)


def task_insert(task: Task) -> tuple[Any, ...]:
    """A new task as ``INSERT_TASK`` takes it (its labels as JSON bytes)."""
    return (
        task.id,
        task.task_id,
        task.session_id,
        task.session_context,
        task.url,
        orjson.dumps(task.labels),
        task.state.value,
        task.err_code,
        task.err_message,
        task.event_count,
        task.late_count,
        task.created_at,
        task.updated_at,
        task.first_event_at,
        task.last_event_at,
        task.ended_at,
        task.request_id,
        checks_json(task.checks),
        task.checked_at,
        task.live_at,
        task.reconciled_at,
    )
