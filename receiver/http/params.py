"""What a request asks for, checked one way: limit, cursor, times, numbers, ids, and a JSON body
read into a model; anything wrong is a ``BadParameterError`` naming the field and what was expected
(the errors middleware answers it as a 400)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, TypeVar

import orjson
from aiohttp import web
from pydantic import BaseModel, ValidationError

from receiver import messages
from receiver.ports import MIN_TEXT

Model = TypeVar("Model", bound=BaseModel)


class BadParameterError(Exception):
    def __init__(self, field: str, expected: str) -> None:
        self.field = field
        self.expected = expected
        super().__init__(f"{field}: expected {expected}")


def id_or_none(raw: str) -> int | None:
    """A non-negative integer of at most 18 digits (a cursor, an id), or None (a console page
    answers 404 for that)."""
    return int(raw) if raw.isascii() and raw.isdigit() and len(raw) <= 18 else None


def digits(raw: str, name: str, expected: str) -> int:
    """As ``id_or_none``, else a 400 naming ``name`` and what was ``expected``."""
    value = id_or_none(raw)
    if value is None:
        raise BadParameterError(name, expected)
    return value


def limit_param(request: web.Request) -> int:
    raw = request.query.get("limit", "100")
    if not (raw.isascii() and raw.isdigit()) or not 1 <= int(raw) <= 1000:
        raise BadParameterError("limit", "an integer from 1 to 1000")
    return int(raw)


def cursor_param(request: web.Request) -> int:
    return digits(request.query.get("cursor", "0"), "cursor", "the 'next' value of a previous page")


def time_param(raw: str, name: str = "since") -> float:
    """Unix seconds or an ISO 8601 date-time (UTC when it names no zone)."""
    try:
        return float(raw)
    except ValueError:
        pass
    try:
        parsed = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise BadParameterError(name, "unix seconds or an ISO 8601 date-time") from None
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).timestamp()


def number_param(raw: str, name: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise BadParameterError(name, "a number") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise BadParameterError(name, "a finite number")
    return value


def text_param(raw: str, name: str = "text") -> str:
    if len(raw) < MIN_TEXT:
        raise BadParameterError(name, f"at least {MIN_TEXT} characters")
    return raw


def choice_param(raw: str, name: str, choices: tuple[str, ...]) -> str:
    if raw not in choices:
        raise BadParameterError(name, "one of " + ", ".join(choices))
    return raw


async def json_body(request: web.Request, *, empty: Any = None) -> Any:
    """The body as JSON (``empty`` if there is none and one is allowed), else a 400 on ``body``."""
    raw = await request.read()
    if not raw and empty is not None:
        return empty
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise BadParameterError("body", f"a JSON object ({exc})") from None


async def model_body(request: web.Request, model: type[Model]) -> Model:
    """The JSON body validated by ``model``; the first error becomes a 400 naming its member."""
    data = await json_body(request)
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        raise BadParameterError(field_of(first), messages.expected(first)) from None


def field_of(error: Mapping[str, Any]) -> str:
    """The member an error is about: its location, and for a check across members (a model
    validator's "Name: ..." message) the member that message names; ``body`` for the whole."""
    loc = ".".join(str(p) for p in error["loc"])
    message = str(error["msg"]).removeprefix("Value error, ")
    head, sep, _ = message.partition(": ")
    if sep and head.isidentifier():
        loc = f"{loc}.{head}" if loc else head
    return loc or "body"
