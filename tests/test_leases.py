"""A job under a store lease runs in one process at a time, and passes to another when its holder
stops, dies, loses the lease or cannot renew it in time."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from receiver.http.keys import DISPATCHER
from receiver.leases import LeasedJob
from receiver.ports import Leases
from receiver.stores.sqlite import SqliteStore
from tests.apps import ClientFactory, post, sink, start
from tests.fakes import MemoryLeases
from tests.payloads import REVIEW
from tests.waiting import eventually

TTL = 0.6  # renewed every 0.2 s


class Job:
    """What a LeasedJob runs: records when it began and ended."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.began = asyncio.Event()
        self.ended = asyncio.Event()

    async def begin(self) -> str:
        self.began.set()
        return self.name

    async def end(self, job: str) -> None:
        assert job == self.name
        self.ended.set()


def leased(leases: Leases, job: Job, ttl: float = TTL) -> LeasedJob[str]:
    return LeasedJob(leases, "dispatch", holder=job.name, ttl=ttl, begin=job.begin, end=job.end)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    s = await SqliteStore.open(tmp_path / "leases.db")
    yield s
    await s.aclose()


async def test_one_holder_runs_the_job_and_hands_it_over_when_it_stops(store: SqliteStore) -> None:
    a, b = Job("a"), Job("b")
    first, second = leased(store, a), leased(store, b)
    await first.start()
    assert first.current == "a"  # started before start() returned: the lease was free
    await second.start()
    assert second.current is None
    assert (await store.lease_holder("dispatch") or ("",))[0] == "a"
    await first.stop()
    assert a.ended.is_set()
    assert first.current is None
    # Released, so the other takes it at its next try, well before the lease would have run out.
    started = time.monotonic()
    await asyncio.wait_for(b.began.wait(), timeout=5)
    assert time.monotonic() - started < TTL
    assert second.current == "b"
    await second.stop()
    assert await store.lease_holder("dispatch") is None


async def test_a_holder_that_dies_is_taken_over_within_the_ttl_and_a_renewal(store: SqliteStore) -> None:
    a, b = Job("a"), Job("b")
    dead, standby = leased(store, a), leased(store, b)
    await dead.start()
    await standby.start()
    assert dead._keeper is not None
    dead._keeper.cancel()  # as kill -9 leaves it: no more renewals, nothing released
    died = time.monotonic()
    await asyncio.wait_for(b.began.wait(), timeout=5)
    assert time.monotonic() - died <= TTL + standby.renew_every + 0.2
    assert not a.ended.is_set()
    await standby.stop()


async def test_a_holder_told_the_lease_is_another_s_stops_the_job() -> None:
    leases = MemoryLeases()
    a = Job("a")
    job = leased(leases, a)
    await job.start()
    leases.held["dispatch"] = ("b", time.time() + 60)  # b took it (a was paused past the ttl)
    await asyncio.wait_for(a.ended.wait(), timeout=5)
    assert job.current is None
    await job.stop()
    assert leases.held["dispatch"][0] == "b"  # not a's to release


async def test_a_holder_that_cannot_renew_stops_the_job_before_the_lease_runs_out() -> None:
    leases = MemoryLeases()
    a = Job("a")
    job = leased(leases, a, ttl=0.9)
    await job.start()
    a.began.clear()
    (_, expires_at) = leases.held["dispatch"]
    leases.down = True
    await asyncio.wait_for(a.ended.wait(), timeout=5)
    assert time.time() < expires_at  # it stopped while the lease it held was still good
    assert job.current is None
    leases.down = False
    await asyncio.wait_for(a.began.wait(), timeout=5)  # still its own: taken again
    assert job.current == "a"
    await job.stop()


async def test_a_job_that_cannot_start_gives_the_lease_back() -> None:
    leases = MemoryLeases()

    async def broken() -> str:
        raise RuntimeError("bad sink options")

    job = LeasedJob(leases, "dispatch", holder="a", ttl=TTL, begin=broken, end=Job("a").end)
    with pytest.raises(RuntimeError, match="bad sink options"):
        await job.start()
    assert "dispatch" not in leases.held


async def test_of_two_apps_on_one_store_one_dispatches_and_the_other_takes_over_when_it_stops(
    store_url: str, aiohttp_client: ClientFactory
) -> None:
    sinks = [{"name": "memo", "kind": "memory"}]
    first = await start(aiohttp_client, store_url, sinks, lease_seconds=TTL)
    second = await start(aiohttp_client, store_url, sinks, lease_seconds=TTL)
    assert second.app[DISPATCHER].current is None  # a standby
    await post(second, REVIEW)  # taken in by one, delivered by the other
    await eventually(lambda: len(sink(first, "memo").received) == 1)
    await first.close()  # its dispatcher drains, then the lease goes
    await eventually(lambda: second.app[DISPATCHER].current is not None, within=5)
    await post(second, {**REVIEW, "SessionId": "after"})
    await eventually(lambda: len(sink(second, "memo").received) == 1)
    assert sink(second, "memo").received[0]["session_id"] == "after"
