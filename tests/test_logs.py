"""Logging: every line one JSON object with the same keys, whether structlog or the standard library
(aiohttp, asyncio) wrote it, and the access log there when asked for."""

from __future__ import annotations

import asyncio
import io
import logging
import re
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
import structlog

from receiver import logs
from receiver.logs import configure_logging
from tests.servers import Server

KEYS = {"timestamp", "level", "event", "logger"}


def json_lines(text: str) -> list[dict[str, Any]]:
    """Every line, parsed: a line that is not a JSON object fails the test."""
    lines = [orjson.loads(line) for line in text.splitlines() if line.strip()]
    for line in lines:
        assert isinstance(line, dict), line
        assert line.keys() >= KEYS, line
    return lines


@pytest.fixture
def restored_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    for h in root.handlers[:]:
        root.removeHandler(h)
    for h in handlers:
        root.addHandler(h)
    root.setLevel(level)
    logging.getLogger("aiohttp.access").setLevel(logging.NOTSET)
    logs.unconfigure()
    logs.clear_bound()


def test_standard_library_records_come_out_as_the_same_json(restored_logging: None) -> None:
    raw = io.BytesIO()
    stream = io.TextIOWrapper(raw, encoding="utf-8", write_through=True)  # has .buffer: the fast path
    configure_logging("json", "info", stream)
    logs.bind(task_id="t-1")
    structlog.get_logger("receiver.test").info("ours", n=1)
    logging.getLogger("asyncio").error("Task exception was never retrieved")
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        logging.getLogger("aiohttp.server").exception("Error handling request")
    logging.getLogger("aiohttp.access").info('127.0.0.1 "GET / HTTP/1.1" 200')
    logging.getLogger("aio_pika").info("connection chatter")  # below the libraries' floor
    stream.flush()
    lines = json_lines(raw.getvalue().decode())
    assert [(line["logger"], line["level"], line["event"]) for line in lines] == [
        ("receiver.test", "info", "ours"),
        ("asyncio", "error", "Task exception was never retrieved"),
        ("aiohttp.server", "error", "Error handling request"),
        ("aiohttp.access", "info", '127.0.0.1 "GET / HTTP/1.1" 200'),
    ]
    assert all(line["task_id"] == "t-1" for line in lines)  # the bound context reaches stdlib lines
    assert "RuntimeError: boom" in lines[2]["exception"]
    for line in lines:  # one clock format for all: ISO 8601, UTC
        assert datetime.fromisoformat(line["timestamp"]).utcoffset() == timedelta(0), line


def test_a_text_stream_without_a_buffer_gets_the_same_lines(restored_logging: None) -> None:
    stream = io.StringIO()
    configure_logging("json", "warning", stream)
    structlog.get_logger("receiver.test").info("dropped: below the level")
    structlog.get_logger("receiver.test").warning("kept")
    logging.getLogger("aiohttp.access").info("dropped too: the level is warning")
    logging.getLogger("asyncio").warning("slow callback")
    lines = json_lines(stream.getvalue())
    assert [(line["logger"], line["event"]) for line in lines] == [
        ("receiver.test", "kept"),
        ("asyncio", "slow callback"),
    ]


@pytest.mark.slow
def test_the_served_app_logs_access_lines_as_json_when_asked(
    tmp_path: Path,
    servers: list[Server],
) -> None:
    env = {"RECEIVER_HTTP__ACCESS_LOG": "true", "RECEIVER_STORE__URL": f"sqlite:///{tmp_path}/l.db"}
    server = Server(tmp_path, env, [])
    servers.append(server)

    async def exercise() -> None:
        async with aiohttp.ClientSession() as http, http.get(f"{server.url}/healthz?probe=access") as r:
            assert r.status == 200

    asyncio.run(exercise())
    assert server.stop() == 0
    lines = json_lines(server.output())
    access = [line for line in lines if line["logger"] == "aiohttp.access"]
    assert len(access) == 1, lines
    assert "/healthz?probe=access" in access[0]["event"]
    assert access[0]["level"] == "info"
    assert any(line["logger"].startswith("receiver") and line["event"] == "starting" for line in lines)


def test_the_summary_line_has_the_keys_and_format_of_every_other_line(restored_logging: None) -> None:
    raw = io.BytesIO()
    stream = io.TextIOWrapper(raw, encoding="utf-8", write_through=True)  # kept: it closes raw when dropped
    configure_logging("json", "info", stream)
    logs.bind(message_id="m-1")
    log = structlog.get_logger("receiver.ingest")
    fields = {"channel": "http", "outcome": "stored", "duration_ms": 0.5, "orphan": False}
    log.info("notification", **fields)
    logs.line(log, "receiver.ingest", "info", "notification", fields)
    logs.line(log, "receiver.ingest", "debug", "notification", fields)  # below the level: dropped
    slow, fast = json_lines(raw.getvalue().decode())
    assert slow.keys() == fast.keys()
    assert list(fast) == list(slow)  # the same order of keys too
    assert {k: v for k, v in fast.items() if k != "timestamp"} == {
        k: v for k, v in slow.items() if k != "timestamp"
    }
    for stamp in (slow["timestamp"], fast["timestamp"]):
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", stamp), stamp
    gap = datetime.fromisoformat(fast["timestamp"]) - datetime.fromisoformat(slow["timestamp"])
    assert timedelta(0) <= gap < timedelta(seconds=5)


class CountingStream(io.BytesIO):
    writes = 0

    def write(self, data: Any) -> int:
        self.writes += 1
        return super().write(data)


async def test_lines_of_one_loop_pass_go_out_in_one_write_in_order(restored_logging: None) -> None:
    raw = CountingStream()
    stream = io.TextIOWrapper(raw, encoding="utf-8", write_through=True)
    configure_logging("json", "info", stream)
    log = structlog.get_logger("receiver.test")
    log.info("first")
    logs.line(log, "receiver.test", "info", "second", {})
    logging.getLogger("asyncio").warning("third")
    assert raw.getvalue() == b""  # held until the loop's pass ends
    await asyncio.sleep(0)
    assert raw.writes == 1
    assert [line["event"] for line in json_lines(raw.getvalue().decode())] == ["first", "second", "third"]
    log.info("fourth")
    logs.flush()  # shutdown and tests need not wait for the loop
    assert json_lines(raw.getvalue().decode())[-1]["event"] == "fourth"
