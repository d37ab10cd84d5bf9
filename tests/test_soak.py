"""The short soak: a few thousand notifications over both channels with every kind of fault."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tests.databases import postgres_database

# The harness lives with the benchmarks (``make soak`` runs its long run); here, its short run.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
from soak import FAULTS, run

pytestmark = [pytest.mark.slow, pytest.mark.amqp]


async def test_stored_is_exactly_what_was_sent_each_task_counted_once_and_the_sink_gets_it_in_order() -> None:
    report = await run(2000, rate=150, seed=11, fault_every=2.0)
    print("\n" + report.table())
    assert report.problems == []
    assert all(report.faults[kind] >= 1 for kind in FAULTS), report.faults
    assert report.notifications == 2000
    assert report.lost == 0
    assert report.unexpected == 0  # stored == sent, as sets of event ids
    assert report.task_count_mismatches == {}  # each task's event count == what was sent for it
    assert report.not_delivered == 0
    assert report.order_violations == 0


@pytest.mark.postgres
async def test_three_replicas_on_one_postgresql_and_one_queue_lose_nothing_and_keep_order() -> None:
    async with postgres_database() as url:
        report = await run(10_000, rate=400, seed=5, fault_every=4.0, replicas=3, postgres_url=url)
    print("\n" + report.table())
    assert report.problems == []
    assert report.notifications == 10_000
    assert report.lost == 0
    assert report.unexpected == 0  # stored == sent, as sets of event ids
    assert report.duplicates_absorbed >= 450  # ~5% sent twice over the other channel, counted not stored
    assert report.not_delivered == 0
    assert report.order_violations == 0
