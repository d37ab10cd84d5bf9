"""The composition root: builds the adapters from settings, wires them to the use cases, runs them."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from typing import Literal

import structlog
from aiohttp import web

from receiver import guards, outbox_api, submit_api
from receiver import web as routes
from receiver.console import add_console
from receiver.console.counts import IngestCounts
from receiver.consumer import AmqpConsumer
from receiver.dispatch import Dispatcher
from receiver.errors import ConfigError, ReceiverError
from receiver.events import Channel
from receiver.ingest import Ingestor
from receiver.listeners import Listener
from receiver.metrics import Metrics
from receiver.ports import Store
from receiver.redact import redact_url
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
    counts: IngestCounts | None = None,
) -> Ingestor:
    verify = settings.verify
    observe = metrics.observe_ingest if metrics else None
    if counts is not None:  # every outcome also goes to the counts the console reads

        def observe_and_count(channel: str, outcome: str, seconds: float) -> None:
            if metrics is not None:
                metrics.observe_ingest(channel, outcome, seconds)
            counts.add(outcome)

        observe = observe_and_count
    policies = {channel: verify.policy_for(channel) for channel in Channel}
    sinks = [(s.name, s.filter) for s in settings.sinks]
    return Ingestor(
        store,
        keys=verify.keys(),
        policies=policies,
        skew_seconds=verify.skew_seconds,
        max_ahead_seconds=verify.max_ahead_seconds,
        keep_file_tasks=settings.ingest.file_task_notifications == "store",
        max_batch=settings.store.max_batch,
        clock=clock,
        route=router(sinks) if sinks else None,
        on_recorded=on_recorded,
        observe=observe,
        observe_key=metrics.observe_key_match if metrics else None,
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
    """Now and then: mark quiet tasks stalled, purge what retention allows (payloads no delivery
    still needs, delivered outbox rows, quarantine rows). Never raises; returns
    between passes once ``stop`` is set (never cancelled in the middle of one)."""
    while not stop.is_set():
        now = clock()
        try:
            if settings.stall_after:
                stalled = await store.mark_stalled(now - settings.stall_after, now=now)
                if stalled:
                    log.warning("tasks stalled: no notification for too long", count=stalled)
            backfilled = 0
            while backfilled < 100_000 and (n := await store.backfill_search(2_000)):
                backfilled += n  # events stored before the search existed; the rest next pass
            if backfilled:
                log.info("search rows derived for events stored before", events=backfilled)
            if settings.retention_days:
                before = now - settings.retention_days * 86400
                payloads, deliveries = await store.purge(before)
                quarantined = await store.purge_quarantine(before)
                counts = await store.purge_ingest_counts(before)
                if payloads or deliveries or quarantined or counts:
                    log.info(
                        "retention",
                        payloads_dropped=payloads,
                        deliveries_deleted=deliveries,
                        quarantine_deleted=quarantined,
                        ingest_counts_deleted=counts,
                    )
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
    dispatcher alone. The last two serve the health probes only. With ``http.management_port``
    set, this app serves the management API and the probes, and ``create_webhook_app`` the webhook
    (``listeners_for`` puts each on its address).
    """
    # Check the signature settings and the exposure now, before anything listens.
    policies = {channel.value: settings.verify.policy_for(channel).value for channel in Channel}
    if role == "serve":
        guards.check_exposure(settings)
    app = web.Application(
        client_max_size=settings.http.max_body_bytes,
        middlewares=[routes.errors_middleware, guards.management_guard, guards.body_timeout],
    )
    app[routes.MAX_BODY] = settings.http.max_body_bytes
    app[guards.BODY_TIMEOUT] = settings.http.body_timeout
    app[guards.GUARD] = guards.guard_for(settings)
    app[routes.CLOCK] = clock
    if settings.sinks:  # adopted orphans are routed with the same filters as ingest
        app[routes.ROUTER] = router([(s.name, s.filter) for s in settings.sinks])
    app[routes.TASK_DEADLINE] = settings.maintenance.task_deadline

    async def store_ctx(app: web.Application) -> AsyncIterator[None]:
        owned = store is None
        app[routes.STORE] = await open_store(settings.store) if store is None else store
        log.info("store open", url=redact_url(settings.store.url) if owned else type(store).__name__)
        yield
        if owned:
            await app[routes.STORE].aclose()
            log.info("store closed")

    metrics = Metrics()
    app[routes.METRICS] = metrics
    counts = IngestCounts(clock)

    async def counts_ctx(app: web.Application) -> AsyncIterator[None]:
        stop = asyncio.Event()
        flusher = asyncio.create_task(counts.run(app[routes.STORE], stop))
        yield
        stop.set()  # after ingest has drained (registered before it): the last counts go too
        await flusher

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
            settings, app[routes.STORE], clock, dispatcher.wake if dispatcher else None, metrics, counts
        )
        app[routes.INGESTOR] = ingestor
        if "off" in policies.values():
            log.warning(
                "signature checking is off for some channels: notifications are stored without"
                " proof that MPS sent them; set verify.notify_keys to turn it on",
                policies=policies,
            )
        else:
            keys = settings.verify.keys()
            log.info(
                "signature checking",
                policies=policies,
                static_keys=len(keys.static),
                master_keys=len(keys.master),
            )
        yield
        await ingestor.drain()

    async def consumer_ctx(app: web.Application) -> AsyncIterator[None]:
        consumer = AmqpConsumer(
            app[routes.INGESTOR],
            app[routes.STORE],
            settings.amqp,
            max_body_bytes=settings.http.max_body_bytes,
            clock=clock,
        )
        await consumer.start()
        app[routes.CONSUMER] = consumer
        yield
        await consumer.stop()

    # Registered in dependency order; teardown runs in reverse.
    app.cleanup_ctx.append(store_ctx)
    app.cleanup_ctx.append(counts_ctx)
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
    routes.add_probes(app)
    if role == "serve":
        if not settings.http.split:
            routes.add_webhook(app)
        routes.add_management(app)
        outbox_api.add_routes(app, [s.name for s in settings.sinks])
        submit_api.add_routes(app, settings.mps, settings.verify.keys())
        add_console(app, settings)  # where the management API is served
    return app


def create_webhook_app(settings: Settings, main: web.Application) -> web.Application:
    """The webhook's own listener (``http.management_port`` set): ``POST /v1/notifications`` and
    ``/healthz``, on the ingestor and store of ``main``, which must have started first."""
    app = web.Application(
        client_max_size=settings.http.max_body_bytes,
        middlewares=[routes.errors_middleware, guards.body_timeout],
    )
    app[routes.MAX_BODY] = settings.http.max_body_bytes
    app[guards.BODY_TIMEOUT] = settings.http.body_timeout

    async def share(app: web.Application) -> None:
        app[routes.INGESTOR] = main[routes.INGESTOR]
        app[routes.STORE] = main[routes.STORE]

    app.on_startup.append(share)
    routes.add_webhook(app)
    app.router.add_get("/healthz", routes.healthz)
    return app


def listeners_for(
    settings: Settings, app: web.Application, role: Literal["serve", "consume", "dispatch"] = "serve"
) -> list[Listener]:
    """Where ``app`` (from ``create_app``) listens: in start order (the management app first, as
    the webhook's uses what it opened), stopped in reverse."""
    if not settings.http.split:
        return [Listener("http", app, settings.http.host, settings.http.port)]
    host, port = settings.http.management_address
    listeners = [Listener("management", app, host, port)]
    if role == "serve":
        webhook = create_webhook_app(settings, app)
        listeners.append(Listener("webhook", webhook, settings.http.host, settings.http.port))
    return listeners
