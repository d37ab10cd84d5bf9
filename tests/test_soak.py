"""The short soak: a few thousand notifications over both channels with every kind of fault."""

from __future__ import annotations

import pytest

from tests.soak import FAULTS, run

pytestmark = [pytest.mark.slow, pytest.mark.amqp]


async def test_nothing_answered_is_lost_or_stored_twice_and_the_sink_gets_everything_in_order() -> None:
    report = await run(2000, rate=150, seed=11, fault_every=2.0)
    print("\n" + report.table())
    assert report.problems == []
    assert all(report.faults[kind] >= 1 for kind in FAULTS), report.faults
    assert report.notifications == 2000
    assert report.lost == 0
    assert report.stored_twice == 0
    assert report.not_delivered == 0
    assert report.order_violations == 0
