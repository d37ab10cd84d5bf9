"""``GroupCommit``: every caller answered by its own commit's result; with ``concurrency`` above 1,
that many commits at once, and never an item left waiting with nobody to commit it."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence

import pytest

from receiver.group_commit import GATHER_PASSES, IDLE_PASSES, GroupCommit


class Gate:
    """A commit that waits until released, recording each batch and how many ran at once."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.running = 0
        self.most = 0
        self.release = asyncio.Event()

    async def commit(self, items: Sequence[int]) -> list[int]:
        self.running += 1
        self.most = max(self.most, self.running)
        self.batches.append(list(items))
        try:
            await self.release.wait()
        finally:
            self.running -= 1
        return [i * 10 for i in items]


def recorder() -> tuple[list[list[int]], Callable[[Sequence[int]], Awaitable[list[None]]]]:
    """A commit that records each batch, and the batches it recorded."""
    committed: list[list[int]] = []

    async def commit(items: Sequence[int]) -> list[None]:
        committed.append(list(items))
        return [None] * len(items)

    return committed, commit


async def submit_after(group: GroupCommit[int, None], item: int, passes: int) -> None:
    """Submit ``item`` after ``passes`` loop passes on its way (a delivery being read)."""
    for _ in range(passes):
        await asyncio.sleep(0)
    await group.submit(item)


async def settle_loop() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


@pytest.mark.parametrize("concurrency", [1, 2, 3])
async def test_at_most_concurrency_commits_run_at_once_and_every_caller_gets_its_result(
    concurrency: int,
) -> None:
    gate = Gate()
    group: GroupCommit[int, int] = GroupCommit(gate.commit, max_batch=100, concurrency=concurrency)
    callers = []
    for i in range(12):  # one at a time, each a loop pass apart: every free flusher takes one
        callers.append(asyncio.create_task(group.submit(i)))
        await settle_loop()
    assert gate.running == concurrency
    gate.release.set()
    assert await asyncio.gather(*callers) == [i * 10 for i in range(12)]
    assert gate.most == concurrency
    # The first `concurrency` items went alone; the rest waited and went together after them.
    assert gate.batches[:concurrency] == [[i] for i in range(concurrency)]
    assert sorted(i for b in gate.batches for i in b) == list(range(12))


async def test_an_item_queued_just_as_the_last_flusher_finishes_is_still_committed() -> None:
    committed, commit = recorder()

    group: GroupCommit[int, None] = GroupCommit(commit, max_batch=10, concurrency=1)
    await group.submit(1)  # resumed by its result: its flusher has taken the last item and returned ...
    # ... and its done callback may not have run yet: a new item must start a flusher anyway.
    async with asyncio.timeout(1):  # (awaited in place, not as a task the loop would start later)
        await group.submit(2)
    await group.drain()
    assert committed == [[1], [2]]


async def test_drain_waits_for_every_commit_in_flight() -> None:
    gate = Gate()
    group: GroupCommit[int, int] = GroupCommit(gate.commit, max_batch=100, concurrency=2)
    callers = [asyncio.create_task(group.submit(i)) for i in range(2)]
    await settle_loop()
    drained = asyncio.create_task(group.drain())
    await settle_loop()
    assert not drained.done()
    gate.release.set()
    await asyncio.wait_for(drained, timeout=1)
    assert all(c.done() for c in callers)


def test_a_concurrency_below_one_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        GroupCommit(Gate().commit, max_batch=1, concurrency=0)


async def test_callers_reaching_submit_a_few_loop_passes_apart_share_one_commit() -> None:
    committed, commit = recorder()

    group: GroupCommit[int, None] = GroupCommit(commit, max_batch=100)
    gap = IDLE_PASSES  # passes apart: IDLE_PASSES - 1 passes bring nothing between two of them
    await asyncio.gather(*(submit_after(group, i, i * gap) for i in range(4)))
    assert committed == [[0, 1, 2, 3]]

    committed.clear()  # further apart than that: the first went alone
    await asyncio.gather(submit_after(group, 0, 0), submit_after(group, 1, 2 * IDLE_PASSES + 1))
    assert committed == [[0], [1]]


async def test_gathering_stops_after_a_few_passes_when_items_keep_coming() -> None:
    committed, commit = recorder()

    group: GroupCommit[int, None] = GroupCommit(commit, max_batch=1000)
    n = 40  # fixed, not derived from GATHER_PASSES: a cap raised past it must fail here
    assert n > GATHER_PASSES + 2
    # One more item reaches submit every loop pass.
    await asyncio.gather(*(submit_after(group, i, i) for i in range(n)))
    assert len(committed) > 1
    assert len(committed[0]) <= GATHER_PASSES + 2
    assert sorted(i for b in committed for i in b) == list(range(n))


async def test_a_full_batch_is_committed_without_gathering() -> None:
    """``max_batch`` items queued: the commit starts in the flusher's first pass, it does not wait
    for passes that could bring nothing it may take."""
    passes = 0
    started_at: list[int] = []

    async def ticker() -> None:
        nonlocal passes
        while True:
            passes += 1
            await asyncio.sleep(0)

    async def commit(items: Sequence[int]) -> list[None]:
        started_at.append(passes)
        return [None] * len(items)

    tick = asyncio.create_task(ticker())
    await asyncio.sleep(0)
    group: GroupCommit[int, None] = GroupCommit(commit, max_batch=3)
    queued = passes
    await asyncio.gather(*(group.submit(i) for i in range(3)))
    tick.cancel()
    assert started_at[0] - queued <= 2  # gathering would have spent IDLE_PASSES more
    assert IDLE_PASSES > 2


async def test_batches_hold_max_batch_at_most() -> None:
    committed, commit = recorder()

    group: GroupCommit[int, None] = GroupCommit(commit, max_batch=3)
    await asyncio.gather(*(group.submit(i) for i in range(7)))
    assert committed == [[0, 1, 2], [3, 4, 5], [6]]
