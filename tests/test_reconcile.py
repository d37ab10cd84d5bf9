"""Asking MPS, against the real emulator over HTTP through the official SDK: a lost ProcessEof ends
by reconcile (routed to a sink; a ProcessEof after it is late), a stalled live task runs again, an
unknown one is marked and left, a ScheduleId task too, the lease lets one reconciler do the work,
the service's own loop ends a lost ProcessEof by itself, discover registers the tasks receiver
never saw, and abort ends a task with or without a ProcessEof."""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp.test_utils import TestClient, TestServer

from receiver.emulator.api import EMULATOR
from receiver.http.keys import DISPATCHER, ROUTER, STORE
from receiver.mps import MpsClient
from receiver.ports import EventQuery
from receiver.reconcile import LEASE, Reconciler
from receiver.settings import MpsSettings, ReconcileSettings
from receiver.tasks import Task, TaskState, new_id
from tests.apps import ClientFactory, ServerFactory
from tests.emulated import KEY, emulator, receiver, request, submit
from tests.payloads import signed

SCENARIOS = {
    "lost": {"duration": 0.5, "rate": 8.0, "lose_eof": True},  # results, then no ProcessEof
    "long": {"duration": 120.0, "rate": 4.0},  # lives for the whole test
    "silent_abort": {"duration": 120.0, "rate": 4.0, "abort_eof": False},
}
OFF = {"enabled": False}  # the app's own loop: off where the test drives the passes itself


def mps_settings(server: TestServer) -> MpsSettings:
    return MpsSettings.model_validate(
        {"endpoint": f"127.0.0.1:{server.port}", "protocol": "http", "secret_id": "AKIDloop",
         "secret_key": "loop-secret"}
    )  # fmt: skip


def reconciler(mps: TestServer, client: TestClient[Any, Any] | None = None, **kw: Any) -> Reconciler:
    """A reconciler on the app's store (or ``kw["store"]``), asking the emulator."""
    app = client.app if client is not None else None
    settings = ReconcileSettings.model_validate(kw.pop("settings", {}))
    leased = app.get(DISPATCHER) if app is not None else None
    dispatcher = leased.current if leased is not None else None
    store = kw.pop("store", None) or (app[STORE] if app is not None else None)
    assert store is not None
    return Reconciler(
        store,
        MpsClient(mps_settings(mps)),
        settings,
        clock=time.time,
        route=app.get(ROUTER) if app is not None else None,
        on_recorded=dispatcher.wake if dispatcher is not None else None,
        **kw,
    )


async def until(check: Callable[[], Awaitable[Any]], what: str, within: float = 20.0) -> Any:
    deadline = time.monotonic() + within
    while True:
        value = await check()
        if value:
            return value
        assert time.monotonic() < deadline, f"never: {what}"
        await asyncio.sleep(0.02)


async def task_doc(client: TestClient[Any, Any], task_id: str) -> dict[str, Any]:
    return dict(await (await client.get(f"/v1/tasks/{task_id}")).json())


async def hook(client: TestClient[Any, Any]) -> dict[str, Any]:
    return {"NotifyType": "URL", "NotifyUrl": str(client.make_url("/v1/notifications"))}


async def stall(client: TestClient[Any, Any]) -> None:
    """Every quiet task stalled now (as the maintenance loop would after stall_after)."""
    await client.app[STORE].mark_stalled(time.time() + 1, now=time.time())


def emulated_status(mps: TestServer, task_id: str) -> str:
    task = mps.app[EMULATOR].tasks.get(task_id)
    assert task is not None
    return task.status


async def test_a_lost_process_eof_ends_by_reconcile_routed_to_the_sinks_and_a_late_eof_changes_nothing(
    aiohttp_client: ClientFactory, aiohttp_server: ServerFactory, tmp_path: Path
) -> None:
    mps = await emulator(aiohttp_server, scenarios=SCENARIOS)
    out = tmp_path / "events.jsonl"
    client = await receiver(
        aiohttp_client, tmp_path, mps, reconcile=OFF, dispatch_poll_interval=0.05,
        sinks=[{"name": "file", "kind": "jsonl", "options": {"path": str(out)}}],
    )  # fmt: skip
    body = request(await hook(client), Url="rtmp://live.example.com/app/x?emulator_scenario=lost")
    task = await submit(client, body)
    task_id = task["task_id"]

    async def over() -> bool:
        return (
            emulated_status(mps, task_id) == "FINISH"
            and (await task_doc(client, task_id))["event_count"] == 4
        )

    await until(over, "the stream over at MPS, its four results stored")
    running = await task_doc(client, task_id)
    assert running["state"] == "running"  # no ProcessEof came: it would stay so for ever
    await stall(client)
    report = await reconciler(mps, client).once()
    assert (report.asked, report.ended, report.lease) == (1, 1, "held")
    ended = await task_doc(client, task_id)
    assert (ended["state"], ended["err_code"], ended["err_message"]) == ("finished", 0, "Success")
    assert ended["reconciled_at"] is not None
    assert [(c["answer"], c["err_code"]) for c in ended["checks"]] == [("FINISH", 0)]
    events = (await (await client.get(f"/v1/tasks/{task_id}/events")).json())["items"]
    end = events[-1]
    assert (end["notification_type"], end["channel"], end["verdict"], end["late"]) == (
        "ReconcileEnd", "reconcile", "own", False,
    )  # fmt: skip
    assert end["payload"]["ReconcileEndInfo"]["Status"] == "FINISH"

    async def delivered() -> bool:
        lines = out.read_text().splitlines() if out.exists() else []
        return any(orjson.loads(line)["notification_type"] == "ReconcileEnd" for line in lines)

    await until(delivered, "the reconcile end delivered to the sink like any end")
    # The ProcessEof turns up after all: stored late, the task as the reconcile left it.
    eof = {"NotificationType": "ProcessEof", "TaskId": task_id, "SessionId": "",
           "SessionContext": task["session_context"],
           "ProcessEofInfo": {"ErrCode": 4002, "Message": "late"}}  # fmt: skip
    resp = await client.post("/v1/notifications", json=signed(eof, key=KEY, timestamp=int(time.time()) + 600))
    assert resp.status == 200, await resp.text()
    after = await task_doc(client, task_id)
    assert (after["state"], after["err_code"], after["late_count"]) == ("finished", 0, 1)
    assert after["ended_at"] == ended["ended_at"]
    # The same answer again is the same event: counted, not stored twice.
    again = await reconciler(mps, client).once()
    assert again.asked == 0  # ended: nothing left to ask about


async def test_a_stalled_task_that_mps_says_is_live_runs_again(
    aiohttp_client: ClientFactory, aiohttp_server: ServerFactory, tmp_path: Path
) -> None:
    mps = await emulator(aiohttp_server, scenarios=SCENARIOS)
    client = await receiver(aiohttp_client, tmp_path, mps, reconcile=OFF)
    body = request(await hook(client), Url="rtmp://live.example.com/app/x?emulator_scenario=long")
    task_id = (await submit(client, body))["task_id"]
    await until(lambda: _events(client, task_id), "a first result")
    # The emulator keeps sending: a result that lands between the stall and the question makes
    # the task run again by itself, and then there is nothing to ask. Stall it again then.
    for _ in range(5):
        await stall(client)
        report = await reconciler(mps, client).once()
        if report.asked:
            break
    assert (report.live, report.revived, report.ended) == (1, 1, 0)
    doc = await task_doc(client, task_id)
    assert doc["state"] == "running"
    assert [c["answer"] for c in doc["checks"]] == ["PROCESSING"]


async def _events(client: TestClient[Any, Any], task_id: str) -> int:
    return int((await task_doc(client, task_id))["event_count"])


async def test_a_task_mps_does_not_know_is_marked_and_left_as_it_is(
    aiohttp_client: ClientFactory, aiohttp_server: ServerFactory, tmp_path: Path
) -> None:
    mps = await emulator(aiohttp_server)
    client = await receiver(aiohttp_client, tmp_path, mps, reconcile=OFF)
    resp = await client.post("/v1/tasks", json={"task_id": "1300000000-procedure-live-never-was"})
    assert resp.status == 201
    await stall(client)
    report = await reconciler(mps, client).once()
    assert (report.asked, report.not_found) == (1, 1)
    doc = await task_doc(client, "1300000000-procedure-live-never-was")
    assert doc["state"] == "stalled"
    assert [(c["answer"], c["code"]) for c in doc["checks"]] == [
        ("NOT_FOUND", "InvalidParameterValue.TaskId")
    ]


async def test_a_task_submitted_with_a_schedule_comes_back_as_a_live_schedule_task_and_ends_too(
    aiohttp_client: ClientFactory, aiohttp_server: ServerFactory, tmp_path: Path
) -> None:
    failing = {**SCENARIOS, "lost": {**SCENARIOS["lost"], "eof_err_code": 30010, "eof_message": "no stream"}}
    mps = await emulator(aiohttp_server, scenarios=failing)
    client = await receiver(aiohttp_client, tmp_path, mps, reconcile=OFF)
    body = request(
        await hook(client), Url="rtmp://live.example.com/app/x?emulator_scenario=lost", ScheduleId=3
    )
    task_id = (await submit(client, body))["task_id"]
    await until(lambda: _finished_at_mps(mps, task_id), "the stream over at MPS")
    assert mps.app[EMULATOR].tasks.get(task_id).task_type == "LiveScheduleTask"  # type: ignore[union-attr]
    await stall(client)
    report = await reconciler(mps, client).once()
    assert report.ended == 1
    doc = await task_doc(client, task_id)
    assert (doc["state"], doc["err_code"], doc["err_message"]) == ("failed", 30010, "no stream")
    events = (await (await client.get(f"/v1/tasks/{task_id}/events")).json())["items"]
    assert events[-1]["payload"]["ReconcileEndInfo"]["TaskType"] == "LiveScheduleTask"


async def _finished_at_mps(mps: TestServer, task_id: str) -> bool:
    return emulated_status(mps, task_id) == "FINISH"


async def test_two_reconcilers_on_one_store_one_does_the_work(
    store: Any, aiohttp_server: ServerFactory
) -> None:
    mps = await emulator(aiohttp_server)
    now = time.time()
    for i in range(6):
        task = Task(id=new_id(), task_id=f"1300000000-procedure-live-gone-{i}", session_id="",
                    session_context="", url="", labels={}, state=TaskState.STALLED, created_at=now - 60,
                    updated_at=now - 60)  # fmt: skip
        await store.register_task(task)
    a = reconciler(mps, store=store, holder="a")
    b = reconciler(mps, store=store, holder="b")
    # While A holds the lease (a pass of its own under way), B does nothing at all.
    assert await store.hold_lease(LEASE, "a", ttl=60, now=time.time())
    busy = await b.once()
    assert (busy.lease, busy.asked) == ("busy", 0)
    await store.release_lease(LEASE, "a")
    # Both at once: between them, each task is asked about once.
    first, second = await asyncio.gather(a.once(), b.once())
    assert first.asked + second.asked == 6
    assert {first.lease, second.lease} <= {"held", "busy"}
    for i in range(6):
        t = await store.get_task(f"1300000000-procedure-live-gone-{i}")
        assert [c.answer for c in t.checks] == ["NOT_FOUND"]
    assert await store.lease_holder(LEASE) is None  # given back at the end of the pass


async def test_the_service_ends_a_lost_process_eof_by_itself(
    aiohttp_client: ClientFactory, aiohttp_server: ServerFactory, tmp_path: Path
) -> None:
    mps = await emulator(aiohttp_server, scenarios=SCENARIOS)
    client = await receiver(
        aiohttp_client, tmp_path, mps,
        maintenance={"interval": 0.1, "stall_after": 0.3},
        reconcile={"interval": 0.1, "recheck_after": 0.2},
    )  # fmt: skip
    body = request(await hook(client), Url="rtmp://live.example.com/app/x?emulator_scenario=lost")
    task_id = (await submit(client, body))["task_id"]

    async def reconciled() -> dict[str, Any] | None:
        doc = await task_doc(client, task_id)
        return doc if doc["reconciled_at"] else None

    doc = await until(reconciled, "the task ended by the service's own reconcile")
    assert (doc["state"], doc["event_count"]) == ("finished", 5)  # four results and the reconcile end


async def test_discover_registers_live_tasks_receiver_never_saw_adopting_their_orphans(
    aiohttp_client: ClientFactory, aiohttp_server: ServerFactory, tmp_path: Path
) -> None:
    mps = await emulator(aiohttp_server, scenarios=SCENARIOS)
    client = await receiver(aiohttp_client, tmp_path, mps, reconcile=OFF)
    direct = MpsClient(mps_settings(mps))  # submitted elsewhere: receiver does not know the tasks
    notify = {**(await hook(client)), "NotifyKey": KEY}
    url = "rtmp://live.example.com/app/x?emulator_scenario=long"
    elsewhere, _ = await direct.process_live_stream(
        {"Url": url, "TaskNotifyConfig": notify, "AiContentReviewTask": {"Definition": 10},
         "SessionContext": "elsewhere-7"}
    )  # fmt: skip
    # A record of our own whose ProcessLiveStream call never told it the TaskId (a crash mid-call).
    ref = new_id()
    now = time.time()
    ours = Task(id=ref, task_id=None, session_id="", session_context=f"receiver:{ref}", url=url, labels={},
                state=TaskState.SUBMITTING, created_at=now, updated_at=now)  # fmt: skip
    await client.app[STORE].register_task(ours)
    mine, _ = await direct.process_live_stream(
        {"Url": url, "TaskNotifyConfig": {"NotifyType": ""}, "SessionContext": f"receiver:{ref}"}
    )

    async def orphans() -> int:
        page = await client.app[STORE].list_events(EventQuery(task_id=elsewhere, orphan=True))
        return len(page.items)

    await until(orphans, "orphan results of the unknown task")
    dry = await reconciler(mps, client).once(discover=True, dry_run=True)
    assert dry.discovered == 2
    assert (await client.get(f"/v1/tasks/{elsewhere}")).status == 404  # a dry run changes nothing
    report = await reconciler(mps, client).once(discover=True)
    assert report.discovered == 2
    found = await task_doc(client, elsewhere)
    assert (found["session_context"], found["url"]) == ("elsewhere-7", url)
    assert found["event_count"] >= 1  # its orphans adopted
    events = (await (await client.get(f"/v1/tasks/{elsewhere}/events")).json())["items"]
    assert {e["matched_by"] for e in events} == {"session_context"}
    attached = await task_doc(client, ref)
    assert (attached["task_id"], attached["state"]) == (mine, "submitted")
    assert (await reconciler(mps, client).once(discover=True)).discovered == 0  # known now


async def test_abort_ends_a_task_with_a_process_eof_or_by_reconcile_when_none_comes(
    aiohttp_client: ClientFactory, aiohttp_server: ServerFactory, tmp_path: Path
) -> None:
    mps = await emulator(aiohttp_server, scenarios=SCENARIOS)
    client = await receiver(aiohttp_client, tmp_path, mps, reconcile=OFF)
    for scenario, by_reconcile in (("long", False), ("silent_abort", True)):
        body = request(await hook(client), Url=f"rtmp://live.example.com/app/x?emulator_scenario={scenario}")
        task_id = (await submit(client, body))["task_id"]
        await until(functools.partial(_events, client, task_id), "a first result")
        resp = await client.post(f"/v1/tasks/{task_id}/abort", json={})
        assert resp.status == 202, await resp.text()
        doc = await resp.json()
        # Its ProcessEof may beat the abort's answer here (then the task has ended already).
        assert doc["state"] == "aborting" or (doc["state"] == "finished" and not by_reconcile)
        assert doc["abort_request_id"]
        await until(functools.partial(_finished_at_mps, mps, task_id), "the abort taken at MPS")
        if by_reconcile:
            assert (await task_doc(client, task_id))["state"] == "aborting"  # no ProcessEof: still so
            report = await reconciler(mps, client).once()  # aborting tasks are asked about
            assert report.ended == 1

        async def ended(task_id: str = task_id) -> dict[str, Any] | None:
            doc = await task_doc(client, task_id)
            return doc if doc["state"] == "finished" else None

        doc = await until(ended, f"the aborted task ({scenario}) ended")
        assert doc["err_message"] == "Task aborted by ManageTask"
        assert (doc["reconciled_at"] is not None) is by_reconcile
        again = await client.post(f"/v1/tasks/{task_id}/abort", json={})
        assert again.status == 409
        assert (await again.json())["error"]["code"] == "conflict"


async def test_abort_errors_are_as_clear_as_submits(
    aiohttp_client: ClientFactory, aiohttp_server: ServerFactory, tmp_path: Path
) -> None:
    mps = await emulator(aiohttp_server, scenarios=SCENARIOS)
    client = await receiver(aiohttp_client, tmp_path, mps, reconcile=OFF)
    assert (await client.post("/v1/tasks/nope/abort", json={})).status == 404
    await client.post("/v1/tasks", json={"task_id": "1300000000-procedure-live-never-was"})
    unknown = await client.post("/v1/tasks/1300000000-procedure-live-never-was/abort", json={})
    assert unknown.status == 404
    assert (await unknown.json())["error"]["mps_code"] == "InvalidParameterValue.TaskId"
    body = request(await hook(client), Url="rtmp://live.example.com/app/x?emulator_scenario=lost")
    task_id = (await submit(client, body))["task_id"]
    await until(lambda: _finished_at_mps(mps, task_id), "the stream over at MPS (its ProcessEof lost)")
    over = await client.post(f"/v1/tasks/{task_id}/abort", json={})
    assert over.status == 409
    error = (await over.json())["error"]
    assert (error["code"], error["mps_code"]) == ("mps_error", "InvalidParameterValue.NotProcessingTask")
    assert error["request_id"]
    assert (await task_doc(client, task_id))["state"] == "running"  # unchanged: a reconcile will end it
    wrong = await receiver(aiohttp_client, tmp_path / "w", mps, reconcile=OFF,
                           mps={**mps_settings(mps).model_dump(), "secret_key": "not-it"})  # fmt: skip
    await wrong.post("/v1/tasks", json={"task_id": task_id})
    denied = await wrong.post(f"/v1/tasks/{task_id}/abort", json={})
    assert denied.status == 502
    assert (await denied.json())["error"]["mps_code"] == "AuthFailure.SignatureFailure"


async def test_abort_wants_the_bearer_token_like_the_rest_of_the_management_api(
    aiohttp_client: ClientFactory, aiohttp_server: ServerFactory, tmp_path: Path
) -> None:
    mps = await emulator(aiohttp_server)
    client = await receiver(aiohttp_client, tmp_path, mps, reconcile=OFF, api={"token": "t0ken"})
    assert (await client.post("/v1/tasks/x/abort", json={})).status == 401
    authorized = await client.post("/v1/tasks/x/abort", json={}, headers={"Authorization": "Bearer t0ken"})
    assert authorized.status == 404


@pytest.mark.parametrize("fatal", ["AuthFailure.SignatureFailure"])
async def test_a_pass_stops_when_mps_refuses_the_credentials(
    aiohttp_client: ClientFactory, aiohttp_server: ServerFactory, tmp_path: Path, fatal: str
) -> None:
    mps = await emulator(aiohttp_server)
    client = await receiver(aiohttp_client, tmp_path, mps, reconcile=OFF)
    for i in range(3):
        await client.post("/v1/tasks", json={"task_id": f"1300000000-procedure-live-{i}"})
    await stall(client)
    bad = mps_settings(mps).model_copy(update={"secret_key": __import__("pydantic").SecretStr("not-it")})
    r = Reconciler(client.app[STORE], MpsClient(bad), ReconcileSettings(), clock=time.time)
    report = await r.once()
    assert report.asked == 1  # no point asking about the others
    assert report.stopped is not None
    assert fatal in report.stopped
    assert (await task_doc(client, "1300000000-procedure-live-0"))["checks"] == []


async def test_a_pass_that_outlives_its_lease_stops_and_leaves_the_rest_to_the_new_holder(store: Any) -> None:
    now = [time.time()]
    for i in range(5):
        task = Task(id=new_id(), task_id=f"T-{i}", session_id="", session_context="", url="", labels={},
                    state=TaskState.STALLED, created_at=now[0] - 60, updated_at=now[0] - 60)  # fmt: skip
        await store.register_task(task)

    class SlowMps:
        """Each answer takes longer than the lease: meanwhile another reconciler takes it over."""

        asked = 0

        async def describe_task(self, task_id: str) -> None:
            SlowMps.asked += 1
            now[0] += 30.0
            await store.hold_lease(LEASE, "other", ttl=10.0, now=now[0])  # expired ours: taken
            return None

        async def list_tasks(self, **kw: Any) -> Any:
            raise AssertionError("not asked")

        async def abort_task(self, task_id: str) -> str:
            raise AssertionError("not asked")

    settings = ReconcileSettings(lease_ttl=10.0)
    report = await Reconciler(store, SlowMps(), settings, clock=lambda: now[0], holder="me").once()
    assert (report.lease, SlowMps.asked) == ("lost", 1)
    assert report.stopped is not None
    assert (await store.lease_holder(LEASE))[0] == "other"  # not released by the one that lost it
