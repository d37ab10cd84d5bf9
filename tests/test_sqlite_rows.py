"""How the SQLite writer stores a changed task: by the narrow statement when only its counts and
times changed, by the whole update otherwise, and the row read back is the task either way."""

from __future__ import annotations

import dataclasses
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from receiver.stores import sqlite_rows
from receiver.stores.sqlite import SqliteStore
from receiver.tasks import Answer, MpsCheck, Task, TaskState
from tests.builders import event, new_task
from tests.payloads import EOF_DOC, FROZEN_NOW, REVIEW


def test_the_counted_and_the_kept_fields_are_every_field_of_a_task_once() -> None:
    counted, kept = sqlite_rows.COUNTED_FIELDS, sqlite_rows.KEPT_FIELDS
    assert not set(counted) & set(kept)
    assert sorted(counted + kept) == sorted(f.name for f in dataclasses.fields(Task))


def test_only_a_change_to_counts_and_times_is_counted_only() -> None:
    before = new_task()
    counted = dataclasses.replace(
        before, event_count=3, late_count=1, updated_at=9.0, first_event_at=2.0, last_event_at=9.0
    )
    assert sqlite_rows.counted_only(before, counted)
    others: dict[str, Any] = {
        "task_id": "T2",
        "state": TaskState.RUNNING,
        "err_code": 7,
        "err_message": "boom",
        "ended_at": 9.0,
        "request_id": "r-1",
        "checks": (MpsCheck(at=9.0, answer=Answer.PROCESSING),),
        "checked_at": 9.0,
        "live_at": 9.0,
        "reconciled_at": 9.0,
        "labels": {"team": "b"},
    }
    for name, value in others.items():
        assert not sqlite_rows.counted_only(before, dataclasses.replace(counted, **{name: value})), name


def _stored_row(path: Path, ref: str) -> tuple[object, ...]:
    con = sqlite3.connect(path)
    try:
        row: tuple[object, ...] = con.execute(
            "SELECT state, event_count, first_event_at, last_event_at, ended_at, err_code, updated_at"
            " FROM tasks WHERE id = ?",
            (ref,),
        ).fetchone()
        return row
    finally:
        con.close()


async def test_a_task_row_holds_every_change_whichever_statement_wrote_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[bool] = []
    counted_only = sqlite_rows.counted_only

    def spy(before: Task, after: Task) -> bool:
        seen.append(counted := counted_only(before, after))
        return counted

    monkeypatch.setattr("receiver.stores.sqlite_writer.counted_only", spy)
    path = tmp_path / "r.db"
    store = await SqliteStore.open(path)
    try:
        task, _ = await store.register_task(new_task("T1"))
        # The first event makes it running (the whole update); the next two only count.
        for n in range(3):
            await store.record_events([event(REVIEW, at=FROZEN_NOW + n, TaskId="T1", SessionId=f"s{n}")])
        assert seen == [False, True, True]
        expected = ("running", 3, FROZEN_NOW, FROZEN_NOW + 2, None, None, FROZEN_NOW + 2)
        assert _stored_row(path, task.id) == expected
        (last_recorded,) = await store.record_events([event(EOF_DOC, at=FROZEN_NOW + 5, TaskId="T1")])
        assert seen[-1] is False  # ended: state, ended_at and the error are written
        state, count, _, last, ended, err, _ = _stored_row(path, task.id)
        assert (state, count, last, ended) == ("finished", 4, FROZEN_NOW + 5, FROZEN_NOW + 5)
        assert err == 0
    finally:
        await store.aclose()
    reopened = await SqliteStore.open(path)  # nothing cached: the task as its row has it
    try:
        assert await reopened.get_task("T1") == last_recorded.task
    finally:
        await reopened.aclose()
