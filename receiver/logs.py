"""``configure_logging``: one pipeline for structlog and the standard library (aiohttp, asyncio,
aio-pika): JSON lines off a terminal, readable on one, the same keys on every line.

JSON lines are buffered while the event loop runs and written once per pass of the loop (one
``write(2)`` for every line of the pass), in the order they were logged; off the loop they are
written at once. ``line()`` is the cheap way to log the one summary line per notification.
What every line of a context carries (channel, message id, task, worker) is bound with ``bind``
and taken back with ``unbind``.
"""

from __future__ import annotations

import asyncio
import atexit
import contextvars
import logging
import sys
import threading
import time
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, BinaryIO, Literal, TextIO

import orjson
import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

from receiver.stamps import second_text

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}
# Libraries log a lot at INFO (connection chatter); receiver's own lines say what matters. The
# access log is the exception: asked for (http.access_log), it is wanted at INFO.
_LIBRARY_FLOOR = logging.WARNING
_ACCESS_LOGGER = "aiohttp.access"


# --- the bound context: what every line logged in this context carries ----------------------------

# One context variable holding the whole context, never changed in place: binding is a copy and a
# set, reading is one get. (structlog's contextvars keep one variable per key and look through the
# whole context for them on every line: four times the cost on the path of every notification.)
_EMPTY: Mapping[str, Any] = MappingProxyType({})
_bound: contextvars.ContextVar[Mapping[str, Any]] = contextvars.ContextVar(
    "receiver_log_context", default=_EMPTY
)


def bind(**values: Any) -> contextvars.Token[Mapping[str, Any]]:
    """Add ``values`` to every line logged from here on in this context (tasks started from it
    inherit them); ``unbind`` the token to take them back."""
    return _bound.set({**_bound.get(), **values})


def unbind(token: contextvars.Token[Mapping[str, Any]]) -> None:
    """Back to the context as it was before the ``bind`` that gave ``token`` (in the same context)."""
    _bound.reset(token)


def clear_bound() -> None:
    """Nothing bound any more in this context (tests)."""
    _bound.set(_EMPTY)


def merge_bound(logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
    """The processor that adds the bound context to a line (a key the call gives wins)."""
    for key, value in _bound.get().items():
        event_dict.setdefault(key, value)
    return event_dict


def _dumps(obj: object, **kw: object) -> str:
    return orjson.dumps(obj, **kw).decode()  # type: ignore[arg-type]


class LineWriter:
    """Whole lines to a binary stream: held while the event loop runs and written together when
    the loop's current pass ends; written at once when no loop runs in this thread."""

    def __init__(self, stream: BinaryIO) -> None:
        self._stream = stream
        self._lines: list[bytes] = []
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None  # where the flush is scheduled

    def write(self, line: bytes) -> None:
        loop = self._loop
        if loop is not None and loop.is_running():
            with self._lock:  # other threads log too
                self._lines.append(line)  # the flush already scheduled takes it
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        with self._lock:
            self._lines.append(line)
            if loop is None:
                self._write_out()
                return
            self._loop = loop
        loop.call_soon(self.flush)

    def flush(self) -> None:
        with self._lock:
            self._loop = None
            self._write_out()

    def _write_out(self) -> None:
        lines, self._lines = self._lines, []
        if lines:
            try:
                self._stream.write(b"".join(lines))
                self._stream.flush()
            except ValueError:  # closed under us (the interpreter shutting down): nowhere to go
                pass


class _NamedBytesLogger:
    """The logger behind structlog: rendered lines to the ``LineWriter``, plus the name given to
    ``get_logger`` (for the ``logger`` key)."""

    __slots__ = ("_lines", "name")

    def __init__(self, lines: LineWriter, name: str) -> None:
        self._lines = lines
        self.name = name

    def msg(self, message: bytes) -> None:
        self._lines.write(message + b"\n")

    log = debug = info = warn = warning = err = error = critical = exception = fatal = failure = msg


class _LineHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Standard-library records, formatted by the shared processors, through the same writer."""

    def __init__(self, lines: LineWriter) -> None:
        super().__init__()
        self._lines = lines

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self._lines.write(self.format(record).encode() + b"\n")
        except Exception:
            self.handleError(record)


# What ``line()`` writes to: set by ``configure_logging`` for JSON lines on a binary stream.
_fast: LineWriter | None = None
_fast_level = logging.INFO


def _now_iso() -> str:
    """As structlog's ISO stamper (UTC, microseconds, ``Z``), with the seconds part cached."""
    now = time.time()
    whole = int(now)
    return f"{second_text(whole)}.{int((now - whole) * 1_000_000):06d}Z"


def line(logger: Any, name: str, level: str, event: str, fields: Mapping[str, Any]) -> None:
    """One line, as ``logger.<level>(event, **fields)`` would write it, at a fraction of the cost
    when the lines are JSON: the same keys (bound context, ``event``, ``level``, ``logger``,
    ``timestamp``), encoded once, buffered with the others."""
    writer = _fast
    if writer is None:
        getattr(logger, level)(event, **fields)
        return
    if _LEVELS[level] < _fast_level:
        return
    out = dict(fields)
    out["event"] = event
    for key, value in _bound.get().items():  # as merge_bound does
        out.setdefault(key, value)
    out["level"] = level
    out["logger"] = name
    out["timestamp"] = _now_iso()
    writer.write(orjson.dumps(out, default=repr) + b"\n")


def flush() -> None:
    """Write out the lines held for the end of the loop's pass (tests, shutdown)."""
    if _lines is not None:
        _lines.flush()


def unconfigure() -> None:
    """Back to structlog's defaults (tests): lines held are written, ``line()`` goes through structlog."""
    global _fast, _lines
    flush()
    _fast = _lines = None
    structlog.reset_defaults()


_lines: LineWriter | None = None


@atexit.register
def _flush_at_exit() -> None:
    flush()


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
        merge_bound,
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

    global _fast, _fast_level, _lines
    flush()
    _fast = _lines = None
    processors: list[Processor]
    handler: logging.Handler
    if not console and hasattr(out, "buffer"):
        # orjson writes bytes, buffered for the loop's pass: the cheapest line per notification.
        _lines = _fast = LineWriter(out.buffer)
        _fast_level = _LEVELS[level]
        fast: Processor = structlog.processors.JSONRenderer(orjson.dumps)
        processors = [*shared, structlog.processors.format_exc_info, fast]
        factory = named(_NamedBytesLogger, _lines)
        handler = _LineHandler(_lines)
    else:
        processors = [*shared, *tail]
        factory = named(_NamedPrintLogger, out)
        handler = logging.StreamHandler(out)
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[level]),
        logger_factory=factory,
        cache_logger_on_first_use=True,
    )
    # Standard-library records go through the same processors and renderer, so every line has
    # the same format and keys (timestamp, level, event, logger) and the bound context.
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
