"""The fakes keep the rules of the ports they stand for: the same calls on a fake and on the real
store (SQLite) leave the same outcome."""

from __future__ import annotations

from pathlib import Path

from receiver.events import Event
from receiver.ports import DeliveryQuery, DeliveryState, EventRecord, Outbox, Settlement
from receiver.stores.sqlite import SqliteStore
from tests.builders import event
from tests.fakes import MemoryOutbox
from tests.payloads import FROZEN_NOW, QUALITY, REVIEW

NOW = FROZEN_NOW + 100


async def outcome(outbox: Outbox) -> list[tuple[str, str, str, int]]:
    """Claim every line, settle each delivery by its sink and event, then redrive the dead ones of
    sink ``a`` (counted first): what can be claimed after that, as (sink, session, state, attempts)."""
    dead, delivered = DeliveryState.DEAD, DeliveryState.DELIVERED
    states = {"a": [dead, delivered, dead], "b": [dead, dead, dead]}
    for sink in ("a", "b"):
        claimed = await outbox.claim_deliveries(sink, now=NOW, limit=10, busy_keys=set(), per_key=10)
        by_session = sorted(claimed, key=lambda d: d.event.session_id)
        await outbox.settle_deliveries(
            [
                Settlement(d.id, state, 1, NOW, "x" if state == DeliveryState.DEAD else None, NOW)
                for d, state in zip(by_session, states[sink], strict=True)
            ]
        )
    seen: list[int] = []
    query = DeliveryQuery(sink="a", state=DeliveryState.DEAD)
    assert await outbox.redrive(query, now=NOW, dry_run=True) == 2
    assert await outbox.redrive(query, now=NOW, progress=seen.append) == 2
    assert seen[-1] == 2
    left: list[tuple[str, str, str, int]] = []
    for sink in ("a", "b"):
        again = await outbox.claim_deliveries(sink, now=NOW, limit=10, busy_keys=set(), per_key=10)
        left.extend((sink, d.event.session_id, "pending", d.attempts) for d in again)
    return sorted(left)


def stored(e: Event, seq: int) -> EventRecord:
    """An event as the store would give it back (an orphan: no task registered here)."""
    return EventRecord(
        seq=seq, event_id=e.event_id, task_id=e.task_id, task_ref=None, matched_by=None,
        notification_type=e.notification_type, session_id=e.session_id, session_context=e.session_context,
        channel=e.channel.value, received_at=e.received_at, verdict=e.verdict.value, late=False, duplicates=0,
        err_code=e.err_code, err_message=e.err_message, findings=[], body=e.body,
    )  # fmt: skip


async def test_the_memory_outbox_claims_settles_and_redrives_as_the_sqlite_store_does(tmp_path: Path) -> None:
    sessions = [(REVIEW, "s1"), (QUALITY, "s2"), (REVIEW, "s3")]
    recorded = [event({**doc, "SessionId": session}) for doc, session in sessions]
    store = await SqliteStore.open(tmp_path / "r.db")
    try:
        await store.record_events(recorded, lambda e, t: ["a", "b"])
        real = await outcome(store)
    finally:
        await store.aclose()
    fake = MemoryOutbox()
    for sink in ("a", "b"):
        for seq, e in enumerate(recorded, start=1):
            fake.add(sink, stored(e, seq))
    assert await outcome(fake) == real
    assert real == [("a", "s1", "pending", 0), ("a", "s3", "pending", 0)]  # the dead of a, redriven
