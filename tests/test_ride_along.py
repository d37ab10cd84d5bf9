"""``RideAlong``: settlements wait for the next ingest transaction instead of paying for their own."""

from __future__ import annotations

import asyncio

import pytest

from receiver.errors import StoreUnavailableError
from receiver.group_commit import RideAlong


class Ledger:
    """A store's two kinds of transaction, recorded: what each committed."""

    def __init__(self) -> None:
        self.commits: list[tuple[str, list[int]]] = []
        self.fail_alone = False

    async def alone(self, items: list[int]) -> None:
        await asyncio.sleep(0)
        if self.fail_alone:
            raise StoreUnavailableError("down")
        self.commits.append(("alone", items))


async def carry(riders: RideAlong[int], ledger: Ledger, started: asyncio.Event, go: asyncio.Event) -> None:
    """An ingest transaction: waits for the writer (``go``), then commits what rode along."""
    with riders.carrying():
        started.set()
        await go.wait()
        taken = riders.take()
        ledger.commits.append(("ingest", riders.items(taken)))
    riders.done(taken)


async def commit(riders: RideAlong[int], ledger: Ledger) -> None:
    """An ingest transaction that runs at once."""
    go = asyncio.Event()
    go.set()
    await carry(riders, ledger, asyncio.Event(), go)


async def test_items_made_while_ingest_waits_ride_with_it() -> None:
    ledger = Ledger()
    now = [100.0]
    riders: RideAlong[int] = RideAlong(ledger.alone, wait=0.25, flowing=0.05, clock=lambda: now[0])
    started, go = asyncio.Event(), asyncio.Event()
    ingest = asyncio.create_task(carry(riders, ledger, started, go))
    await started.wait()
    first = asyncio.create_task(riders.submit([1, 2]))
    second = asyncio.create_task(riders.submit([3]))
    await asyncio.sleep(0)
    assert not first.done()  # waiting for the ingest transaction
    go.set()
    await asyncio.gather(ingest, first, second)
    assert ledger.commits == [("ingest", [1, 2, 3])]
    now[0] += 0.06  # no ingest ran for longer than ``flowing``: idle, so at once, alone
    await asyncio.wait_for(riders.submit([4]), timeout=0.1)
    assert ledger.commits[-1] == ("alone", [4])


async def test_while_ingest_flows_an_item_waits_for_the_next_commit_and_rides_with_it() -> None:
    ledger = Ledger()
    riders: RideAlong[int] = RideAlong(ledger.alone, wait=5.0, flowing=5.0)
    await commit(riders, ledger)  # a commit just ended
    assert ledger.commits == [("ingest", [])]
    waiting = asyncio.create_task(riders.submit([5]))  # no carrier now, but one ran just now
    await asyncio.sleep(0.05)
    assert not waiting.done()  # not alone: waiting for the next commit
    await commit(riders, ledger)
    await asyncio.wait_for(waiting, timeout=1)
    assert ledger.commits == [("ingest", []), ("ingest", [5])]


async def test_an_item_no_commit_comes_for_is_committed_alone_once_its_wait_is_up() -> None:
    ledger = Ledger()
    riders: RideAlong[int] = RideAlong(ledger.alone, wait=0.1, flowing=5.0)
    await commit(riders, ledger)
    loop = asyncio.get_running_loop()
    began = loop.time()
    await asyncio.wait_for(riders.submit([6]), timeout=2)
    assert loop.time() - began >= 0.09  # it waited for a commit first
    assert ledger.commits == [("ingest", []), ("alone", [6])]


async def test_with_no_wait_an_item_is_committed_alone_at_once() -> None:
    ledger = Ledger()
    riders: RideAlong[int] = RideAlong(ledger.alone, wait=0.0)
    await commit(riders, ledger)
    await asyncio.wait_for(riders.submit([8]), timeout=0.05)
    assert ledger.commits == [("ingest", []), ("alone", [8])]


async def test_items_left_when_the_last_carrier_fails_are_committed_alone() -> None:
    ledger = Ledger()
    riders: RideAlong[int] = RideAlong(ledger.alone, wait=0.05)
    started = asyncio.Event()

    async def failing() -> None:
        with riders.carrying():
            started.set()
            await asyncio.sleep(0.01)
            taken = riders.take()
            riders.undone(taken)  # the transaction rolled back: they go back to the queue

    ingest = asyncio.create_task(failing())
    await started.wait()
    await riders.submit([7])
    await ingest
    assert ledger.commits == [("alone", [7])]


async def test_a_failure_alone_reaches_every_waiter() -> None:
    ledger = Ledger()
    ledger.fail_alone = True
    riders: RideAlong[int] = RideAlong(ledger.alone, wait=0.05)
    started, go = asyncio.Event(), asyncio.Event()

    async def empty_handed() -> None:
        with riders.carrying():
            started.set()
            await go.wait()  # took nothing: what came meanwhile is left for the flush

    ingest = asyncio.create_task(empty_handed())
    await started.wait()
    waiting = asyncio.create_task(riders.submit([9]))
    await asyncio.sleep(0)
    go.set()
    await ingest
    with pytest.raises(StoreUnavailableError):
        await waiting
