"""How the composition root builds each part from settings: the ingestor, the dispatcher and its
sinks, the notices, the MPS client and the reconciler."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence

import structlog

from receiver.dispatch import Dispatcher
from receiver.errors import ConfigError
from receiver.events import NOTIFICATION_CHANNELS, Event
from receiver.http.console.counts import IngestCounts
from receiver.ingest import Ingestor
from receiver.metrics import Metrics
from receiver.mps import MpsClient, shared_budgets
from receiver.notices import Notices
from receiver.ports import EventLog, Leases, NoticeBook, Outbox, ReconcileBook, Recorded, Router, Sink
from receiver.reconcile import Reconciler
from receiver.routing import SinkFilter, router
from receiver.settings import Settings
from receiver.sinks import build_sink, takes_batches
from receiver.tracing import Tracing

log = structlog.get_logger("receiver.app")


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
        commits_in_flight=settings.store.ingest_commits(),
        clock=clock,
        route=router(sinks) if sinks else None,
        on_recorded=on_recorded,
        observe=observe,
        observe_key=metrics.observe_key_match if metrics else None,
        on_signature_failure=notices.signature_failed if notices else None,
    )


def announce_signatures(settings: Settings) -> None:
    """Say at start-up what the ingestor checks of each channel's signatures (a warning if off)."""
    policies = {c.value: settings.verify.policy_for(c).value for c in NOTIFICATION_CHANNELS}
    if "off" in policies.values():
        log.warning(
            "signature checking is off for some channels: notifications are stored without"
            " proof that MPS sent them; set verify.notify_keys to turn it on",
            policies=policies,
        )
        return
    keys = settings.verify.keys()
    log.info(
        "signature checking", policies=policies, static_keys=len(keys.static), master_keys=len(keys.master)
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


def build_sinks(settings: Settings, given: Mapping[str, Sink] | None = None) -> dict[str, Sink]:
    """The configured sinks by name, in their order: those ``given`` (a caller's own, for the same
    names) as they are, the others built from their kind and options."""
    sinks: dict[str, Sink] = {}
    for s in settings.sinks:
        sink = given[s.name] if given and s.name in given else build_sink(s.name, s.kind, s.options)
        if s.max_batch > 1 and not takes_batches(sink):
            raise ConfigError(
                f"sinks.{s.name}: max_batch: expected 1 for kind {s.kind!r}, whose sink takes no batches"
                " (it has no encode and deliver_batch)"
            )
        sinks[s.name] = sink
    return sinks


def build_dispatcher(
    settings: Settings,
    store: Outbox,
    sinks: Mapping[str, Sink],
    clock: Callable[[], float] = time.time,
    metrics: Metrics | None = None,
    notices: Notices | None = None,
    tracing: Tracing | None = None,
    handed: bool = False,
) -> Dispatcher:
    """The dispatcher of ``sinks`` (``build_sinks``), each with its configured policy. It does not
    close them: whoever built them does. ``handed``: ingest here tells it each commit."""
    if metrics is not None:
        for s in settings.sinks:
            metrics.set_rate_limit(s.name, s.rate_limit)
    return Dispatcher(
        store,
        [(sinks[s.name], s.policy()) for s in settings.sinks],
        poll_interval=settings.dispatch_poll_interval,
        clock=clock,
        observe=metrics.observe_delivery if metrics else None,
        observe_held=metrics.observe_held if metrics else None,
        alert=notices.alert if notices else None,
        tracing=tracing,
        handed=handed,
    )


def build_mps_client(settings: Settings, store: Leases) -> tuple[MpsClient | None, str]:
    """The one MPS client of a process, or None and why not (no credentials). The actions any
    process's API calls keep to one budget for all processes (leased from the store)."""
    try:
        return MpsClient(settings.mps, budgets=shared_budgets(store, settings.mps)), ""
    except ConfigError as exc:  # the service runs; only asking MPS is off, and says why
        return None, str(exc)


def build_reconciler(
    settings: Settings,
    store: ReconcileBook,
    clock: Callable[[], float] = time.time,
    *,
    client: MpsClient | None = None,
    route: Router | None = None,
    on_recorded: Callable[[], None] | None = None,
) -> Reconciler | None:
    """The reconciler on ``client`` (none given: one of its own), or None (logged) when MPS cannot
    be asked: no credentials."""
    if client is None:
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
