"""The dispatcher on its own: the in-memory outbox and scripted sinks, and a clock that moves only when
the test moves it (so retry waits, cooldowns and the last attempt take no real time)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import cast

import pytest

from receiver.dispatch import Dispatcher
from receiver.errors import SinkError, SinkGoneError
from receiver.ports import Store
from receiver.retries import SinkPolicy
from tests.builders import record
from tests.fakes import MemoryOutbox, ScriptedSink, StepClock
from tests.payloads import FROZEN_NOW
from tests.waiting import eventually

T0 = FROZEN_NOW
FAIL = SinkError("told to fail")


class Lane:
    """One sink behind a running dispatcher, and what the test does to it."""

    def __init__(
        self,
        outbox: MemoryOutbox,
        sink: ScriptedSink,
        dispatcher: Dispatcher,
        clock: StepClock,
        alerts: list[tuple[str, str]],
    ) -> None:
        self.outbox = outbox
        self.sink = sink
        self.dispatcher = dispatcher
        self.clock = clock
        self.alerts = alerts  # (kind, sink) of each operator alert the dispatcher raised

    def add(self, task: str, *sessions: str) -> None:
        for session in sessions:
            self.outbox.add(self.sink.name, record(SessionId=session, TaskId=task), due=self.clock.now)

    def status(self) -> dict[str, object]:
        return self.dispatcher.status()[self.sink.name]

    def states(self) -> list[tuple[str, str, int]]:
        return [(str(r.event.session_id), r.state, r.attempts) for r in self.outbox.rows]

    async def look_at(self, now: float) -> None:
        """Set the clock to ``now``, wake the dispatcher, and wait until it has looked at the time
        and has nothing in hand: whatever was due by ``now`` has been tried by then."""
        assert self.status()["in_flight"] == 0
        self.clock.now = now
        reads = self.clock.reads
        self.dispatcher.wake()
        await eventually(lambda: self.clock.reads > reads and self.status()["in_flight"] == 0, within=5)

    async def until(self, *states: tuple[str, str, int]) -> None:
        """Wait until the outbox holds exactly these (session, state, attempts), with nothing in hand."""
        await eventually(lambda: self.states() == list(states) and self.status()["in_flight"] == 0, within=5)


@pytest.fixture
async def lanes() -> AsyncIterator[list[Lane]]:
    started: list[Lane] = []
    yield started
    for lane in started:
        await lane.dispatcher.stop(drain_seconds=1)


async def start(lanes: list[Lane], sink: ScriptedSink, policy: SinkPolicy, *, disabled: str = "") -> Lane:
    outbox = MemoryOutbox()
    if disabled:
        outbox.disabled[sink.name] = disabled
    clock = StepClock(T0)
    alerts: list[tuple[str, str]] = []
    dispatcher = Dispatcher(
        # The dispatcher types against the whole Store; the outbox part of it is all it calls.
        cast(Store, outbox),
        [(sink, policy)],
        poll_interval=3600.0,  # it looks when woken, as after every commit, never on its own here
        clock=clock,
        alert=lambda kind, name, detail: alerts.append((kind, name)),
    )
    lane = Lane(outbox, sink, dispatcher, clock, alerts)
    lanes.append(lane)
    await dispatcher.start()
    return lane


def policy(
    schedule: Sequence[float] = (10.0, 100.0),
    *,
    concurrency: int = 8,
    breaker_threshold: int = 1000,
    breaker_cooldown: float = 30.0,
) -> SinkPolicy:
    """A policy with no jitter: each retry is due exactly when its schedule says."""
    return SinkPolicy(
        concurrency=concurrency,
        retry_schedule=tuple(schedule),
        jitter=0.0,
        breaker_threshold=breaker_threshold,
        breaker_cooldown=breaker_cooldown,
    )


async def test_a_task_whose_delivery_waits_for_its_retry_holds_its_later_events_while_others_go(
    lanes: list[Lane],
) -> None:
    lane = await start(lanes, ScriptedSink("s", {"a1": [FAIL]}), policy((10.0,), concurrency=2))
    lane.add("A", "a1", "a2", "a3")
    lane.add("B", "b1", "b2", "b3")
    await lane.look_at(T0)
    await lane.until(
        ("a1", "pending", 1),
        ("a2", "pending", 0),
        ("a3", "pending", 0),
        ("b1", "delivered", 1),
        ("b2", "delivered", 1),
        ("b3", "delivered", 1),
    )
    await lane.look_at(T0 + 9.9)  # a1 is not due yet: a2 and a3 wait behind it
    assert lane.sink.received == ["b1", "b2", "b3"]
    await lane.look_at(T0 + 10.0)
    await lane.until(*[(s, "delivered", 2 if s == "a1" else 1) for s in ("a1", "a2", "a3", "b1", "b2", "b3")])
    assert [s for s in lane.sink.received if s.startswith("a")] == ["a1", "a2", "a3"]
    assert lane.sink.attempts.count("a1") == 2


async def test_retries_follow_the_schedule_and_after_the_last_attempt_the_delivery_is_dead(
    lanes: list[Lane],
) -> None:
    lane = await start(lanes, ScriptedSink("s", {"x": [FAIL] * 10}), policy((10.0, 100.0)))
    lane.add("A", "x")
    await lane.look_at(T0)
    await lane.until(("x", "pending", 1))
    await lane.look_at(T0 + 9.99)
    assert lane.sink.attempts == ["x"]
    await lane.look_at(T0 + 10.0)
    await lane.until(("x", "pending", 2))
    await lane.look_at(T0 + 109.99)
    assert lane.sink.attempts == ["x", "x"]
    await lane.look_at(T0 + 110.0)
    await lane.until(("x", "dead", 3))
    due = [(s.state, s.attempts, s.next_attempt_at - T0, s.error) for s in lane.outbox.settled]
    assert due == [
        ("pending", 1, 10.0, "told to fail"),
        ("pending", 2, 110.0, "told to fail"),
        ("dead", 3, 110.0, "told to fail"),
    ]
    await lane.look_at(T0 + 10**6)  # dead is kept, and never tried again
    assert lane.sink.attempts == ["x", "x", "x"]
    assert lane.status()["dead"] == 1
    assert lane.alerts == [("sink_dead_letter", "s")]


async def test_the_breaker_opens_waits_its_cooldown_lets_one_trial_through_then_closes(
    lanes: list[Lane],
) -> None:
    sink = ScriptedSink("s", {"a": [FAIL, FAIL], "b": [FAIL]})
    lane = await start(
        lanes, sink, policy((5.0,) * 5, concurrency=1, breaker_threshold=2, breaker_cooldown=30.0)
    )
    lane.add("A", "a")
    lane.add("B", "b")
    lane.add("C", "c")
    await lane.look_at(T0)
    await lane.until(("a", "pending", 1), ("b", "pending", 1), ("c", "pending", 0))
    assert lane.status()["breaker"] == "open"  # two failures in a row: c is not even tried
    assert lane.alerts == [("breaker_open", "s")]
    await lane.look_at(T0 + 29.0)  # a and b are due again, but the breaker is still cooling down
    assert sink.attempts == ["a", "b"]
    await lane.look_at(T0 + 30.0)  # half-open: one trial, the oldest due
    await lane.until(("a", "pending", 2), ("b", "pending", 1), ("c", "pending", 0))
    assert sink.attempts == ["a", "b", "a"]
    assert lane.status()["breaker"] == "open"  # the trial failed: open again, for another cooldown
    await lane.look_at(T0 + 59.0)
    assert sink.attempts == ["a", "b", "a"]
    await lane.look_at(T0 + 60.0)  # the next trial goes through: closed, and the rest follow
    await lane.until(("a", "delivered", 3), ("b", "delivered", 2), ("c", "delivered", 1))
    assert lane.status()["breaker"] == "closed"
    assert sink.received == ["a", "b", "c"]


async def test_a_410_switches_the_sink_off_in_the_store_until_it_is_re_enabled(lanes: list[Lane]) -> None:
    gone = SinkGoneError("HTTP 410 from the target", status=410)
    sink = ScriptedSink("s", {"a1": [gone]})
    lane = await start(lanes, sink, policy((10.0,), concurrency=2))
    lane.add("A", "a1", "a2")
    await lane.look_at(T0)
    await lane.until(("a1", "pending", 1), ("a2", "pending", 0))
    await eventually(lambda: lane.outbox.switches == [("s", "HTTP 410 from the target")], within=5)
    assert lane.status()["disabled"] == "HTTP 410 from the target"
    assert lane.alerts == [("sink_gone", "s")]
    lane.add("B", "b1")
    await lane.look_at(T0 + 10**6)  # everything due, nothing sent: the sink is off
    assert sink.attempts == ["a1"]
    await lane.dispatcher.enable("s")
    await lane.until(("a1", "delivered", 2), ("a2", "delivered", 1), ("b1", "delivered", 1))
    assert lane.outbox.switches[-1] == ("s", None)
    assert lane.status()["disabled"] is None


async def test_a_sink_switched_off_in_the_store_sends_nothing_from_the_start(lanes: list[Lane]) -> None:
    sink = ScriptedSink("s")
    lane = await start(lanes, sink, policy(), disabled="HTTP 410 from the target")
    lane.add("A", "a1")
    await lane.look_at(T0 + 1.0)
    assert sink.attempts == []
    await lane.dispatcher.enable("s")
    await lane.until(("a1", "delivered", 1))


async def test_stop_leaves_the_sink_open_to_whoever_built_it_and_what_is_not_due_pending(
    lanes: list[Lane],
) -> None:
    sink = ScriptedSink("s", {"a1": [FAIL]})
    lane = await start(lanes, sink, policy((10.0,)))
    lane.add("A", "a1")
    await lane.look_at(T0)
    await lane.until(("a1", "pending", 1))
    lanes.remove(lane)
    await lane.dispatcher.stop(drain_seconds=1)
    assert not sink.closed  # the sinks outlive a dispatcher: a process may take the lease again
    assert lane.states() == [("a1", "pending", 1)]
