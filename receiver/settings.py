"""The settings' models: every section and key, its default and its checks (``receiver.config`` loads them).

Built once in ``main`` and passed down; nothing else reads the environment. Secrets are ``SecretStr``
so they never show in a repr or a log line.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator
from pydantic_settings import (
    BaseSettings,
    SettingsConfigDict,
)

from receiver.emulator.settings import EmulatorSettings
from receiver.errors import ConfigError
from receiver.events import Channel, NotifyKeys, SignPolicy
from receiver.retries import DEFAULT_POLICY, SinkPolicy
from receiver.routing import SinkFilter


class Section(BaseModel):
    # hide_input_in_errors: a misspelt key must not print its (perhaps secret) value.
    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)


class HttpSettings(Section):
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    # A second listener for the management API and the probes; unset: all on host:port. When set,
    # host:port serves only the webhook (and /healthz). management_host defaults to host.
    management_host: str | None = None
    management_port: int | None = Field(default=None, ge=0, le=65535)
    # Host (and Origin) names the management API answers, beside loopback and the bind host;
    # "*" turns the check off (e.g. behind a proxy that checks it).
    allowed_hosts: list[str] = Field(default_factory=list)
    max_body_bytes: int = Field(default=262_144, gt=0)  # real notifications are a few KiB
    body_timeout: float = Field(default=10.0, gt=0)  # seconds to read a request body, else 408
    access_log: bool = False  # one summary line per notification is logged anyway
    shutdown_timeout: float = Field(default=10.0, ge=0)
    # serve: processes on the listening socket(s), which a parent binds once and restarts them on.
    # 1: one process, no parent.
    workers: int = Field(default=1, ge=1, le=256)

    @model_validator(mode="after")
    def _management_listener_has_a_port(self) -> HttpSettings:
        if self.management_host is not None and self.management_port is None:
            raise ValueError("management_host: expected http.management_port to be set too")
        return self

    @property
    def split(self) -> bool:
        """Whether the management API and the probes have a listener of their own."""
        return self.management_port is not None

    @property
    def management_address(self) -> tuple[str, int]:
        """Where the management API and the probes listen."""
        if self.management_port is None:
            return self.host, self.port
        return self.management_host or self.host, self.management_port


class StoreSettings(Section):
    url: str = "sqlite:///var/receiver.db"  # or postgresql://user:password@host/db (a secret: use the env)
    pool_size: int = Field(default=10, gt=0)  # PostgreSQL connections per process
    sqlite_synchronous: Literal["FULL", "NORMAL"] = "FULL"
    busy_timeout_ms: int = Field(default=5000, ge=0)
    max_batch: int = Field(default=256, gt=0)  # events per group commit
    # Ingest commits running at once. None: 1 on SQLite (one writer), 2 on PostgreSQL (one
    # batch's round trips overlap the next one's; its lock per TaskId keeps each task in order).
    commits_in_flight: int | None = Field(default=None, gt=0)

    @property
    def postgres(self) -> bool:
        """Whether ``url`` names a PostgreSQL database (else it must be SQLite's)."""
        return self.url.startswith(("postgresql://", "postgres://"))

    def ingest_commits(self) -> int:
        if self.commits_in_flight is not None:
            return self.commits_in_flight
        return 2 if self.postgres else 1


class VerifySettings(Section):
    notify_keys: list[SecretStr] = Field(default_factory=list)
    # Per-task keys for the tasks receiver submits: NotifyKey = HMAC(master key, SessionContext).
    # The first signs new tasks; every one verifies (rotation). Static keys stay for other tasks.
    master_keys: list[SecretStr] = Field(default_factory=list)
    # None: "required" once any key is configured, "off" (with a warning) when none is.
    policy: SignPolicy | None = None
    http_policy: SignPolicy | None = None  # per-channel overrides of ``policy``
    amqp_policy: SignPolicy | None = None
    skew_seconds: float = Field(default=60.0, ge=0)
    # MPS signs for 10 minutes: a Timestamp further ahead than this (plus the skew) is refused.
    max_ahead_seconds: float = Field(default=600.0, ge=0)

    def keys(self) -> NotifyKeys:
        def values(secrets: list[SecretStr]) -> tuple[str, ...]:
            return tuple(k.get_secret_value() for k in secrets if k.get_secret_value())

        return NotifyKeys(static=values(self.notify_keys), master=values(self.master_keys))

    def policy_for(self, channel: Channel) -> SignPolicy:
        override = self.http_policy if channel is Channel.HTTP else self.amqp_policy
        policy = override or self.policy
        if policy is None:
            return SignPolicy.REQUIRED if self.keys() else SignPolicy.OFF
        if policy is not SignPolicy.OFF and not self.keys():
            raise ConfigError(
                f"verify: policy {policy.value!r} for {channel.value} needs at least one notify key"
                " (verify.notify_keys or RECEIVER_VERIFY__NOTIFY_KEYS, or verify.master_keys)"
            )
        return policy


class ApiSettings(Section):
    token: SecretStr | None = None  # bearer token for the management API (/v1/ but the webhook)
    # Serve the management API without a token on a non-loopback address (something in front
    # guards it). Without this, that combination is refused at start-up.
    open: bool = False


class AmqpSettings(Section):
    """The CMQ stand-in: a RabbitMQ queue (``CmqModel=Queue``) or topic (``CmqModel=Topic``)."""

    url: SecretStr | None = None  # amqp://user:password@host:5672/vhost; None: no consumer
    model: Literal["queue", "topic"] = "queue"
    queue: str = "mps.notifications"  # queue model: the queue MPS writes to (named after QueueName)
    topic: str = "mps.notifications.topic"  # topic model: the exchange named after TopicName
    topic_type: Literal["fanout", "topic"] = "fanout"
    subscription: str = "receiver"  # topic model: our queue bound to the topic is "<topic>.<subscription>"
    binding_key: str = "#"  # topic model with topic_type "topic"
    prefetch: int = Field(default=100, gt=0, le=65535)  # also bounds the notifications in flight
    delivery_limit: int = Field(default=20, gt=0)  # set explicitly: RabbitMQ < 4.0 has no default
    heartbeat: int = Field(default=30, ge=0)
    reconnect_interval: float = Field(default=2.0, gt=0)
    store_retry_max: float = Field(default=30.0, gt=0)  # longest pause between store checks when it is down
    shutdown_timeout: float = Field(default=10.0, ge=0)
    # Bounds the dead-letter queue (oldest dropped first) when receiver creates it; an existing queue
    # is left as it is (RabbitMQ refuses to redeclare a queue with a new argument): use a policy.
    dead_letter_max_length: int = Field(default=100_000, ge=0)  # 0: no argument, a policy only
    # The name the broker shows for the consumer's connection; None: receiver-consumer-<pid>-<random>.
    connection_name: str | None = Field(default=None, min_length=1, max_length=255)

    @property
    def consumed_queue(self) -> str:
        return self.queue if self.model == "queue" else f"{self.topic}.{self.subscription}"

    @property
    def dead_letter_exchange(self) -> str:
        return f"{self.consumed_queue}.dlx"

    @property
    def dead_letter_queue(self) -> str:
        return f"{self.consumed_queue}.dead"


class SinkSettings(Section):
    """One sink: a name, a kind (log, jsonl, http, amqp, or a plugin's), its options and filter."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    kind: str
    options: dict[str, Any] = Field(default_factory=dict)  # checked by the kind itself
    filter: SinkFilter = Field(default_factory=SinkFilter)
    # The defaults are SinkPolicy's (one place): see receiver.retries for what each one means.
    concurrency: int = Field(default=DEFAULT_POLICY.concurrency, gt=0)
    # seconds before attempt 2, 3, ...; then dead
    retry_schedule: tuple[float, ...] = DEFAULT_POLICY.retry_schedule
    jitter: float = Field(default=DEFAULT_POLICY.jitter, ge=0, lt=1)
    breaker_threshold: int = Field(default=DEFAULT_POLICY.breaker_threshold, gt=0)
    breaker_cooldown: float = Field(default=DEFAULT_POLICY.breaker_cooldown, ge=0)
    # Events per second (a token bucket counting events, batched or not); None: no limit. Over
    # it a delivery waits: rescheduled, no attempt spent, the breaker not told.
    rate_limit: float | None = Field(default=DEFAULT_POLICY.rate_limit, gt=0)
    rate_burst: int | None = Field(
        default=None, gt=0
    )  # events the bucket holds; None: max(rate_limit, max_batch)
    # Events per request (http) or message (amqp): a JSON array. 1: one event each, as always.
    max_batch: int = Field(default=DEFAULT_POLICY.max_batch, gt=0, le=1000)
    # seconds a batch waits to fill before it goes
    max_wait: float = Field(default=DEFAULT_POLICY.max_wait, ge=0, le=60)
    operator: bool = DEFAULT_POLICY.operator  # takes receiver's own operator events, and no MPS event
    digests: bool = False  # also takes a digest of each task once it has ended

    def policy(self) -> SinkPolicy:
        return SinkPolicy(
            concurrency=self.concurrency,
            retry_schedule=self.retry_schedule,
            jitter=self.jitter,
            breaker_threshold=self.breaker_threshold,
            breaker_cooldown=self.breaker_cooldown,
            rate_limit=self.rate_limit,
            rate_burst=self.rate_burst or max(math.ceil(self.rate_limit or 1), self.max_batch),
            max_batch=self.max_batch,
            max_wait=self.max_wait,
            operator=self.operator,
        )

    def problems(self) -> Iterator[str]:
        """What cannot work in this sink's settings, each naming the sink and the option."""
        where = f"sinks.{self.name}"
        if self.max_batch > 1 and self.kind in UNBATCHED_KINDS:
            yield (
                f"{where}: max_batch: expected 1 for kind {self.kind!r} (http, amqp, jsonl and memory sinks"
                " take batches)"
            )
        if self.max_wait != SinkSettings.model_fields["max_wait"].default and self.max_batch == 1:
            yield f"{where}: max_wait: expected max_batch above 1 (there is no batch to wait for)"
        if self.rate_burst is not None and self.rate_limit is None:
            yield f"{where}: rate_burst: expected rate_limit to be set too"
        if self.rate_burst is not None and self.rate_burst < self.max_batch:
            yield (
                f"{where}: rate_burst: expected at least max_batch ({self.max_batch}): a batch takes"
                " a token per event at once"
            )
        if self.operator and self.filter != SinkFilter():
            yield (
                f"{where}: filter: expected none on an operator sink (it takes every operator event"
                " and no MPS event)"
            )
        if self.operator and self.digests:
            yield f"{where}: digests: expected false on an operator sink (it takes operator events only)"


# Built-in kinds whose sinks send one event at a time.
UNBATCHED_KINDS = frozenset({"log"})


class OperatorSettings(Section):
    """receiver's own events (a sink's first dead letter, a sink switched off, a breaker opening, a
    task stalled, overdue or failed, signature failures), for the sinks marked ``operator``."""

    # One event of a kind and subject per window (the store keeps them unique); also the window
    # in which signature failures are counted, across every process on the store.
    window: float = Field(default=3600.0, gt=0)
    signature_failures: int = Field(default=100, ge=0)  # failures in a window that raise an event (0: never)


class TracingSettings(Section):
    """OpenTelemetry traces: on when ``OTEL_TRACES_EXPORTER``, ``OTEL_EXPORTER_OTLP_ENDPOINT`` or
    ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` is set (read once, by ``load_settings``), or when these are."""

    exporter: Literal["otlp", "console", "none"] | None = None  # OTEL_TRACES_EXPORTER
    # OTEL_EXPORTER_OTLP_TRACES_ENDPOINT, or OTEL_EXPORTER_OTLP_ENDPOINT + "/v1/traces" (http/protobuf)
    endpoint: str | None = None
    headers: SecretStr | None = None  # OTEL_EXPORTER_OTLP_(TRACES_)HEADERS: "key=value,key2=value2"
    service_name: str = "receiver"  # OTEL_SERVICE_NAME

    @property
    def enabled(self) -> bool:
        if self.exporter is not None:
            return self.exporter != "none"
        return self.endpoint is not None

    def with_environment(self, environ: Mapping[str, str]) -> TracingSettings:
        """These settings, with the OpenTelemetry variables filling in what they leave unset."""
        update: dict[str, Any] = {}
        exporter = environ.get("OTEL_TRACES_EXPORTER", "").strip().lower()
        if self.exporter is None and exporter:
            if exporter not in ("otlp", "console", "none"):
                raise ConfigError(f"OTEL_TRACES_EXPORTER: expected otlp, console or none, got {exporter!r}")
            update["exporter"] = exporter
        if self.endpoint is None:
            if traces := environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "").strip():
                update["endpoint"] = traces
            elif base := environ.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip():
                update["endpoint"] = base.rstrip("/") + "/v1/traces"
        headers = environ.get("OTEL_EXPORTER_OTLP_TRACES_HEADERS") or environ.get(
            "OTEL_EXPORTER_OTLP_HEADERS"
        )
        if self.headers is None and headers:
            update["headers"] = SecretStr(headers)
        if self.service_name == "receiver" and environ.get("OTEL_SERVICE_NAME"):
            update["service_name"] = environ["OTEL_SERVICE_NAME"]
        return self.model_copy(update=update) if update else self


class MpsSettings(Section):
    """Where ``receiver submit`` sends ProcessLiveStream: Tencent Cloud, or the local emulator."""

    endpoint: str = "mps.tencentcloudapi.com"  # host[:port], no scheme; the emulator: 127.0.0.1:9000
    protocol: Literal["https", "http"] = "https"
    region: str = "ap-guangzhou"
    secret_id: SecretStr | None = None  # RECEIVER_MPS__SECRET_ID
    secret_key: SecretStr | None = None  # RECEIVER_MPS__SECRET_KEY
    credentials_file: Path | None = None  # JSON {"secret_id": ..., "secret_key": ...}, e.g. a mounted secret
    timeout: float = Field(default=30.0, gt=0)
    rate_limit: int = Field(default=100, gt=0)  # requests per second (the API allows 100)
    max_retries: int = Field(default=5, ge=0)  # on RequestLimitExceeded

    def credentials(self) -> tuple[str, str]:
        if self.credentials_file is not None:
            try:
                data = json.loads(self.credentials_file.read_text())
                return str(data["secret_id"]), str(data["secret_key"])
            except (OSError, ValueError, KeyError) as exc:
                raise ConfigError(
                    f"mps.credentials_file: cannot read secret_id and secret_key: {exc!r}"
                ) from None
        if self.secret_id is None or self.secret_key is None:
            raise ConfigError(
                "mps: set RECEIVER_MPS__SECRET_ID and RECEIVER_MPS__SECRET_KEY, or mps.credentials_file"
            )
        return self.secret_id.get_secret_value(), self.secret_key.get_secret_value()


class MaintenanceSettings(Section):
    interval: float = Field(default=60.0, gt=0)  # seconds between passes
    stall_after: float = Field(default=900.0, ge=0)  # no notification for this long: stalled (0 = never)
    retention_days: float = Field(default=30.0, ge=0)  # raw payloads, delivered outbox rows (0 = keep)
    task_deadline: float = Field(default=0.0, ge=0)  # a task older than this without ProcessEof is "overdue"


class ReconcileSettings(Section):
    """Asking MPS (``DescribeTaskDetail``) about tasks that went silent or overran, one process of a
    deployment at a time (a store lease), in the maintenance role; needs the ``mps`` credentials."""

    enabled: bool = True  # without MPS credentials it says why at start-up and stays off
    interval: float = Field(default=60.0, gt=0)  # seconds between passes
    silent_after: float = Field(
        default=300.0, gt=0
    )  # a submitted task with no event after this long is asked about
    recheck_after: float = Field(default=300.0, gt=0)  # a task is not asked about again sooner than this
    batch: int = Field(default=500, gt=0)  # tasks asked about per pass at most
    lease_ttl: float = Field(
        default=60.0, gt=0
    )  # a reconciler that stops renewing loses its lease after this
    # Opt-in: also list MPS's live tasks (DescribeTasks, last 168 h) and register those receiver never saw.
    discover: bool = False
    discover_pages: int = Field(default=50, gt=0)  # DescribeTasks pages of 100 per pass at most


class IngestSettings(Section):
    # A file (VOD) task's notification sent to the live webhook or queue: "store" keeps it as a
    # generic event of its EventType; "quarantine" answers 200 saying it is not a live
    # notification and keeps it in the quarantine instead.
    file_task_notifications: Literal["store", "quarantine"] = "store"


class LogSettings(Section):
    format: Literal["auto", "json", "console"] = "auto"  # auto: console on a terminal, else JSON
    level: Literal["debug", "info", "warning", "error"] = "info"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="RECEIVER_", env_nested_delimiter="__", extra="forbid", hide_input_in_errors=True
    )

    http: HttpSettings = Field(default_factory=HttpSettings)
    store: StoreSettings = Field(default_factory=StoreSettings)
    verify: VerifySettings = Field(default_factory=VerifySettings)
    api: ApiSettings = Field(default_factory=ApiSettings)
    amqp: AmqpSettings = Field(default_factory=AmqpSettings)
    sinks: list[SinkSettings] = Field(default_factory=list)
    mps: MpsSettings = Field(default_factory=MpsSettings)
    maintenance: MaintenanceSettings = Field(default_factory=MaintenanceSettings)
    reconcile: ReconcileSettings = Field(default_factory=ReconcileSettings)
    emulator: EmulatorSettings = Field(default_factory=EmulatorSettings)
    dispatch_poll_interval: float = Field(default=1.0, gt=0)
    # serve runs the dispatcher too; false when a separate `receiver dispatch` does (one per store).
    dispatch_in_serve: bool = True
    # The dispatcher and the maintenance loop run in one process per store (of all workers and
    # replicas), each under a lease of this many seconds, renewed every third of it: when its
    # holder dies, another takes the job over within about 4/3 of this.
    lease_seconds: float = Field(default=10.0, gt=0)
    ingest: IngestSettings = Field(default_factory=IngestSettings)
    log: LogSettings = Field(default_factory=LogSettings)
    operator: OperatorSettings = Field(default_factory=OperatorSettings)
    tracing: TracingSettings = Field(default_factory=TracingSettings)

    @model_validator(mode="after")
    def _sink_names_unique(self) -> Settings:
        # Two sinks of one name would each get every event: the outbox keys deliveries by name.
        names = [s.name for s in self.sinks]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(
                f"sinks: names must be unique, {', '.join(map(repr, twice))} given more than once"
            )
        problems = [p for sink in self.sinks for p in sink.problems()]
        if problems:
            raise ValueError("; ".join(problems))
        return self
