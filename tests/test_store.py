"""The store behaviour, run against both stores (a real SQLite file, a real PostgreSQL database),
plus what only SQLite has (its file lock, its migrations on reopen, its writer's cache)."""

from __future__ import annotations

import asyncio
import sqlite3
from dataclasses import replace
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from receiver.errors import ConflictError, StoreUnavailableError
from receiver.ports import DeliveryQuery, DeliveryState, EventQuery
from receiver.stores.postgres import PostgresStore
from receiver.stores.sqlite import SqliteStore
from receiver.tasks import MatchedBy, TaskState
from tests.builders import event, new_task
from tests.databases import mps_events, postgres_database
from tests.payloads import EOF_DOC, FROZEN_NOW, REVIEW


async def test_an_event_is_stored_with_its_findings_and_raw_payload(store: Any) -> None:
    e = event(REVIEW)
    [rec] = await store.record_events([e])
    assert (rec.duplicate, rec.task, rec.late) == (False, None, False)
    page = await store.list_events(EventQuery())
    [stored] = page.items
    assert stored.event_id == e.event_id
    assert stored.raw == {k: v for k, v in REVIEW.items() if k not in ("Timestamp", "Sign")}
    assert [f["kind"] for f in stored.findings] == ["ImagePorn", "ImagePolitical"]
    assert stored.findings[1]["area"] == [612, 88, 744, 201]
    assert (stored.task_ref, stored.matched_by, stored.channel, stored.verdict) == (
        None,
        None,
        "http",
        "skipped",
    )


async def test_a_repeat_is_counted_on_the_existing_row_never_stored_twice(store: Any) -> None:
    e = event(REVIEW)
    [first] = await store.record_events([e])
    again = event(REVIEW, at=FROZEN_NOW + 5)
    # Twice more: once alone, once twice inside one batch.
    [second] = await store.record_events([again])
    third, fourth = await store.record_events([again, again])
    assert not first.duplicate
    assert second.duplicate
    assert third.duplicate
    assert fourth.duplicate
    assert second.seq == first.seq
    page = await store.list_events(EventQuery())
    assert len(page.items) == 1
    assert page.items[0].duplicates == 3
    assert await mps_events(store) == 1


async def test_a_new_event_twice_in_one_batch_is_stored_once_and_counted_once(store: Any) -> None:
    e = event(REVIEW)
    first, second = await store.record_events([e, e])
    assert (first.duplicate, second.duplicate) == (False, True)
    assert second.seq == first.seq
    page = await store.list_events(EventQuery())
    assert [item.duplicates for item in page.items] == [1]
    assert await mps_events(store) == 1


async def test_events_match_by_session_context_first_then_task_id(store: Any) -> None:
    by_ctx, _ = await store.register_task(new_task("T-ctx", session_context=REVIEW["SessionContext"]))
    by_id, _ = await store.register_task(new_task(REVIEW["TaskId"]))
    [rec] = await store.record_events([event(REVIEW)])
    assert rec.task is not None
    assert rec.task.id == by_ctx.id
    assert rec.matched_by is MatchedBy.SESSION_CONTEXT
    [rec2] = await store.record_events([event(REVIEW, SessionContext="")])
    assert rec2.task is not None
    assert rec2.task.id == by_id.id
    assert rec2.matched_by is MatchedBy.TASK_ID


async def test_task_goes_running_then_finished_and_later_events_are_flagged_late(store: Any) -> None:
    await store.register_task(new_task(EOF_DOC["TaskId"]))
    tid = EOF_DOC["TaskId"]
    review = event(REVIEW, TaskId=tid, SessionContext="", at=10)
    eof = event(EOF_DOC, at=20)
    late = event(REVIEW, TaskId=tid, SessionContext="", Sign="x", at=30, SessionId="after")
    r1, r2, r3 = await store.record_events([review, eof, late])
    assert r1.task is not None
    assert r1.task.state is TaskState.RUNNING
    assert r2.task is not None
    assert r2.task.state is TaskState.FINISHED
    assert r3.late
    assert r3.task is not None
    assert r3.task.late_count == 1
    task = await store.get_task(tid)
    assert task is not None
    assert (task.state, task.err_code, task.err_message, task.event_count, task.late_count) == (
        TaskState.FINISHED,
        0,
        "Success",
        2,
        1,
    )
    assert (task.first_event_at, task.last_event_at, task.ended_at) == (10, 20, 20)
    lates = [e.late for e in (await store.list_events(EventQuery(task_ref=task.id))).items]
    assert lates == [False, False, True]


async def test_a_failing_process_eof_fails_the_task_keeping_code_and_message(store: Any) -> None:
    await store.register_task(new_task(EOF_DOC["TaskId"]))
    await store.record_events([event(EOF_DOC, ProcessEofInfo={"ErrCode": 4002, "Message": "data timeout"})])
    task = await store.get_task(EOF_DOC["TaskId"])
    assert task is not None
    assert (task.state, task.err_code, task.err_message) == (TaskState.FAILED, 4002, "data timeout")


async def test_orphans_are_kept_and_adopted_in_order_when_their_task_is_registered(
    store: SqliteStore,
) -> None:
    tid = EOF_DOC["TaskId"]
    r1, r2, r3 = await store.record_events(
        [
            event(REVIEW, TaskId=tid, at=10),  # carries a SessionContext
            event(EOF_DOC, at=20),
            event(REVIEW, TaskId=tid, SessionId="x", at=30),
        ]
    )
    assert r1.task is None
    assert r2.task is None
    assert r3.task is None
    orphans = await store.list_events(EventQuery(orphan=True))
    assert len(orphans.items) == 3
    task, adopted = await store.register_task(new_task(tid, session_context=REVIEW["SessionContext"]))
    assert adopted == 3
    assert (task.state, task.event_count, task.late_count, task.ended_at) == (TaskState.FINISHED, 2, 1, 20)
    attached = (await store.list_events(EventQuery(task_ref=task.id))).items
    assert [(e.matched_by, e.late) for e in attached] == [
        (MatchedBy.SESSION_CONTEXT, False),
        (MatchedBy.TASK_ID, False),
        (MatchedBy.SESSION_CONTEXT, True),
    ]
    assert (await store.list_events(EventQuery(orphan=True))).items == []


async def test_a_task_id_cannot_be_registered_twice(store: Any) -> None:
    await store.register_task(new_task("T1"))
    with pytest.raises(ConflictError):
        await store.register_task(new_task("T1"))


async def test_a_task_recorded_without_task_id_learns_it_from_a_context_match(store: Any) -> None:
    t, _ = await store.register_task(new_task(None, session_context="ours:abc"))
    await store.record_events([event(REVIEW, SessionContext="ours:abc")])
    found = await store.get_task(REVIEW["TaskId"])
    assert found is not None
    assert found.id == t.id
    assert found.state is TaskState.RUNNING


async def test_pages_follow_the_order_received_with_a_cursor(store: Any) -> None:
    await store.record_events([event(REVIEW, SessionId=f"s{i}", at=100 + i) for i in range(7)])
    seen: list[str] = []
    after = 0
    while True:
        page = await store.list_events(EventQuery(after=after, limit=3))
        seen += [e.session_id for e in page.items]
        if page.next is None:
            break
        after = int(page.next)
    assert seen == [f"s{i}" for i in range(7)]
    since = await store.list_events(EventQuery(since=105))
    assert [e.session_id for e in since.items] == ["s5", "s6"]
    typed = await store.list_events(EventQuery(notification_type="ProcessEof"))
    assert typed.items == []


async def test_tasks_list_by_state(store: Any) -> None:
    for i in range(5):
        await store.register_task(new_task(f"T{i}"))
    await store.record_events([event(EOF_DOC, TaskId="T2")])
    finished = await store.list_tasks(state=TaskState.FINISHED, after=None, limit=10)
    assert [t.task_id for t in finished.items] == ["T2"]
    first = await store.list_tasks(state=None, after=None, limit=3)
    rest = await store.list_tasks(state=None, after=first.next, limit=3)
    assert [t.task_id for t in first.items + rest.items] == [f"T{i}" for i in range(5)]
    assert rest.next is None


async def test_a_locked_database_is_unavailable_not_a_crash_and_recovers(sqlite_store: SqliteStore) -> None:
    store = sqlite_store
    blocker = sqlite3.connect(store.path, isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(StoreUnavailableError):
            await store.record_events([event(REVIEW)])
        with pytest.raises(StoreUnavailableError):
            await store.ping()
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    await store.ping()
    [rec] = await store.record_events([event(REVIEW)])
    assert not rec.duplicate


async def test_reopening_keeps_everything_and_migrations_are_idempotent(tmp_path: Path) -> None:
    path = tmp_path / "r.db"
    s = await SqliteStore.open(path)
    await s.record_events([event(REVIEW)])
    await s.aclose()
    s = await SqliteStore.open(path)
    try:
        assert await mps_events(s) == 1
        [rec] = await s.record_events([event(REVIEW)])
        assert rec.duplicate
    finally:
        await s.aclose()
    con = sqlite3.connect(path)
    version = con.execute("PRAGMA user_version").fetchone()[0]
    applied = [v for (v,) in con.execute("SELECT version FROM schema_migrations ORDER BY version")]
    assert version == max(migration_numbers("sqlite"))
    assert applied == sorted(migration_numbers("sqlite"))


async def test_concurrent_batches_from_many_callers_all_commit(store: Any) -> None:
    batches = [[event(REVIEW, SessionId=f"{b}-{i}") for i in range(20)] for b in range(10)]
    results = await asyncio.gather(*(store.record_events(b) for b in batches))
    assert sum(len(r) for r in results) == 200
    assert await mps_events(store) == 200


async def test_a_task_registered_through_another_connection_is_seen_by_the_cached_writer(
    tmp_path: Path,
) -> None:
    path = tmp_path / "shared.db"
    a = await SqliteStore.open(path)
    b = await SqliteStore.open(path)
    try:
        [orphan] = await a.record_events([event(REVIEW, SessionContext="")])  # a caches "no such task"
        assert orphan.task is None
        await b.register_task(new_task(REVIEW["TaskId"]))
        [matched] = await a.record_events([event(REVIEW, SessionContext="", SessionId="2")])
        assert matched.task is not None
        assert matched.task.state is TaskState.RUNNING
    finally:
        await a.aclose()
        await b.aclose()


async def test_a_rolled_back_batch_leaves_no_trace_in_tasks_or_events(store: Any) -> None:
    await store.register_task(new_task(EOF_DOC["TaskId"]))
    good = event(EOF_DOC)
    broken = event(REVIEW, TaskId=EOF_DOC["TaskId"], SessionContext="")
    broken.findings = [object()]  # type: ignore[list-item]  # fails inside the transaction, after `good`
    with pytest.raises(TypeError):
        await store.record_events([good, broken])
    task = await store.get_task(EOF_DOC["TaskId"])
    assert task is not None
    assert (task.state, task.event_count) == (TaskState.SUBMITTED, 0)
    assert await mps_events(store) == 0
    [rec] = await store.record_events([good])  # and the writer's cache did not keep the failed change
    assert rec.task is not None
    assert (rec.task.state, rec.task.event_count) == (TaskState.FINISHED, 1)


async def test_quarantine_and_the_outbox_read_back_the_same_on_both_stores(store: Any) -> None:
    from receiver.ports import Quarantined, Settlement

    await store.quarantine(
        Quarantined("amqp", 5.0, "invalid_notification", "TaskId: missing", "TaskId", b"\xff{", {"m": 1})
    )
    [kept] = (await store.list_quarantine(after=0, limit=10)).items
    assert (kept.reason, kept.field, kept.body, kept.meta) == (
        "invalid_notification",
        "TaskId",
        b"\xff{",
        {"m": 1},
    )
    await store.record_events([event(REVIEW, SessionId=str(i)) for i in range(3)], lambda e, t: ["a", "b"])
    claimed = await store.claim_deliveries("a", now=FROZEN_NOW + 1, limit=10, busy_keys=set())
    assert len(claimed) == 1  # one task: one delivery at a time
    await store.settle_deliveries(
        [Settlement(claimed[0].id, DeliveryState.DEAD, 1, FROZEN_NOW, "x", FROZEN_NOW)]
    )
    await store.set_sink_disabled("b", "gone", now=FROZEN_NOW)
    stats = {s.sink: (s.pending, s.delivered, s.dead, s.disabled) for s in await store.sink_stats()}
    assert stats == {"a": (2, 0, 1, None), "b": (3, 0, 0, "gone")}
    dead = DeliveryQuery(sink="a", state=DeliveryState.DEAD)
    assert await store.redrive(dead, now=FROZEN_NOW, dry_run=True) == 1
    assert await store.redrive(dead, now=FROZEN_NOW) == 1
    assert (await store.list_deliveries(dead)).items == []


async def test_a_task_of_our_own_adopts_no_orphan_that_lacks_its_context(store: Any) -> None:
    ours = replace(new_task(None, session_context="receiver:0123"), state=TaskState.SUBMITTING)
    await store.register_task(ours)
    # Before MPS answered with its TaskId: one notification naming it without the context (a
    # forgery with a static key, say), one with the context.
    forged = event(EOF_DOC, TaskId="T-ours", SessionContext="", ProcessEofInfo={"ErrCode": 1, "Message": "x"})
    genuine = event(REVIEW, TaskId="T-ours", SessionContext="receiver:0123")
    [orphan] = await store.record_events([forged])
    assert orphan.task is None
    [matched] = await store.record_events([genuine])
    assert matched.task is not None
    task, adopted = await store.finish_submission(
        ours.id, task_id="T-ours", request_id="r", error=None, now=FROZEN_NOW
    )
    assert adopted == 0
    assert (task.state, task.event_count) == (TaskState.RUNNING, 1)
    orphans = (await store.list_events(EventQuery(orphan=True))).items
    assert [e.event_id for e in orphans] == [forged.event_id]


def migration_numbers(dialect: str) -> list[int]:
    folder = Path(__file__).parent.parent / "receiver" / "stores" / "migrations" / dialect
    return [int(p.name.split("_", 1)[0]) for p in folder.glob("*.sql")]


@pytest.mark.parametrize("dialect", ["sqlite", "postgres"])
def test_migration_numbers_are_unique(dialect: str) -> None:
    numbers = migration_numbers(dialect)
    assert len(set(numbers)) == len(numbers)


async def test_a_sqlite_migration_numbered_below_the_newest_applied_is_still_applied(tmp_path: Path) -> None:
    # Branches number their migrations in parallel: one merged later may be below the newest applied.
    path = tmp_path / "gap.db"
    await (await SqliteStore.open(path)).aclose()
    con = sqlite3.connect(path)
    with con:
        con.execute("DELETE FROM schema_migrations WHERE version = 7")  # as if 0007 came with a later merge
        con.execute("DROP TABLE leases")
    con.close()
    s = await SqliteStore.open(path)
    try:
        assert await s.hold_lease("x", "me", ttl=10, now=1.0)
    finally:
        await s.aclose()


async def test_a_sqlite_store_migrated_before_versions_were_kept_keeps_its_history(tmp_path: Path) -> None:
    # A store from before the versions were recorded: migrations 1..8 applied in order, the number
    # in user_version, no schema_migrations table.
    path = tmp_path / "old.db"
    folder = Path(__file__).parents[1] / "receiver" / "stores" / "migrations" / "sqlite"
    con = sqlite3.connect(path)
    for script in sorted(folder.glob("*.sql")):
        if int(script.name.split("_", 1)[0]) <= 8:
            con.executescript(script.read_text())
    con.execute("PRAGMA user_version = 8")
    con.close()
    s = await SqliteStore.open(path)  # 1..8 taken as applied (they ran in order), the rest applied now
    try:
        await s.register_task(new_task())
        assert (await s.get_task("T1")) is not None
    finally:
        await s.aclose()
    applied = [v for (v,) in sqlite3.connect(path).execute("SELECT version FROM schema_migrations")]
    assert applied == sorted(migration_numbers("sqlite"))


@pytest.mark.postgres
async def test_a_postgres_migration_numbered_below_the_newest_applied_is_still_applied() -> None:
    async with postgres_database() as url:
        await (await PostgresStore.open(url)).aclose()
        con = await asyncpg.connect(url)
        await con.execute("DELETE FROM schema_migrations WHERE version = 4; DROP TABLE leases")
        await con.close()
        s = await PostgresStore.open(url)
        try:
            assert await s.hold_lease("x", "me", ttl=10, now=1.0)
        finally:
            await s.aclose()


@pytest.mark.postgres
async def test_postgres_statements_are_planned_with_each_runs_arguments_not_a_plan_of_young_tables() -> None:
    # A generic plan kept from when events was nearly empty scanned the whole table for
    # ``event_id = ANY($1)`` on every batch: ingest slowed as the table grew.
    async with postgres_database() as url:
        s = await PostgresStore.open(url)
        try:
            async with s._pool.acquire() as con:
                assert await con.fetchval("SHOW plan_cache_mode") == "force_custom_plan"
        finally:
            await s.aclose()
