"""``configure_logging``: structlog as JSON lines off a terminal, readable on one."""

from __future__ import annotations

import logging
import sys
from typing import Literal, TextIO

import orjson
import structlog

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}


def _dumps(obj: object, **kw: object) -> str:
    return orjson.dumps(obj, **kw).decode()  # type: ignore[arg-type]


def configure_logging(
    fmt: Literal["auto", "json", "console"] = "auto",
    level: str = "info",
    stream: TextIO | None = None,
) -> None:
    out = stream or sys.stdout
    console = fmt == "console" or (fmt == "auto" and out.isatty())
    shared: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    processors: list[structlog.typing.Processor]
    if console:
        processors = [*shared, structlog.dev.ConsoleRenderer()]
        factory: structlog.typing.WrappedLogger = structlog.PrintLoggerFactory(out)
    elif hasattr(out, "buffer"):
        # orjson writes bytes straight to the binary stream: the cheapest line per notification.
        processors = [
            *shared,
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(orjson.dumps),
        ]
        factory = structlog.BytesLoggerFactory(out.buffer)
    else:
        processors = [
            *shared,
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(_dumps),
        ]
        factory = structlog.PrintLoggerFactory(out)
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[level]),
        logger_factory=factory,
        cache_logger_on_first_use=True,
    )
    # Libraries that use the standard library (aiohttp) go to the same stream, levels alike.
    logging.basicConfig(stream=out, level=max(_LEVELS[level], logging.WARNING), force=True)
