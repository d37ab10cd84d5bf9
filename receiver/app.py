"""The composition root: builds the adapters from settings, wires them to the use cases, runs them."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from typing import Literal

import structlog
from aiohttp import web

from receiver import outbox_api, submit_api
from receiver import web as routes
from receiver.consumer import AmqpConsumer
from receiver.dispatch import Dispatcher
from receiver.errors import ConfigError, ReceiverError
from receiver.events import Channel
from receiver.ingest import Ingestor
from receiver.metrics import Metrics
from receiver.ports import Store
from receiver.routing import router
from receiver.settings import MaintenanceSettings, Settings
from receiver.sinks import build_sink
from receiver.stores import open_store

log = structlog.get_logger("receiver.app")


def build_ingestor(
    settings: Settings,
    store: Store,
    clock: Callable[[], float] = time.time,
    on_recorded: Callable[[], None] | None = None,
    metrics: Metrics | None = None,
) -> Ingestor:
    verify = settings.verify
    policies = {channel: verify.policy_for(channel) for channel in Channel}
    sinks = [(s.name, s.filter) for s in settings.sinks]
    return Ingestor(
        store,
        keys=verify.keys(),
        policies=policies,
        skew_seconds=verify.skew_seconds,
        max_batch=settings.store.max_batch,
        clock=clock,
        route=router(sinks) if sinks else None,
        on_recorded=on_recorded,
        observe=metrics.observe_ingest if metrics else None,
    )


def build_dispatcher(
    settings: Settings, store: Store, clock: Callable[[], float] = time.time, metrics: Metrics | None = None
) -> Dispatcher:
    sinks = [(build_sink(s.name, s.kind, s.options), s.policy()) for s in settings.sinks]
    return Dispatcher(
        store,
        sinks,
        poll_interval=settings.dispatch_poll_interval,
        clock=clock,
        observe=metrics.observe_delivery if metrics else None,
    )


async def maintain(
    store: Store, settings: MaintenanceSettings, clock: Callable[[], float], stop: asyncio.Event
) -> None:
    """Now and then: mark quiet tasks stalled, purge what retention allows. Never raises; returns
    between passes once ``stop`` is set (never cancelled in the middle of one)."""
    while not stop.is_set():
        now = clock()
        try:
            if settings.stall_after:
                stalled = await store.mark_stalled(now - settings.stall_after)
                if stalled:
                    log.warning("tasks stalled: no notification for too long", count=stalled)
            if settings.retention_days:
                payloads, deliveries = await store.purge(now - settings.retention_days * 86400)
                if payloads or deliveries:
                    log.info("retention", payloads_dropped=payloads, deliveries_deleted=deliveries)
        except ReceiverError as exc:
            log.warning("maintenance pass failed; next pass retries", error=str(exc))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=settings.interval)


def create_app(
    settings: Settings,
    *,
    store: Store | None = None,
    clock: Callable[[], float] = time.time,
    role: Literal["serve", "consume", "dispatch"] = "serve",
) -> web.Application:
    """The aiohttp application. A ``store`` passed in is the caller's: it is used, not closed.

    ``serve``: the webhook, the management API and the dispatcher, plus the AMQP consumer when
    ``amqp.url`` is set. ``consume``: the AMQP consumer alone (worker replicas). ``dispatch``: the
    dispatcher alone. The last two serve the health probes only.
    """
    # Check the signature settings now, before anything listens.
    policies = {channel.value: settings.verify.policy_for(channel).value for channel in Channel}
    app = web.Application(
        client_max_size=settings.http.max_body_bytes,
        middlewares=[routes.errors_middleware],
    )
    app[routes.MAX_BODY] = settings.http.max_body_bytes
    app[routes.API_TOKEN] = settings.api.token.get_secret_value() if settings.api.token else ""
    app[routes.CLOCK] = clock
    app[routes.TASK_DEADLINE] = settings.maintenance.task_deadline

    async def store_ctx(app: web.Application) -> AsyncIterator[None]:
        owned = store is None
        app[routes.STORE] = await open_store(settings.store) if store is None else store
        log.info("store open", url=settings.store.url if owned else type(store).__name__)
        yield
        if owned:
            await app[routes.STORE].aclose()
            log.info("store closed")

    metrics = Metrics()
    app[routes.METRICS] = metrics

    async def dispatch_ctx(app: web.Application) -> AsyncIterator[None]:
        dispatcher = build_dispatcher(settings, app[routes.STORE], clock, metrics)
        await dispatcher.start()
        app[routes.DISPATCHER] = dispatcher
        log.info("dispatching", sinks=[s.name for s in settings.sinks])
        yield
        await dispatcher.stop(settings.http.shutdown_timeout)

    async def ingest_ctx(app: web.Application) -> AsyncIterator[None]:
        dispatcher = app.get(routes.DISPATCHER)
        ingestor = build_ingestor(
            settings, app[routes.STORE], clock, dispatcher.wake if dispatcher else None, metrics
        )
        app[routes.INGESTOR] = ingestor
        if "off" in policies.values():
            log.warning(
                "signature checking is off for some channels: notifications are stored without"
                " proof that MPS sent them; set verify.notify_keys to turn it on",
                policies=policies,
            )
        else:
            log.info("signature checking", policies=policies, keys=len(settings.verify.keys()))
        yield
        await ingestor.drain()

    async def consumer_ctx(app: web.Application) -> AsyncIterator[None]:
        consumer = AmqpConsumer(
            app[routes.INGESTOR],
            app[routes.STORE],
            settings.amqp,
            max_body_bytes=settings.http.max_body_bytes,
        )
        await consumer.start()
        app[routes.CONSUMER] = consumer
        yield
        await consumer.stop()

    # Registered in dependency order; teardown runs in reverse.
    app.cleanup_ctx.append(store_ctx)
    if role == "dispatch" or (role == "serve" and settings.dispatch_in_serve):
        app.cleanup_ctx.append(dispatch_ctx)
    app.cleanup_ctx.append(ingest_ctx)
    if role == "consume" and settings.amqp.url is None:
        raise ConfigError("consume: amqp.url is not set (RECEIVER_AMQP__URL)")
    if settings.amqp.url is not None and role in ("serve", "consume"):
        app.cleanup_ctx.append(consumer_ctx)

    async def maintenance_ctx(app: web.Application) -> AsyncIterator[None]:
        stop = asyncio.Event()
        task = asyncio.create_task(maintain(app[routes.STORE], settings.maintenance, clock, stop))
        yield
        stop.set()
        await task

    if role != "consume":  # one place does it; consumer replicas only consume
        app.cleanup_ctx.append(maintenance_ctx)
    if role == "serve":
        routes.add_routes(app)
        outbox_api.add_routes(app)
        submit_api.add_routes(app, settings.mps, settings.verify.keys())
    else:
        routes.add_probes(app)
    return app
