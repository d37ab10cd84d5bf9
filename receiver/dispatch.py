"""The outbox dispatcher: delivers pending rows to each sink, independently of ingest and of each other.

Per sink: up to ``concurrency`` tasks in flight, one delivery per task at a time and in the order
received (so ``ProcessEof`` goes after every earlier event of its task); retries on a schedule with
jitter; a circuit breaker; after the last attempt the row is ``dead`` (kept, redrivable). A sink
whose target answers 410 is switched off until re-enabled; the store holds that switch, and every
dispatcher reads it every ``poll_interval``, so a sink re-enabled through any process (or switched
off by another replica's 410) is seen by all. A delivery its sink can never encode is dead at once,
outside the breaker's count. Nothing here blocks ingest: rows wait in the store, and a restart
picks them up where they were.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

import structlog

from receiver.documents import event_document
from receiver.errors import SinkError, SinkGoneError, StoreUnavailableError, UndeliverableError
from receiver.group_commit import GroupCommit
from receiver.ports import SNIPPET_CHARS, Delivery, DeliveryState, Receipt, Settlement, Sink, Store

log = structlog.get_logger("receiver.dispatch")

# Seconds to wait before attempt 2, 3, ...: about seven and a half hours in all, then dead.
DEFAULT_SCHEDULE = (1.0, 5.0, 30.0, 120.0, 600.0, 1800.0, 3600.0, 7200.0, 14400.0)


@dataclass(frozen=True, slots=True)
class SinkPolicy:
    concurrency: int = 8  # tasks in flight at once for this sink
    retry_schedule: tuple[float, ...] = DEFAULT_SCHEDULE
    jitter: float = 0.2  # each wait is scaled by a random factor in [1 - jitter, 1 + jitter]
    breaker_threshold: int = 5  # consecutive failures that open the breaker
    breaker_cooldown: float = 30.0  # seconds open before one trial delivery


def settle(
    delivery: Delivery, error: SinkError | None, policy: SinkPolicy, now: float, rng: random.Random
) -> Settlement:
    """What one attempt makes of a delivery: delivered, due again later, or dead. Pure."""
    attempts = delivery.attempts + 1
    if error is None:
        return Settlement(delivery.id, DeliveryState.DELIVERED, attempts, now, None, now)
    if attempts > len(policy.retry_schedule) or isinstance(error, UndeliverableError):
        return Settlement(delivery.id, DeliveryState.DEAD, attempts, now, str(error), now)
    wait = policy.retry_schedule[attempts - 1] * rng.uniform(1 - policy.jitter, 1 + policy.jitter)
    if error.retry_after is not None:
        # Honoured, but no longer than the schedule's longest wait: a target cannot park a task forever.
        wait = max(wait, min(error.retry_after, max(policy.retry_schedule)))
    return Settlement(delivery.id, DeliveryState.PENDING, attempts, now + wait, str(error), now)


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

    def failed(self, now: float) -> None:
        self.failures += 1
        self.trial = False
        if self.failures >= self.threshold:
            self.opened_at = now

    @property
    def state(self) -> str:
        if self.opened_at is None:
            return "closed"
        return "half-open" if self.trial else "open"


@dataclass(slots=True)
class _Lane:
    """The dispatcher's state for one sink."""

    sink: Sink
    policy: SinkPolicy
    breaker: CircuitBreaker
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    busy: dict[str, asyncio.Task[None]] = field(default_factory=dict)  # task key -> delivery in flight
    counts: Counter[str] = field(default_factory=Counter)
    disabled: str | None = None
    changed_at: float = 0.0  # monotonic time this process last switched it; inf while writing that
    runner: asyncio.Task[None] | None = None


class Dispatcher:
    def __init__(
        self,
        store: Store,
        sinks: Sequence[tuple[Sink, SinkPolicy]],
        *,
        poll_interval: float = 1.0,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
        observe: Callable[[str, str], None] | None = None,
    ) -> None:
        self._store = store
        self._observe = observe
        self._lanes = {
            sink.name: _Lane(sink, policy, CircuitBreaker(policy.breaker_threshold, policy.breaker_cooldown))
            for sink, policy in sinks
        }
        self._poll = poll_interval
        self._clock = clock
        self._rng = rng or random.Random()
        self._settler: GroupCommit[Settlement, None] = GroupCommit(self._settle_batch, max_batch=512)
        self._stopping = False
        self._watcher: asyncio.Task[None] | None = None
        self._stopped = asyncio.Event()

    async def _settle_batch(self, settlements: Sequence[Settlement]) -> list[None]:
        await self._store.settle_deliveries(settlements)
        return [None] * len(settlements)

    # --- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        disabled = await self._store.disabled_sinks()
        for name, lane in self._lanes.items():
            lane.disabled = disabled.get(name)
            if lane.disabled:
                log.warning("sink is switched off; re-enable it to resume", sink=name, reason=lane.disabled)
            lane.runner = asyncio.create_task(self._run(lane), name=f"dispatch:{name}")
        self._watcher = asyncio.create_task(self._watch_states(), name="dispatch:sink-states")

    async def _watch_states(self) -> None:
        """Follow the store's switches: another process may have re-enabled or switched off a sink."""
        while not self._stopping:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopped.wait(), timeout=self._poll)
            if self._stopping:
                return
            asked_at = time.monotonic()
            try:
                disabled = await self._store.disabled_sinks()
            except StoreUnavailableError:
                continue
            for name, lane in self._lanes.items():
                if lane.changed_at >= asked_at:
                    continue  # switched here while we asked: the store may not have it yet
                reason = disabled.get(name)
                if lane.disabled is not None and reason is None:
                    log.info("sink re-enabled elsewhere", sink=name)
                    self._switch_on(lane)
                elif lane.disabled is None and reason is not None:
                    log.warning("sink switched off elsewhere", sink=name, reason=reason)
                    lane.disabled = reason

    def _switch_on(self, lane: _Lane) -> None:
        lane.disabled = None
        lane.breaker.succeeded()
        lane.wake.set()

    def wake(self) -> None:
        """New outbox rows were committed: look now rather than at the next poll."""
        for lane in self._lanes.values():
            lane.wake.set()

    async def stop(self, drain_seconds: float = 10.0) -> None:
        self._stopping = True
        self._stopped.set()
        self.wake()
        if self._watcher is not None:
            await self._watcher
        runners = [lane.runner for lane in self._lanes.values() if lane.runner is not None]
        # First, no new delivery starts: the runners leave their loop after the claim in hand.
        _, stuck = await asyncio.wait(runners, timeout=5) if runners else (set(), set())
        for runner in stuck:
            runner.cancel()
        await asyncio.gather(*runners, return_exceptions=True)
        in_flight = [t for lane in self._lanes.values() for t in lane.busy.values()]
        if in_flight:
            done, pending = await asyncio.wait(in_flight, timeout=drain_seconds)
            for task in pending:
                task.cancel()  # still pending in the store: delivered again after the restart
            log.info("dispatcher drained", finished=len(done), left_pending=len(pending))
        await self._settler.drain()
        for lane in self._lanes.values():
            await lane.sink.aclose()
            log.info("sink closed", sink=lane.sink.name, **lane.counts)

    async def enable(self, sink: str) -> None:
        """Switch a sink back on, in the store (for every process) and in this one at once."""
        lane = self._lanes.get(sink)
        if lane is not None:
            lane.changed_at = math.inf  # until the store has it, what it says is older than this
        try:
            await self._store.set_sink_disabled(sink, None, now=self._clock())
        finally:
            if lane is not None:
                lane.changed_at = time.monotonic()
        if lane is not None:
            self._switch_on(lane)
        log.info("sink re-enabled", sink=sink)

    def sink(self, name: str) -> Sink:
        return self._lanes[name].sink

    def status(self) -> dict[str, dict[str, object]]:
        return {
            name: {
                "breaker": lane.breaker.state,
                "disabled": lane.disabled,
                "in_flight": len(lane.busy),
                **lane.counts,
            }
            for name, lane in self._lanes.items()
        }

    # --- one sink -----------------------------------------------------------------------------

    async def _run(self, lane: _Lane) -> None:
        while not self._stopping:
            lane.wake.clear()
            claimed = 0
            now = self._clock()
            free = lane.policy.concurrency - len(lane.busy)
            if free > 0 and lane.disabled is None and lane.breaker.allows(now):
                limit = 1 if lane.breaker.trial else free
                try:
                    deliveries = await self._store.claim_deliveries(
                        lane.sink.name, now=now, limit=limit, busy_keys=set(lane.busy)
                    )
                except StoreUnavailableError as exc:
                    log.warning("store unavailable to the dispatcher", sink=lane.sink.name, error=str(exc))
                    deliveries = []
                if not deliveries and lane.breaker.trial:
                    lane.breaker.trial = False  # nothing to try yet: the next pass may take the trial
                for delivery in deliveries:
                    lane.busy[delivery.task_key] = asyncio.create_task(self._deliver(lane, delivery))
                claimed = len(deliveries)
            if self._stopping:
                return
            if claimed and len(lane.busy) < lane.policy.concurrency:
                continue  # there may be more right away
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(lane.wake.wait(), timeout=self._poll)

    async def _deliver(self, lane: _Lane, delivery: Delivery) -> None:
        error: SinkError | None = None
        receipt: Receipt | None = None
        started = time.perf_counter()
        try:
            receipt = await lane.sink.deliver(delivery, event_document(delivery.event))
        except SinkError as exc:
            error = exc
        except Exception as exc:  # a sink's bug must not stop its lane
            log.exception("sink raised", sink=lane.sink.name)
            error = SinkError(repr(exc))
        latency_ms = round((time.perf_counter() - started) * 1000, 3)
        now = self._clock()
        if error is None:
            lane.breaker.succeeded()
            lane.counts["delivered"] += 1
        elif isinstance(error, UndeliverableError):
            lane.breaker.abstained()  # the target never saw it: no reason to stop sending the rest
            lane.counts["undeliverable"] += 1
        else:
            lane.breaker.failed(now)
            lane.counts["failed"] += 1
        outcome = settle(delivery, error, lane.policy, now, self._rng)
        if error is not None:
            status, snippet = error.status, error.snippet
        elif isinstance(receipt, Receipt):
            status, snippet = receipt.status, receipt.snippet
        else:
            status, snippet = None, None
        # What the attempt history keeps of it.
        outcome = replace(
            outcome, latency_ms=latency_ms, status=status, snippet=snippet and snippet[:SNIPPET_CHARS]
        )
        if self._observe is not None:
            self._observe(lane.sink.name, "delivered" if error is None else "failed")
        if outcome.state == DeliveryState.DEAD:
            lane.counts["dead"] += 1
            if self._observe is not None:
                self._observe(lane.sink.name, "dead")
            log.error(
                "delivery dead", sink=lane.sink.name, event_id=delivery.event.event_id, error=str(error)
            )
        try:
            await self._settler.submit(outcome)
        except StoreUnavailableError:
            pass  # not settled: still pending in the store, so it goes out again (at least once)
        finally:
            lane.busy.pop(delivery.task_key, None)
            lane.wake.set()
        if isinstance(error, SinkGoneError):
            lane.disabled = str(error)
            lane.changed_at = math.inf  # until the store has it, what it says is older than this
            log.error("sink switched off by its target", sink=lane.sink.name, reason=lane.disabled)
            try:
                with contextlib.suppress(StoreUnavailableError):
                    await self._store.set_sink_disabled(lane.sink.name, lane.disabled, now=now)
            finally:
                lane.changed_at = time.monotonic()
