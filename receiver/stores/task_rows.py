"""How a task is stored, in both stores: its columns, its row read back, its checks as JSON."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

import orjson

from receiver.tasks import Answer, MpsCheck, Task, TaskState

TASK_COLUMNS: Final = (
    "id, task_id, session_id, session_context, url, labels, state, err_code, err_message, event_count,"
    " late_count, created_at, updated_at, first_event_at, last_event_at, ended_at, request_id, checks,"
    " checked_at, live_at, reconciled_at"
)
TASK_COLUMN_COUNT: Final = TASK_COLUMNS.count(",") + 1


def task_columns(alias: str) -> str:
    """``TASK_COLUMNS`` of the table known as ``alias``."""
    return ", ".join(f"{alias}.{c.strip()}" for c in TASK_COLUMNS.split(","))


def checks_json(checks: Sequence[MpsCheck]) -> str:
    """A task's checks as stored: a JSON list of objects, members that are None left out."""
    out = []
    for c in checks:
        doc: dict[str, Any] = {"at": c.at, "answer": c.answer.value}
        optional = (("err_code", c.err_code), ("message", c.message), ("code", c.code))
        doc.update((k, v) for k, v in optional if v is not None)
        out.append(doc)
    return orjson.dumps(out).decode()


def checks_from_json(text: str | None) -> tuple[MpsCheck, ...]:
    if not text:
        return ()
    return tuple(
        MpsCheck(
            at=c["at"],
            answer=Answer(c["answer"]),
            err_code=c.get("err_code"),
            message=c.get("message"),
            code=c.get("code"),
        )
        for c in orjson.loads(text)
    )


def task_from_row(row: Sequence[Any]) -> Task:
    return Task(
        id=row[0],
        task_id=row[1],
        session_id=row[2],
        session_context=row[3],
        url=row[4],
        labels=orjson.loads(row[5]),
        state=TaskState(row[6]),
        err_code=row[7],
        err_message=row[8],
        event_count=row[9],
        late_count=row[10],
        created_at=row[11],
        updated_at=row[12],
        first_event_at=row[13],
        last_event_at=row[14],
        ended_at=row[15],
        request_id=row[16],
        checks=checks_from_json(row[17]),
        checked_at=row[18],
        live_at=row[19],
        reconciled_at=row[20],
    )
