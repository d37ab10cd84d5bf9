"""OpenTelemetry traces, when they are configured: a server span per notification over HTTP, a
consumer span per AMQP message, a client span per delivery attempt (a batch's own span, linked to
the trace of each of its events), each event's trace stored with it and carried on to the sinks
(``traceparent``). The tracer provider is given (tests give one with an in-memory exporter) or
built from ``TracingSettings`` (OTLP over http/protobuf), never the process-wide one.

Off, this module is the only one that knows of tracing, and it imports nothing of OpenTelemetry:
the adapters are wired without it, and the one contextvar below stays empty.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.trace import Span

    from receiver.settings import TracingSettings

# The W3C traceparent of the delivery attempt in progress: what a sink sends on (HTTP header,
# AMQP header). Set only by ``Tracing.delivery``, so None whenever tracing is off.
TRACEPARENT: ContextVar[str | None] = ContextVar("receiver_traceparent", default=None)


def build_provider(settings: TracingSettings) -> TracerProvider:
    """A tracer provider that exports as the settings say, in batches, off the event loop."""
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter
    from opentelemetry.sdk.trace.sampling import ALWAYS_ON, ParentBased

    # Given explicitly: the SDK would otherwise read OTEL_* itself, after start-up.
    provider = TracerProvider(
        resource=Resource({"service.name": settings.service_name}), sampler=ParentBased(ALWAYS_ON)
    )
    exporter: SpanExporter
    if settings.exporter == "console":
        exporter = ConsoleSpanExporter(service_name=settings.service_name)
    else:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        headers = _headers(settings.headers.get_secret_value()) if settings.headers else None
        exporter = OTLPSpanExporter(
            endpoint=settings.endpoint or "http://localhost:4318/v1/traces", headers=headers
        )
    provider.add_span_processor(BatchSpanProcessor(exporter))
    return provider


def _headers(raw: str) -> dict[str, str]:
    """``key=value,key2=value2`` as the OTLP exporter variables give headers."""
    pairs = (item.split("=", 1) for item in raw.split(",") if "=" in item)
    return {k.strip(): v.strip() for k, v in pairs}


class Tracing:
    """The spans receiver makes, on the tracer of the provider it is given."""

    def __init__(self, provider: TracerProvider, *, owned: bool = False) -> None:
        from opentelemetry import context, trace
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        self._provider = provider
        self._owned = owned  # built from the settings: shut down (flushed) with the app
        self._tracer = provider.get_tracer("receiver")
        self._trace = trace
        self._context = context
        self._propagator = TraceContextTextMapPropagator()

    def shutdown(self) -> None:
        if self._owned:
            self._provider.shutdown()

    def traceparent(self, span: Span) -> str | None:
        carrier: dict[str, str] = {}
        self._propagator.inject(carrier, context=self._trace.set_span_in_context(span))
        return carrier.get("traceparent")

    def _parent(self, carrier: Mapping[str, Any]) -> Any:
        found = carrier.get("traceparent")
        if isinstance(found, bytes):
            found = found.decode("ascii", "replace")
        if not isinstance(found, str):
            return self._context.Context()  # a trace of its own
        return self._propagator.extract({"traceparent": found})

    @contextmanager
    def server(self, method: str, path: str, headers: Mapping[str, str]) -> Iterator[Span]:
        """A notification over HTTP: a server span, in the caller's trace if it sent one."""
        with self._tracer.start_as_current_span(
            f"{method} {path}",
            context=self._parent(headers),
            kind=self._trace.SpanKind.SERVER,
            attributes={"http.request.method": method, "url.path": path},
        ) as span:
            yield span

    @contextmanager
    def consumer(self, queue: str, message_id: str | None, headers: Mapping[str, Any]) -> Iterator[Span]:
        """A notification from the queue: a consumer span, in the publisher's trace if it sent one."""
        attributes = {
            "messaging.system": "rabbitmq",
            "messaging.operation.type": "process",
            "messaging.destination.name": queue,
        }
        if message_id:
            attributes["messaging.message.id"] = message_id
        with self._tracer.start_as_current_span(
            f"process {queue}",
            context=self._parent(headers),
            kind=self._trace.SpanKind.CONSUMER,
            attributes=attributes,
        ) as span:
            yield span

    @contextmanager
    def delivery(
        self, sink: str, traceparents: Sequence[str | None], *, batch: bool = False, **attributes: Any
    ) -> Iterator[Span]:
        """One delivery attempt: a client span in its event's trace, or, for a batch, a span of its
        own linked to each event's trace; ``TRACEPARENT`` names it meanwhile, for the sink to send."""
        links = []
        if not batch:
            parent = self._parent({"traceparent": traceparents[0]})
        else:
            parent = self._context.Context()
            for tp in traceparents:
                if tp is not None:
                    found = self._trace.get_current_span(self._parent({"traceparent": tp})).get_span_context()
                    if found.is_valid:
                        links.append(self._trace.Link(found))
        with self._tracer.start_as_current_span(
            f"deliver {sink}",
            context=parent,
            kind=self._trace.SpanKind.CLIENT,
            links=links,
            attributes={"receiver.sink": sink, **{f"receiver.{k}": v for k, v in attributes.items()}},
        ) as span:
            token = TRACEPARENT.set(self.traceparent(span))
            try:
                yield span
            finally:
                TRACEPARENT.reset(token)
