"""receiver's own events: operator events (to the operator sinks, once per kind, subject and window,
never about an operator sink itself) and task digests (once per ended task, after its events)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from receiver import digests
from receiver.events import Channel
from receiver.notices import Notices
from receiver.ports import EventRecord
from receiver.routing import SinkFilter
from receiver.settings import OperatorSettings
from receiver.tasks import Task, TaskState
from tests.apps import ClientFactory, post, sink, start
from tests.builders import event, new_task
from tests.payloads import EOF_DOC, FROZEN_NOW, QUALITY, REVIEW
from tests.waiting import eventually

OPERATOR = {"name": "oncall", "kind": "memory", "operator": True}


async def operator_events(client: Any, **params: str) -> list[dict[str, Any]]:
    resp = await client.get("/v1/operator-events", params=params)
    assert resp.status == 200, await resp.text()
    return list((await resp.json())["items"])


async def until(client: Any, check: Any, within: float = 10.0) -> list[dict[str, Any]]:
    deadline = asyncio.get_running_loop().time() + within
    while True:
        found = await operator_events(client)
        if check(found):
            return found
        assert asyncio.get_running_loop().time() < deadline, found
        await asyncio.sleep(0.02)


async def test_a_sinks_dead_letters_and_its_breaker_reach_the_operator_sink_once_per_window(
    tmp_path: Path, aiohttp_client: ClientFactory
) -> None:
    client = await start(
        aiohttp_client,
        f"sqlite:///{tmp_path}/receiver.db",
        [{"name": "down", "kind": "memory", "options": {"fail_first": 1000}, "retry_schedule": [],
          "breaker_threshold": 2, "breaker_cooldown": 0.05}, OPERATOR],
    )  # fmt: skip
    for i in range(4):
        await post(client, {**REVIEW, "TaskId": f"dead-{i}", "SessionContext": "", "SessionId": str(i)})
    found = await until(
        client, lambda items: {i["kind"] for i in items} == {"sink_dead_letter", "breaker_open"}
    )
    assert [(i["kind"], i["subject"]) for i in found] == [
        ("sink_dead_letter", "down"),
        ("breaker_open", "down"),
    ]
    oncall = sink(client, "oncall")
    await eventually(lambda: len(oncall.received) == 2)
    assert {d["notification_type"] for d in oncall.received} == {"OperatorEvent"}  # and no MPS event
    payload = oncall.received[0]["payload"]
    assert (payload["kind"], payload["subject"]) == ("sink_dead_letter", "down")
    assert payload["message"].startswith("sink down: a delivery went dead")
    await eventually(lambda: sink(client, "down").attempts >= 4)  # more dead letters in the window
    assert len(await operator_events(client, kind="sink_dead_letter")) == 1


async def test_an_operator_sinks_own_failures_raise_no_operator_event(
    tmp_path: Path, aiohttp_client: ClientFactory
) -> None:
    client = await start(
        aiohttp_client,
        f"sqlite:///{tmp_path}/receiver.db",
        [{"name": "gone", "kind": "memory"},
         {**OPERATOR, "options": {"fail_first": 1000}, "retry_schedule": [], "breaker_threshold": 1}],
    )  # fmt: skip
    sink(client, "gone").gone = True  # its target answers 410
    await post(client, {**REVIEW, "TaskId": "gone-task", "SessionContext": ""})
    found = await until(client, lambda items: bool(items))
    assert [(i["kind"], i["subject"]) for i in found] == [("sink_gone", "gone")]
    await eventually(lambda: sink(client, "oncall").attempts == 1)  # it failed, went dead, opened its breaker
    deadline = asyncio.get_running_loop().time() + 5
    while (await (await client.get("/v1/sinks")).json())["items"][1]["dead"] != 1:
        assert asyncio.get_running_loop().time() < deadline
        await asyncio.sleep(0.02)
    assert [i["subject"] for i in await operator_events(client)] == ["gone"]  # nothing about oncall


async def test_tasks_failed_stalled_and_overdue_are_told(
    tmp_path: Path, aiohttp_client: ClientFactory
) -> None:
    client = await start(
        aiohttp_client,
        f"sqlite:///{tmp_path}/receiver.db",
        [OPERATOR],
        maintenance={"interval": 0.05, "stall_after": 0.3, "task_deadline": 0.5},
    )
    for task_id in ("failing", "quiet"):
        assert (await client.post("/v1/tasks", json={"task_id": task_id})).status == 201
    await post(
        client, {**EOF_DOC, "TaskId": "failing", "ProcessEofInfo": {"ErrCode": 4002, "Message": "timeout"}}
    )
    await post(client, {**REVIEW, "TaskId": "quiet", "SessionContext": ""})
    found = await until(client, lambda items: {i["kind"] for i in items} >= {"task_stalled", "task_overdue"})
    kinds = {(i["kind"], i["detail"]["task_id"]) for i in found}
    assert kinds == {("task_failed", "failing"), ("task_stalled", "quiet"), ("task_overdue", "quiet")}
    failed = next(i for i in found if i["kind"] == "task_failed")
    assert (failed["detail"]["err_code"], failed["detail"]["err_message"]) == (4002, "timeout")
    await eventually(lambda: len(sink(client, "oncall").received) == 3)


async def test_signature_failures_are_counted_across_processes_in_the_store(store: Any) -> None:
    settings = OperatorSettings(signature_failures=5)
    clock = [FROZEN_NOW]
    workers = [
        Notices(store, operator_sinks=["oncall"], digest_sinks=[], settings=settings, clock=lambda: clock[0])
        for _ in range(2)
    ]
    for _ in range(3):  # under the threshold in each process, over it together
        for w in workers:
            w.signature_failed(Channel.HTTP)
    await workers[0].flush_signature_failures()
    assert (await store.list_operator_events(kind=None, after=0, limit=10)).items == []
    await workers[1].flush_signature_failures()
    [told] = (await store.list_operator_events(kind=None, after=0, limit=10)).items
    assert (told.kind, told.subject, told.detail) == (
        "signature_failures",
        "notifications",
        {"count": 6, "threshold": 5},
    )
    workers[0].signature_failed(Channel.AMQP)
    await workers[0].flush_signature_failures()  # still over it, in the same window: told once
    assert len((await store.list_operator_events(kind=None, after=0, limit=10)).items) == 1


async def test_an_ended_task_gets_one_digest_after_its_events_for_the_sinks_that_ask(
    tmp_path: Path, aiohttp_client: ClientFactory
) -> None:
    client = await start(
        aiohttp_client,
        f"sqlite:///{tmp_path}/receiver.db",
        [{"name": "all", "kind": "memory"}, {"name": "digests", "kind": "memory", "digests": True}],
    )
    reg = await client.post("/v1/tasks", json={"task_id": "digest-task", "labels": {"room": "42"}})
    assert reg.status == 201
    task = {"TaskId": "digest-task", "SessionContext": ""}
    for doc in (REVIEW, QUALITY, EOF_DOC):
        await post(client, {**doc, **task})
    wanted = sink(client, "digests")
    await eventually(lambda: len(wanted.received) == 4)
    assert [d["notification_type"] for d in wanted.received] == [
        "AiReviewResult",
        "AiQualityControlResult",
        "ProcessEof",
        "TaskDigest",
    ]
    digest = wanted.received[-1]["payload"]
    assert digest["labels"] == {"room": "42"}
    assert digest["events"] == {"AiReviewResult": 1, "AiQualityControlResult": 1, "ProcessEof": 1}
    assert digest["worst"]["suggestion"] == "block"
    assert digest["task"]["state"] == "finished"
    assert digest["quality"]  # the quality-control result's issues
    await post(client, {**REVIEW, **task, "SessionId": "late"})  # after the end: no second digest
    await eventually(lambda: len(wanted.received) == 5)
    assert sum(d["notification_type"] == "TaskDigest" for d in wanted.received) == 1
    assert "TaskDigest" not in {d["notification_type"] for d in sink(client, "all").received}


async def test_a_sweep_digests_an_ended_task_whose_end_another_process_committed(store: Any) -> None:
    task, _ = await store.register_task(new_task(EOF_DOC["TaskId"]))
    await store.record_events([event(REVIEW, TaskId=task.task_id, SessionContext=""), event(EOF_DOC)])
    notices = Notices(
        store,
        operator_sinks=[],
        digest_sinks=[("digests", SinkFilter())],
        settings=OperatorSettings(),
        clock=lambda: FROZEN_NOW + 10,
    )
    await notices.sweep()
    await notices.sweep()  # again: no second digest
    [line] = [
        await store.claim_deliveries("digests", now=FROZEN_NOW + 20, limit=10, busy_keys=set(), per_key=10)
    ]
    assert [d.event.notification_type for d in line] == ["TaskDigest"]
    assert line[0].event.raw["events"] == {"AiReviewResult": 1, "ProcessEof": 1}


def record(seq: int, findings: list[dict[str, Any]], kind: str = "AiRecognitionResult") -> EventRecord:
    return EventRecord(
        seq=seq, event_id=f"e{seq}", task_id="T", task_ref="ours", matched_by=None, notification_type=kind,
        session_id="", session_context="", channel="http", received_at=FROZEN_NOW + seq, verdict="valid",
        late=False, duplicates=0, err_code=None, err_message=None, findings=findings, body=b"{}",
    )  # fmt: skip


def test_the_digest_counts_orders_the_transcript_and_bounds_it() -> None:
    task = Task(
        "ours", "T", "", "", "", {"room": "7"}, TaskState.FINISHED, 1.0, 9.0, first_event_at=2.0, ended_at=9.0
    )
    subtitle = {"kind": "SmartSubtitle", "text": "second", "translation": "deux", "start": 2.0, "end": 3.0}
    speech = {"kind": "AsrFullTextRecognition", "text": "first", "start": 0.5, "end": 1.5}
    partial = {
        "kind": "AsrFullTextRecognition",
        "text": "par",
        "start": 0.4,
        "attrs": {"steady_state": False},
    }
    blur = [
        {"kind": "QualityControl", "label": "Blur", "start": a, "end": b}
        for a, b in ((1.0, 4.0), (10.0, 11.5))
    ]
    review = [
        {"kind": "ImagePorn", "suggestion": s, "start": t}
        for s, t in (("review", 5.0), ("block", 6.0), ("block", 7.0))
    ]
    recording = {"kind": "RecordFile", "url": "https://cos/rec.mp4", "attrs": {"size": 10, "duration": 8.0}}
    said = [
        record(1, [subtitle]),
        record(2, [speech, partial]),
        record(3, [*blur, *review], "AiQualityControlResult"),
        record(4, [recording]),
    ]
    d = digests.digest(task, said)
    assert [(line["source"], line["text"]) for line in d["transcript"]["lines"]] == [
        ("speech", "first"),
        ("subtitle", "second"),
    ]
    assert d["transcript"]["lines"][1]["translation"] == "deux"
    assert d["quality"] == [{"kind": "QualityControl", "label": "Blur", "count": 2, "seconds": 4.5}]
    assert (d["worst"]["suggestion"], d["worst"]["start"], d["worst"]["event_id"]) == ("block", 6.0, "e3")
    assert d["findings"]["by_suggestion"] == {"review": 1, "block": 2}
    assert d["recordings"] == [{"url": "https://cos/rec.mp4", "size": 10, "duration": 8.0}]
    assert (d["labels"], d["task"]["duration_seconds"]) == ({"room": "7"}, 7.0)
    long = [record(i, [{"kind": "SmartSubtitle", "text": "x" * 1000, "start": float(i)}]) for i in range(100)]
    bounded = digests.digest(task, long)
    assert bounded["transcript"]["truncated"]
    assert sum(len(line["text"]) for line in bounded["transcript"]["lines"]) <= digests.TRANSCRIPT_LIMIT
