"""Sink adapters and ``build_sinks``: the built-in kinds, plus any a package registers under the
``receiver.sinks`` entry-point group (name = kind, value = a ``factory(name, options) -> Sink``)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from importlib.metadata import entry_points
from typing import Any

from pydantic import ValidationError

from receiver import messages
from receiver.errors import ConfigError
from receiver.ports import Sink

SinkFactory = Callable[[str, Mapping[str, Any]], Sink]


def _builtin(kind: str) -> SinkFactory | None:
    # Imported on demand: a deployment without an amqp sink never loads aio-pika for it.
    if kind == "log":
        from receiver.sinks.log import LogSink

        return LogSink.from_options
    if kind == "jsonl":
        from receiver.sinks.jsonl import JsonlSink

        return JsonlSink.from_options
    if kind == "http":
        from receiver.sinks.http import HttpSink

        return HttpSink.from_options
    if kind == "amqp":
        from receiver.sinks.amqp import AmqpSink

        return AmqpSink.from_options
    if kind == "memory":
        from receiver.sinks.memory import MemorySink

        return MemorySink.from_options
    return None


def factory_for(kind: str) -> SinkFactory:
    found = _builtin(kind)
    if found is not None:
        return found
    for ep in entry_points(group="receiver.sinks"):
        if ep.name == kind:
            loaded: SinkFactory = ep.load()
            return loaded
    raise ConfigError(
        f"sinks: unknown kind {kind!r}; expected log, jsonl, http, amqp, memory or a kind registered"
        " under the 'receiver.sinks' entry-point group"
    )


def takes_batches(sink: Sink) -> bool:
    """Whether the sink can send several events at once (see ``receiver.ports.BatchSink``)."""
    return callable(getattr(sink, "encode", None)) and callable(getattr(sink, "deliver_batch", None))


def build_sink(name: str, kind: str, options: Mapping[str, Any]) -> Sink:
    try:
        return factory_for(kind)(name, options)
    except ConfigError:
        raise
    except ValidationError as exc:  # said in the options' terms, not pydantic's (no class names)
        raise ConfigError(f"sinks.{name}: bad options for kind {kind!r}: {messages.describe(exc)}") from None
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"sinks.{name}: bad options for kind {kind!r}: {exc}") from exc
