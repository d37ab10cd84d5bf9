"""Several replicas on one PostgreSQL: ingest dedup under concurrency, dispatchers sharing the outbox.

A deployment runs one dispatcher at a time (the store's dispatch lease); several at once still
happen while one hands over to the next, and the claims' row leases keep them from sending a
delivery twice or out of order."""

from __future__ import annotations

import asyncio
from collections import defaultdict

import pytest

from receiver.dispatch import Dispatcher
from receiver.ports import EventQuery
from receiver.retries import SinkPolicy
from receiver.sinks.memory import MemorySink
from receiver.stores.postgres import PostgresStore
from tests.builders import event, new_task
from tests.databases import mps_events, postgres_database
from tests.payloads import REVIEW

pytestmark = pytest.mark.postgres


async def test_replicas_store_each_event_once_and_share_deliveries_in_per_task_order() -> None:
    async with postgres_database() as url:
        replicas = [await PostgresStore.open(url) for _ in range(3)]
        try:
            for t in range(6):
                await replicas[0].register_task(new_task(f"task-{t}"))
            sent = [event(REVIEW, TaskId=f"task-{i % 6}", SessionContext="", SessionId=f"e-{i}", at=1000 + i)
                    for i in range(300)]  # fmt: skip
            route = lambda e, t: ["shared"]  # noqa: E731

            # Every event goes to every replica (as if MPS and CMQ both retried), in batches, at once.
            async def feed(store: PostgresStore, offset: int) -> int:
                duplicates = 0
                for start in range(0, len(sent), 25):
                    batch = sent[start + offset : start + 25] + sent[start : start + offset]
                    duplicates += sum(r.duplicate for r in await store.record_events(batch, route))
                return duplicates

            duplicates = await asyncio.gather(*(feed(s, k * 7) for k, s in enumerate(replicas)))
            assert sum(duplicates) == 2 * len(sent)  # each event: stored by one replica, counted by two
            assert await mps_events(replicas[0]) == len(sent)
            task = await replicas[1].get_task("task-3")
            assert task is not None
            assert task.event_count == 50  # each stored event applied to its task exactly once

            sink = MemorySink("shared")  # one target, three dispatchers
            dispatchers = [
                Dispatcher(s, [(sink, SinkPolicy(concurrency=4))], poll_interval=0.02) for s in replicas
            ]
            for d in dispatchers:
                await d.start()
            deadline = asyncio.get_running_loop().time() + 30
            while len(sink.received) < len(sent):
                assert asyncio.get_running_loop().time() < deadline, len(sink.received)
                await asyncio.sleep(0.02)
            for d in dispatchers:
                await d.stop()
            ids = [d["event_id"] for d in sink.received]
            assert len(set(ids)) == len(sent)
            assert len(ids) == len(sent)  # leases: no replica took another's delivery
            stored = (await replicas[0].list_events(EventQuery(limit=1000))).items  # in the order received
            expected: dict[str, list[str]] = defaultdict(list)
            for e in stored:
                expected[e.task_id].append(e.session_id)
            order: dict[str, list[str]] = defaultdict(list)
            for doc in sink.received:
                order[doc["task_id"]].append(doc["session_id"])
            assert order == expected
        finally:
            for s in replicas:
                await s.aclose()
