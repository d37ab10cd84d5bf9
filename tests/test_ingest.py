"""The ingest use case: group commit, outcomes, the summary line (in-memory store; dedup on SQLite)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from receiver.errors import InvalidNotificationError, SignatureError, StoreUnavailableError, UnstorableError
from receiver.events import Channel, NotifyKeys, SignPolicy, Verdict
from receiver.ingest import Ingestor, IngestResult
from receiver.ports import EventQuery
from receiver.stores.sqlite import SqliteStore
from tests.fakes import MemoryEventLog
from tests.payloads import EOF_DOC, FROZEN_NOW, NOTIFY_KEY, body, signed


def ingestor(
    store: MemoryEventLog, policy: SignPolicy = SignPolicy.REQUIRED, max_batch: int = 256
) -> Ingestor:
    return Ingestor(
        store,
        keys=NotifyKeys(static=(NOTIFY_KEY,)),
        policies={Channel.HTTP: policy, Channel.AMQP: policy},
        max_batch=max_batch,
        clock=lambda: FROZEN_NOW,
    )


def distinct(n: int) -> list[bytes]:
    return [body(signed({**EOF_DOC, "TaskId": f"task-{i}"})) for i in range(n)]


async def test_concurrent_notifications_share_one_commit_and_each_waits_for_it() -> None:
    store = MemoryEventLog()
    store.gate = asyncio.Event()
    ing = ingestor(store)
    pending = [asyncio.create_task(ing.ingest(b, Channel.HTTP)) for b in distinct(50)]
    await asyncio.wait_for(store.at_gate.wait(), timeout=5)  # the commit is under way, held
    assert not any(t.done() for t in pending)  # nobody is answered before the commit
    store.gate.set()
    results = await asyncio.gather(*pending)
    assert not any(r.recorded.duplicate for r in results)  # every one stored
    assert sum(len(b) for b in store.batches) == 50
    assert len(store.batches) <= 2  # the first arrival may commit alone; the rest ride together


async def test_batches_are_capped() -> None:
    store = MemoryEventLog()
    store.gate = asyncio.Event()
    ing = ingestor(store, max_batch=8)
    pending = [asyncio.create_task(ing.ingest(b, Channel.HTTP)) for b in distinct(30)]
    await asyncio.sleep(0)
    store.gate.set()
    await asyncio.gather(*pending)
    assert max(len(b) for b in store.batches) <= 8
    assert sum(len(b) for b in store.batches) == 30


async def test_a_failed_commit_fails_every_waiter_in_it_and_the_next_batch_still_runs() -> None:
    store = MemoryEventLog()
    store.down = True
    ing = ingestor(store)
    outcomes = await asyncio.gather(
        *(ing.ingest(b, Channel.HTTP) for b in distinct(5)), return_exceptions=True
    )
    assert all(isinstance(o, StoreUnavailableError) for o in outcomes)
    store.down = False
    result = await ing.ingest(distinct(1)[0], Channel.HTTP)
    assert not result.recorded.duplicate  # stored


async def test_the_same_notification_over_both_channels_is_stored_once_and_counted_as_a_duplicate(
    tmp_path: Path,
) -> None:
    # Dedup is the store's (a UNIQUE event id): run it against the real one, not the fake.
    store = await SqliteStore.open(tmp_path / "dedup.db")
    try:
        ing = ingestor(store)  # type: ignore[arg-type]  # the real store, through the same port
        doc = signed(EOF_DOC)
        first, second = await asyncio.gather(
            ing.ingest(body(doc), Channel.HTTP), ing.ingest(body(doc), Channel.AMQP)
        )
        assert (first.recorded.duplicate, second.recorded.duplicate) == (False, True)  # stored, duplicate
        assert first.event.event_id == second.event.event_id
        [stored] = (await store.list_events(EventQuery())).items
        assert (stored.event_id, stored.channel, stored.duplicates) == (first.event.event_id, "http", 1)
    finally:
        await store.aclose()


async def test_invalid_and_unsigned_notifications_never_reach_the_store() -> None:
    store = MemoryEventLog()
    ing = ingestor(store)
    with pytest.raises(InvalidNotificationError):
        await ing.ingest(b"{", Channel.HTTP)
    with pytest.raises(SignatureError):
        await ing.ingest(body(EOF_DOC), Channel.HTTP)
    assert store.batches == []


async def test_policy_is_per_channel() -> None:
    store = MemoryEventLog()
    ing = Ingestor(
        store,
        keys=NotifyKeys(static=(NOTIFY_KEY,)),
        policies={Channel.HTTP: SignPolicy.REQUIRED, Channel.AMQP: SignPolicy.IF_PRESENT},
        clock=lambda: FROZEN_NOW,
    )
    result = await ing.ingest(body(EOF_DOC), Channel.AMQP)
    assert result.event.verdict is Verdict.UNSIGNED
    with pytest.raises(SignatureError):
        await ing.ingest(body(EOF_DOC), Channel.HTTP)


async def test_one_summary_line_per_notification_whatever_the_outcome() -> None:
    store = MemoryEventLog()
    ing = ingestor(store)
    good = body(signed(EOF_DOC))
    with capture_logs() as logs:
        await ing.ingest(good, Channel.HTTP)
        await ing.ingest(good, Channel.HTTP)
        with pytest.raises(InvalidNotificationError):
            await ing.ingest(b"[]", Channel.AMQP)
        with pytest.raises(SignatureError):
            await ing.ingest(body(signed(EOF_DOC, key="nope")), Channel.HTTP)
    lines = [entry for entry in logs if entry["event"] == "notification"]
    assert [line["outcome"] for line in lines] == ["stored", "duplicate", "invalid", "unauthorized"]
    stored = lines[0]
    assert stored["task_id"] == EOF_DOC["TaskId"]
    assert stored["notification_type"] == "ProcessEof"
    assert stored["channel"] == "http"
    assert stored["duration_ms"] >= 0
    assert lines[2]["channel"] == "amqp"
    assert lines[3]["task_id"] == EOF_DOC["TaskId"]
    assert all(NOTIFY_KEY not in repr(line) for line in lines)


async def test_an_event_that_breaks_its_batch_fails_alone_and_its_neighbours_are_stored() -> None:
    store = MemoryEventLog()
    store.gate = asyncio.Event()
    ing = ingestor(store)
    bodies = distinct(6)
    poison = body(signed({**EOF_DOC, "TaskId": "poison"}))
    real_commit = store.record_events

    async def picky(events, route=None):  # type: ignore[no-untyped-def]
        if any(e.task_id == "poison" for e in events):
            raise TypeError("cannot store this one")
        return await real_commit(events, route)

    store.record_events = picky  # type: ignore[method-assign]
    ing = ingestor(store)
    pending = [asyncio.create_task(ing.ingest(b, Channel.HTTP)) for b in [*bodies[:3], poison, *bodies[3:]]]
    await asyncio.sleep(0)
    store.gate.set()
    outcomes = await asyncio.gather(*pending, return_exceptions=True)
    assert isinstance(outcomes[3], UnstorableError)
    stored = [o for i, o in enumerate(outcomes) if i != 3]
    assert [isinstance(o, IngestResult) and not o.recorded.duplicate for o in stored] == [True] * 6
    assert len(store.events) == 6
