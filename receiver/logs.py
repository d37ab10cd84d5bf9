"""``configure_logging``: one pipeline for structlog and the standard library (aiohttp, asyncio,
aio-pika): JSON lines off a terminal, readable on one, the same keys on every line."""

from __future__ import annotations

import logging
import sys
from typing import Any, BinaryIO, Literal, TextIO

import orjson
import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}
# Libraries log a lot at INFO (connection chatter); receiver's own lines say what matters. The
# access log is the exception: asked for (http.access_log), it is wanted at INFO.
_LIBRARY_FLOOR = logging.WARNING
_ACCESS_LOGGER = "aiohttp.access"


def _dumps(obj: object, **kw: object) -> str:
    return orjson.dumps(obj, **kw).decode()  # type: ignore[arg-type]


class _NamedBytesLogger(structlog.BytesLogger):
    """structlog's fastest logger, plus the name given to ``get_logger`` (for the ``logger`` key)."""

    __slots__ = ("name",)

    def __init__(self, file: BinaryIO, name: str) -> None:
        super().__init__(file)
        self.name = name


class _NamedPrintLogger(structlog.PrintLogger):
    __slots__ = ("name",)

    def __init__(self, file: TextIO, name: str) -> None:
        super().__init__(file)
        self.name = name


def _add_logger_name(logger: WrappedLogger, method: str, event_dict: EventDict) -> EventDict:
    """``logger``: the stdlib record's name, or the name structlog's logger was asked for."""
    record = event_dict.get("_record")
    name = record.name if record is not None else getattr(logger, "name", None)
    event_dict.setdefault("logger", name or "receiver")
    return event_dict


def configure_logging(
    fmt: Literal["auto", "json", "console"] = "auto",
    level: str = "info",
    stream: TextIO | None = None,
) -> None:
    out = stream or sys.stdout
    console = fmt == "console" or (fmt == "auto" and out.isatty())
    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        _add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    render: Processor
    if console:
        render = structlog.dev.ConsoleRenderer()
        tail: list[Processor] = [render]
    else:
        render = structlog.processors.JSONRenderer(_dumps)
        tail = [structlog.processors.format_exc_info, render]

    def named(factory: type[Any], file: object) -> Any:
        return lambda *args: factory(file, str(args[0]) if args else "receiver")

    processors: list[Processor]
    if not console and hasattr(out, "buffer"):
        # orjson writes bytes straight to the binary stream: the cheapest line per notification.
        fast: Processor = structlog.processors.JSONRenderer(orjson.dumps)
        processors = [*shared, structlog.processors.format_exc_info, fast]
        factory = named(_NamedBytesLogger, out.buffer)
    else:
        processors = [*shared, *tail]
        factory = named(_NamedPrintLogger, out)
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[level]),
        logger_factory=factory,
        cache_logger_on_first_use=True,
    )
    # Standard-library records go through the same processors and renderer, so every line has
    # the same format and keys (timestamp, level, event, logger) and the bound context.
    handler = logging.StreamHandler(out)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared,
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *tail],
        )
    )
    root = logging.getLogger()
    for old in root.handlers[:]:
        root.removeHandler(old)
        old.close()
    root.addHandler(handler)
    root.setLevel(max(_LEVELS[level], _LIBRARY_FLOOR))
    logging.getLogger(_ACCESS_LOGGER).setLevel(_LEVELS[level])
