"""``Lane``: one sink as the dispatcher drives it: its policy, breaker, rate limit, batcher and
counts, and what one attempt at it does: send an event or a batch, hear the answer, tell the
breaker, the metrics and the operator, and what becomes of the delivery.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import cast

import structlog

from receiver.batches import Batcher
from receiver.documents import event_document
from receiver.errors import SinkError, SinkGoneError, UndeliverableError
from receiver.ports import SNIPPET_CHARS, Batch, BatchSink, Delivery, Receipt, Settlement, Sink
from receiver.recent import Handoff
from receiver.retries import CircuitBreaker, Heard, SinkPolicy, rescheduled, settle, settle_batch
from receiver.throttle import TokenBucket
from receiver.tracing import Tracing

log = structlog.get_logger("receiver.dispatch")

# Deliveries of one task claimed at once and sent in a row (one claim and one settlement for all).
LINE = 64

# Longest a delivery over the rate limit waits in hand; past it, it is rescheduled in the store
# (a claimed line is leased, and a lease must not run out while it waits).
RATE_HOLD = 2.0


@dataclass(slots=True)
class Lane:
    """One sink as the dispatcher drives it: its state, and what one attempt at it does."""

    sink: Sink
    policy: SinkPolicy
    breaker: CircuitBreaker
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    busy: dict[str, asyncio.Task[None]] = field(default_factory=dict)  # task key -> delivery in flight
    counts: Counter[str] = field(default_factory=Counter)
    disabled: str | None = None
    changed_at: float = 0.0  # monotonic time this process last switched it; inf while writing that
    runner: asyncio.Task[None] | None = None
    bucket: TokenBucket | None = None  # its rate limit
    batcher: Batcher[tuple[SinkError | None, Settlement]] | None = None  # max_batch above 1
    held: int = 0  # deliveries claimed and not yet settled
    handoff: Handoff | None = None  # while set, its deliveries are sent from memory, not claimed
    spliced: bool = False  # the sink takes the payload as stored JSON (documents.splices)
    clock: Callable[[], float] = time.time
    rng: random.Random = field(default_factory=random.Random)
    tracing: Tracing | None = None  # a client span per attempt; None: tracing is off
    observe: Callable[[str, str], None] | None = None  # (sink, outcome) per event
    observe_held: Callable[[str, int], None] | None = None  # events held back by the rate limit
    # Operator events (kind, sink, detail); never for an operator sink's own troubles.
    alert: Callable[[str, str, dict[str, object]], None] | None = None

    @property
    def lines(self) -> int:
        """Task lines in flight at once: one per task, and enough of them to fill every batch."""
        return self.policy.concurrency * self.policy.max_batch

    @property
    def per_key(self) -> int:
        """Deliveries of one task claimed at once: a line, or a whole batch of one task."""
        return max(LINE, self.policy.max_batch)

    def free(self) -> int:
        """How many task lines may be claimed now: room for lines, for their deliveries (batching),
        and for what the rate limit lets through."""
        free = (self.policy.concurrency if self.batcher is None else self.lines) - len(self.busy)
        if self.batcher is not None:
            free = min(free, 2 * self.lines - self.held)
        if self.bucket is not None:
            free = min(free, math.floor(self.bucket.available(time.monotonic())))
        return free

    @property
    def may_hand_off(self) -> bool:
        """Whether its deliveries may be sent as handed over: no rate limit, switched on, the
        breaker closed (anything else is the claims' to judge). Batches are made of handed-over
        lines as of claimed ones; a batch that failed is retried by claims (it must be gathered
        again whole, under its id)."""
        return (
            self.bucket is None
            and self.disabled is None
            and self.breaker.opened_at is None
            and not self.breaker.trial
        )

    def dead(self, delivery: Delivery, error: SinkError | None) -> None:
        self.counts["dead"] += 1
        if self.observe is not None:
            self.observe(self.sink.name, "dead")
        log.error("delivery dead", sink=self.sink.name, event_id=delivery.event.event_id, error=str(error))
        if self.alert is not None and not self.policy.operator:
            self.alert(
                "sink_dead_letter", self.sink.name, {"event_id": delivery.event.event_id, "error": str(error)}
            )

    def gone(self, error: SinkGoneError) -> None:
        if self.disabled is not None:
            return  # another line of this sink heard it first
        self.disabled = str(error)
        self.changed_at = math.inf  # until the store has it, what it says is older than this
        log.error("sink switched off by its target", sink=self.sink.name, reason=self.disabled)
        if self.alert is not None and not self.policy.operator:
            self.alert("sink_gone", self.sink.name, {"reason": self.disabled})

    async def throttle(self, events: int) -> float | None:
        """Wait until the rate limit lets ``events`` through; None once they may go, or the seconds
        to come back in when that is too far off to wait in hand (then they are rescheduled)."""
        bucket = self.bucket
        if bucket is None:
            return None
        wait = bucket.reserve(events, time.monotonic())
        if wait <= 0:
            return None
        if self.observe_held is not None:
            self.observe_held(self.sink.name, events)
        if wait <= RATE_HOLD:
            await asyncio.sleep(wait)
            return None
        bucket.cancel(events, time.monotonic())
        return wait

    async def attempt(self, delivery: Delivery) -> tuple[SinkError | None, Heard]:
        """Send one delivery: what went wrong, if anything (the breaker and the counts told), and
        what the attempt history keeps of it."""
        error: SinkError | None = None
        receipt: Receipt | None = None
        started = time.perf_counter()
        try:
            if self.tracing is None:
                receipt = await self.sink.deliver(
                    delivery, event_document(delivery.event, spliced=self.spliced)
                )
            else:
                event = delivery.event
                with self.tracing.delivery(self.sink.name, [event.traceparent], event_id=event.event_id):
                    receipt = await self.sink.deliver(delivery, event_document(event, spliced=self.spliced))
        except SinkError as exc:
            error = exc
        except Exception as exc:  # a sink's bug must not stop its lane
            log.exception("sink raised", sink=self.sink.name)
            error = SinkError(repr(exc))
        latency_ms = round((time.perf_counter() - started) * 1000, 3)
        self.heard(error, 1)
        if error is not None:
            status, snippet = error.status, error.snippet
        elif isinstance(receipt, Receipt):
            status, snippet = receipt.status, receipt.snippet
        else:
            status, snippet = None, None
        return error, (status, latency_ms, snippet and snippet[:SNIPPET_CHARS])

    def heard(self, error: SinkError | None, events: int) -> None:
        """Tell the breaker and the counts how one attempt (of one event or a batch) went."""
        if error is None:
            self.breaker.succeeded()
            self.counts["delivered"] += events
        elif isinstance(error, UndeliverableError):
            self.breaker.abstained()  # the target never saw it: no reason to stop sending the rest
            self.counts["undeliverable"] += events
        else:
            opened = self.breaker.failed(self.clock())
            self.counts["failed"] += events
            if opened and self.alert is not None and not self.policy.operator:
                self.alert(
                    "breaker_open", self.sink.name, {"failures": self.breaker.failures, "error": str(error)}
                )
        if self.observe is not None:
            for _ in range(events):
                self.observe(self.sink.name, "delivered" if error is None else "failed")

    async def offer(
        self, line: Sequence[Delivery], at: int
    ) -> list[tuple[Delivery, SinkError | None, Settlement]]:
        """The next run of a line for a batch: the members of the batch its head failed in (retried
        whole), or the deliveries of one group; one that cannot be encoded is dead alone, at once."""
        assert self.batcher is not None
        sink = cast(BatchSink, self.sink)
        head = line[at]
        members: list[tuple[Delivery, bytes]] = []
        group = ""
        for delivery in line[at : at + self.policy.max_batch]:
            if delivery.batch_id != head.batch_id:
                break
            try:
                body, its_group = sink.encode(event_document(delivery.event, spliced=self.spliced))
            except UndeliverableError as exc:
                if members:
                    break  # the batch so far goes first; this one is dead on its turn
                self.heard(exc, 1)
                return [(delivery, exc, settle(delivery, exc, self.policy, self.clock(), self.rng))]
            if members and its_group != group and head.batch_id is None:
                break
            group = its_group
            members.append((delivery, body))
        pinned = (head.batch_id, head.batch_size or len(members)) if head.batch_id else None
        tried = await self.batcher.offer(members, group, pinned)
        return [(d, error, outcome) for (d, _), (error, outcome) in zip(members, tried, strict=False)]

    async def attempt_batch(self, batch: Batch) -> list[tuple[SinkError | None, Settlement]]:
        """Send one batch: one attempt, one request, one success or failure for the breaker."""
        held = await self.throttle(len(batch.deliveries))
        if held is not None:
            now = self.clock()
            return [(None, rescheduled(d, now + held, now, self.held_why())) for d in batch.deliveries]
        error: SinkError | None = None
        sink = cast(BatchSink, self.sink)
        try:
            if self.tracing is None:
                await sink.deliver_batch(batch)
            else:
                traces = [d.event.traceparent for d in batch.deliveries]
                with self.tracing.delivery(
                    sink.name, traces, batch=True, batch_id=batch.id, batch_size=len(traces)
                ):
                    await sink.deliver_batch(batch)
        except SinkError as exc:
            error = exc
        except Exception as exc:  # a sink's bug must not stop its lane
            log.exception("sink raised", sink=self.sink.name)
            error = SinkError(repr(exc))
        self.counts["batches"] += 1
        self.heard(error, len(batch.deliveries))
        outcomes = settle_batch(batch, error, self.policy, self.clock(), self.rng)
        return [(error, outcome) for outcome in outcomes]

    def held_why(self) -> str:
        return f"held back by the sink's rate limit ({self.policy.rate_limit:g} events/s)"
