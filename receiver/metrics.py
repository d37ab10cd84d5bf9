"""Prometheus metrics: counted as things happen (ingest, deliveries) and read from the store on scrape
(backlog, oldest undelivered, tasks by state). One registry per app, so tests do not share counters.

Under ``serve --workers N`` every worker counts into files of one directory (prometheus_client's
multiprocess mode, which the parent turns on for its workers), and whichever worker answers a
scrape adds up the counts of all of them, those that died included (``Metrics.shared``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest, values
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from receiver.errors import ConfigError

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
AMQP_HELP = "AMQP deliveries since start, by outcome"


class Metrics:
    def __init__(self, shared_dir: Path | None = None) -> None:
        """``shared_dir``: this worker's share of the host's metrics lives there (see ``shared``)."""
        self.registry = CollectorRegistry()
        self._amqp: Gauge | None = None
        own: CollectorRegistry | None = self.registry
        if shared_dir is not None:
            # The counters live in the directory's files, summed at each scrape; not in a registry.
            own = None
            MultiProcessCollector(self.registry, path=str(shared_dir))  # type: ignore[no-untyped-call]
            # The consumer's counts are this process's: each worker sets its own, the scrape sums
            # them, a dead worker's last counts included ("since start" is since the parent started).
            self._amqp = Gauge(
                "receiver_amqp_messages", AMQP_HELP, ["outcome"], multiprocess_mode="sum", registry=None
            )
        self.notifications = Counter(
            "receiver_notifications",
            "Notifications taken in, by channel and outcome (stored, duplicate, invalid, unauthorized, ...)",
            ["channel", "outcome"],
            registry=own,
        )
        self.ingest_seconds = Histogram(
            "receiver_ingest_seconds",
            "From bytes received to committed (or refused), by channel",
            ["channel"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
            registry=own,
        )
        self.deliveries = Counter(
            "receiver_sink_deliveries",
            "Delivery attempts by sink and outcome (delivered, failed, dead)",
            ["sink", "outcome"],
            registry=own,
        )
        self.held_back = Counter(
            "receiver_sink_rate_limited_events",
            "Events a sink's rate limit held back (they waited, or were rescheduled), by sink",
            ["sink"],
            registry=self.registry,
        )
        self.rate_limit = Gauge(
            "receiver_sink_rate_limit",
            "A sink's rate limit in events per second (absent: none)",
            ["sink"],
            registry=self.registry,
        )
        self.key_matches = Counter(
            "receiver_notify_key_matches",
            "Notifications whose Sign matched, by key (derived, or static:<index> in verify.notify_keys)",
            ["key"],
            registry=own,
        )
        # The store's gauges, refreshed by the /metrics handler before each render. Registered once
        # here, so they are there before the first delivery and in processes that never deliver.
        self.snapshot = Snapshot()
        self.registry.register(_SnapshotCollector(lambda: self.snapshot, amqp=self._amqp is None))
        # labels() takes a lock and hashes its arguments on every call: look each child up once.
        self._ingest: dict[tuple[str, str], tuple[Callable[[], None], Callable[[float], None]]] = {}
        self._delivery: dict[tuple[str, str], Callable[[], None]] = {}
        self._key: dict[str, Callable[[], None]] = {}

    def observe_ingest(self, channel: str, outcome: str, seconds: float) -> None:
        children = self._ingest.get((channel, outcome))
        if children is None:
            children = (
                self.notifications.labels(channel, outcome).inc,
                self.ingest_seconds.labels(channel).observe,
            )
            self._ingest[(channel, outcome)] = children
        count, observe = children
        count()
        observe(seconds)

    def observe_delivery(self, sink: str, outcome: str) -> None:
        inc = self._delivery.get((sink, outcome))
        if inc is None:
            inc = self._delivery[(sink, outcome)] = self.deliveries.labels(sink, outcome).inc
        inc()

    def observe_held(self, sink: str, events: int) -> None:
        self.held_back.labels(sink).inc(events)

    def set_rate_limit(self, sink: str, per_second: float | None) -> None:
        if per_second is not None:
            self.rate_limit.labels(sink).set(per_second)

    def observe_key_match(self, key: str) -> None:
        """Count which key a verified notification matched, so an old key can be seen to fall out of use."""
        inc = self._key.get(key)
        if inc is None:
            inc = self._key[key] = self.key_matches.labels(key).inc
        inc()

    @classmethod
    def shared(cls, directory: Path) -> Metrics:
        """A worker's metrics, added up with the other workers' at each scrape. prometheus_client
        must have been imported with ``PROMETHEUS_MULTIPROC_DIR`` set to ``directory``."""
        if not getattr(values.ValueClass, "_multiprocess", False):
            raise ConfigError("shared metrics: PROMETHEUS_MULTIPROC_DIR was not set when the process started")
        return cls(shared_dir=directory)

    @property
    def is_shared(self) -> bool:
        return self._amqp is not None

    def publish_amqp(self, counts: Mapping[str, int]) -> None:
        """Shared metrics: this worker's consumer counts, for every worker's scrape to add up."""
        if self._amqp is not None:
            for outcome, n in counts.items():
                self._amqp.labels(outcome).set(n)

    def render(self) -> bytes:
        self.publish_amqp(self.snapshot.amqp)  # this worker's, as of now
        return generate_latest(self.registry)


class Snapshot:
    """What the store says at scrape time."""

    def __init__(self) -> None:
        self.backlog: dict[str, int] = {}
        self.dead: dict[str, int] = {}
        self.oldest_pending_at: dict[str, float | None] = {}
        self.tasks: dict[str, int] = {}
        self.amqp: dict[str, int] = {}
        self.taken_at = time.time()


class _SnapshotCollector(Collector):
    def __init__(self, read: Callable[[], Snapshot], *, amqp: bool = True) -> None:
        self._read = read
        self._amqp = amqp  # False: the shared gauge reports the consumer's counts

    def collect(self) -> Iterable[Metric]:
        snap = self._read()
        backlog = GaugeMetricFamily("receiver_sink_backlog", "Deliveries pending, by sink", labels=["sink"])
        dead = GaugeMetricFamily(
            "receiver_sink_dead", "Deliveries dead (kept, redrivable), by sink", labels=["sink"]
        )
        age = GaugeMetricFamily(
            "receiver_sink_oldest_undelivered_seconds",
            "Age of the oldest pending delivery, by sink",
            labels=["sink"],
        )
        for sink, n in snap.backlog.items():
            backlog.add_metric([sink], n)
            dead.add_metric([sink], snap.dead.get(sink, 0))
            oldest = snap.oldest_pending_at.get(sink)
            age.add_metric([sink], 0.0 if oldest is None else max(0.0, snap.taken_at - oldest))
        tasks = GaugeMetricFamily("receiver_tasks", "Tasks by state", labels=["state"])
        for state, n in snap.tasks.items():
            tasks.add_metric([state], n)
        yield from (backlog, dead, age, tasks)
        if self._amqp:
            amqp = GaugeMetricFamily("receiver_amqp_messages", AMQP_HELP, labels=["outcome"])
            for outcome, n in snap.amqp.items():
                amqp.add_metric([outcome], n)
            yield amqp
