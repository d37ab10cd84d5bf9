"""Sink plugins through real package metadata, and the jsonl sink's batched fsync counted for real."""

from __future__ import annotations

import asyncio
import os
import textwrap
from pathlib import Path
from typing import Any

import orjson
import pytest

from receiver import events, sinks
from receiver.app import create_app
from receiver.errors import ConfigError
from receiver.ports import Delivery
from receiver.settings import Settings
from receiver.sinks.jsonl import JsonlSink
from tests.builders import delivery, record
from tests.payloads import body, example

PLUGIN = '''
"""A third-party sink, as a package outside receiver would ship it."""

from pathlib import Path


class PagerSink:
    def __init__(self, name, options):
        self.name = name
        self.out = Path(options["out"])
        self.team = options["team"]

    async def deliver(self, delivery, document):
        with self.out.open("a") as f:
            f.write(f"{self.team} {document['event_id']}\\n")

    async def aclose(self):
        pass


def make_pager(name, options):
    return PagerSink(name, options)
'''


def text(path: Path) -> str:
    return path.read_text() if path.exists() else ""


@pytest.fixture
def installed_plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A distribution installed the way pip leaves one: a module plus its ``.dist-info`` on sys.path."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "receiver_pager_test.py").write_text(PLUGIN)
    info = site / "receiver_pager_test-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: receiver-pager-test\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(
        textwrap.dedent(
            """\
            [receiver.sinks]
            pager = receiver_pager_test:make_pager
            """
        )
    )
    monkeypatch.syspath_prepend(str(site))  # also invalidates the import caches
    return tmp_path / "paged.txt"


async def test_a_sink_kind_registered_by_an_installed_distribution_is_found_built_and_delivers(
    installed_plugin: Path,
) -> None:
    sink: Any = sinks.build_sink("oncall", "pager", {"out": str(installed_plugin), "team": "video"})
    assert type(sink).__module__ == "receiver_pager_test"
    assert (sink.name, sink.team) == ("oncall", "video")
    rec = record()
    await sink.deliver(*delivery(rec))
    assert text(installed_plugin) == f"video {rec.event_id}\n"


async def test_a_plugin_sink_named_in_settings_receives_what_the_service_stores(
    installed_plugin: Path, tmp_path: Path, aiohttp_client: Any
) -> None:
    settings = Settings.model_validate(
        {
            "store": {"url": f"sqlite:///{tmp_path}/plugin.db"},
            "sinks": [
                {"name": "oncall", "kind": "pager", "options": {"out": str(installed_plugin), "team": "a"}}
            ],
        }
    )
    client = await aiohttp_client(create_app(settings))
    doc = example("03-AiReviewResult-Image.constructed.json")
    resp = await client.post("/v1/notifications", data=body(doc))
    assert resp.status == 200, await resp.text()
    deadline = asyncio.get_running_loop().time() + 10
    while not text(installed_plugin):
        assert asyncio.get_running_loop().time() < deadline, "the plugin sink never received the event"
        await asyncio.sleep(0.02)
    assert text(installed_plugin) == f"a {events.event_id(doc)}\n"


def test_an_unregistered_kind_is_still_refused_with_the_group_named(installed_plugin: Path) -> None:
    with pytest.raises(ConfigError, match=r"receiver\.sinks"):
        sinks.build_sink("x", "pagerr", {})


# --- jsonl: one fsync per batch, and a delivery returns only once its line is synced -----------


async def test_concurrent_jsonl_deliveries_share_fsyncs_and_each_returns_after_its_line_is_synced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "events.jsonl"
    synced: list[int] = []  # the file's size at each fsync: what is on disk after it
    real_fsync = os.fsync

    def counting_fsync(fd: int) -> None:
        real_fsync(fd)
        synced.append(os.fstat(fd).st_size)

    monkeypatch.setattr(os, "fsync", counting_fsync)
    sink = JsonlSink.from_options("file", {"path": str(path)})
    recs = [record(SessionId=f"s-{i}") for i in range(50)]
    returned_after: dict[str, int] = {}

    async def deliver(d: Delivery, doc: dict[str, Any]) -> None:
        await sink.deliver(d, doc)
        returned_after[doc["event_id"]] = synced[-1] if synced else 0

    try:
        await asyncio.gather(*(deliver(*delivery(r)) for r in recs))
    finally:
        await sink.aclose()
    lines = text(path).encode().splitlines(keepends=True)
    assert {orjson.loads(line)["event_id"] for line in lines} == {r.event_id for r in recs}
    assert 1 <= len(synced) <= 2  # the first may go alone; the other 49 share one fsync
    ends: dict[str, int] = {}
    offset = 0
    for line in lines:
        offset += len(line)
        ends[orjson.loads(line)["event_id"]] = offset
    # Each delivery returned only once an fsync covered the end of its own line.
    assert all(returned_after[eid] >= end for eid, end in ends.items())
