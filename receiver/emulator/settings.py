"""The emulator's settings (``[emulator]``): its address, credentials, scenarios, callback retries."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from receiver import tc3
from receiver.emulator.scenario import Scenario

DEFAULT_SECRET_KEY = "emulator-secret-key"
HTTP_ATTEMPTS = 6  # 1 + 5 retries
HTTP_BACKOFF = 0.5  # seconds, doubling


class CallbackRetry(BaseModel):
    """How a URL notification its target did not take (non-2xx, no answer) is sent again. MPS
    documents no retry policy for live-stream callbacks: this is the emulator's assumption, a
    choice so that receiver can be tried against each (``none`` is the worst case it must survive:
    then only reconciling finds a lost ProcessEof)."""

    model_config = ConfigDict(extra="forbid")

    policy: Literal["none", "fixed", "backoff"] = "backoff"
    attempts: int = Field(default=HTTP_ATTEMPTS, ge=1)  # in all, the first included (none: 1)
    interval: float = Field(
        default=HTTP_BACKOFF, gt=0
    )  # seconds: between attempts (fixed); the first wait, doubling (backoff)

    def waits(self) -> list[float]:
        """The waits before the second, third, ... attempt."""
        if self.policy == "none":
            return []
        if self.policy == "fixed":
            return [self.interval] * (self.attempts - 1)
        return [self.interval * 2**i for i in range(self.attempts - 1)]


class EmulatorSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    host: str = "127.0.0.1"
    port: int = 9000
    secret_id: str = "emulator-secret-id"
    secret_key: SecretStr = SecretStr(DEFAULT_SECRET_KEY)
    # What every request must sign, beyond which the client may sign more. The official SDKs sign
    # content-type;host only: add "x-tc-action" for clients that sign it too.
    required_signed_headers: list[str] = Field(default_factory=lambda: list(tc3.REQUIRED_SIGNED_HEADERS))
    amqp_url: SecretStr | None = None  # where TDMQ-CMQ notifications go (RabbitMQ)
    scenario: Scenario = Field(default_factory=Scenario)
    scenario_file: Path | None = None  # a JSON or TOML file with the Scenario fields; wins over scenario
    # Named scenarios: a task whose Url has ?emulator_scenario=<name> plays that one instead.
    scenarios: dict[str, Scenario] = Field(default_factory=dict)
    callback_retry: CallbackRetry = Field(default_factory=CallbackRetry)  # URL notifications not taken
    speed: float = Field(default=1.0, gt=0)  # 2.0 plays scenarios twice as fast
    response_delay: float = Field(default=0.0, ge=0)  # hold the answer: notifications beat it

    @field_validator("required_signed_headers")
    @classmethod
    def _at_least_the_mandatory_pair(cls, value: list[str]) -> list[str]:
        lowered = [h.strip().lower() for h in value]
        missing = [h for h in tc3.REQUIRED_SIGNED_HEADERS if h not in lowered]
        if missing:
            mandatory = ", ".join(tc3.REQUIRED_SIGNED_HEADERS)
            raise ValueError(f"must include {mandatory} (missing {', '.join(missing)})")
        return lowered

    @model_validator(mode="after")
    def _own_key_off_loopback(self) -> EmulatorSettings:
        # The default key is in this repository: anyone who can reach the emulator could start
        # tasks, and so make it POST or publish notifications to wherever they name.
        if not _loopback(self.host) and self.secret_key.get_secret_value() == DEFAULT_SECRET_KEY:
            raise ValueError(
                f"emulator.secret_key: set your own (RECEIVER_EMULATOR__SECRET_KEY) when emulator.host"
                f" is {self.host!r}, not a loopback address: the default key is public"
            )
        return self


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
