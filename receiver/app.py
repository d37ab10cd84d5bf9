"""The composition root: builds the adapters from settings, wires them to the use cases, runs them."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Sequence
from typing import TYPE_CHECKING, Literal

import structlog
from aiohttp import web

from receiver import abort_api, guards, notices_api, outbox_api, submit_api
from receiver import web as routes
from receiver.bell import Bell
from receiver.console import add_console
from receiver.console.counts import IngestCounts
from receiver.consumer import AmqpConsumer
from receiver.dispatch import Dispatcher
from receiver.errors import ConfigError, ReceiverError
from receiver.events import NOTIFICATION_CHANNELS, Event
from receiver.ingest import Ingestor
from receiver.leases import LeasedJob, holder_name
from receiver.listeners import Listener
from receiver.metrics import Metrics
from receiver.mps import MpsClient
from receiver.notices import Notices
from receiver.ports import EventLog, NoticeBook, Outbox, ReconcileBook, Recorded, Router, Store, Upkeep
from receiver.reconcile import Reconciler
from receiver.redact import redact_url
from receiver.routing import SinkFilter, router
from receiver.settings import MaintenanceSettings, Settings
from receiver.sinks import build_sink, takes_batches
from receiver.stores import open_store
from receiver.tracing import Tracing, build_provider

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider

log = structlog.get_logger("receiver.app")

NOTICES = web.AppKey("notices", Notices)
TRACING = web.AppKey("tracing", Tracing)


def committed_to(
    *hooks: Callable[[Sequence[Event], Sequence[Recorded]], None] | None,
) -> Callable[[Sequence[Event], Sequence[Recorded]], None] | None:
    """Each committed batch told to every hook given."""
    called = [h for h in hooks if h is not None]
    if len(called) <= 1:
        return called[0] if called else None

    def tell(events: Sequence[Event], recorded: Sequence[Recorded]) -> None:
        for hook in called:
            hook(events, recorded)

    return tell


def build_ingestor(
    settings: Settings,
    store: EventLog,
    clock: Callable[[], float] = time.time,
    on_recorded: Callable[[Sequence[Event], Sequence[Recorded]], None] | None = None,
    metrics: Metrics | None = None,
    notices: Notices | None = None,
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
    policies = {channel: verify.policy_for(channel) for channel in NOTIFICATION_CHANNELS}
    sinks = mps_sinks(settings)
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
        on_signature_failure=notices.signature_failed if notices else None,
    )


def mps_sinks(settings: Settings) -> list[tuple[str, SinkFilter]]:
    """The sinks MPS events are routed to: all but the operator sinks."""
    return [(s.name, s.filter) for s in settings.sinks if not s.operator]


def build_notices(
    settings: Settings, store: NoticeBook, clock: Callable[[], float] = time.time, *, sweep: bool = True
) -> Notices:
    return Notices(
        store,
        operator_sinks=[s.name for s in settings.sinks if s.operator],
        digest_sinks=[(s.name, s.filter) for s in settings.sinks if s.digests],
        settings=settings.operator,
        task_deadline=settings.maintenance.task_deadline,
        sweep_interval=settings.maintenance.interval,
        sweep=sweep,
        clock=clock,
    )


def build_dispatcher(
    settings: Settings,
    store: Outbox,
    clock: Callable[[], float] = time.time,
    metrics: Metrics | None = None,
    notices: Notices | None = None,
    tracing: Tracing | None = None,
) -> Dispatcher:
    sinks = []
    for s in settings.sinks:
        sink = build_sink(s.name, s.kind, s.options)
        if s.max_batch > 1 and not takes_batches(sink):
            raise ConfigError(
                f"sinks.{s.name}: max_batch: expected 1 for kind {s.kind!r}, whose sink takes no batches"
                " (it has no encode and deliver_batch)"
            )
        sinks.append((sink, s.policy()))
    if metrics is not None:
        for s in settings.sinks:
            metrics.set_rate_limit(s.name, s.rate_limit)
    return Dispatcher(
        store,
        sinks,
        poll_interval=settings.dispatch_poll_interval,
        clock=clock,
        observe=metrics.observe_delivery if metrics else None,
        observe_held=metrics.observe_held if metrics else None,
        alert=notices.alert if notices else None,
        tracing=tracing,
    )


def build_reconciler(
    settings: Settings,
    store: ReconcileBook,
    clock: Callable[[], float] = time.time,
    *,
    route: Router | None = None,
    on_recorded: Callable[[], None] | None = None,
) -> Reconciler | None:
    """The reconciler, or None (logged) when MPS cannot be asked: no credentials."""
    try:
        client = MpsClient(settings.mps)
    except ConfigError as exc:
        log.warning("reconciling is off: MPS cannot be asked", reason=str(exc))
        return None
    return Reconciler(
        store,
        client,
        settings.reconcile,
        clock=clock,
        deadline=settings.maintenance.task_deadline,
        route=route,
        on_recorded=on_recorded,
    )


async def maintain(
    store: Upkeep, settings: MaintenanceSettings, clock: Callable[[], float], stop: asyncio.Event
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
    metrics: Metrics | None = None,
    bell: Bell | None = None,
    tracer_provider: TracerProvider | None = None,
) -> web.Application:
    """The aiohttp application. A ``store`` passed in is the caller's: it is used, not closed; so is
    a ``tracer_provider`` (tracing is then on; otherwise it is on as ``settings.tracing`` says).

    ``serve``: the webhook, the management API and the dispatcher, plus the AMQP consumer when
    ``amqp.url`` is set. ``consume``: the AMQP consumer alone (worker replicas). ``dispatch``: the
    dispatcher alone. The last two serve the health probes only. With ``http.management_port``
    set, this app serves the management API and the probes, and ``create_webhook_app`` the webhook
    (``listeners_for`` puts each on its address). The dispatcher and the maintenance loop run in
    one process per store at a time, each under a store lease (``leases.LeasedJob``). Under
    ``serve --workers``: ``metrics`` are the worker's share (``Metrics.shared``), and ``bell`` the
    pipe it rings after a commit and listens to while it dispatches; default, this process alone.
    """
    # Check the signature settings and the exposure now, before anything listens.
    policies = {c.value: settings.verify.policy_for(c).value for c in NOTIFICATION_CHANNELS}
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
    if mps_sinks(settings):  # adopted orphans are routed with the same filters as ingest
        app[routes.ROUTER] = router(mps_sinks(settings))
    tracing = None
    if tracer_provider is not None or settings.tracing.enabled:
        # Only now is OpenTelemetry imported: with tracing off, nothing of it is loaded.
        owned = tracer_provider is None
        tracing = Tracing(tracer_provider or build_provider(settings.tracing), owned=owned)
        app[TRACING] = tracing
    app[routes.TASK_DEADLINE] = settings.maintenance.task_deadline

    async def store_ctx(app: web.Application) -> AsyncIterator[None]:
        owned = store is None
        app[routes.STORE] = await open_store(settings.store) if store is None else store
        log.info("store open", url=redact_url(settings.store.url) if owned else type(store).__name__)
        yield
        if owned:
            await app[routes.STORE].aclose()
            log.info("store closed")

    metrics = metrics or Metrics()
    app[routes.METRICS] = metrics
    holder = holder_name()  # this process, in the leases it holds

    async def notices_ctx(app: web.Application) -> AsyncIterator[None]:
        # Every process counts signature failures; sweeps run where maintenance does.
        notices = build_notices(settings, app[routes.STORE], clock, sweep=role != "consume")
        app[NOTICES] = notices
        stop = asyncio.Event()
        task = asyncio.create_task(notices.run(stop))
        yield
        stop.set()
        await task

    async def tracing_ctx(app: web.Application) -> AsyncIterator[None]:
        yield
        if tracing is not None:
            await asyncio.get_running_loop().run_in_executor(None, tracing.shutdown)  # flushes

    counts = IngestCounts(clock)

    async def counts_ctx(app: web.Application) -> AsyncIterator[None]:
        stop = asyncio.Event()
        flusher = asyncio.create_task(counts.run(app[routes.STORE], stop))
        yield
        stop.set()  # after ingest has drained (registered before it): the last counts go too
        await flusher

    async def dispatch_ctx(app: web.Application) -> AsyncIterator[None]:
        notices = app[NOTICES]

        async def begin() -> Dispatcher:
            dispatcher = build_dispatcher(settings, app[routes.STORE], clock, metrics, notices, tracing)
            await dispatcher.start()
            if bell is not None:
                bell.listen(dispatcher.wake)  # the other workers' commits
            log.info("dispatching", sinks=[s.name for s in settings.sinks])
            return dispatcher

        async def end(dispatcher: Dispatcher) -> None:
            if bell is not None:
                bell.stop_listening()
            await dispatcher.stop(settings.http.shutdown_timeout)

        leased = LeasedJob(
            app[routes.STORE], "dispatch", holder=holder, ttl=settings.lease_seconds, begin=begin, end=end
        )
        app[routes.DISPATCHER] = leased
        await leased.start()
        yield
        await leased.stop()

    async def ingest_ctx(app: web.Application) -> AsyncIterator[None]:
        leased = app.get(routes.DISPATCHER)
        notices = app[NOTICES]

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
        ingestor = build_ingestor(settings, app[routes.STORE], clock, on_recorded, metrics, notices, counts)
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
            tracing=tracing,
        )
        await consumer.start()
        app[routes.CONSUMER] = consumer
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

    # Registered in dependency order; teardown runs in reverse.
    app.cleanup_ctx.append(tracing_ctx)
    app.cleanup_ctx.append(store_ctx)
    app.cleanup_ctx.append(notices_ctx)
    app.cleanup_ctx.append(counts_ctx)
    if role == "dispatch" or (role == "serve" and settings.dispatch_in_serve):
        app.cleanup_ctx.append(dispatch_ctx)
    app.cleanup_ctx.append(ingest_ctx)
    if role == "consume" and settings.amqp.url is None:
        raise ConfigError("consume: amqp.url is not set (RECEIVER_AMQP__URL)")
    if settings.amqp.url is not None and role in ("serve", "consume"):
        app.cleanup_ctx.append(consumer_ctx)

    async def maintenance_ctx(app: web.Application) -> AsyncIterator[None]:
        async def begin() -> tuple[asyncio.Event, asyncio.Task[None]]:
            stop = asyncio.Event()
            return stop, asyncio.create_task(maintain(app[routes.STORE], settings.maintenance, clock, stop))

        async def end(job: tuple[asyncio.Event, asyncio.Task[None]]) -> None:
            stop, task = job
            stop.set()
            await task

        leased = LeasedJob(
            app[routes.STORE], "maintenance", holder=holder, ttl=settings.lease_seconds, begin=begin, end=end
        )
        await leased.start()
        yield
        await leased.stop()

    async def reconcile_ctx(app: web.Application) -> AsyncIterator[None]:
        leased = app.get(routes.DISPATCHER)

        def wake() -> None:  # the dispatcher here, if here; else the worker's that has it, if any
            if leased is not None and (dispatcher := leased.current) is not None:
                dispatcher.wake()
            elif bell is not None:
                bell.ring()

        reconciler = build_reconciler(
            settings,
            app[routes.STORE],
            clock,
            route=app.get(routes.ROUTER),
            on_recorded=wake if leased else None,
        )
        if reconciler is None:
            yield
            return
        log.info("reconciling", interval=settings.reconcile.interval, discover=settings.reconcile.discover)
        stop = asyncio.Event()
        task = asyncio.create_task(reconciler.run(stop))
        yield
        stop.set()
        await task

    if role != "consume":  # one place does it; consumer replicas only consume
        app.cleanup_ctx.append(maintenance_ctx)
        if settings.reconcile.enabled:  # one pass at a time per store: a lease
            app.cleanup_ctx.append(reconcile_ctx)
    routes.add_probes(app)
    if role == "serve":
        if not settings.http.split:
            routes.add_webhook(app, tracing)
        routes.add_management(app)
        outbox_api.add_routes(app, [s.name for s in settings.sinks])
        notices_api.add_routes(app)
        submit_api.add_routes(app, settings.mps, settings.verify.keys())
        abort_api.add_routes(app)
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
    routes.add_webhook(app, main.get(TRACING))
    app.router.add_get("/healthz", routes.healthz)
    return app


def listen_addresses(
    settings: Settings, role: Literal["serve", "consume", "dispatch"] = "serve"
) -> list[tuple[str, str, int]]:
    """Each listener's name, host and port, in start order (the management app first, as the
    webhook's uses what it opened)."""
    if not settings.http.split:
        return [("http", settings.http.host, settings.http.port)]
    host, port = settings.http.management_address
    addresses = [("management", host, port)]
    if role == "serve":
        addresses.append(("webhook", settings.http.host, settings.http.port))
    return addresses


def listeners_for(
    settings: Settings, app: web.Application, role: Literal["serve", "consume", "dispatch"] = "serve"
) -> list[Listener]:
    """Where ``app`` (from ``create_app``) listens: in start order, stopped in reverse."""
    apps = {"http": app, "management": app}
    if settings.http.split and role == "serve":
        apps["webhook"] = create_webhook_app(settings, app)
    return [Listener(name, apps[name], host, port) for name, host, port in listen_addresses(settings, role)]
