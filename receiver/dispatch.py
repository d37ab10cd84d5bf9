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
import math
import random
import time
from collections.abc import Callable, Sequence

import structlog

from receiver.batches import Batcher
from receiver.documents import splices
from receiver.errors import SinkGoneError, StoreUnavailableError
from receiver.events import Event
from receiver.group_commit import GroupCommit
from receiver.lanes import Lane
from receiver.ports import Delivery, DeliveryState, Outbox, Recorded, Settlement, Sink
from receiver.recent import Handoff, RecentEvents, record_of
from receiver.retries import CircuitBreaker, SinkPolicy, rescheduled, settle
from receiver.tasks import outbox_key
from receiver.throttle import TokenBucket
from receiver.tracing import Tracing

log = structlog.get_logger("receiver.dispatch")

# The shortest time between two claims of a sink while wakes keep coming (every commit wakes it).
CLAIM_GAP = 0.005


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
        handed: bool = False,
    ) -> None:
        """``handed``: ingest in this process hands the dispatcher what it commits (``committed``),
        so a lane may send from memory."""
        self._store = store
        self._handed = handed
        rng = rng or random.Random()
        self._lanes = {
            sink.name: Lane(
                sink,
                policy,
                CircuitBreaker(policy.breaker_threshold, policy.breaker_cooldown),
                spliced=splices(sink),
                clock=clock,
                rng=rng,
                tracing=tracing,
                observe=observe,
                observe_held=observe_held,
                alert=alert,
            )
            for sink, policy in sinks
        }
        for lane in self._lanes.values():
            policy = lane.policy
            if policy.rate_limit is not None:
                lane.bucket = TokenBucket(policy.rate_limit, policy.rate_burst)
            if policy.max_batch > 1:
                lane.batcher = Batcher(
                    max_batch=policy.max_batch,
                    max_wait=policy.max_wait,
                    pinned_wait=max(policy.max_wait, 2 * poll_interval),
                    concurrency=policy.concurrency,
                    send=lane.attempt_batch,
                )
        self._poll = poll_interval
        self._clock = clock
        self._rng = rng
        self._settler: GroupCommit[Settlement, None] = GroupCommit(self._settle_batch, max_batch=512)
        self._recent = RecentEvents()
        self._handoffs = 0  # batches handed over so far (a lane syncs only if none came meanwhile)
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

    def _switch_on(self, lane: Lane) -> None:
        lane.disabled = None
        lane.breaker.succeeded()
        lane.wake.set()

    def wake(self) -> None:
        """New outbox rows were committed: look now rather than at the next poll."""
        for lane in self._lanes.values():
            lane.wake.set()

    def committed(self, events: Sequence[Event], recorded: Sequence[Recorded]) -> None:
        """Ingest in this process committed these: a lane that knows all its pending deliveries
        sends theirs now, from memory; the others keep the events for their next claim to read."""
        if not self._lanes:  # (no sink: nothing will ever be sent)
            return
        self._handoffs += 1
        epoch: int | None = None
        claiming = False
        for lane in self._lanes.values():
            if lane.handoff is not None:
                if epoch is None:
                    epoch = self._store.handoff_epoch()
                self._hand(lane, events, recorded, epoch)
            if lane.handoff is None:
                claiming = True
                lane.wake.set()
        if claiming:  # (a lane that falls back later reads what it missed from the store)
            self._recent.add(events, recorded)

    def _hand(
        self, lane: Lane, events: Sequence[Event], recorded: Sequence[Recorded], epoch: int | None
    ) -> None:
        """Give the lane its deliveries of a commit and start what can start; or, if it can no
        longer know all it has pending, drop what it holds (the store has it) and claim again."""
        handoff = lane.handoff
        assert handoff is not None
        if epoch != handoff.epoch:
            return self._claim_again(lane, "another writer")
        if not lane.may_hand_off:
            return self._claim_again(lane, "sink not open")
        name = lane.sink.name
        for e, r in zip(events, recorded, strict=True):
            if name not in r.sinks:
                continue
            if r.task is None or not r.outbox:  # an orphan's record is the store's to give
                return self._claim_again(lane, "orphan")
            delivery = Delivery(
                id=r.outbox[r.sinks.index(name)],
                sink=name,
                task_key=outbox_key(e),
                attempts=0,
                event=record_of(e, r),
            )
            if not handoff.add(delivery):
                return self._claim_again(lane, "too many held")
        self._start_handed(lane)

    def _start_handed(self, lane: Lane) -> None:
        """Start a line for each task key with deliveries handed over and none in flight."""
        handoff = lane.handoff
        if handoff is None or self._stopping:
            return
        for key in handoff.ready(lane.busy):
            if lane.free() <= 0:
                return
            line = handoff.take(key, lane.per_key)
            lane.held += len(line)
            lane.busy[key] = asyncio.create_task(self._deliver_line(lane, key, line))

    def _claim_again(self, lane: Lane, why: str) -> None:
        """Back to claims: the deliveries held in memory are pending in the store, claimed in order
        after the lines in flight (their keys stay busy until settled)."""
        if lane.handoff is not None:
            lane.handoff = None
            lane.counts["handoffs_dropped"] += 1
            log.debug("dispatcher claims again", sink=lane.sink.name, why=why)
        lane.wake.set()

    async def _sync(self, lane: Lane) -> None:
        """Start sending from memory if this process knows every pending delivery of the lane:
        nothing in flight, none pending in the store, and nothing written meanwhile (no batch
        handed over, the store's epoch where it was)."""
        epoch = self._store.handoff_epoch()
        handoffs = self._handoffs
        if epoch is None or not self._handed or lane.busy or not lane.may_hand_off:
            return
        try:
            pending = await self._store.has_pending(lane.sink.name)
        except StoreUnavailableError:
            return
        if (
            not pending
            and not lane.busy
            and lane.may_hand_off
            and handoffs == self._handoffs
            and epoch == self._store.handoff_epoch()
            and not self._stopping
        ):
            lane.handoff = Handoff(epoch)

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
        for lane in self._lanes.values():  # the sinks stay open: whoever built them closes them
            log.info("sink stopped", sink=lane.sink.name, **lane.counts)

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

    def status(self) -> dict[str, dict[str, object]]:
        return {
            name: {
                "breaker": lane.breaker.state,
                "disabled": lane.disabled,
                "in_flight": len(lane.busy),
                "from_memory": lane.handoff is not None,
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

    async def _run(self, lane: Lane) -> None:
        last_claim = -math.inf
        while not self._stopping:
            if lane.handoff is not None:
                await self._watch_handed(lane)
                continue
            # Wakes come with every commit and every settled line: claim at most every CLAIM_GAP,
            # so that one claim takes what several commits brought.
            gap = last_claim + CLAIM_GAP - time.monotonic()
            if gap > 0:
                await asyncio.sleep(gap)
            lane.wake.clear()
            claimed = limit = 0
            now = self._clock()
            free = lane.free()
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
            if claimed and claimed == limit and lane.free() > 0:
                continue  # the store may have more right away (it gave all that was asked)
            if not claimed and not lane.busy:
                await self._sync(lane)
                if lane.handoff is not None:
                    continue
            timeout = self._poll
            if lane.bucket is not None and free <= 0:  # back when the rate limit lets one through
                timeout = min(timeout, max(0.001, lane.bucket.wait_for(1, time.monotonic())))
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await lane.wake.wait()

    async def _watch_handed(self, lane: Lane) -> None:
        """While a lane sends from memory: wait; and when it is idle, make sure the store agrees
        it has nothing pending (another process's rows are seen here when this one writes nothing)."""
        lane.wake.clear()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self._poll):
                await lane.wake.wait()
        handoff = lane.handoff
        if handoff is None or self._stopping:
            return
        if self._store.handoff_epoch() != handoff.epoch or not lane.may_hand_off:
            self._claim_again(lane, "another writer" if lane.may_hand_off else "sink not open")
        elif not lane.busy and not handoff.size:
            try:
                pending = await self._store.has_pending(lane.sink.name)
            except StoreUnavailableError:
                return
            if pending and not lane.busy and lane.handoff is handoff and not handoff.size:
                self._claim_again(lane, "pending in the store")

    async def _deliver_line(self, lane: Lane, key: str, line: Sequence[Delivery]) -> None:
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
                    tried = await lane.offer(line, at)
                else:
                    held = await lane.throttle(1)
                    if held is not None:  # over the rate limit: come back later, as it is
                        if not outcomes:  # the line's head: rescheduled (it is leased until settled)
                            outcomes.append(
                                rescheduled(line[at], self._clock() + held, self._clock(), lane.held_why())
                            )
                        break
                    delivery = line[at]
                    error, heard = await lane.attempt(delivery)
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
                        lane.dead(delivery, error)
                if any(isinstance(error, SinkGoneError) for _, error, _ in tried):
                    gone = next(e for _, e, _ in tried if isinstance(e, SinkGoneError))
                    lane.gone(gone)
                    break
                if not tried or any(o.state == DeliveryState.PENDING for _, _, o in tried):
                    break
        finally:
            # Sent from memory, a line must end with nothing of it left pending in the store.
            left = len(outcomes) < len(line) or any(o.state == DeliveryState.PENDING for o in outcomes)
            try:
                await self._settler.submit_many(outcomes)
            except StoreUnavailableError:
                left = True  # not settled: still pending in the store, so they go out again (at least once)
            finally:
                lane.busy.pop(key, None)
                lane.held -= len(line)
                if lane.handoff is None:
                    lane.wake.set()  # the runner claims what waited behind this line
                elif left:
                    self._claim_again(lane, "left pending")
                else:
                    self._start_handed(lane)
        if gone is not None:
            try:
                with contextlib.suppress(StoreUnavailableError):
                    await self._store.set_sink_disabled(lane.sink.name, str(gone), now=self._clock())
            finally:
                lane.changed_at = time.monotonic()

    # --- batches ------------------------------------------------------------------------------
