"""The probes, answered without a token: ``/healthz``, ``/readyz`` and the Prometheus scrape ``/metrics``."""

from __future__ import annotations

import asyncio
from typing import Any

import structlog
from aiohttp import web

from receiver.errors import StoreUnavailableError
from receiver.http.keys import CONSUMER, METRICS, STORE
from receiver.http.responses import json_response
from receiver.metrics import CONTENT_TYPE, Snapshot

log = structlog.get_logger("receiver.web")


async def healthz(request: web.Request) -> web.Response:
    return json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    """Ready = the store takes writes and, when a consumer runs, the broker connection is up."""
    body: dict[str, Any] = {"status": "ready", "store": "ok"}
    try:
        await asyncio.wait_for(request.app[STORE].ping(), timeout=2.0)
    except (StoreUnavailableError, TimeoutError) as exc:
        # Probes are unauthenticated: the reason stays generic, the detail goes to the log.
        log.error("readiness: store unavailable", error=str(exc) or "ping timed out")
        body.update(status="unavailable", store="unavailable")
    consumer = request.app.get(CONSUMER)
    if consumer is not None:
        body["amqp"] = {"state": consumer.state, **consumer.counts}
        if not consumer.connected:
            body["status"] = "unavailable"
    return json_response(body, 200 if body["status"] == "ready" else 503)


async def metrics(request: web.Request) -> web.Response:
    """Prometheus text format. The gauges are read from the store now."""
    store = request.app[STORE]
    snap = Snapshot()
    try:
        for s in await store.sink_stats():
            snap.backlog[s.sink] = s.pending
            snap.dead[s.sink] = s.dead
            snap.oldest_pending_at[s.sink] = s.oldest_pending_at
        snap.tasks = await store.task_counts()
    except StoreUnavailableError:
        pass  # the counters still answer; the gauges are missing rather than wrong
    consumer = request.app.get(CONSUMER)
    if consumer is not None:
        snap.amqp = dict(consumer.counts)
    registry = request.app[METRICS]
    registry.snapshot = snap
    return web.Response(body=registry.render(), headers={"Content-Type": CONTENT_TYPE})


def add_probes(app: web.Application) -> None:
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
