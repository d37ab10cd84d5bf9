"""The composition root: ``create_app`` opens each resource a role needs in a cleanup context of its
own (``ROLES``), in dependency order, closes them in reverse, and mounts the routes."""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import structlog
from aiohttp import web

from receiver.bell import Bell
from receiver.build import (
    announce_signatures,
    build_dispatcher,
    build_ingestor,
    build_mps_client,
    build_notices,
    build_reconciler,
    build_sinks,
    committed_to,
    mps_sinks,
)
from receiver.consumer import AmqpConsumer
from receiver.dispatch import Dispatcher
from receiver.errors import ConfigError
from receiver.events import NOTIFICATION_CHANNELS, Event
from receiver.http import guards
from receiver.http.api import add_management
from receiver.http.console.counts import IngestCounts
from receiver.http.keys import (
    BODY_TIMEOUT,
    CLOCK,
    CONSUMER,
    DISPATCHER,
    INGESTOR,
    MASTER_KEY,
    MAX_BODY,
    METRICS,
    MPS_CLIENT,
    MPS_PROBLEM,
    NOTICES,
    NOTIFY_KEYS,
    ROUTER,
    SINK_NAMES,
    SINKS,
    STORE,
    TASK_DEADLINE,
    TRACING,
)
from receiver.http.middleware import errors_middleware
from receiver.http.probes import add_probes
from receiver.http.webhook import add_webhook, keep_webhook_path
from receiver.leases import LeasedJob, holder_name
from receiver.maintenance import maintain
from receiver.metrics import Metrics
from receiver.ports import Recorded, Sink, Store
from receiver.redact import redact_url
from receiver.routing import router
from receiver.settings import Settings
from receiver.stores import open_store
from receiver.tracing import Tracing, build_provider

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider

log = structlog.get_logger("receiver.app")

Role = Literal["serve", "consume", "dispatch"]


@dataclass
class Wiring:
    """What the contexts are built from: the settings, and what ``create_app`` was given."""

    settings: Settings
    role: Role
    clock: Callable[[], float]
    metrics: Metrics
    bell: Bell | None
    tracing: Tracing | None
    store: Store | None  # the caller's (used, never closed); None: opened from the settings
    sinks: Mapping[str, Sink] | None  # the caller's, by name (used, never closed); the rest built
    holder: str  # this process, in the leases it holds
    counts: IngestCounts

    def wake(self, app: web.Application) -> Callable[[], None] | None:
        """What tells the dispatcher of new outbox rows: here, if it runs here; else the bell to
        the worker that has it; None if no dispatcher can be told."""
        leased = app.get(DISPATCHER)
        if leased is None:
            return None

        def wake() -> None:
            if (dispatcher := leased.current) is not None:
                dispatcher.wake()
            elif self.bell is not None:
                self.bell.ring()

        return wake


Context = Callable[[Wiring, web.Application], AsyncIterator[None]]


async def tracing_ctx(w: Wiring, app: web.Application) -> AsyncIterator[None]:
    yield
    if w.tracing is not None:  # flushes; shuts down only the provider it was built with
        await asyncio.get_running_loop().run_in_executor(None, w.tracing.shutdown)


async def store_ctx(w: Wiring, app: web.Application) -> AsyncIterator[None]:
    store = await open_store(w.settings.store) if w.store is None else w.store
    app[STORE] = store
    log.info("store open", url=redact_url(w.settings.store.url) if w.store is None else type(store).__name__)
    yield
    if w.store is None:
        await store.aclose()
        log.info("store closed")


async def notices_ctx(w: Wiring, app: web.Application) -> AsyncIterator[None]:
    # Every process counts signature failures; sweeps run where maintenance does.
    notices = build_notices(w.settings, app[STORE], w.clock, sweep=w.role != "consume")
    app[NOTICES] = notices
    stop = asyncio.Event()
    task = asyncio.create_task(notices.run(stop))
    yield
    stop.set()
    await task


async def counts_ctx(w: Wiring, app: web.Application) -> AsyncIterator[None]:
    stop = asyncio.Event()
    flusher = asyncio.create_task(w.counts.run(app[STORE], stop))
    yield
    stop.set()  # after ingest has drained (registered before it): the last counts go too
    await flusher


async def sinks_ctx(w: Wiring, app: web.Application) -> AsyncIterator[None]:
    """The sinks, built once for every dispatcher this process runs (it may lose its lease and
    take it again); the ones built here are closed here, after the dispatcher has stopped."""
    sinks = build_sinks(w.settings, w.sinks)
    app[SINKS] = sinks
    yield
    for name, sink in sinks.items():
        if w.sinks is None or name not in w.sinks:
            await sink.aclose()
            log.info("sink closed", sink=name)


async def dispatcher_ctx(w: Wiring, app: web.Application) -> AsyncIterator[None]:
    settings, notices = w.settings, app[NOTICES]

    async def begin() -> Dispatcher:
        sinks: dict[str, Sink] = app[SINKS]
        handed = w.role == "serve"  # ingest here tells it each commit (``ingestor_ctx``)
        dispatcher = build_dispatcher(
            settings, app[STORE], sinks, w.clock, w.metrics, notices, w.tracing, handed=handed
        )
        await dispatcher.start()
        if w.bell is not None:
            w.bell.listen(dispatcher.wake)  # the other workers' commits
        log.info("dispatching", sinks=[s.name for s in settings.sinks])
        return dispatcher

    async def end(dispatcher: Dispatcher) -> None:
        if w.bell is not None:
            w.bell.stop_listening()
        await dispatcher.stop(settings.http.shutdown_timeout)

    leased = LeasedJob(
        app[STORE], "dispatch", holder=w.holder, ttl=settings.lease_seconds, begin=begin, end=end
    )
    app[DISPATCHER] = leased
    await leased.start()
    yield
    await leased.stop()


async def ingestor_ctx(w: Wiring, app: web.Application) -> AsyncIterator[None]:
    settings, leased, notices, bell = w.settings, app.get(DISPATCHER), app[NOTICES], w.bell

    def to_dispatcher(events: Sequence[Event], recorded: Sequence[Recorded]) -> None:
        # To the dispatcher here, if here (it sends them from memory); else a ring for the
        # worker's that has it, if any.
        if leased is not None and (dispatcher := leased.current) is not None:
            dispatcher.committed(events, recorded)
        elif bell is not None:
            bell.ring()

    # A digest as soon as this process commits a task's end; without digest sinks, nothing is
    # added per batch (a failed task is told by the sweep).
    on_recorded = committed_to(
        to_dispatcher if leased else None, notices.committed if notices.digests else None
    )
    ingestor = build_ingestor(settings, app[STORE], w.clock, on_recorded, w.metrics, notices, w.counts)
    app[INGESTOR] = ingestor
    announce_signatures(settings)
    yield
    await ingestor.drain()


async def consumer_ctx(w: Wiring, app: web.Application) -> AsyncIterator[None]:
    settings, metrics = w.settings, w.metrics
    consumer = AmqpConsumer(
        app[INGESTOR],
        app[STORE],
        settings.amqp,
        max_body_bytes=settings.http.max_body_bytes,
        clock=w.clock,
        tracing=w.tracing,
    )
    await consumer.start()
    app[CONSUMER] = consumer
    if not metrics.is_shared:
        yield
        await consumer.stop()
        return

    async def publish() -> None:  # for the scrapes the other workers answer
        while True:
            metrics.publish_amqp(consumer.counts)
            await asyncio.sleep(1.0)

    publisher = asyncio.create_task(publish())
    yield
    publisher.cancel()
    await asyncio.gather(publisher, return_exceptions=True)
    await consumer.stop()
    metrics.publish_amqp(consumer.counts)


async def mps_ctx(w: Wiring, app: web.Application) -> AsyncIterator[None]:
    """The one MPS client of the process: the submit and abort routes and the reconciler share it
    (the SDK client holds nothing to close)."""
    client, problem = build_mps_client(w.settings, app[STORE])
    app[MPS_CLIENT] = client
    app[MPS_PROBLEM] = problem
    if w.role == "serve":
        mps = w.settings.mps
        if client is not None:
            log.info("submitting to MPS", endpoint=mps.endpoint, region=mps.region)
        else:
            log.warning("submitting is off: POST /v1/tasks/submit answers 503", reason=problem)
    yield


async def maintenance_ctx(w: Wiring, app: web.Application) -> AsyncIterator[None]:
    settings = w.settings

    async def begin() -> tuple[asyncio.Event, asyncio.Task[None]]:
        stop = asyncio.Event()
        return stop, asyncio.create_task(maintain(app[STORE], settings.maintenance, w.clock, stop))

    async def end(job: tuple[asyncio.Event, asyncio.Task[None]]) -> None:
        stop, task = job
        stop.set()
        await task

    leased = LeasedJob(
        app[STORE], "maintenance", holder=w.holder, ttl=settings.lease_seconds, begin=begin, end=end
    )
    await leased.start()
    yield
    await leased.stop()


async def reconcile_ctx(w: Wiring, app: web.Application) -> AsyncIterator[None]:
    settings, client = w.settings, app[MPS_CLIENT]
    if client is None:
        log.warning("reconciling is off: MPS cannot be asked", reason=app[MPS_PROBLEM])
        yield
        return
    reconciler = build_reconciler(
        settings, app[STORE], w.clock, client=client, route=app.get(ROUTER), on_recorded=w.wake(app)
    )
    assert reconciler is not None  # (given a client, there is one)
    log.info("reconciling", interval=settings.reconcile.interval, discover=settings.reconcile.discover)
    stop = asyncio.Event()
    task = asyncio.create_task(reconciler.run(stop))
    yield
    stop.set()
    await task


def _always(settings: Settings) -> bool:
    return True


@dataclass(frozen=True)
class Part:
    """A cleanup context, and whether the settings ask for it."""

    open: Context
    when: Callable[[Settings], bool] = _always


TRACING_PART = Part(tracing_ctx)
STORE_PART = Part(store_ctx)
NOTICES_PART = Part(notices_ctx)
COUNTS_PART = Part(counts_ctx)
INGESTOR_PART = Part(ingestor_ctx)
CONSUMER_PART = Part(consumer_ctx, lambda s: s.amqp.url is not None)
MAINTENANCE_PART = Part(maintenance_ctx)
RECONCILE_PART = Part(reconcile_ctx, lambda s: s.reconcile.enabled)  # one pass at a time: a lease

# Per role, what it opens, in dependency order (teardown runs in reverse). ``serve``: the webhook,
# the management API and the dispatcher (unless ``dispatch_in_serve`` is off), plus the AMQP
# consumer when ``amqp.url`` is set. ``consume``: the AMQP consumer alone (worker replicas: no
# dispatcher, no maintenance). ``dispatch``: the dispatcher alone, ingesting nothing. The
# dispatcher, the maintenance loop and the reconciler run in one process per store at a time,
# each under a store lease.
ROLES: dict[Role, tuple[Part, ...]] = {
    "serve": (
        TRACING_PART,
        STORE_PART,
        NOTICES_PART,
        COUNTS_PART,
        Part(sinks_ctx, lambda s: s.dispatch_in_serve),
        Part(dispatcher_ctx, lambda s: s.dispatch_in_serve),
        INGESTOR_PART,
        CONSUMER_PART,
        Part(mps_ctx),
        MAINTENANCE_PART,
        RECONCILE_PART,
    ),
    "consume": (TRACING_PART, STORE_PART, NOTICES_PART, COUNTS_PART, INGESTOR_PART, CONSUMER_PART),
    "dispatch": (
        TRACING_PART,
        STORE_PART,
        NOTICES_PART,
        Part(sinks_ctx),
        Part(dispatcher_ctx),
        Part(mps_ctx, lambda s: s.reconcile.enabled),
        MAINTENANCE_PART,
        RECONCILE_PART,
    ),
}


def create_app(
    settings: Settings,
    *,
    store: Store | None = None,
    sinks: Mapping[str, Sink] | None = None,
    clock: Callable[[], float] = time.time,
    role: Role = "serve",
    metrics: Metrics | None = None,
    bell: Bell | None = None,
    tracer_provider: TracerProvider | None = None,
) -> web.Application:
    """The aiohttp application of ``role`` (see ``ROLES``). A ``store`` passed in is the caller's:
    it is used, not closed; so are ``sinks`` (by the name of a configured sink, in place of the one
    its kind and options would build; policy and filter still from the settings) and a
    ``tracer_provider`` (tracing is then on; otherwise it is on as ``settings.tracing`` says).

    ``consume`` and ``dispatch`` serve the health probes only. With ``http.management_port`` set,
    this app serves the management API and the probes, and ``http.webhook.webhook_app`` the
    webhook (``listeners.listeners_for`` puts each on its address). Under ``serve --workers``:
    ``metrics`` are the worker's share (``Metrics.shared``), and ``bell`` the pipe it rings after
    a commit and listens to while it dispatches; default, this process alone.
    """
    # Check the signature settings and the exposure now, before anything listens.
    for channel in NOTIFICATION_CHANNELS:
        settings.verify.policy_for(channel)
    if role == "serve":
        guards.check_exposure(settings)
    if role == "consume" and settings.amqp.url is None:
        raise ConfigError("consume: amqp.url is not set (RECEIVER_AMQP__URL)")
    app = web.Application(
        client_max_size=settings.http.max_body_bytes, middlewares=[errors_middleware, guards.body_timeout]
    )
    app[MAX_BODY] = settings.http.max_body_bytes
    app[BODY_TIMEOUT] = settings.http.body_timeout
    app[guards.GUARD] = guards.guard_for(settings)
    app[CLOCK] = clock
    app[TASK_DEADLINE] = settings.maintenance.task_deadline
    app[SINK_NAMES] = frozenset(s.name for s in settings.sinks)
    keys = settings.verify.keys()
    app[MASTER_KEY] = keys.master[0] if keys.master else None
    app[NOTIFY_KEYS] = frozenset(keys.static)
    if mps_sinks(settings):  # adopted orphans are routed with the same filters as ingest
        app[ROUTER] = router(mps_sinks(settings))
    tracing = None
    if tracer_provider is not None or settings.tracing.enabled:
        # Only now is OpenTelemetry imported: with tracing off, nothing of it is loaded.
        tracing = Tracing(tracer_provider or build_provider(settings.tracing), owned=tracer_provider is None)
        app[TRACING] = tracing
    metrics = metrics or Metrics()
    app[METRICS] = metrics
    wiring = Wiring(
        settings, role, clock, metrics, bell, tracing, store, sinks, holder_name(), IngestCounts(clock)
    )
    for part in ROLES[role]:
        if part.when(settings):
            app.cleanup_ctx.append(functools.partial(part.open, wiring))
    add_probes(app)
    if role == "serve":
        if settings.http.split:
            keep_webhook_path(app)
        else:
            add_webhook(app, tracing)
        add_management(app, settings)
    return app
