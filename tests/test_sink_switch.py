"""Switching a sink off and on: by its target's 410, through the API, across processes on one store."""

from __future__ import annotations

import asyncio
from typing import Any

from receiver.http.keys import STORE
from tests.apps import FAST, ClientFactory, dispatcher_of, post, running_clock, sink, start
from tests.payloads import REVIEW
from tests.waiting import eventually


async def test_a_410_switches_the_sink_off_until_re_enabled(
    store_url: str, aiohttp_client: ClientFactory
) -> None:
    client = await start(
        aiohttp_client,
        store_url,
        [{"name": "gone", "kind": "memory", **FAST}, {"name": "witness", "kind": "memory"}],
    )
    gone = sink(client, "gone")
    gone.gone = True
    await post(client, REVIEW)
    await eventually(lambda: gone.attempts == 1)
    await post(client, {**REVIEW, "SessionId": "second"})
    # The dispatcher has been round since the second event was committed: the witness has it.
    await eventually(lambda: len(sink(client, "witness").received) == 2)
    assert gone.attempts == 1  # switched off: nothing more is tried
    stats = {s["sink"]: s for s in (await (await client.get("/v1/sinks")).json())["items"]}
    assert (stats["gone"]["disabled"], stats["gone"]["backlog"]) == ("gone", 2)
    gone.gone = False
    resp = await client.post("/v1/sinks/gone/enable", json={})
    assert resp.status == 200
    await eventually(lambda: len(gone.received) == 2)


async def test_a_sink_re_enabled_through_another_process_resumes_in_the_dispatching_one(
    store_url: str, aiohttp_client: ClientFactory
) -> None:
    """``receiver serve`` without a dispatcher (the API) and ``receiver dispatch`` on one store."""
    sinks: list[dict[str, Any]] = [
        {"name": "gone", "kind": "memory", **FAST},
        {"name": "witness", "kind": "memory"},
    ]
    api = await start(aiohttp_client, store_url, sinks, dispatch_in_serve=False)
    dispatcher = await start(aiohttp_client, store_url, sinks, role="dispatch")
    gone, witness = sink(dispatcher, "gone"), sink(dispatcher, "witness")
    gone.gone = True
    await post(api, REVIEW)
    await eventually(lambda: gone.attempts == 1)

    async def disabled() -> str | None:
        stats = {s["sink"]: s for s in (await (await api.get("/v1/sinks")).json())["items"]}
        return stats["gone"]["disabled"] if "gone" in stats else None

    deadline = asyncio.get_running_loop().time() + 5
    while await disabled() != "gone":  # the 410 switched it off in the store, for every process
        assert asyncio.get_running_loop().time() < deadline
        await asyncio.sleep(0.02)
    await post(api, {**REVIEW, "SessionId": "second"})
    await eventually(lambda: len(witness.received) == 2)
    assert gone.attempts == 1
    gone.gone = False
    resp = await api.post("/v1/sinks/gone/enable", json={})
    assert (resp.status, await resp.json()) == (200, {"sink": "gone", "enabled": True})
    await eventually(lambda: len(gone.received) == 2)
    assert dispatcher_of(dispatcher).status()["gone"]["disabled"] is None


async def test_a_sink_switched_off_in_the_store_by_another_replica_stops_here_too(
    store_url: str, aiohttp_client: ClientFactory
) -> None:
    sinks = [{"name": "a", "kind": "memory"}]
    one = await start(aiohttp_client, store_url, sinks)
    other = await start(aiohttp_client, store_url, sinks, role="dispatch")
    # What the other replica writes when its delivery gets a 410.
    await other.app[STORE].set_sink_disabled("a", "410 from the other replica", now=running_clock())
    await eventually(lambda: dispatcher_of(one).status()["a"]["disabled"] == "410 from the other replica")


async def test_enabling_a_sink_that_is_not_configured_is_a_404_naming_it(
    store_url: str, aiohttp_client: ClientFactory
) -> None:
    client = await start(aiohttp_client, store_url, [{"name": "a", "kind": "memory"}])
    resp = await client.post("/v1/sinks/nope/enable", json={})
    assert resp.status == 404
    error = (await resp.json())["error"]
    assert (error["code"], error["field"]) == ("unknown_sink", "name")
    assert "'nope'" in error["message"]
