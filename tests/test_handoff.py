"""Deliveries sent from memory: ingest here hands the dispatcher each commit's outbox rows, and a
lane that knows every pending delivery of its sink sends them with no claim. Real SQLite files;
a second store on the same file stands for another process writing it."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Sequence
from pathlib import Path
from typing import Any

import pytest

from receiver.dispatch import Dispatcher
from receiver.errors import SinkError
from receiver.events import Event
from receiver.ports import Delivery, DeliveryQuery, DeliveryState, OwnEvent, Recorded, Settlement
from receiver.recent import Handoff
from receiver.retries import SinkPolicy
from receiver.sinks.memory import MemorySink
from receiver.stores.sqlite import SqliteStore
from receiver.tasks import Task
from tests.builders import event, new_task, record
from tests.fakes import ScriptedSink
from tests.payloads import FROZEN_NOW, REVIEW
from tests.waiting import eventually

# A retry waits long enough for the test to commit more of the task meanwhile.
POLICY = SinkPolicy(retry_schedule=(0.3, 0.3, 0.3), jitter=0.0, breaker_threshold=1000)
SINKS = ("s",)


def route(e: Event, task: Task | None) -> Sequence[str]:
    return SINKS


def events_of(task_id: str, *sessions: str) -> list[Event]:
    return [event(REVIEW, TaskId=task_id, SessionId=s) for s in sessions]


class Claims:
    """Counts the claims a store is asked for (and makes them, as the store would)."""

    def __init__(self, store: SqliteStore) -> None:
        self.n = 0
        real = store.claim_deliveries

        async def claim(sink: str, **kw: Any) -> list[Delivery]:
            self.n += 1
            return await real(sink, **kw)

        store.claim_deliveries = claim  # type: ignore[method-assign]


class Rig:
    def __init__(self, store: SqliteStore, sink: ScriptedSink, dispatcher: Dispatcher) -> None:
        self.store, self.sink, self.dispatcher = store, sink, dispatcher
        self.claims = Claims(store)

    @property
    def dropped(self) -> int:
        """How often the lane went back to claims."""
        n = self.dispatcher.status()["s"].get("handoffs_dropped", 0)
        assert isinstance(n, int)
        return n

    @property
    def idle(self) -> bool:
        return self.dispatcher.status()["s"]["in_flight"] == 0

    @property
    def from_memory(self) -> bool:
        return bool(self.dispatcher.status()["s"]["from_memory"])

    async def ingest(self, events: list[Event], store: SqliteStore | None = None) -> list[Recorded]:
        """Commit through ``store`` (another process's, when given: nothing is handed over)."""
        recorded = await (store or self.store).record_events(events, route)
        if store is None:
            self.dispatcher.committed(events, recorded)
        return recorded

    async def warm(self) -> None:
        """Ingest one event, and wait until the lane is idle and sends from memory (a dispatcher
        is not handed anything before its process ingests)."""
        await self.ingest(events_of("T0", "warm"))
        await eventually(lambda: self.from_memory and self.sink.received == ["warm"] and self.idle, within=5)
        self.sink.received.clear()
        self.sink.attempts.clear()

    async def states(self) -> list[str]:
        """Each delivery's state once nothing is in flight (settled), the warm-up's left out."""
        await eventually(lambda: self.idle, within=5)
        page = await self.store.list_deliveries(DeliveryQuery(limit=1000))
        return [d.state for d in page.items if d.task_id != "T0"]


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    store = await SqliteStore.open(tmp_path / "r.db")
    for task_id in ("T0", "T1", "T2"):
        await store.register_task(new_task(task_id))
    sink = ScriptedSink("s", {"a2": [SinkError("once")]})
    dispatcher = Dispatcher(store, [(sink, POLICY)], poll_interval=0.5, handed=True)  # idle checks seldom
    rig = Rig(store, sink, dispatcher)
    await dispatcher.start()
    yield rig
    await dispatcher.stop(drain_seconds=1)
    await store.aclose()


async def test_the_outbox_ids_ingest_is_told_are_the_rows_it_wrote(tmp_path: Path) -> None:
    store = await SqliteStore.open(tmp_path / "r.db")
    try:
        await store.register_task(new_task("T1"))
        two = ("x", "y")
        first = await store.record_events(events_of("T1", "1", "2"), lambda e, t: two)
        again = events_of("T1", "2", "3")  # a repeat gets no rows; the new one follows on
        second = await store.record_events(again, lambda e, t: two)
        with sqlite3.connect(tmp_path / "r.db") as con:
            rows = {
                (sink, seq): i for i, sink, seq in con.execute("SELECT id, sink, event_seq FROM deliveries")
            }
        told = {
            (sink, r.seq): i for r in [*first, *second] for sink, i in zip(r.sinks, r.outbox, strict=True)
        }
        assert told == rows
        assert len(rows) == 6
        assert [r.outbox for r in second] == [(), (5, 6)]
    finally:
        await store.aclose()


async def test_a_lane_that_knows_every_pending_delivery_sends_from_memory_with_no_claim(rig: Rig) -> None:
    await rig.warm()
    claims = rig.claims.n
    await rig.ingest([*events_of("T1", "b1", "b2"), *events_of("T2", "c1")])
    await rig.ingest([*events_of("T2", "c2"), *events_of("T1", "b3")])
    await eventually(lambda: len(rig.sink.received) == 5, within=5)
    assert rig.claims.n == claims  # nothing was claimed: all came from memory
    assert [s for s in rig.sink.received if s.startswith("b")] == ["b1", "b2", "b3"]
    assert [s for s in rig.sink.received if s.startswith("c")] == ["c1", "c2"]
    await eventually(lambda: rig.idle, within=5)
    assert await rig.states() == [DeliveryState.DELIVERED] * 5
    assert rig.from_memory


async def test_a_retry_goes_back_to_claims_and_the_task_keeps_its_order(rig: Rig) -> None:
    await rig.warm()
    await rig.ingest(events_of("T1", "a1", "a2", "a3"))  # a2 fails once, and waits 0.3 s
    await eventually(lambda: rig.sink.attempts == ["a1", "a2"], within=5)
    await eventually(lambda: rig.idle, within=5)
    await rig.ingest(events_of("T1", "a4"))  # while a2 waits: it must not go first
    await eventually(lambda: len(rig.sink.received) == 4, within=5)
    assert rig.sink.attempts == ["a1", "a2", "a2", "a3", "a4"]
    assert rig.dropped >= 1
    assert await rig.states() == [DeliveryState.DELIVERED] * 4
    await eventually(lambda: rig.from_memory, within=5)  # idle and nothing pending: memory again


async def test_another_writer_sends_the_lane_to_claims_and_nothing_is_lost_or_sent_twice(
    rig: Rig, tmp_path: Path
) -> None:
    other = await SqliteStore.open(tmp_path / "r.db")
    try:
        await rig.warm()
        await rig.ingest(events_of("T1", "b1"))
        await rig.ingest(events_of("T1", "b2", "b3"), store=other)  # not handed over
        await rig.ingest(events_of("T1", "b4"))  # our writer sees the other's commit first
        await eventually(lambda: len(rig.sink.received) == 4, within=5)
        assert rig.sink.received == ["b1", "b2", "b3", "b4"]
        assert rig.dropped >= 1
        assert await rig.states() == [DeliveryState.DELIVERED] * 4
    finally:
        await other.aclose()


async def test_rows_another_writer_adds_while_this_process_writes_nothing_are_found(
    rig: Rig, tmp_path: Path
) -> None:
    other = await SqliteStore.open(tmp_path / "r.db")
    try:
        await rig.warm()
        await rig.ingest(events_of("T2", "c1", "c2"), store=other)
        await eventually(lambda: rig.sink.received == ["c1", "c2"], within=5)
    finally:
        await other.aclose()


async def test_whatever_makes_a_delivery_pending_but_ingest_here_moves_the_epoch(tmp_path: Path) -> None:
    store = await SqliteStore.open(tmp_path / "r.db")

    async def moves(action: Awaitable[object]) -> bool:
        before = store.handoff_epoch()
        await action
        return store.handoff_epoch() != before

    try:
        await store.register_task(task := new_task("T1"))
        await store.record_events(events_of("T1", "1"), route)
        assert not await moves(store.record_events(events_of("T1", "2"), route))  # handed over here
        assert await moves(store.redrive(DeliveryQuery(sink="s"), now=1.0))
        assert not await moves(store.redrive(DeliveryQuery(sink="nobody"), now=1.0))  # nothing pending anew
        assert not await moves(store.record_events(events_of("T9", "orphan"), route))
        assert await moves(store.register_task(new_task("T9"), route))  # its orphan adopted, routed again
        digest = OwnEvent(f"receiver:digest:{task.id}", "TaskDigest", "T1", task.id, "T1", 2.0, {"n": 2})
        assert await moves(store.record_own_event(digest, ["s"]))
        other = await SqliteStore.open(tmp_path / "r.db")
        try:
            await other.record_events(events_of("T1", "3"), route)
        finally:
            await other.aclose()
        assert await moves(store.record_events(events_of("T1", "4"), route))  # the other's commit seen
    finally:
        await store.aclose()


async def test_a_batched_lane_sends_from_memory_and_a_failed_batch_is_retried_whole_by_claims(
    tmp_path: Path,
) -> None:
    store = await SqliteStore.open(tmp_path / "r.db")
    for task_id in ("T0", "T1", "T2"):
        await store.register_task(new_task(task_id))
    policy = SinkPolicy(
        max_batch=4, max_wait=0.05, retry_schedule=(0.2, 0.2), jitter=0.0, breaker_threshold=1000
    )
    sink = MemorySink("s")
    dispatcher = Dispatcher(store, [(sink, policy)], poll_interval=0.5, handed=True)
    claims = Claims(store)
    await dispatcher.start()

    async def ingest(events: list[Event]) -> None:
        dispatcher.committed(events, await store.record_events(events, route))

    def sessions(task_id: str) -> list[str]:
        return [d["session_id"] for d in sink.received if d["task_id"] == task_id]

    def from_memory() -> bool:
        return bool(dispatcher.status()["s"]["from_memory"]) and dispatcher.status()["s"]["in_flight"] == 0

    try:
        await ingest(events_of("T0", "warm"))
        await eventually(lambda: from_memory() and len(sink.received) == 1, within=5)
        before = claims.n
        await ingest([*events_of("T1", "b1", "b2", "b3"), *events_of("T2", "c1", "c2", "c3")])
        await eventually(lambda: len(sink.received) == 7, within=5)
        assert claims.n == before  # batches of what was handed over, none claimed
        assert 1 < max(len(ids) for _, ids in sink.batches[1:]) <= 4
        assert (sessions("T1"), sessions("T2")) == (["b1", "b2", "b3"], ["c1", "c2", "c3"])
        await eventually(from_memory, within=5)

        sink.fail_remaining = 1
        await ingest(events_of("T1", "b4", "b5"))
        await eventually(lambda: len(sink.received) == 9, within=5)
        failed, again = sink.tried_batches[-2:]
        assert failed == again  # the same id and members, gathered again by claims
        assert claims.n > before
        assert dispatcher.status()["s"].get("handoffs_dropped", 0) != 0
        assert sessions("T1") == ["b1", "b2", "b3", "b4", "b5"]
        await eventually(lambda: dispatcher.status()["s"]["in_flight"] == 0, within=5)
        page = await store.list_deliveries(DeliveryQuery(limit=100))
        assert [d.state for d in page.items] == [DeliveryState.DELIVERED] * 9
        await eventually(from_memory, within=5)  # nothing pending: from memory again
    finally:
        await dispatcher.stop(drain_seconds=1)
        await store.aclose()


async def test_while_ingest_flows_settlements_ride_its_commits_instead_of_committing_alone(
    tmp_path: Path,
) -> None:
    store = await SqliteStore.open(tmp_path / "r.db")
    await store.register_task(new_task("T1"))
    sink = MemorySink("s")
    dispatcher = Dispatcher(store, [(sink, POLICY)], poll_interval=0.5, handed=True)
    alone: list[int] = []  # the settlements each transaction of their own committed
    real = store._riders._alone

    async def settle_alone(settlements: list[Settlement]) -> None:
        alone.append(len(settlements))
        await real(settlements)

    store._riders._alone = settle_alone
    await dispatcher.start()

    async def ingest(events: list[Event]) -> None:
        dispatcher.committed(events, await store.record_events(events, route))

    try:
        # Warm up: the lane sends from memory once its process has ingested and it is idle.
        await ingest(events_of("T1", "warm"))
        await eventually(lambda: bool(dispatcher.status()["s"]["from_memory"]) and len(sink.received) == 1)
        await asyncio.sleep(0.3)  # the warm-up's settlement is out of the way
        alone.clear()
        sessions = [f"n{i}" for i in range(30)]
        for s in sessions:  # one notification every 10 ms: each delivered before the next commit
            await ingest(events_of("T1", s))
            await asyncio.sleep(0.01)
        await eventually(lambda: dispatcher.status()["s"]["in_flight"] == 0, within=5)
        assert [d["session_id"] for d in sink.received[1:]] == sessions  # in order, each once
        # Every settlement but the last few rode an ingest commit (settled alone, each would
        # have cost a transaction and an fsync of its own: 30 of them).
        assert sum(alone) <= 2, alone
        page = await store.list_deliveries(DeliveryQuery(limit=100))
        assert [d.state for d in page.items] == [DeliveryState.DELIVERED] * 31
    finally:
        await dispatcher.stop(drain_seconds=1)
        await store.aclose()


def test_a_handoff_keeps_each_key_in_order_and_refuses_past_its_limit() -> None:
    handoff = Handoff(epoch=3, limit=3)
    made = [Delivery(id=i, sink="s", task_key=k, attempts=0, event=record()) for i, k in enumerate("aba", 1)]
    assert all(handoff.add(d) for d in made)
    assert not handoff.add(Delivery(id=4, sink="s", task_key="c", attempts=0, event=record()))
    assert handoff.ready(busy={"b"}) == ["a"]
    assert [d.id for d in handoff.take("a", 5)] == [1, 3]
    assert handoff.ready(busy=()) == ["b"]
    assert handoff.size == 1


async def test_a_dispatcher_its_process_does_not_hand_commits_to_always_claims(tmp_path: Path) -> None:
    store = await SqliteStore.open(tmp_path / "r.db")
    sink = ScriptedSink("s")
    dispatcher = Dispatcher(store, [(sink, POLICY)], poll_interval=0.02)  # as in `receiver dispatch`
    await dispatcher.start()
    try:
        await store.register_task(new_task("T1"))
        await store.record_events(events_of("T1", "1", "2"), route)
        await eventually(lambda: sink.received == ["1", "2"], within=5)
        await asyncio.sleep(0.2)  # idle polls, nothing pending
        assert dispatcher.status()["s"]["from_memory"] is False
    finally:
        await dispatcher.stop(drain_seconds=1)
        await store.aclose()


async def test_has_pending_sees_pending_deliveries_due_or_not_on_both_stores(store: Any) -> None:
    await store.register_task(new_task("T1"))
    assert not await store.has_pending("s")
    await store.record_events(events_of("T1", "1"), route)
    assert await store.has_pending("s")
    assert not await store.has_pending("other")
    [d] = await store.claim_deliveries("s", now=FROZEN_NOW + 10, limit=10, busy_keys=set())
    later = Settlement(d.id, DeliveryState.PENDING, 1, FROZEN_NOW + 3600, "retry later", FROZEN_NOW + 10)
    await store.settle_deliveries([later])
    assert await store.has_pending("s")  # waiting for its retry is pending still
    done = Settlement(d.id, DeliveryState.DELIVERED, 2, FROZEN_NOW + 20, None, FROZEN_NOW + 20)
    await store.settle_deliveries([done])
    assert not await store.has_pending("s")
    if isinstance(store, SqliteStore):
        assert store.handoff_epoch() is not None
    else:
        assert store.handoff_epoch() is None  # PostgreSQL cannot tell: every delivery is claimed
