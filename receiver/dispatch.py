"""The outbox dispatcher: delivers pending rows to each sink, independently of ingest and of each other.

Per sink: up to ``concurrency`` tasks in flight, one delivery per task at a time and in the order
received (so ``ProcessEof`` goes after every earlier event of its task); retries on a schedule with
jitter; a circuit breaker; after the last attempt the row is ``dead`` (kept, redrivable). A sink
with ``max_batch`` above 1 sends its events in batches (``batches.Batcher``: ``concurrency`` is then
batches in flight, and a task still has one batch in flight at a time); one with a ``rate_limit``
holds its deliveries back to it (``throttle.TokenBucket``): a delivery over the limit waits, and if
the wait is long it is rescheduled, no attempt spent and the breaker not told. A sink
whose target answers 410 is switched off until re-enabled; the store holds that switch, and every
dispatcher reads it every ``poll_interval``, so a sink re-enabled through any process (or switched
off by another replica's 410) is seen by all. A delivery its sink can never encode is dead at once,
outside the breaker's count. Nothing here blocks ingest: rows wait in the store, and a restart
picks them up where they were.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import math
import random
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import cast

import structlog

from receiver.batches import Batcher
from receiver.documents import event_document, splices
from receiver.errors import SinkError, SinkGoneError, StoreUnavailableError, UndeliverableError
from receiver.events import Event
from receiver.group_commit import GroupCommit
from receiver.ports import (
    SNIPPET_CHARS,
    Batch,
    BatchSink,
    Delivery,
    DeliveryState,
    Outbox,
    Receipt,
    Recorded,
    Settlement,
    Sink,
)
from receiver.recent import RecentEvents as RecentEvents
from receiver.retries import CircuitBreaker as CircuitBreaker
from receiver.retries import Heard, rescheduled, settle_batch
from receiver.retries import SinkPolicy as SinkPolicy
from receiver.retries import settle as settle
from receiver.throttle import TokenBucket
from receiver.tracing import Tracing

log = structlog.get_logger("receiver.dispatch")

# The shortest time between two claims of a sink while wakes keep coming (every commit wakes it).
CLAIM_GAP = 0.005

# Deliveries of one task claimed at once and sent in a row (one claim and one settlement for all).
LINE = 64

# Longest a delivery over the rate limit waits in hand; past it, it is rescheduled in the store
# (a claimed line is leased, and a lease must not run out while it waits).
RATE_HOLD = 2.0


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
    bucket: TokenBucket | None = None  # its rate limit
    batcher: Batcher[tuple[SinkError | None, Settlement]] | None = None  # max_batch above 1
    held: int = 0  # deliveries claimed and not yet settled
    spliced: bool = False  # the sink takes the payload as stored JSON (documents.splices)

    @property
    def lines(self) -> int:
        """Task lines in flight at once: one per task, and enough of them to fill every batch."""
        return self.policy.concurrency * self.policy.max_batch

    @property
    def per_key(self) -> int:
        """Deliveries of one task claimed at once: a line, or a whole batch of one task."""
        return max(LINE, self.policy.max_batch)


class Dispatcher:
    def __init__(
        self,
        store: Outbox,
        sinks: Sequence[tuple[Sink, SinkPolicy]],
        *,
        poll_interval: float = 1.0,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
        observe: Callable[[str, str], None] | None = None,
        observe_held: Callable[[str, int], None] | None = None,
        alert: Callable[[str, str, dict[str, object]], None] | None = None,
        tracing: Tracing | None = None,
    ) -> None:
        self._store = store
        self._tracing = tracing  # a client span per attempt; None: tracing is off
        self._observe = observe
        self._observe_held = observe_held  # events held back by a rate limit
        # Operator events (kind, sink, detail); never for an operator sink's own troubles.
        self._alert = alert
        self._lanes = {
            sink.name: _Lane(sink, policy, CircuitBreaker(policy.breaker_threshold, policy.breaker_cooldown))
            for sink, policy in sinks
        }
        for lane in self._lanes.values():
            lane.spliced = splices(lane.sink)
            policy = lane.policy
            if policy.rate_limit is not None:
                lane.bucket = TokenBucket(policy.rate_limit, policy.rate_burst)
            if policy.max_batch > 1:
                lane.batcher = Batcher(
                    max_batch=policy.max_batch,
                    max_wait=policy.max_wait,
                    pinned_wait=max(policy.max_wait, 2 * poll_interval),
                    concurrency=policy.concurrency,
                    send=functools.partial(self._attempt_batch, lane),
                )
        self._poll = poll_interval
        self._clock = clock
        self._rng = rng or random.Random()
        self._settler: GroupCommit[Settlement, None] = GroupCommit(self._settle_batch, max_batch=512)
        self._recent = RecentEvents()
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

    def committed(self, events: Sequence[Event], recorded: Sequence[Recorded]) -> None:
        """Ingest in this process committed these: keep them to send, and look now."""
        if self._lanes:  # (no sink: nothing will ever be sent)
            self._recent.add(events, recorded)
            self.wake()

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
        for lane in self._lanes.values():
            if lane.batcher is not None:
                lane.batcher.flush_all()  # nothing more is coming: what waits to fill goes now
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

    def rate_limits(self) -> dict[str, dict[str, float]]:
        """Each rate-limited sink's limit, what its bucket holds now, and the events it held back."""
        now = time.monotonic()
        return {
            name: {
                "per_second": lane.bucket.rate,
                "burst": lane.bucket.burst,
                "tokens": round(max(0.0, lane.bucket.available(now)), 3),
                "held_back": lane.bucket.held_back,
            }
            for name, lane in self._lanes.items()
            if lane.bucket is not None
        }

    # --- one sink -----------------------------------------------------------------------------

    def _free(self, lane: _Lane) -> int:
        """How many task lines may be claimed now: room for lines, for their deliveries (batching),
        and for what the rate limit lets through."""
        free = (lane.policy.concurrency if lane.batcher is None else lane.lines) - len(lane.busy)
        if lane.batcher is not None:
            free = min(free, 2 * lane.lines - lane.held)
        if lane.bucket is not None:
            free = min(free, math.floor(lane.bucket.available(time.monotonic())))
        return free

    async def _run(self, lane: _Lane) -> None:
        last_claim = -math.inf
        while not self._stopping:
            # Wakes come with every commit and every settled line: claim at most every CLAIM_GAP,
            # so that one claim takes what several commits brought.
            gap = last_claim + CLAIM_GAP - time.monotonic()
            if gap > 0:
                await asyncio.sleep(gap)
            lane.wake.clear()
            claimed = limit = 0
            now = self._clock()
            free = self._free(lane)
            if free > 0 and lane.disabled is None and lane.breaker.allows(now):
                trial = lane.breaker.trial
                limit = 1 if trial else free
                last_claim = time.monotonic()
                try:
                    deliveries = await self._store.claim_deliveries(
                        lane.sink.name,
                        now=now,
                        limit=limit,
                        busy_keys=set(lane.busy),
                        per_key=1 if trial else lane.per_key,
                        known=self._recent.get,
                    )
                except StoreUnavailableError as exc:
                    log.warning("store unavailable to the dispatcher", sink=lane.sink.name, error=str(exc))
                    deliveries = []
                if not deliveries and trial:
                    lane.breaker.trial = False  # nothing to try yet: the next pass may take the trial
                lines: dict[str, list[Delivery]] = {}
                for delivery in deliveries:
                    lines.setdefault(delivery.task_key, []).append(delivery)
                for key, line in lines.items():
                    lane.held += len(line)
                    lane.busy[key] = asyncio.create_task(self._deliver_line(lane, key, line))
                claimed = len(lines)
            if self._stopping:
                return
            if claimed and claimed == limit and self._free(lane) > 0:
                continue  # the store may have more right away (it gave all that was asked)
            timeout = self._poll
            if lane.bucket is not None and free <= 0:  # back when the rate limit lets one through
                timeout = min(timeout, max(0.001, lane.bucket.wait_for(1, time.monotonic())))
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await lane.wake.wait()

    async def _deliver_line(self, lane: _Lane, key: str, line: Sequence[Delivery]) -> None:
        """One task's deliveries, in order, one at a time (or a batch at a time); settled together at
        the end (the key stays busy until then, so nothing of this task is claimed again meanwhile).
        The line stops at the first delivery that must wait for a retry: every later one waits behind it."""
        outcomes: list[Settlement] = []
        gone: SinkGoneError | None = None
        at = 0
        try:
            while at < len(line):
                if outcomes and (self._stopping or lane.disabled is not None or lane.breaker.opened_at):
                    break  # the rest stay pending, as they were
                if lane.batcher is not None:
                    tried = await self._offer(lane, line, at)
                else:
                    held = await self._throttle(lane, 1)
                    if held is not None:  # over the rate limit: come back later, as it is
                        if not outcomes:  # the line's head: rescheduled (it is leased until settled)
                            outcomes.append(
                                rescheduled(line[at], self._clock() + held, self._clock(), held_why(lane))
                            )
                        break
                    delivery = line[at]
                    error, heard = await self._attempt(lane, delivery)
                    tried = [
                        (
                            delivery,
                            error,
                            settle(delivery, error, lane.policy, self._clock(), self._rng, heard),
                        )
                    ]
                at += len(tried)
                for delivery, error, outcome in tried:
                    outcomes.append(outcome)
                    if outcome.state == DeliveryState.DEAD:
                        self._dead(lane, delivery, error)
                if any(isinstance(error, SinkGoneError) for _, error, _ in tried):
                    gone = next(e for _, e, _ in tried if isinstance(e, SinkGoneError))
                    self._gone(lane, gone)
                    break
                if not tried or any(o.state == DeliveryState.PENDING for _, _, o in tried):
                    break
        finally:
            try:
                await self._settler.submit_many(outcomes)
            except StoreUnavailableError:
                pass  # not settled: still pending in the store, so they go out again (at least once)
            finally:
                lane.busy.pop(key, None)
                lane.held -= len(line)
                lane.wake.set()
        if gone is not None:
            try:
                with contextlib.suppress(StoreUnavailableError):
                    await self._store.set_sink_disabled(lane.sink.name, str(gone), now=self._clock())
            finally:
                lane.changed_at = time.monotonic()

    def _dead(self, lane: _Lane, delivery: Delivery, error: SinkError | None) -> None:
        lane.counts["dead"] += 1
        if self._observe is not None:
            self._observe(lane.sink.name, "dead")
        log.error("delivery dead", sink=lane.sink.name, event_id=delivery.event.event_id, error=str(error))
        if self._alert is not None and not lane.policy.operator:
            self._alert(
                "sink_dead_letter", lane.sink.name, {"event_id": delivery.event.event_id, "error": str(error)}
            )

    def _gone(self, lane: _Lane, error: SinkGoneError) -> None:
        if lane.disabled is not None:
            return  # another line of this sink heard it first
        lane.disabled = str(error)
        lane.changed_at = math.inf  # until the store has it, what it says is older than this
        log.error("sink switched off by its target", sink=lane.sink.name, reason=lane.disabled)
        if self._alert is not None and not lane.policy.operator:
            self._alert("sink_gone", lane.sink.name, {"reason": lane.disabled})

    async def _throttle(self, lane: _Lane, events: int) -> float | None:
        """Wait until the rate limit lets ``events`` through; None once they may go, or the seconds
        to come back in when that is too far off to wait in hand (then they are rescheduled)."""
        bucket = lane.bucket
        if bucket is None:
            return None
        wait = bucket.reserve(events, time.monotonic())
        if wait <= 0:
            return None
        if self._observe_held is not None:
            self._observe_held(lane.sink.name, events)
        if wait <= RATE_HOLD:
            await asyncio.sleep(wait)
            return None
        bucket.cancel(events, time.monotonic())
        return wait

    async def _attempt(self, lane: _Lane, delivery: Delivery) -> tuple[SinkError | None, Heard]:
        """Send one delivery: what went wrong, if anything (the breaker and the counts told), and
        what the attempt history keeps of it."""
        error: SinkError | None = None
        receipt: Receipt | None = None
        started = time.perf_counter()
        try:
            if self._tracing is None:
                receipt = await lane.sink.deliver(
                    delivery, event_document(delivery.event, spliced=lane.spliced)
                )
            else:
                event = delivery.event
                with self._tracing.delivery(lane.sink.name, [event.traceparent], event_id=event.event_id):
                    receipt = await lane.sink.deliver(delivery, event_document(event, spliced=lane.spliced))
        except SinkError as exc:
            error = exc
        except Exception as exc:  # a sink's bug must not stop its lane
            log.exception("sink raised", sink=lane.sink.name)
            error = SinkError(repr(exc))
        latency_ms = round((time.perf_counter() - started) * 1000, 3)
        self._heard(lane, error, 1)
        if error is not None:
            status, snippet = error.status, error.snippet
        elif isinstance(receipt, Receipt):
            status, snippet = receipt.status, receipt.snippet
        else:
            status, snippet = None, None
        return error, (status, latency_ms, snippet and snippet[:SNIPPET_CHARS])

    def _heard(self, lane: _Lane, error: SinkError | None, events: int) -> None:
        """Tell the breaker and the counts how one attempt (of one event or a batch) went."""
        if error is None:
            lane.breaker.succeeded()
            lane.counts["delivered"] += events
        elif isinstance(error, UndeliverableError):
            lane.breaker.abstained()  # the target never saw it: no reason to stop sending the rest
            lane.counts["undeliverable"] += events
        else:
            opened = lane.breaker.failed(self._clock())
            lane.counts["failed"] += events
            if opened and self._alert is not None and not lane.policy.operator:
                self._alert(
                    "breaker_open", lane.sink.name, {"failures": lane.breaker.failures, "error": str(error)}
                )
        if self._observe is not None:
            for _ in range(events):
                self._observe(lane.sink.name, "delivered" if error is None else "failed")

    # --- batches ------------------------------------------------------------------------------

    async def _offer(
        self, lane: _Lane, line: Sequence[Delivery], at: int
    ) -> list[tuple[Delivery, SinkError | None, Settlement]]:
        """The next run of a line for a batch: the members of the batch its head failed in (retried
        whole), or the deliveries of one group; one that cannot be encoded is dead alone, at once."""
        assert lane.batcher is not None
        sink = cast(BatchSink, lane.sink)
        head = line[at]
        members: list[tuple[Delivery, bytes]] = []
        group = ""
        for delivery in line[at : at + lane.policy.max_batch]:
            if delivery.batch_id != head.batch_id:
                break
            try:
                body, its_group = sink.encode(event_document(delivery.event, spliced=lane.spliced))
            except UndeliverableError as exc:
                if members:
                    break  # the batch so far goes first; this one is dead on its turn
                self._heard(lane, exc, 1)
                return [(delivery, exc, settle(delivery, exc, lane.policy, self._clock(), self._rng))]
            if members and its_group != group and head.batch_id is None:
                break
            group = its_group
            members.append((delivery, body))
        pinned = (head.batch_id, head.batch_size or len(members)) if head.batch_id else None
        tried = await lane.batcher.offer(members, group, pinned)
        return [(d, error, outcome) for (d, _), (error, outcome) in zip(members, tried, strict=False)]

    async def _attempt_batch(self, lane: _Lane, batch: Batch) -> list[tuple[SinkError | None, Settlement]]:
        """Send one batch: one attempt, one request, one success or failure for the breaker."""
        held = await self._throttle(lane, len(batch.deliveries))
        if held is not None:
            now = self._clock()
            return [(None, rescheduled(d, now + held, now, held_why(lane))) for d in batch.deliveries]
        error: SinkError | None = None
        sink = cast(BatchSink, lane.sink)
        try:
            if self._tracing is None:
                await sink.deliver_batch(batch)
            else:
                traces = [d.event.traceparent for d in batch.deliveries]
                with self._tracing.delivery(
                    sink.name, traces, batch=True, batch_id=batch.id, batch_size=len(traces)
                ):
                    await sink.deliver_batch(batch)
        except SinkError as exc:
            error = exc
        except Exception as exc:  # a sink's bug must not stop its lane
            log.exception("sink raised", sink=lane.sink.name)
            error = SinkError(repr(exc))
        lane.counts["batches"] += 1
        self._heard(lane, error, len(batch.deliveries))
        outcomes = settle_batch(batch, error, lane.policy, self._clock(), self._rng)
        return [(error, outcome) for outcome in outcomes]


def held_why(lane: _Lane) -> str:
    return f"held back by the sink's rate limit ({lane.policy.rate_limit:g} events/s)"
