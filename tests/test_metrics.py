"""The /metrics scrape as Prometheus reads it: every family once, store gauges from the first scrape."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from prometheus_client import values
from prometheus_client.parser import text_string_to_metric_families

from receiver.app import create_app
from receiver.errors import ConfigError
from receiver.metrics import Metrics
from receiver.settings import Settings
from tests.amqp_broker import AMQP_URL, Broker
from tests.apps import ClientFactory
from tests.payloads import FROZEN_NOW, NOTIFY_KEY, REVIEW, body, signed

STORE_GAUGES = {
    "receiver_sink_backlog",
    "receiver_sink_dead",
    "receiver_sink_oldest_undelivered_seconds",
    "receiver_tasks",
    "receiver_amqp_messages",
}


def families(text: str) -> Counter[str]:
    """How many times each family's ``# HELP`` line appears; ``# TYPE`` lines must match them one for one."""
    helps: Counter[str] = Counter()
    types: Counter[str] = Counter()
    for line in text.splitlines():
        if line.startswith("# HELP "):
            helps[line.split()[2]] += 1
        elif line.startswith("# TYPE "):
            types[line.split()[2]] += 1
    assert helps == types
    list(text_string_to_metric_families(text))  # and Prometheus can read it
    return helps


async def scrape(client: TestClient[Any, Any]) -> str:
    resp = await client.get("/metrics")
    assert resp.status == 200
    return await resp.text()


def test_a_fresh_registry_already_has_every_family_once() -> None:
    helps = families(Metrics().render().decode())
    assert set(helps) >= STORE_GAUGES
    assert "receiver_notify_key_matches_total" in helps
    assert set(helps.values()) == {1}


async def test_every_family_appears_once_after_many_deliveries(
    aiohttp_client: ClientFactory, tmp_path: Path
) -> None:
    settings = Settings.model_validate(
        {
            "store": {"url": f"sqlite:///{tmp_path}/m.db"},
            "verify": {"notify_keys": [NOTIFY_KEY]},
            "sinks": [{"name": "ok", "kind": "memory"}],
            "dispatch_poll_interval": 0.02,
        }
    )
    app = create_app(settings, clock=lambda: FROZEN_NOW)
    client = await aiohttp_client(app)
    before = families(await scrape(client))
    assert set(before) >= STORE_GAUGES, "the store gauges are there before the first delivery"
    assert set(before.values()) == {1}

    sent = 40
    for n in range(sent):
        resp = await client.post("/v1/notifications", data=body(signed({**REVIEW, "SessionId": f"s{n}"})))
        assert resp.status == 200
    delivered = 'receiver_sink_deliveries_total{outcome="delivered",sink="ok"}'
    deadline = asyncio.get_running_loop().time() + 10
    settled = 'receiver_sink_backlog{sink="ok"} 0.0'  # counted before the store marks it delivered
    while f"{delivered} {float(sent)}" not in (text := await scrape(client)) or settled not in text:
        assert asyncio.get_running_loop().time() < deadline, text
        await asyncio.sleep(0.02)
    after = families(await scrape(client))
    assert set(after.values()) == {1}, {k: v for k, v in after.items() if v != 1}
    assert set(before) <= set(after)
    text = await scrape(client)
    # Ingest counted which key verified each notification.
    assert f'receiver_notify_key_matches_total{{key="static:0"}} {float(sent)}' in text


@pytest.mark.amqp
async def test_a_consume_only_process_shows_the_store_gauges(
    aiohttp_client: ClientFactory,
    tmp_path: Path,
    broker: Broker,
) -> None:
    settings = Settings.model_validate(
        {
            "store": {"url": f"sqlite:///{tmp_path}/c.db"},
            "verify": {"notify_keys": [NOTIFY_KEY]},
            "amqp": {"url": AMQP_URL, "queue": broker.queue},
        }
    )
    client = await aiohttp_client(create_app(settings, clock=lambda: FROZEN_NOW, role="consume"))
    helps = families(await scrape(client))
    assert set(helps) >= STORE_GAUGES
    assert set(helps.values()) == {1}


def test_shared_metrics_add_up_every_worker_the_dead_ones_included(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What ``serve --workers`` does in each worker, two workers told apart by their process ids."""
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))

    def worker(pid: int) -> Metrics:
        # What importing prometheus_client in a worker the parent started does, with its pid.
        monkeypatch.setattr(values, "ValueClass", values.MultiProcessValue(lambda: pid))  # type: ignore[no-untyped-call]
        return Metrics.shared(tmp_path)

    one = worker(101)  # a worker that dies: what it counted still counts
    for _ in range(3):
        one.observe_ingest("http", "stored", 0.001)
    one.publish_amqp({"acked": 5})
    del one
    two = worker(102)
    two.observe_ingest("http", "stored", 0.002)
    two.observe_ingest("amqp", "duplicate", 0.002)
    two.publish_amqp({"acked": 2, "rejected": 1})
    scraped = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(two.render().decode())
        for s in family.samples
    }
    stored = ("receiver_notifications_total", (("channel", "http"), ("outcome", "stored")))
    assert scraped[stored] == 4
    assert scraped[("receiver_ingest_seconds_count", (("channel", "http"),))] == 4
    assert scraped[("receiver_amqp_messages", (("outcome", "acked"),))] == 5 + 2
    assert scraped[("receiver_amqp_messages", (("outcome", "rejected"),))] == 1
    families(two.render().decode())  # every family once, as Prometheus reads it


def test_shared_metrics_refuse_a_process_started_without_the_directory(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="PROMETHEUS_MULTIPROC_DIR"):
        Metrics.shared(tmp_path)
