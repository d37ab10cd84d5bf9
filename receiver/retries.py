"""Sink policies and what an attempt makes of a delivery or a batch: retries, dead letters, the breaker.

The retry schedule with jitter, the dead letter after the last attempt, a reschedule that spends
no attempt; ``SinkPolicy`` and its defaults (``DEFAULT_POLICY``, which the settings take theirs
from); and the circuit breaker. Pure: no I/O.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import msgspec

from receiver.errors import SinkError, UndeliverableError
from receiver.ports import Batch, Delivery, DeliveryState, Settlement

# Seconds to wait before attempt 2, 3, ...: about seven and a half hours in all, then dead.
DEFAULT_SCHEDULE = (1.0, 5.0, 30.0, 120.0, 600.0, 1800.0, 3600.0, 7200.0, 14400.0)


@dataclass(frozen=True, slots=True)
class SinkPolicy:
    concurrency: int = 8  # tasks in flight at once for this sink (batching: batches in flight)
    retry_schedule: tuple[float, ...] = DEFAULT_SCHEDULE
    jitter: float = 0.2  # each wait is scaled by a random factor in [1 - jitter, 1 + jitter]
    breaker_threshold: int = 5  # consecutive failures that open the breaker
    breaker_cooldown: float = 30.0  # seconds open before one trial delivery
    rate_limit: float | None = None  # events per second; None: as fast as the target takes them
    rate_burst: int = 1  # events the rate limit lets through at once after a pause
    max_batch: int = 1  # events per request or message
    max_wait: float = 0.1  # seconds a batch waits to fill
    operator: bool = False  # takes operator events: its own failures raise none (no loops)


# The defaults of every sink's policy; the settings take theirs from here.
DEFAULT_POLICY = SinkPolicy()


def _wait(attempts: int, error: SinkError, policy: SinkPolicy, rng: random.Random) -> float:
    """Seconds before the attempt after attempt number ``attempts``."""
    wait = policy.retry_schedule[attempts - 1] * rng.uniform(1 - policy.jitter, 1 + policy.jitter)
    if error.retry_after is not None:
        # Honoured, but no longer than the schedule's longest wait: a target cannot park a task forever.
        wait = max(wait, min(error.retry_after, max(policy.retry_schedule)))
    return wait


def settle(
    delivery: Delivery,
    error: SinkError | None,
    policy: SinkPolicy,
    now: float,
    rng: random.Random,
    heard: Heard | None = None,
) -> Settlement:
    """What one attempt makes of a delivery: delivered, due again later, or dead; with what the
    attempt history keeps of it (``heard``). Pure."""
    attempts = delivery.attempts + 1
    status, latency, snippet = heard if heard is not None else (None, None, None)
    if error is None:
        state, due, why = DeliveryState.DELIVERED, now, None
    elif attempts > len(policy.retry_schedule) or isinstance(error, UndeliverableError):
        state, due, why = DeliveryState.DEAD, now, str(error)
    else:
        state, due, why = DeliveryState.PENDING, now + _wait(attempts, error, policy, rng), str(error)
    return Settlement(
        delivery.id, state, attempts, due, why, now, status=status, latency_ms=latency, snippet=snippet
    )


# What one attempt heard from its target: HTTP status, latency (ms), the answer's first characters.
Heard = tuple[int | None, float | None, str | None]


def settle_batch(
    batch: Batch, error: SinkError | None, policy: SinkPolicy, now: float, rng: random.Random
) -> list[Settlement]:
    """What one attempt makes of a batch: all delivered, or one failure for all of it: due again
    together (one wait, the batch's id kept: retried whole), each dead past its own last attempt."""
    if error is None or isinstance(error, UndeliverableError) or not policy.retry_schedule:
        return [settle(d, error, policy, now, rng) for d in batch.deliveries]
    attempts = max(d.attempts for d in batch.deliveries) + 1
    due = now + _wait(min(attempts, len(policy.retry_schedule)), error, policy, rng)
    outcomes = []
    for d in batch.deliveries:
        if d.attempts + 1 > len(policy.retry_schedule):
            outcomes.append(Settlement(d.id, DeliveryState.DEAD, d.attempts + 1, now, str(error), now))
        else:
            outcomes.append(Settlement(d.id, DeliveryState.PENDING, d.attempts + 1, due, str(error), now))
    size = sum(1 for s in outcomes if s.state == DeliveryState.PENDING)
    return [
        msgspec.structs.replace(s, batch_id=batch.id, batch_size=size)
        if s.state == DeliveryState.PENDING
        else s
        for s in outcomes
    ]


def rescheduled(delivery: Delivery, due: float, now: float, why: str) -> Settlement:
    """A delivery held back (not attempted): due again at ``due``, nothing else changed."""
    return Settlement(
        delivery.id,
        DeliveryState.PENDING,
        delivery.attempts,
        due,
        why,
        now,
        delivery.batch_id,
        delivery.batch_size,
    )


@dataclass(slots=True)
class CircuitBreaker:
    """Closed: deliver. Open (after ``threshold`` failures in a row): wait ``cooldown``. Then let
    one delivery through: success closes it, failure opens it again."""

    threshold: int
    cooldown: float
    failures: int = 0
    opened_at: float | None = None
    trial: bool = False

    def allows(self, now: float) -> bool:
        if self.opened_at is None:
            return True
        if self.trial or now - self.opened_at < self.cooldown:
            return False
        self.trial = True  # half-open: exactly one delivery goes out
        return True

    def succeeded(self) -> None:
        self.failures = 0
        self.opened_at = None
        self.trial = False

    def abstained(self) -> None:
        """The attempt never reached the target (it could not be encoded): it proves nothing."""
        self.trial = False

    def failed(self, now: float) -> bool:
        """Count a failure; True if it opened the breaker (again)."""
        self.failures += 1
        self.trial = False
        if self.failures >= self.threshold:
            self.opened_at = now
            return True
        return False

    @property
    def state(self) -> str:
        if self.opened_at is None:
            return "closed"
        return "half-open" if self.trial else "open"
