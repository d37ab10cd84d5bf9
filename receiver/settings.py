"""Settings: a TOML file (``config/receiver.toml``) overlaid by ``RECEIVER_*`` environment variables.

Built once in ``main`` and passed down; nothing else reads the environment. Secrets are ``SecretStr``
so they never show in a repr or a log line.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from receiver.dispatch import DEFAULT_SCHEDULE, SinkPolicy
from receiver.emulator.api import EmulatorSettings
from receiver.errors import ConfigError
from receiver.events import Channel, SignPolicy
from receiver.routing import SinkFilter


class Section(BaseModel):
    # hide_input_in_errors: a misspelt key must not print its (perhaps secret) value.
    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)


class HttpSettings(Section):
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    max_body_bytes: int = Field(default=1_048_576, gt=0)
    access_log: bool = False  # one summary line per notification is logged anyway
    shutdown_timeout: float = Field(default=10.0, ge=0)


class StoreSettings(Section):
    url: str = "sqlite:///var/receiver.db"  # or postgresql://user:password@host/db (a secret: use the env)
    pool_size: int = Field(default=10, gt=0)  # PostgreSQL connections per process
    sqlite_synchronous: Literal["FULL", "NORMAL"] = "FULL"
    busy_timeout_ms: int = Field(default=5000, ge=0)
    max_batch: int = Field(default=256, gt=0)  # events per group commit


class VerifySettings(Section):
    notify_keys: list[SecretStr] = Field(default_factory=list)
    # None: "required" once any key is configured, "off" (with a warning) when none is.
    policy: SignPolicy | None = None
    http_policy: SignPolicy | None = None  # per-channel overrides of ``policy``
    amqp_policy: SignPolicy | None = None
    skew_seconds: float = Field(default=60.0, ge=0)

    def keys(self) -> list[str]:
        return [k.get_secret_value() for k in self.notify_keys if k.get_secret_value()]

    def policy_for(self, channel: Channel) -> SignPolicy:
        override = self.http_policy if channel is Channel.HTTP else self.amqp_policy
        policy = override or self.policy
        if policy is None:
            return SignPolicy.REQUIRED if self.keys() else SignPolicy.OFF
        if policy is not SignPolicy.OFF and not self.keys():
            raise ConfigError(
                f"verify: policy {policy.value!r} for {channel.value} needs at least one notify key"
                " (verify.notify_keys or RECEIVER_VERIFY__NOTIFY_KEYS)"
            )
        return policy


class ApiSettings(Section):
    token: SecretStr | None = None  # bearer token for /v1/tasks and /v1/events; None = open


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
    concurrency: int = Field(default=8, gt=0)
    retry_schedule: tuple[float, ...] = DEFAULT_SCHEDULE  # seconds before attempt 2, 3, ...; then dead
    jitter: float = Field(default=0.2, ge=0, lt=1)
    breaker_threshold: int = Field(default=5, gt=0)
    breaker_cooldown: float = Field(default=30.0, ge=0)

    def policy(self) -> SinkPolicy:
        return SinkPolicy(
            concurrency=self.concurrency,
            retry_schedule=self.retry_schedule,
            jitter=self.jitter,
            breaker_threshold=self.breaker_threshold,
            breaker_cooldown=self.breaker_cooldown,
        )


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
    emulator: EmulatorSettings = Field(default_factory=EmulatorSettings)
    dispatch_poll_interval: float = Field(default=1.0, gt=0)
    # serve runs the dispatcher too; false when a separate `receiver dispatch` does (one per store).
    dispatch_in_serve: bool = True
    log: LogSettings = Field(default_factory=LogSettings)


def load_settings(config_file: Path | None = None) -> Settings:
    """Read the TOML file (if any), then let ``RECEIVER_*`` variables override it."""
    if config_file is not None and not config_file.is_file():
        raise ConfigError(f"config file {config_file} does not exist")

    class FromFile(Settings):
        @classmethod
        def settings_customise_sources(
            cls,
            settings_cls: type[BaseSettings],
            init_settings: PydanticBaseSettingsSource,
            env_settings: PydanticBaseSettingsSource,
            dotenv_settings: PydanticBaseSettingsSource,
            file_secret_settings: PydanticBaseSettingsSource,
        ) -> tuple[PydanticBaseSettingsSource, ...]:
            sources = [init_settings, env_settings]
            if config_file is not None:
                sources.append(TomlConfigSettingsSource(settings_cls, toml_file=config_file))
            return tuple(sources)

    settings = Settings.model_validate(FromFile().model_dump())
    names = [s.name for s in settings.sinks]
    if len(names) != len(set(names)):
        raise ConfigError(f"sinks: names must be unique, got {names}")
    return settings
