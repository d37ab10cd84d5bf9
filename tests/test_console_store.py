"""What the console reads from the stores, on SQLite and on PostgreSQL alike: events by finding and by
recognized text (CJK included), tasks by label and search, delivery attempts, the per-minute counts
every process adds to, and the outbox by task and by sink."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from receiver.http.console.counts import IngestCounts
from receiver.ports import DeliveryQuery, DeliveryState, EventQuery, Settlement
from receiver.tasks import TaskState
from tests import console_data
from tests.builders import event, new_task
from tests.payloads import FROZEN_NOW, REVIEW


def review(n: int, *items: tuple[str, dict[str, Any]]) -> Any:
    result_set = [{"Type": kind, f"{kind}ResultSet": [item]} for kind, item in items]
    return event(
        {
            "NotificationType": "AiReviewResult",
            "TaskId": "T-search",
            "AiReviewResultInfo": {"ResultSet": result_set},
            "SessionId": f"s-{n}",
            "SessionContext": "",
        },
        at=FROZEN_NOW + n,
    )


def hit(suggestion: str, label: str, confidence: float) -> dict[str, Any]:
    return {
        "StartPtsTime": 1.0,
        "EndPtsTime": 2.0,
        "Confidence": confidence,
        "Suggestion": suggestion,
        "Label": label,
    }


async def seqs(s: Any, **filters: Any) -> list[int]:
    page = await s.list_events(EventQuery(limit=1000, **filters))
    return [e.seq for e in page.items]


async def test_recognized_text_is_found_by_any_case_insensitive_substring_cjk_included(store: Any) -> None:
    docs = [
        console_data.speech(1.0, "Welcome to the Evening Stream", "欢迎来到今晚的直播", 1),
        console_data.subtitle(2.0, "直播间的朋友们好", "Hello friends", 2),
        console_data.ocr(3.0, "100%_OFF <b>today</b>", 3),
        console_data.review(4.0, "block", "porn", None, 4),
    ]
    recorded = await store.record_events([event(d, at=FROZEN_NOW + i) for i, d in enumerate(docs)])
    speech, subtitle, ocr, _ = (r.seq for r in recorded)
    assert await seqs(store, text="直播") == [speech, subtitle]  # two characters, in a translation too
    assert await seqs(store, text="evening STREAM") == [speech]
    assert await seqs(store, text="FRIENDS") == [subtitle]
    assert await seqs(store, text="%_o") == [ocr]  # LIKE's wildcards are characters here
    assert await seqs(store, text="_x") == []
    assert await seqs(store, text="<b>today") == [ocr]
    assert await seqs(store, text="porn") == []  # a label is not recognized text
    assert await seqs(store, text="a\x00b") == []  # NUL: nothing, and no error, on either store
    assert await seqs(store, text="直播", notification_type="AiSmartSubtitleResult") == [subtitle]


async def test_finding_conditions_are_met_together_by_one_finding(store: Any) -> None:
    both = review(
        1, ("ImagePorn", hit("pass", "normal", 99.0)), ("ImagePolitical", hit("block", "flag", 70.0))
    )
    porn_block = review(2, ("ImagePorn", hit("block", "porn", 91.0)))
    a, b = (r.seq for r in await store.record_events([both, porn_block]))
    assert await seqs(store, kind="ImagePorn") == [a, b]
    assert await seqs(store, kind="ImagePorn", suggestion="block") == [b]  # not a's pass + its other block
    assert await seqs(store, kind="ImagePolitical", suggestion="block") == [a]
    assert await seqs(store, suggestion="block", min_confidence=80) == [b]
    assert await seqs(store, label="flag") == [a]
    assert await seqs(store, label="fla") == []  # labels are whole
    assert await seqs(store, kind="imageporn") == []  # and exact, as sink filters have them
    assert await seqs(store, min_confidence=95) == [a]


async def test_time_ranges_and_newest_first_pages_follow_their_cursor(store: Any) -> None:
    recorded = await store.record_events(
        [review(n, ("ImagePorn", hit("block", "porn", 90.0))) for n in range(7)]
    )
    all_seqs = [r.seq for r in recorded]
    assert await seqs(store, since=FROZEN_NOW + 2, until=FROZEN_NOW + 5) == all_seqs[2:5]
    assert await seqs(store, since=FROZEN_NOW + 2, until=FROZEN_NOW + 5, kind="ImagePorn") == all_seqs[2:5]
    seen, after = [], 0
    while True:
        page = await store.list_events(EventQuery(descending=True, after=after, limit=3, suggestion="block"))
        seen += [e.seq for e in page.items]
        if page.next is None:
            break
        after = int(page.next)
    assert seen == list(reversed(all_seqs))


async def test_tasks_are_found_by_label_and_by_a_part_of_their_ids_newest_first(store: Any) -> None:
    one = new_task("T-one-abc", session_context='{"room":"r-1"}')
    two = replace(new_task("T-two"), labels={"room": "42", "x": 'a"b'})
    three = replace(new_task(None), session_id="sess-xyz")
    for t in (one, two, three):
        await store.register_task(t)

    async def found(**kw: Any) -> list[str]:
        page = await store.list_tasks(**{"state": None, "after": None, "limit": 100, **kw})
        return [t.id for t in page.items]

    assert await found(label=("room", "42")) == [two.id]
    assert await found(label=("room", "4")) == []
    assert await found(label=("x", 'a"b')) == [two.id]
    assert await found(label=("team", "a")) == [one.id, three.id]  # new_task's default labels
    assert await found(search="abc") == [one.id]
    assert await found(search="r-1") == [one.id]  # in the SessionContext
    assert await found(search="xyz") == [three.id]
    assert await found(search=three.id) == [three.id]
    assert await found(search="a\x00") == []
    assert await found(newest_first=True) == [three.id, two.id, one.id]
    page = await store.list_tasks(state=None, after=None, limit=2, newest_first=True)
    rest = await store.list_tasks(state=None, after=page.next, limit=2, newest_first=True)
    assert [t.id for t in page.items + rest.items] == [three.id, two.id, one.id]
    assert await found(state=TaskState.SUBMITTED, search="T-two") == [two.id]


async def test_each_settlement_is_kept_as_an_attempt_with_status_latency_and_snippet(store: Any) -> None:
    await store.record_events([review(1, ("ImagePorn", hit("block", "porn", 90.0)))], lambda e, t: ["s"])
    [d] = await store.claim_deliveries("s", now=FROZEN_NOW + 100, limit=1, busy_keys=set())
    await store.settle_deliveries(
        [
            Settlement(
                d.id,
                DeliveryState.PENDING,
                1,
                FROZEN_NOW + 1,
                "answered 503",
                FROZEN_NOW,
                status=503,
                latency_ms=12.5,
                snippet="busy",
            )
        ]
    )
    await store.settle_deliveries(
        [
            Settlement(
                d.id,
                DeliveryState.DELIVERED,
                2,
                FROZEN_NOW + 2,
                None,
                FROZEN_NOW + 2,
                status=200,
                latency_ms=3.0,
                snippet="{}",
            )
        ]
    )
    attempts = await store.list_attempts(d.id)
    assert [(a.attempt, a.outcome, a.status, a.latency_ms, a.snippet, a.error) for a in attempts] == [
        (1, "failed", 503, 12.5, "busy", "answered 503"),
        (2, "delivered", 200, 3.0, "{}", None),
    ]
    assert await store.list_attempts(d.id + 1000) == []
    # Purged with their delivery, like the outbox.
    assert (await store.purge(FROZEN_NOW + 10))[1] == 1
    assert await store.list_attempts(d.id) == []


async def test_a_delivered_attempt_stays_on_its_delivery_and_in_the_history_after_a_redrive(
    store: Any,
) -> None:
    await store.record_events([review(1, ("ImagePorn", hit("block", "porn", 90.0)))], lambda e, t: ["s"])
    [d] = await store.claim_deliveries("s", now=FROZEN_NOW + 100, limit=1, busy_keys=set())
    delivered = Settlement(
        d.id,
        DeliveryState.DELIVERED,
        1,
        FROZEN_NOW + 1,
        None,
        FROZEN_NOW + 1,
        status=204,
        latency_ms=2.0,
        snippet="",
    )
    await store.settle_deliveries([delivered])
    first = [
        (a.attempt, a.outcome, a.status, a.latency_ms, a.snippet) for a in await store.list_attempts(d.id)
    ]
    assert first == [(1, "delivered", 204, 2.0, "")]
    assert await store.redrive(DeliveryQuery(id=d.id), now=FROZEN_NOW + 2) == 1
    assert await store.redrive(DeliveryQuery(id=d.id), now=FROZEN_NOW + 2) == 1  # again: kept once
    [again] = await store.claim_deliveries("s", now=FROZEN_NOW + 100, limit=1, busy_keys=set())
    await store.settle_deliveries(
        [Settlement(again.id, DeliveryState.DELIVERED, 1, FROZEN_NOW + 3, None, FROZEN_NOW + 3, status=200)]
    )
    attempts = await store.list_attempts(d.id)
    assert [(a.attempt, a.at, a.outcome, a.status) for a in attempts] == [
        (1, FROZEN_NOW + 1, "delivered", 204),
        (1, FROZEN_NOW + 3, "delivered", 200),
    ]


async def test_the_counts_of_several_processes_add_up_in_the_store(store: Any) -> None:
    clock = [FROZEN_NOW]
    first, second = IngestCounts(lambda: clock[0]), IngestCounts(lambda: clock[0])
    for outcome in ("stored", "stored", "invalid"):
        first.add(outcome)
    second.add("stored")
    second.add("unauthorized")
    clock[0] += 60
    second.add("stored")
    assert await first.flush(store) == 2
    assert await second.flush(store) == 3
    assert await first.flush(store) == 0  # nothing new
    minute = int(FROZEN_NOW // 60)
    assert await store.ingest_counts(minute) == [
        (minute, "invalid", 1),
        (minute, "stored", 3),
        (minute, "unauthorized", 1),
        (minute + 1, "stored", 1),
    ]
    assert await store.purge_ingest_counts((minute + 1) * 60) == 3
    assert await store.ingest_counts(0) == [(minute + 1, "stored", 1)]


async def test_backlog_dead_letters_and_a_tasks_deliveries_are_read_per_sink(store: Any) -> None:
    docs = [review(n, ("ImagePorn", hit("block", "porn", 90.0))) for n in range(3)]
    await store.record_events(docs, lambda e, t: ["a", "b"])
    claimed = await store.claim_deliveries("a", now=FROZEN_NOW + 100, limit=1, busy_keys=set())
    await store.settle_deliveries(
        [Settlement(claimed[0].id, DeliveryState.DEAD, 1, FROZEN_NOW, "x", FROZEN_NOW)]
    )
    await store.set_sink_disabled("c", "gone", now=FROZEN_NOW)
    backlog = {s.sink: s for s in await store.sink_backlog(["a", "b"])}
    assert set(backlog) == {"a", "b", "c"}
    assert (backlog["a"].pending, backlog["a"].dead, backlog["b"].pending) == (2, 1, 3)
    assert backlog["b"].oldest_pending_at == FROZEN_NOW
    assert backlog["c"].disabled == "gone"
    assert await store.task_delivery_counts("T-search") == [
        ("a", "dead", 1),
        ("a", "pending", 2),
        ("b", "pending", 3),
    ]
    assert await store.task_delivery_counts("other") == []
    page = await store.list_deliveries(DeliveryQuery(id=claimed[0].id))
    assert [d.state for d in page.items] == ["dead"]


async def test_a_tasks_timeline_reads_its_events_findings_from_a_seq_on(store: Any) -> None:
    task = new_task("T-search")
    await store.register_task(task)
    recorded = await store.record_events(
        [review(n, ("ImagePorn", hit("block", "porn", 90.0))) for n in range(3)]
    )
    first = await store.task_timeline(task.id, after=0, limit=2)
    assert [e.seq for e in first] == [r.seq for r in recorded[:2]]
    assert first[0].findings[0]["suggestion"] == "block"
    rest = await store.task_timeline(task.id, after=first[-1].seq, limit=10)
    assert [e.seq for e in rest] == [recorded[2].seq]


@pytest.mark.parametrize("text", ["a", ""])
def test_a_text_search_needs_two_characters(text: str) -> None:
    from receiver.http.events import event_query
    from receiver.http.params import BadParameterError

    with pytest.raises(BadParameterError, match="text: expected at least 2 characters"):
        event_query({"text": text})


async def test_a_search_looks_through_a_bounded_window_per_page_and_its_next_goes_on(
    store: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from receiver.stores import reads

    monkeypatch.setattr(reads, "SEARCH_WINDOW", 4)
    docs = [console_data.ocr(float(i), "needle" if i in (1, 9) else "hay", i) for i in range(12)]
    recorded = await store.record_events([event(d, at=FROZEN_NOW + i) for i, d in enumerate(docs)])
    wanted = [recorded[1].seq, recorded[9].seq]
    for descending in (False, True):
        seen, pages, after = [], 0, 0
        while True:
            page = await store.list_events(
                EventQuery(text="needle", descending=descending, after=after, limit=10)
            )
            seen += [e.seq for e in page.items]
            pages += 1
            if page.next is None:
                break
            after = int(page.next)
        assert seen == (wanted[::-1] if descending else wanted)
        assert pages == 3  # twelve events, four a page, whatever the matches


async def execute(s: Any, sql: str) -> None:
    """Raw SQL on either store (to stage what an older version left)."""
    if hasattr(s, "_write_with"):
        await s._write_with(lambda w: w.transaction(lambda: w.con.execute(sql)))
    else:
        await s._run(lambda con: con.execute(sql))


async def test_events_stored_before_the_search_existed_are_found_once_the_backfill_has_run(
    store: Any,
) -> None:
    docs = [console_data.ocr(float(i), f"word{i} 旧的", i) for i in range(5)]
    await store.record_events([event(d, at=FROZEN_NOW + i) for i, d in enumerate(docs)])
    # As an older version left them: no search rows, and the migration's mark at the newest.
    await execute(store, "DELETE FROM event_search")
    await execute(store, "UPDATE search_backfill SET upto = (SELECT max(seq) FROM events)")
    assert await seqs(store, text="旧的") == []
    assert await store.backfill_search(3) == 3
    assert len(await seqs(store, text="旧的")) == 3  # the newest three first
    assert await store.backfill_search(3) == 2
    assert await store.backfill_search(3) == 0
    assert len(await seqs(store, text="旧的")) == 5
    assert await seqs(store, text="word4") == await seqs(store, text="WORD4")


async def test_the_maintenance_loop_runs_the_backfill(store: Any) -> None:
    import asyncio

    from receiver.maintenance import maintain
    from receiver.settings import MaintenanceSettings

    await store.record_events([event(console_data.ocr(1.0, "before the upgrade", 1))])
    await execute(store, "DELETE FROM event_search")
    await execute(store, "UPDATE search_backfill SET upto = (SELECT max(seq) FROM events)")
    stop = asyncio.Event()
    task = asyncio.create_task(maintain(store, MaintenanceSettings(interval=3600), lambda: FROZEN_NOW, stop))
    try:
        deadline = asyncio.get_running_loop().time() + 10
        while not await seqs(store, text="upgrade"):
            assert asyncio.get_running_loop().time() < deadline, "never backfilled"
            await asyncio.sleep(0.02)
    finally:
        stop.set()
        await task


async def test_events_by_task_id_are_every_event_carrying_it_however_it_was_matched(store: Any) -> None:
    """On SQLite the index by TaskId keeps only the events whose task does not tell it: the rest
    are found by way of their task, and the two parts are merged into pages in seq order."""

    def carrying(task_id: str, n: int, context: str = "") -> Any:
        return event(REVIEW, at=FROZEN_NOW + n, TaskId=task_id, SessionId=f"s-{n}", SessionContext=context)

    # Before any task: T-a's first event is an orphan, adopted when A comes (its row predates the
    # task, as a row from before the index changed would); T-o's never finds a task.
    await store.record_events([carrying("T-a", 1), carrying("T-o", 2)])
    a, _ = await store.register_task(new_task("T-a", session_context="ctx-a"))
    b, _ = await store.register_task(new_task("T-b", session_context="ctx-b"))
    recorded = await store.record_events(
        [
            carrying("T-a", 3),  # by TaskId, to A
            carrying("T-a", 4, "ctx-b"),  # by context, to B, though it carries A's TaskId
            carrying("T-a", 5, "ctx-a"),  # by context, to A
            carrying("T-b", 6),
            carrying("T-a", 7),
            carrying("T-o", 8),
        ]
    )
    assert [r.task.id if r.task else None for r in recorded] == [a.id, b.id, a.id, b.id, a.id, None]
    everything = (await store.list_events(EventQuery(limit=1000))).items
    for task_id in ("T-a", "T-b", "T-o", "T-none"):
        expected = [e.seq for e in everything if e.task_id == task_id]
        assert await seqs(store, task_id=task_id) == expected
        assert await seqs(store, task_id=task_id, descending=True) == expected[::-1]
        for descending in (False, True):  # page by page, two at a time: the parts meet across pages
            paged: list[int] = []
            after = 0
            while True:
                page = await store.list_events(
                    EventQuery(task_id=task_id, limit=2, after=after, descending=descending)
                )
                paged += [e.seq for e in page.items]
                if page.next is None:
                    break
                after = int(page.next)
            assert paged == (expected[::-1] if descending else expected)
    t_a = [e.seq for e in everything if e.task_id == "T-a"]
    assert len(t_a) == 5
    assert await seqs(store, task_id="T-a", task_ref=a.id) == [s for s in t_a if s != recorded[1].seq]
    assert await seqs(store, task_id="T-a", task_ref=b.id) == [recorded[1].seq]
    assert await seqs(store, task_id="T-a", notification_type="AiReviewResult") == t_a
    assert await seqs(store, task_id="T-a", notification_type="ProcessEof") == []
