"""Each sink against a real target: a local HTTP server, a temp file, the real RabbitMQ, the log."""

from __future__ import annotations

import asyncio
import os
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aio_pika
import orjson
import pytest
from aiohttp import web
from standardwebhooks.webhooks import Webhook
from structlog.testing import capture_logs

from receiver import sinks
from receiver.documents import event_document
from receiver.errors import ConfigError, SinkError, SinkGoneError, UndeliverableError
from receiver.ports import Batch
from receiver.sinks.amqp import AmqpSink, encoded, routing_key
from receiver.sinks.http import MAX_RESPONSE_BYTES, HttpSink, retry_after
from receiver.sinks.jsonl import JsonlSink
from tests.amqp_broker import AMQP_URL
from tests.apps import ServerFactory
from tests.builders import SECRET, delivery, record

# --- http ---------------------------------------------------------------------------------------


async def test_http_sink_posts_the_event_signed_with_standard_webhooks(aiohttp_server: ServerFactory) -> None:
    received: list[tuple[bytes, dict[str, str]]] = []

    async def hook(request: web.Request) -> web.Response:
        received.append((await request.read(), dict(request.headers)))
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/hook", hook)
    server = await aiohttp_server(app)
    sink = HttpSink.from_options("alerts", {"url": str(server.make_url("/hook")), "secret": SECRET})
    rec = record()
    try:
        await sink.deliver(*delivery(rec))
    finally:
        await sink.aclose()
    [(payload, headers)] = received
    assert headers["webhook-id"] == rec.event_id
    Webhook(SECRET).verify(payload, headers)  # raises if the signature does not hold
    assert orjson.loads(payload)["event_id"] == rec.event_id
    assert orjson.loads(payload)["findings"][0]["kind"] == "ImagePorn"


@pytest.mark.parametrize(
    ("status", "headers", "error", "wait"),
    [
        (500, {}, SinkError, None),
        (503, {"Retry-After": "120"}, SinkError, 120.0),
        (429, {"Retry-After": "7"}, SinkError, 7.0),
        (410, {}, SinkGoneError, None),
        (400, {}, SinkError, None),
    ],
)
async def test_http_sink_non_2xx_answers_fail_the_delivery_as_they_should(
    aiohttp_server: ServerFactory,
    status: int,
    headers: dict[str, str],
    error: type[Exception],
    wait: float | None,
) -> None:
    async def hook(request: web.Request) -> web.Response:
        return web.Response(status=status, headers=headers)

    app = web.Application()
    app.router.add_post("/hook", hook)
    server = await aiohttp_server(app)
    sink = HttpSink.from_options("s", {"url": str(server.make_url("/hook"))})
    try:
        with pytest.raises(error) as caught:
            await sink.deliver(*delivery(record()))
    finally:
        await sink.aclose()
    assert isinstance(caught.value, SinkError)
    assert caught.value.retry_after == wait


async def test_http_sink_times_out_and_unreachable_targets_are_retryable(
    aiohttp_server: ServerFactory,
) -> None:
    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(2)
        return web.Response()

    app = web.Application()
    app.router.add_post("/hook", slow)
    server = await aiohttp_server(app)
    sink = HttpSink.from_options("s", {"url": str(server.make_url("/hook")), "timeout": 0.2})
    refused = HttpSink.from_options("r", {"url": "http://127.0.0.1:9/hook"})
    try:
        with pytest.raises(SinkError):
            await sink.deliver(*delivery(record()))
        with pytest.raises(SinkError):
            await refused.deliver(*delivery(record()))
    finally:
        await sink.aclose()
        await refused.aclose()


async def test_http_sink_errors_do_not_carry_credentials_or_query_of_the_url() -> None:
    sink = HttpSink.from_options("s", {"url": "http://user:pa55@127.0.0.1:9/hook?token=t0ken"})
    try:
        with pytest.raises(SinkError) as caught:
            await sink.deliver(*delivery(record()))
    finally:
        await sink.aclose()
    assert "pa55" not in str(caught.value)
    assert "t0ken" not in str(caught.value)
    assert "127.0.0.1:9/hook" in str(caught.value)


@pytest.mark.parametrize("status", [301, 302, 307, 308])
async def test_http_sink_never_follows_a_redirect_and_names_where_it_pointed(
    aiohttp_server: ServerFactory, status: int
) -> None:
    internal: list[dict[str, str]] = []

    async def hook(request: web.Request) -> web.Response:
        return web.Response(status=status, headers={"Location": "/internal?token=t0ken"})

    async def inside(request: web.Request) -> web.Response:
        internal.append(dict(request.headers))
        return web.Response(status=200)

    app = web.Application()
    app.router.add_post("/hook", hook)
    app.router.add_route("*", "/internal", inside)
    server = await aiohttp_server(app)
    sink = HttpSink.from_options(
        "s", {"url": str(server.make_url("/hook")), "secret": SECRET, "headers": {"X-Api-Key": "k3y"}}
    )
    try:
        with pytest.raises(SinkError) as caught:
            await sink.deliver(*delivery(record()))
    finally:
        await sink.aclose()
    assert internal == []  # neither the event nor its secret header went anywhere else
    message = str(caught.value)
    assert f"answered {status}" in message
    assert f"127.0.0.1:{server.port}/internal" in message
    assert "t0ken" not in message
    assert not isinstance(caught.value, (SinkGoneError, UndeliverableError))


@pytest.mark.parametrize("status", [200, 500])
async def test_http_sink_reads_a_few_kib_of_an_answer_however_much_the_target_sends(
    aiohttp_server: ServerFactory, status: int
) -> None:
    sent = 0
    hung_up = asyncio.Event()

    async def endless(request: web.Request) -> web.StreamResponse:
        nonlocal sent
        resp = web.StreamResponse(status=status)
        await resp.prepare(request)
        try:
            while True:  # a body that never ends: the sink must hang up, not buffer it
                await resp.write(b"x" * 65536)
                sent += 65536
        except BaseException:
            hung_up.set()
            raise

    app = web.Application()
    app.router.add_post("/hook", endless)
    server = await aiohttp_server(app)
    sink = HttpSink.from_options("s", {"url": str(server.make_url("/hook")), "timeout": 5})
    try:
        if status == 200:
            await asyncio.wait_for(sink.deliver(*delivery(record())), timeout=3)
        else:
            with pytest.raises(SinkError, match="answered 500"):
                await asyncio.wait_for(sink.deliver(*delivery(record())), timeout=3)
        await asyncio.wait_for(hung_up.wait(), timeout=3)
    finally:
        await sink.aclose()
    assert MAX_RESPONSE_BYTES <= 4096
    assert sent < 64 * 1024 * 1024  # what the socket buffers held, not what the target could send


async def test_http_sink_calls_an_event_it_cannot_encode_undeliverable(aiohttp_server: ServerFactory) -> None:
    hits: list[bytes] = []

    async def hook(request: web.Request) -> web.Response:
        hits.append(await request.read())
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/hook", hook)
    server = await aiohttp_server(app)
    sink = HttpSink.from_options("s", {"url": str(server.make_url("/hook"))})
    d, document = delivery(record())
    nested: dict[str, Any] = {}
    for _ in range(300):  # deeper than JSON encoders go
        nested = {"n": nested}
    try:
        with pytest.raises(UndeliverableError, match="cannot encode"):
            await sink.deliver(d, {**document, "payload": nested})
        await sink.deliver(d, document)  # the next one goes as usual
    finally:
        await sink.aclose()
    assert len(hits) == 1


def test_retry_after_reads_seconds_and_http_dates() -> None:
    now = datetime(2026, 11, 25, 12, 0, 0, tzinfo=UTC)
    assert retry_after("30", now) == 30.0
    assert retry_after("Wed, 25 Nov 2026 12:01:00 GMT", now) == 60.0
    assert retry_after("soon", now) is None
    assert retry_after(None, now) is None


def test_bad_sink_options_name_the_option() -> None:
    with pytest.raises(ConfigError, match="url"):
        sinks.build_sink("x", "http", {"url": "not a url"})
    with pytest.raises(ConfigError, match="colour"):
        sinks.build_sink("x", "log", {"colour": "red"})
    with pytest.raises(ConfigError, match="unknown kind 'carrier-pigeon'"):
        sinks.build_sink("x", "carrier-pigeon", {})


# --- jsonl --------------------------------------------------------------------------------------


async def test_jsonl_sink_appends_one_line_per_event_and_rotates_by_size(tmp_path: Path) -> None:
    path = tmp_path / "out" / "events.jsonl"
    sink = JsonlSink.from_options("file", {"path": str(path), "max_bytes": 6000, "keep": 2})
    recs = [record(SessionId=f"s-{i}") for i in range(12)]
    try:
        await asyncio.gather(*(sink.deliver(*delivery(r)) for r in recs[:4]))  # concurrently
        for r in recs[4:]:
            await sink.deliver(*delivery(r))
    finally:
        await sink.aclose()
    files = [path, path.with_name("events.jsonl.1"), path.with_name("events.jsonl.2")]
    assert all(f.exists() for f in files)
    assert not path.with_name("events.jsonl.3").exists()  # keep = 2
    assert all(f.stat().st_size <= 6000 for f in files)
    newest = [orjson.loads(line) for line in path.read_bytes().splitlines()]
    assert newest[-1]["event_id"] == recs[-1].event_id
    assert all(line["notification_type"] == "AiReviewResult" for line in newest)


async def test_jsonl_sink_writes_a_batch_as_its_members_lines_in_order_with_one_fsync(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "events.jsonl"
    sink = JsonlSink.from_options("file", {"path": str(path)})
    recs = [record(SessionId=f"s-{i}") for i in range(5)]
    assert sinks.takes_batches(sink)
    fsyncs = 0
    real_fsync = os.fsync

    def counting_fsync(fd: Any) -> None:
        nonlocal fsyncs
        fsyncs += 1
        real_fsync(fd)

    documents = [event_document(r, spliced=True) for r in recs]
    bodies = [sink.encode(d)[0] for d in documents]
    monkeypatch.setattr(os, "fsync", counting_fsync)
    try:
        await sink.deliver_batch(Batch("b1", "", [delivery(r)[0] for r in recs], bodies))
    finally:
        await sink.aclose()
    lines = [orjson.loads(line) for line in path.read_bytes().splitlines()]
    assert [line["event_id"] for line in lines] == [r.event_id for r in recs]
    assert lines == [orjson.loads(orjson.dumps(event_document(r))) for r in recs]  # as one by one
    assert fsyncs == 1


def test_jsonl_sink_refuses_to_encode_what_json_cannot_hold() -> None:
    sink = JsonlSink.from_options("file", {"path": "/nonexistent/never-written.jsonl"})
    with pytest.raises(UndeliverableError, match="cannot encode"):
        sink.encode({"event_id": "e", "payload": {"n": 2**70}})


# --- amqp ---------------------------------------------------------------------------------------


def test_routing_key_names_the_type_and_the_strongest_suggestion() -> None:
    assert routing_key(event_document(record())) == "mps.AiReviewResult.block"
    quality = record("07-AiQualityControlResult.constructed.json")
    assert routing_key(event_document(quality)) == "mps.AiQualityControlResult.QualityControl"
    eof = record("02-ProcessEof.cmq-msgBody.verbatim.json")
    assert routing_key(event_document(eof)) == "mps.ProcessEof.none"


@pytest.mark.amqp
async def test_amqp_sink_publishes_confirmed_persistent_messages_to_the_topic_exchange() -> None:
    exchange = f"test.events.{uuid.uuid4().hex[:8]}"
    sink = sinks.build_sink("bus", "amqp", {"url": AMQP_URL, "exchange": exchange})
    connection = await aio_pika.connect(AMQP_URL)
    try:
        channel = await connection.channel()
        await sink.deliver(*delivery(record()))  # declares the exchange
        queue = await channel.declare_queue(exclusive=True)
        await queue.bind(exchange, routing_key="mps.AiReviewResult.block")
        rec = record(SessionId="second")
        await sink.deliver(*delivery(rec))
        message = await queue.get(timeout=5)
        await message.ack()
        assert message.routing_key == "mps.AiReviewResult.block"
        assert message.message_id == rec.event_id
        assert message.delivery_mode == aio_pika.DeliveryMode.PERSISTENT
        assert orjson.loads(message.body)["session_id"] == "second"
        await channel.exchange_delete(exchange)
    finally:
        await sink.aclose()
        await connection.close()


def test_amqp_sink_refuses_what_no_broker_could_take() -> None:
    too_long_type = event_document(record(NotificationType="T" * 300))
    with pytest.raises(UndeliverableError, match="routing key is 310 bytes"):
        encoded(too_long_type)
    huge_task_id = event_document(record(TaskId="t" * 200_000))
    with pytest.raises(UndeliverableError, match="x-task-id"):
        encoded(huge_task_id)
    message, key = encoded(event_document(record()))
    assert (key, message.headers) == ("mps.AiReviewResult.block", {"x-task-id": record().task_id})


@pytest.mark.amqp
async def test_amqp_sink_survives_a_poison_event_and_keeps_publishing_on_its_connection() -> None:
    exchange = f"test.events.{uuid.uuid4().hex[:8]}"
    sink = sinks.build_sink("bus", "amqp", {"url": AMQP_URL, "exchange": exchange})
    assert isinstance(sink, AmqpSink)
    connection = await aio_pika.connect(AMQP_URL)
    try:
        channel = await connection.channel()
        await sink.deliver(*delivery(record(SessionId="first")))  # declares the exchange
        queue = await channel.declare_queue(exclusive=True)
        await queue.bind(exchange, routing_key="mps.#")
        with pytest.raises(UndeliverableError):
            await sink.deliver(*delivery(record(TaskId="t" * 200_000)))
        await sink.deliver(*delivery(record(SessionId="after")))
        message = await queue.get(timeout=5)
        await message.ack()
        assert orjson.loads(message.body)["session_id"] == "after"
        assert sink._connection is not None
        assert not sink._connection.is_closed
        await channel.exchange_delete(exchange)
    finally:
        await sink.aclose()
        await connection.close()


async def test_amqp_sink_with_no_broker_fails_the_delivery_promptly_and_retries_later() -> None:
    port = _closed_port()
    sink = sinks.build_sink("bus", "amqp", {"url": f"amqp://guest:guest@127.0.0.1:{port}/", "timeout": 2})
    try:
        for _ in range(2):  # each delivery tries again; none hangs
            with pytest.raises(SinkError, match=r"publish to receiver\.events failed") as caught:
                await asyncio.wait_for(sink.deliver(*delivery(record())), timeout=5)
            assert not isinstance(caught.value, UndeliverableError)
    finally:
        await sink.aclose()


@pytest.mark.amqp
async def test_amqp_sink_fails_while_its_broker_is_away_and_delivers_once_it_is_back() -> None:
    """The broker behind a TCP relay of our own: cutting the relay cuts only this sink's connection."""
    exchange = f"test.events.{uuid.uuid4().hex[:8]}"
    relay = _Relay()
    await relay.start()
    sink = sinks.build_sink(
        "bus",
        "amqp",
        {"url": f"amqp://guest:guest@127.0.0.1:{relay.port}/", "exchange": exchange, "timeout": 2},
    )
    try:
        await sink.deliver(*delivery(record(SessionId="before")))
        await relay.stop()
        with pytest.raises(SinkError):
            await asyncio.wait_for(sink.deliver(*delivery(record(SessionId="during"))), timeout=10)
        await relay.start()
        deadline = asyncio.get_running_loop().time() + 30
        while True:  # the robust connection comes back on its own schedule
            try:
                await sink.deliver(*delivery(record(SessionId="after")))
                break
            except SinkError:
                assert asyncio.get_running_loop().time() < deadline, (
                    "never delivered after the broker came back"
                )
                await asyncio.sleep(0.2)
    finally:
        await sink.aclose()
        await relay.stop()
        cleanup = await aio_pika.connect(AMQP_URL)
        async with cleanup:
            await (await cleanup.channel()).exchange_delete(exchange)


def _closed_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # nothing listens there once the socket is closed


class _Relay:
    """A TCP relay to the test broker on a fixed local port, which the test can cut and restore."""

    def __init__(self) -> None:
        self.port = _closed_port()
        self._server: asyncio.Server | None = None
        self._writers: list[asyncio.StreamWriter] = []

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", self.port)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for w in self._writers:
            w.close()
        self._writers.clear()

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", 5672)
        self._writers += [writer, up_writer]

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))


# --- log ----------------------------------------------------------------------------------------


async def test_log_sink_writes_one_line_per_event() -> None:
    sink = sinks.build_sink("audit", "log", {})
    rec = record()
    with capture_logs() as logs:
        await sink.deliver(*delivery(rec))
    [line] = [entry for entry in logs if entry["event"] == "event"]
    assert (line["sink"], line["event_id"], line["suggestions"]) == (
        "audit",
        rec.event_id,
        ["block", "review"],
    )
