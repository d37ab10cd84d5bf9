"""What the stores keep and for how long, run against both stores: retention beside dead letters,
stalls, the quarantine's bounds, redrive filters, adopted orphans routed, and the injected clock."""

from __future__ import annotations

import asyncio
import hashlib
import sqlite3
from dataclasses import replace
from pathlib import Path
from typing import Any

import msgspec
import pytest

from receiver.maintenance import maintain
from receiver.ports import DeliveryQuery, DeliveryState, EventQuery, Quarantined, Settlement
from receiver.recent import RecentEvents
from receiver.routing import SinkFilter, router
from receiver.settings import MaintenanceSettings
from receiver.stores import sqlite_writer
from receiver.stores.sqlite import SqliteStore
from receiver.tasks import Task, TaskState
from tests.builders import event, new_task
from tests.payloads import EOF_DOC, FROZEN_NOW, REVIEW

LATER = FROZEN_NOW + 10_000


async def settle_all(s: Any, sink: str, state: DeliveryState, at: float = FROZEN_NOW) -> None:
    page = await s.list_deliveries(DeliveryQuery(sink=sink, state=DeliveryState.PENDING, limit=1000))
    await s.settle_deliveries([Settlement(d.id, state, 1, at, "x", at) for d in page.items])


# --- retention ----------------------------------------------------------------------------------


async def test_retention_keeps_the_payload_of_a_dead_letter_and_redrive_sends_it_whole(store: Any) -> None:
    await store.record_events([event(REVIEW, at=FROZEN_NOW)], lambda e, t: ["s"])
    await settle_all(store, "s", DeliveryState.DEAD)
    await store.purge(LATER)  # long past the window
    assert await store.redrive(DeliveryQuery(sink="s"), now=LATER) == 1
    [again] = await store.claim_deliveries("s", now=LATER, limit=10, busy_keys=set())
    assert again.event.raw == {k: v for k, v in REVIEW.items() if k not in ("Timestamp", "Sign")}


async def test_retention_drops_delivered_rows_and_their_payloads_but_not_pending_ones(store: Any) -> None:
    done = event(REVIEW, SessionId="done")
    waiting = event(REVIEW, SessionId="waiting", TaskId="other-task", SessionContext="")
    fresh = event(REVIEW, SessionId="fresh", TaskId="third-task", SessionContext="", at=LATER)
    await store.record_events([done, waiting, fresh], lambda e, t: ["s"] if e is not fresh else [])
    [first, _] = await store.claim_deliveries("s", now=FROZEN_NOW, limit=10, busy_keys=set())
    await store.settle_deliveries(
        [Settlement(first.id, DeliveryState.DELIVERED, 1, FROZEN_NOW, None, FROZEN_NOW)]
    )
    assert await store.purge(FROZEN_NOW + 5_000) == (1, 1)
    raw = {e.session_id: e.raw for e in (await store.list_events(EventQuery())).items}
    assert raw == {"done": {}, "waiting": waiting.raw, "fresh": fresh.raw}
    [left] = (await store.list_deliveries(DeliveryQuery(sink="s"))).items
    assert left.state == DeliveryState.PENDING
    assert await store.purge(FROZEN_NOW + 5_000) == (0, 0)  # nothing more to do


async def test_quiet_tasks_are_marked_stalled_at_the_time_given(store: Any) -> None:
    await store.register_task(new_task("quiet"))  # created at t=1
    await store.register_task(new_task("busy"))
    await store.record_events([event(REVIEW, TaskId="busy", SessionContext="", at=FROZEN_NOW + 800)])
    assert await store.mark_stalled(FROZEN_NOW + 500, now=FROZEN_NOW + 900) == 1
    quiet = await store.get_task("quiet")
    assert (quiet.state, quiet.updated_at) == (TaskState.STALLED, FROZEN_NOW + 900)
    busy = await store.get_task("busy")
    assert busy.state is TaskState.RUNNING
    [rec] = await store.record_events([event(REVIEW, TaskId="quiet", SessionContext="", at=FROZEN_NOW + 950)])
    assert rec.task.state is TaskState.RUNNING  # revived, and the cache knew of the stall


# --- the quarantine -----------------------------------------------------------------------------


async def test_the_quarantine_keeps_64_kib_of_a_body_with_its_digest_and_size_and_purges_by_age(
    store: Any,
) -> None:
    huge = b"x" * 200_000 + b"tail"
    await store.quarantine(Quarantined("amqp", FROZEN_NOW, "too_large", "too big", None, huge, {}))
    await store.quarantine(Quarantined("http", LATER, "invalid_signature", "no", None, b"{}", {}))
    old, new = (await store.list_quarantine(after=0, limit=10)).items
    assert old.body == huge[: 64 * 1024]
    assert (old.body_sha256, old.body_size) == (hashlib.sha256(huge).hexdigest(), len(huge))
    assert (new.body, new.body_size) == (b"{}", 2)
    assert await store.purge_quarantine(FROZEN_NOW + 1) == 1
    [kept] = (await store.list_quarantine(after=0, limit=10)).items
    assert kept.channel == "http"


# --- redrive ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        (DeliveryQuery(sink="b"), {"b:t1:review:early", "b:t2:eof:late"}),
        (DeliveryQuery(state=DeliveryState.DELIVERED), {"a:t2:eof:late"}),
        (DeliveryQuery(task_id="t2"), {"b:t2:eof:late"}),
        (DeliveryQuery(notification_type="ProcessEof"), {"b:t2:eof:late"}),
        (DeliveryQuery(since=FROZEN_NOW + 50), {"b:t2:eof:late"}),
        (DeliveryQuery(until=FROZEN_NOW + 50), {"a:t1:review:early", "b:t1:review:early"}),
        (DeliveryQuery(sink="a", task_id="t1", notification_type="AiReviewResult"), {"a:t1:review:early"}),
    ],
)
async def test_redrive_takes_exactly_what_each_filter_names(
    store: Any, query: DeliveryQuery, expected: set[str]
) -> None:
    early = event(REVIEW, TaskId="t1", SessionContext="", at=FROZEN_NOW)
    late = event(EOF_DOC, TaskId="t2", SessionContext="", at=FROZEN_NOW + 100)
    await store.record_events([early, late], lambda e, t: ["a", "b"])
    await settle_all(store, "b", DeliveryState.DEAD)
    # Sink a: the early one dead, the late one delivered.
    [a_early, a_late] = (await store.list_deliveries(DeliveryQuery(sink="a"))).items
    await store.settle_deliveries(
        [
            Settlement(a_early.id, DeliveryState.DEAD, 1, FROZEN_NOW, "x", FROZEN_NOW),
            Settlement(a_late.id, DeliveryState.DELIVERED, 1, FROZEN_NOW, None, FROZEN_NOW),
        ]
    )
    q = query if query.state else DeliveryQuery(**{**_fields(query), "state": DeliveryState.DEAD})
    names = {early.event_id: "t1:review:early", late.event_id: "t2:eof:late"}
    assert await store.redrive(q, now=LATER, dry_run=True) == len(expected)
    assert await store.redrive(q, now=LATER) == len(expected)
    pending = (await store.list_deliveries(DeliveryQuery(state=DeliveryState.PENDING))).items
    assert {f"{d.sink}:{names[d.event_id]}" for d in pending} == expected
    assert all(d.attempts == 0 and d.next_attempt_at == LATER for d in pending)


def _fields(q: DeliveryQuery) -> dict[str, Any]:
    return {k: getattr(q, k) for k in ("sink", "task_id", "notification_type", "since", "until")}


# --- adoption -----------------------------------------------------------------------------------

SINKS = router([("all", SinkFilter()), ("vip", SinkFilter(task_labels={"tier": "vip"}))])


async def routed(s: Any) -> list[tuple[str, str]]:
    """(sink, SessionId) of every delivery in the outbox."""
    page = await s.list_deliveries(DeliveryQuery(limit=1000))
    by_id = {e.event_id: e.session_id for e in (await s.list_events(EventQuery())).items}
    return sorted((d.sink, by_id[d.event_id]) for d in page.items)


async def test_orphans_adopted_by_a_registered_task_reach_the_sinks_its_labels_match(store: Any) -> None:
    orphans = [event(REVIEW, TaskId="vip-1", SessionContext="", SessionId=f"o{i}") for i in range(2)]
    await store.record_events(orphans, SINKS)
    assert await routed(store) == [("all", "o0"), ("all", "o1")]  # orphans: no labels to match yet
    _, adopted = await store.register_task(_vip("vip-1"), SINKS)
    assert adopted == 2
    # Once each for the label sink, and no second row for the sink that had them already.
    assert await routed(store) == [("all", "o0"), ("all", "o1"), ("vip", "o0"), ("vip", "o1")]
    [head] = await store.claim_deliveries("vip", now=LATER, limit=10, busy_keys=set())
    assert head.event.session_id == "o0"  # one task: one at a time, in the order received


async def test_orphans_adopted_when_a_submission_learns_its_task_id_are_routed_too(store: Any) -> None:
    task = _vip(None, state=TaskState.SUBMITTING, session_context="ours:abc")
    await store.register_task(task, SINKS)
    await store.record_events([event(REVIEW, TaskId="late-id", SessionContext="", SessionId="o")], SINKS)
    done, adopted = await store.finish_submission(
        task.id, task_id="late-id", request_id="r", error=None, now=FROZEN_NOW + 50, route=SINKS
    )
    assert adopted == 1
    assert await routed(store) == [("all", "o"), ("vip", "o")]
    assert done.updated_at == FROZEN_NOW + 50


def _vip(task_id: str | None, **kw: Any) -> Task:
    """A task labelled tier=vip, registered at FROZEN_NOW + 100."""
    at = FROZEN_NOW + 100
    return replace(new_task(task_id), labels={"tier": "vip"}, created_at=at, updated_at=at, **kw)


# --- one clock ----------------------------------------------------------------------------------


async def test_a_task_adopting_older_orphans_is_updated_at_its_registration_never_before(store: Any) -> None:
    await store.record_events([event(REVIEW, TaskId="T-clock", SessionContext="", at=FROZEN_NOW)])
    task, adopted = await store.register_task(_vip("T-clock"))
    assert adopted == 1
    assert task.created_at == FROZEN_NOW + 100
    assert task.updated_at == FROZEN_NOW + 100  # was the orphan's FROZEN_NOW: before it was created
    assert task.last_event_at == FROZEN_NOW
    stored = await store.get_task("T-clock")
    assert stored.updated_at == FROZEN_NOW + 100


async def test_sink_switches_are_read_back_and_carry_the_time_given(store: Any) -> None:
    await store.set_sink_disabled("a", "410 Gone", now=FROZEN_NOW + 7)
    await store.set_sink_disabled("b", "410 Gone", now=FROZEN_NOW + 7)
    await store.set_sink_disabled("b", None, now=FROZEN_NOW + 8)
    assert await store.disabled_sinks() == {"a": "410 Gone"}


async def test_sqlite_sink_state_uses_the_injected_time(tmp_path: Path) -> None:
    s = await SqliteStore.open(tmp_path / "c.db")
    try:
        await s.set_sink_disabled("a", "gone", now=FROZEN_NOW + 7)
    finally:
        await s.aclose()
    with sqlite3.connect(tmp_path / "c.db") as con:
        assert con.execute("SELECT disabled_at FROM sink_state").fetchall() == [(FROZEN_NOW + 7,)]


# --- bounded caches -----------------------------------------------------------------------------


async def test_the_sqlite_writers_session_context_cache_is_bounded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sqlite_writer, "_CACHE_LIMIT", 20)
    s = await SqliteStore.open(tmp_path / "cache.db")
    try:
        for i in range(100):  # a sender making up a new SessionContext for every notification
            await s.record_events([event(REVIEW, SessionContext=f"ctx-{i}", SessionId=str(i))])
        writer = s._writer_side
        assert writer is not None
        assert len(writer._by_context) + len(writer._by_task_id) + len(writer._tasks) <= 21
    finally:
        await s.aclose()


# --- the maintenance pass -----------------------------------------------------------------------


async def test_the_maintenance_pass_stalls_and_purges_by_the_injected_clock(store: Any) -> None:
    now = FROZEN_NOW + 40 * 86400  # the app's clock: well past a 30-day window
    await store.register_task(new_task("quiet"))
    await store.quarantine(Quarantined("amqp", FROZEN_NOW, "too_large", "old", None, b"x", {}))
    await store.quarantine(Quarantined("amqp", now - 60, "too_large", "recent", None, b"y", {}))
    stop = asyncio.Event()
    settings = MaintenanceSettings(interval=3600, stall_after=900, retention_days=30)
    task = asyncio.create_task(maintain(store, settings, lambda: now, stop))
    try:
        deadline = asyncio.get_running_loop().time() + 10
        while [q.detail for q in (await store.list_quarantine(after=0, limit=10)).items] != ["recent"]:
            assert asyncio.get_running_loop().time() < deadline, "the old quarantine row was never purged"
            await asyncio.sleep(0.02)
    finally:
        stop.set()
        await task
    quiet = await store.get_task("quiet")
    assert (quiet.state, quiet.updated_at) == (TaskState.STALLED, now)


# --- leases -------------------------------------------------------------------------------------


async def test_a_lease_has_one_holder_until_it_expires_or_is_released(store: Any) -> None:
    assert await store.lease_holder("dispatch") is None
    assert await store.hold_lease("dispatch", "a", ttl=10, now=FROZEN_NOW)
    assert not await store.hold_lease("dispatch", "b", ttl=10, now=FROZEN_NOW + 5)
    assert await store.hold_lease("dispatch", "a", ttl=10, now=FROZEN_NOW + 5)  # renewed to +15
    assert not await store.hold_lease("dispatch", "b", ttl=10, now=FROZEN_NOW + 14)
    assert await store.lease_holder("dispatch") == ("a", FROZEN_NOW + 15)
    assert await store.hold_lease("dispatch", "b", ttl=10, now=FROZEN_NOW + 15)  # a's has expired
    assert not await store.hold_lease("dispatch", "a", ttl=10, now=FROZEN_NOW + 16)
    await store.release_lease("dispatch", "a")  # not a's to give up: nothing changes
    assert await store.lease_holder("dispatch") == ("b", FROZEN_NOW + 25)
    await store.release_lease("dispatch", "b")
    assert await store.lease_holder("dispatch") is None
    assert await store.hold_lease("dispatch", "a", ttl=10, now=FROZEN_NOW + 17)
    assert await store.hold_lease("maintenance", "b", ttl=10, now=FROZEN_NOW + 17)  # leases are apart


# --- settlements ride with ingest ----------------------------------------------------------------


async def test_settlements_made_while_ingest_writes_commit_with_it_not_alone(
    sqlite_store: SqliteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    route = router([("log", SinkFilter())])
    await sqlite_store.record_events([event(REVIEW, SessionId="first")], route)
    page = await sqlite_store.list_deliveries(DeliveryQuery(sink="log", limit=10))
    (first,) = page.items
    transactions = 0
    real = sqlite_writer.SqliteWriter.transaction

    def counted(self: Any, body: Any) -> Any:
        nonlocal transactions
        transactions += 1
        return real(self, body)

    monkeypatch.setattr(sqlite_writer.SqliteWriter, "transaction", counted)
    batch = [event(REVIEW, SessionId=f"s-{i}") for i in range(200)]
    ingest = asyncio.create_task(sqlite_store.record_events(batch, route))
    await asyncio.sleep(0)  # the ingest transaction is on the writer thread (or waiting for it)
    settled = Settlement(first.id, DeliveryState.DELIVERED, 1, FROZEN_NOW, None, FROZEN_NOW)
    await sqlite_store.settle_deliveries([settled])
    await ingest
    assert transactions == 1  # one commit (one fsync) for both
    page = await sqlite_store.list_deliveries(
        DeliveryQuery(sink="log", state=DeliveryState.DELIVERED, limit=10)
    )
    assert [d.id for d in page.items] == [first.id]
    # With no ingest to ride with, a settlement is committed at once, on its own.
    page = await sqlite_store.list_deliveries(DeliveryQuery(sink="log", state=DeliveryState.PENDING, limit=1))
    (second,) = page.items
    await sqlite_store.settle_deliveries([msgspec.structs.replace(settled, id=second.id)])
    assert transactions == 2


async def test_a_failed_ingest_transaction_keeps_the_settlements_that_rode_with_it(
    sqlite_store: SqliteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    route = router([("log", SinkFilter())])
    await sqlite_store.record_events([event(REVIEW, SessionId="first")], route)
    (first,) = (await sqlite_store.list_deliveries(DeliveryQuery(sink="log", limit=10))).items
    real = sqlite_writer.SqliteWriter._record
    calls = 0

    def failing_once(self: Any, *args: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise sqlite3.OperationalError("disk I/O error")
        return real(self, *args)

    monkeypatch.setattr(sqlite_writer.SqliteWriter, "_record", failing_once)
    ingest = asyncio.create_task(sqlite_store.record_events([event(REVIEW, SessionId="second")], route))
    await asyncio.sleep(0)
    settled = Settlement(first.id, DeliveryState.DELIVERED, 1, FROZEN_NOW, None, FROZEN_NOW)
    await sqlite_store.settle_deliveries([settled])  # committed alone once the ingest failed
    with pytest.raises(Exception, match="disk I/O"):
        await ingest
    page = await sqlite_store.list_deliveries(
        DeliveryQuery(sink="log", state=DeliveryState.DELIVERED, limit=10)
    )
    assert [d.id for d in page.items] == [first.id]


# --- claims: lines, and events from memory --------------------------------------------------------


async def test_a_claim_takes_each_task_line_in_order_up_to_a_delivery_waiting_for_a_retry(store: Any) -> None:
    route = router([("s", SinkFilter())])
    await store.register_task(new_task("T1"))
    await store.register_task(new_task("T2"))
    docs = [("T1", "a"), ("T2", "b"), ("T1", "c"), ("T1", "d"), ("T2", "e")]
    await store.record_events([event(REVIEW, TaskId=t, SessionId=s) for t, s in docs], route)
    claimed = await store.claim_deliveries("s", now=LATER, limit=10, busy_keys=set(), per_key=2)
    by_key: dict[str, list[str]] = {}
    for d in claimed:
        by_key.setdefault(d.task_key, []).append(d.event.session_id)
    assert by_key == {"T1": ["a", "c"], "T2": ["b", "e"]}  # per_key of each line, oldest first
    # A retry due later holds back its line: the line ends before it.
    [a, c] = [d for d in claimed if d.task_key == "T1"]
    await store.settle_deliveries(
        [
            Settlement(a.id, DeliveryState.DELIVERED, 1, LATER, None, LATER),
            Settlement(c.id, DeliveryState.PENDING, 1, LATER + 60, "502", LATER),
        ]
    )
    again = await store.claim_deliveries("s", now=LATER, limit=10, busy_keys={"T2"}, per_key=5)
    assert again == []  # T1's head (c) is not due; T2 is busy
    later = await store.claim_deliveries("s", now=LATER + 61, limit=10, busy_keys={"T2"}, per_key=5)
    assert [d.event.session_id for d in later] == ["c", "d"]


async def test_events_given_from_memory_are_what_the_store_would_have_read(store: Any) -> None:
    route = router([("s", SinkFilter())])
    await store.register_task(new_task("T1"))
    batch = [event(REVIEW, TaskId="T1", SessionId="m-1"), event(EOF_DOC, TaskId="T1", SessionId="m-2")]
    recorded = await store.record_events(batch, route)
    recent = RecentEvents()
    recent.add(batch, recorded)
    read = await store.claim_deliveries("s", now=LATER, limit=10, busy_keys=set(), per_key=10)
    after_the_lease = LATER + 3600  # PostgreSQL leased the first claim's lines
    given = await store.claim_deliveries(
        "s", now=after_the_lease, limit=10, busy_keys=set(), per_key=10, known=recent.get
    )
    assert [d.event for d in given] == [d.event for d in read]

    def marked(seq: int) -> Any:
        found = recent.get(seq)
        return None if found is None else msgspec.structs.replace(found, duplicates=99)

    later = after_the_lease + 3600
    taken = await store.claim_deliveries("s", now=later, limit=10, busy_keys=set(), per_key=10, known=marked)
    assert [d.event.duplicates for d in taken] == [99, 99]  # read from memory, not from the store
    orphan = [event(REVIEW, TaskId="nobody", SessionId="o-1")]
    recent.add(orphan, await store.record_events(orphan, route))
    assert recent.get((await store.list_events(EventQuery(task_id="nobody"))).items[0].seq) is None
