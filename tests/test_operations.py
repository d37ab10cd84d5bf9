"""Operating it: Prometheus metrics, stalled tasks, retention."""

from __future__ import annotations

import asyncio
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from receiver.app import create_app
from receiver.ports import DeliveryQuery, DeliveryState, EventQuery, Settlement
from receiver.settings import Settings
from receiver.stores.sqlite import SqliteStore
from receiver.tasks import TaskState
from tests.apps import ClientFactory
from tests.builders import event, new_task
from tests.payloads import EOF_DOC, FROZEN_NOW, NOTIFY_KEY, REVIEW, body, example, signed


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


async def test_metrics_count_notifications_deliveries_backlog_and_tasks(
    aiohttp_client: ClientFactory, tmp_path: Path
) -> None:
    settings = Settings.model_validate(
        {
            "store": {"url": f"sqlite:///{tmp_path}/m.db"},
            "verify": {"notify_keys": [NOTIFY_KEY]},
            "sinks": [
                {"name": "ok", "kind": "memory"},
                {"name": "stuck", "kind": "memory", "options": {"fail_first": 1000}, "retry_schedule": [60]},
            ],
            "dispatch_poll_interval": 0.02,
        }
    )
    client = await aiohttp_client(create_app(settings, clock=lambda: FROZEN_NOW))
    await client.post("/v1/tasks", json={"task_id": REVIEW["TaskId"]})
    review = example("03-AiReviewResult-Image.constructed.json")
    for doc in (
        signed(review),
        signed(review),
        {**review, "Sign": "0" * 32},
        signed({**review, "SessionId": "2"}),
    ):
        await client.post("/v1/notifications", data=body(doc))
    await client.post("/v1/notifications", data=b"nope")

    async def scraped() -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        resp = await client.get("/metrics")
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        return samples(await resp.text())

    delivered_ok = ("receiver_sink_deliveries_total", (("outcome", "delivered"), ("sink", "ok")))
    ok_backlog = ("receiver_sink_backlog", (("sink", "ok"),))
    deadline = asyncio.get_running_loop().time() + 5
    while (m := await scraped()).get(delivered_ok) != 2 or m.get(ok_backlog) != 0:
        assert asyncio.get_running_loop().time() < deadline, m
        await asyncio.sleep(0.02)
    assert m[("receiver_notifications_total", (("channel", "http"), ("outcome", "stored")))] == 2
    assert m[("receiver_notifications_total", (("channel", "http"), ("outcome", "duplicate")))] == 1
    assert m[("receiver_notifications_total", (("channel", "http"), ("outcome", "unauthorized")))] == 1
    assert m[("receiver_notifications_total", (("channel", "http"), ("outcome", "invalid")))] == 1
    assert m[("receiver_ingest_seconds_count", (("channel", "http"),))] == 5
    assert m[("receiver_sink_backlog", (("sink", "stuck"),))] == 2
    assert m[ok_backlog] == 0, m
    assert m[("receiver_sink_deliveries_total", (("outcome", "failed"), ("sink", "stuck")))] >= 1
    assert m[("receiver_tasks", (("state", "running"),))] == 1
    assert NOTIFY_KEY not in (await (await client.get("/metrics")).text())


async def test_quiet_tasks_become_stalled_and_the_next_notification_revives_them(tmp_path: Path) -> None:
    store = await SqliteStore.open(tmp_path / "s.db")
    try:
        await store.register_task(new_task(EOF_DOC["TaskId"]))
        await store.register_task(new_task("busy-task"))
        await store.record_events([event(REVIEW, TaskId="busy-task", SessionContext="", at=FROZEN_NOW + 800)])
        # registered at t=1, never heard from
        assert await store.mark_stalled(FROZEN_NOW + 500, now=FROZEN_NOW + 500) == 1
        quiet = await store.get_task(EOF_DOC["TaskId"])
        assert quiet is not None
        assert quiet.state is TaskState.STALLED
        busy = await store.get_task("busy-task")
        assert busy is not None
        assert busy.state is TaskState.RUNNING
        [rec] = await store.record_events([event(REVIEW, TaskId=EOF_DOC["TaskId"], SessionContext="")])
        assert rec.task is not None
        assert rec.task.state is TaskState.RUNNING  # the writer's cache knew about the stall
    finally:
        await store.aclose()


async def test_retention_drops_old_payloads_and_delivered_rows_but_keeps_dead_letters(tmp_path: Path) -> None:
    store = await SqliteStore.open(tmp_path / "r.db")
    try:
        old = [event(REVIEW, SessionId=str(i), at=FROZEN_NOW) for i in range(3)]
        new = event(REVIEW, SessionId="new", at=FROZEN_NOW + 10_000)
        await store.record_events([*old, new], lambda e, t: ["s"])
        page = await store.list_deliveries(DeliveryQuery(sink="s"))
        outcomes = [  # (state, when): the last one delivered long after the others
            (DeliveryState.DELIVERED, FROZEN_NOW),
            (DeliveryState.DEAD, FROZEN_NOW),
            (DeliveryState.PENDING, FROZEN_NOW),
            (DeliveryState.DELIVERED, FROZEN_NOW + 10_000),
        ]
        settled = [
            Settlement(d.id, st, 1, at, None, at) for d, (st, at) in zip(page.items, outcomes, strict=True)
        ]
        await store.settle_deliveries(settled)
        payloads, deliveries = await store.purge(FROZEN_NOW + 5_000)
        # Only the old delivered one loses its payload: the dead and pending ones still need theirs.
        assert (payloads, deliveries) == (1, 1)
        kept = {e.session_id: e.raw for e in (await store.list_events(EventQuery())).items}
        assert kept["0"] == {}
        assert kept["1"]["SessionId"] == "1"
        assert kept["2"]["SessionId"] == "2"
        assert kept["new"]["SessionId"] == "new"
        left = [d.state for d in (await store.list_deliveries(DeliveryQuery(sink="s"))).items]
        assert sorted(left) == ["dead", "delivered", "pending"]
    finally:
        await store.aclose()


async def test_a_task_past_its_deadline_without_process_eof_is_flagged_overdue(
    aiohttp_client: ClientFactory, tmp_path: Path
) -> None:
    now = [FROZEN_NOW]
    settings = Settings.model_validate(
        {
            "store": {"url": f"sqlite:///{tmp_path}/o.db"},
            "verify": {"notify_keys": [NOTIFY_KEY]},
            "maintenance": {"task_deadline": 3600},
        }
    )
    client = await aiohttp_client(create_app(settings, clock=lambda: now[0]))
    for task_id in ("long-stream", "ended-stream"):
        assert (await client.post("/v1/tasks", json={"task_id": task_id})).status == 201
    eof = example("02-ProcessEof.cmq-msgBody.verbatim.json")
    await client.post("/v1/notifications", data=body(signed({**eof, "TaskId": "ended-stream"})))

    async def overdue(task_id: str) -> bool:
        return bool((await (await client.get(f"/v1/tasks/{task_id}")).json())["overdue"])

    assert not await overdue("long-stream")
    now[0] = FROZEN_NOW + 3601
    assert await overdue("long-stream")
    assert not await overdue("ended-stream")  # it ended: never overdue
