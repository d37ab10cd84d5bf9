"""OpenTelemetry: on when the OTEL_* variables say so; then a server span per notification (a
consumer span per AMQP message), a client span per delivery attempt (a batch's own, linked), the
trace stored with the event and carried to the sinks. Off, OpenTelemetry is not even imported."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import aio_pika
import orjson
import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from receiver.app import create_app
from receiver.config import load_settings
from receiver.errors import ConfigError
from tests.amqp_broker import Broker
from tests.apps import ClientFactory, app_settings, consumer_settings, running_clock, sink
from tests.payloads import REVIEW, body, signed
from tests.waiting import eventually

INCOMING = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"  # a caller's trace
ROOT = Path(__file__).parent.parent


def attrs(span: ReadableSpan) -> Mapping[str, Any]:
    """A span's attributes (every span here has some)."""
    assert span.attributes is not None
    return span.attributes


def traced() -> tuple[TracerProvider, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider, exporter


def trace_id(traceparent: str) -> str:
    return traceparent.split("-")[1]


def test_tracing_is_on_when_the_otel_variables_say_so_read_once_with_the_settings() -> None:
    assert not load_settings(None, environ={}).tracing.enabled
    on = load_settings(None, environ={"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318/"}).tracing
    assert (on.enabled, on.endpoint) == (True, "http://collector:4318/v1/traces")
    exact = {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c:4318/traces", "OTEL_SERVICE_NAME": "rx"}
    assert (
        load_settings(None, environ=exact).tracing.endpoint,
        load_settings(None, environ=exact).tracing.service_name,
    ) == (
        "http://c:4318/traces",
        "rx",
    )
    assert load_settings(None, environ={"OTEL_TRACES_EXPORTER": "console"}).tracing.enabled
    off = {"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}
    assert not load_settings(None, environ=off).tracing.enabled
    with pytest.raises(ConfigError, match="OTEL_TRACES_EXPORTER: expected otlp, console or none"):
        load_settings(None, environ={"OTEL_TRACES_EXPORTER": "jaeger"})


@pytest.mark.parametrize("otel", [False, True])
def test_with_tracing_off_a_fresh_interpreter_never_imports_opentelemetry(otel: bool, tmp_path: Path) -> None:
    script = (
        "import sys\n"
        "import receiver.__main__, receiver.app, receiver.http.api, receiver.consumer, receiver.dispatch\n"
        "import receiver.sinks.http, receiver.sinks.amqp, receiver.notices, receiver.tracing\n"
        "from receiver.config import load_settings\n"
        "s = load_settings(None)\n"
        f"s = s.model_copy(update={{'store': s.store.model_copy(update={{'url': 'sqlite:///{tmp_path}/r.db'}})}})\n"
        "receiver.app.create_app(s)\n"
        "print(sorted(m for m in sys.modules if m.startswith('opentelemetry'))[:1])\n"
    )
    env = {"PATH": "/usr/bin:/bin", **({"OTEL_TRACES_EXPORTER": "console"} if otel else {})}
    run = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, cwd=ROOT, timeout=60
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == ("['opentelemetry']" if otel else "[]")


async def test_a_notification_is_one_trace_from_the_webhook_to_each_delivery_attempt(
    tmp_path: Path, aiohttp_client: ClientFactory
) -> None:
    provider, exporter = traced()
    sinks: list[dict[str, Any]] = [
        {"name": "one", "kind": "memory"},
        {"name": "batched", "kind": "memory", "max_batch": 5, "max_wait": 0.2},
    ]
    app = create_app(
        app_settings(f"sqlite:///{tmp_path}/receiver.db", sinks),
        clock=running_clock,
        tracer_provider=provider,
    )
    client = await aiohttp_client(app)
    for i in range(2):
        doc = signed({**REVIEW, "TaskId": f"traced-{i}", "SessionContext": "", "SessionId": str(i)})
        resp = await client.post("/v1/notifications", data=body(doc), headers={"traceparent": INCOMING})
        assert resp.status == 200
    await eventually(
        lambda: len(sink(client, "one").received) == 2 and len(sink(client, "batched").received) == 2
    )
    await eventually(
        lambda: len([s for s in exporter.get_finished_spans() if s.kind is SpanKind.CLIENT]) == 3
    )
    spans = exporter.get_finished_spans()
    servers = [s for s in spans if s.kind is SpanKind.SERVER]
    assert len(servers) == 2
    assert all(
        format(s.context.trace_id, "032x") == trace_id(INCOMING) for s in servers
    )  # the caller's trace
    assert all(attrs(s)["http.response.status_code"] == 200 for s in servers)
    stored = (await (await client.get("/v1/events")).json())["items"]
    assert {trace_id(e["traceparent"]) for e in stored} == {trace_id(INCOMING)}
    server_spans = {s.context.span_id for s in servers}
    clients = [s for s in spans if s.kind is SpanKind.CLIENT]
    singles = [s for s in clients if attrs(s)["receiver.sink"] == "one"]
    assert {
        s.parent.span_id for s in singles if s.parent
    } == server_spans  # each attempt in its event's trace
    [batch] = [s for s in clients if attrs(s)["receiver.sink"] == "batched"]
    assert batch.parent is None  # a trace of its own...
    assert {link.context.span_id for link in batch.links} == server_spans  # ...linked to each event's
    assert attrs(batch)["receiver.batch_size"] == 2
    # What each sink was given to send on (traceparent) names its attempt's span.
    sent = {trace_id(tp) for tp in sink(client, "one").traceparents if tp}
    assert sent == {trace_id(INCOMING)}
    [batch_sent] = sink(client, "batched").traceparents
    assert batch_sent is not None
    assert int(trace_id(batch_sent), 16) == batch.context.trace_id


@pytest.mark.amqp
async def test_a_message_from_the_queue_gets_a_consumer_span_in_the_publishers_trace(
    tmp_path: Path, aiohttp_client: ClientFactory, broker: Broker
) -> None:
    provider, exporter = traced()
    app = create_app(consumer_settings(tmp_path, broker.queue), clock=running_clock, tracer_provider=provider)
    client = await aiohttp_client(app)
    message = aio_pika.Message(body(signed(REVIEW)), headers={"traceparent": INCOMING}, message_id="m-1")
    await broker.channel.default_exchange.publish(message, routing_key=broker.queue)

    async def stored() -> list[dict[str, Any]]:
        return list((await (await client.get("/v1/events")).json())["items"])

    deadline = asyncio.get_running_loop().time() + 20
    while not await stored():
        assert asyncio.get_running_loop().time() < deadline
        await asyncio.sleep(0.02)
    [event] = await stored()
    assert trace_id(event["traceparent"]) == trace_id(INCOMING)
    await eventually(lambda: any(s.kind is SpanKind.CONSUMER for s in exporter.get_finished_spans()))
    [consumer] = [s for s in exporter.get_finished_spans() if s.kind is SpanKind.CONSUMER]
    assert format(consumer.context.trace_id, "032x") == trace_id(INCOMING)
    assert (
        attrs(consumer)["messaging.destination.name"],
        attrs(consumer)["messaging.message.id"],
    ) == (
        broker.queue,
        "m-1",
    )
    assert orjson.loads(message.body)["TaskId"] == REVIEW["TaskId"]
