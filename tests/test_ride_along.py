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


async def test_items_made_while_ingest_waits_ride_with_it() -> None:
    ledger = Ledger()
    riders: RideAlong[int] = RideAlong(ledger.alone)
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
    await riders.submit([4])  # no ingest now: at once, alone
    assert ledger.commits[-1] == ("alone", [4])


async def test_items_left_when_the_last_carrier_fails_are_committed_alone() -> None:
    ledger = Ledger()
    riders: RideAlong[int] = RideAlong(ledger.alone)
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
    riders: RideAlong[int] = RideAlong(ledger.alone)
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
