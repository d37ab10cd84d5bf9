"""What a client reads when pydantic refuses its input: "expected ..." phrases, in pydantic's own case,
without the names of our model classes."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

# Types whose pydantic message names a model class ("... instance of NotifyConfig") or reads badly
# after "expected": said in the client's terms instead.
_PHRASES = {
    "missing": "a value (the member is required)",
    "string_type": "a string",
    "int_type": "an integer",
    "int_parsing": "an integer",
    "int_from_float": "an integer",
    "float_type": "a number",
    "float_parsing": "a number",
    "bool_type": "a boolean",
    "bool_parsing": "a boolean",
    "list_type": "an array",
    "model_type": "an object",
    "model_attributes_type": "an object",
    "dataclass_type": "an object",
    "is_instance_of": "an object",
    "dict_type": "an object",
    "extra_forbidden": "a known member name (this one is not)",
}


def expected(error: Mapping[str, Any]) -> str:
    """The phrase after "expected" for one of ``ValidationError.errors()``; the case is pydantic's or
    ours (``'URL'`` stays ``'URL'``: the values it lists are the ones accepted, exactly)."""
    kind = str(error.get("type", ""))
    ctx = error.get("ctx") or {}
    if kind == "string_too_long":
        return f"a string of at most {ctx.get('max_length')} characters"
    if kind == "string_too_short":
        return (
            "a non-empty string"
            if ctx.get("min_length") == 1
            else f"at least {ctx.get('min_length')} characters"
        )
    if kind in _PHRASES:
        return _PHRASES[kind]
    message = str(error.get("msg", "")).removeprefix("Value error, ")
    return message.removeprefix("Input should be ")


def describe(exc: ValidationError) -> str:
    """Every error of ``exc`` as ``where: expected ...``, joined: for start-up errors (settings, sink
    options), where pydantic's own text would name our model classes and link to its docs."""
    parts = []
    for error in exc.errors(include_url=False):
        where = ".".join(str(p) for p in error["loc"])
        what = expected(error)
        # A model-level check has no location; its message names the field itself.
        parts.append(f"{where}: expected {what}" if where else what)
    return "; ".join(parts)
