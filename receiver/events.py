"""The normalized ``Event`` and the pure steps that make one from raw bytes.

parse -> verify_sign -> normalize; ``event_id`` derives the identity MPS does not send. No I/O here.
The flattening of each result type into ``Finding``s lives in ``findings``.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import orjson
from pydantic import ValidationError

from receiver import messages, wire
from receiver.errors import InvalidNotificationError, SignatureError
from receiver.findings import Finding, findings


class Channel(StrEnum):
    HTTP = "http"
    AMQP = "amqp"


class SignPolicy(StrEnum):
    REQUIRED = "required"
    IF_PRESENT = "if-present"
    OFF = "off"


class Verdict(StrEnum):
    VALID = "valid"  # signed with one of our keys, not expired when received
    UNSIGNED = "unsigned"  # no Sign, accepted because the policy is if-present
    SKIPPED = "skipped"  # policy off: nothing was checked


@dataclass(slots=True)
class Event:
    """One notification, normalized: identity, routing keys, verdict, findings and the raw payload."""

    event_id: str
    task_id: str
    notification_type: str
    session_id: str
    session_context: str
    channel: Channel
    received_at: float  # unix seconds
    verdict: Verdict
    findings: list[Finding]
    raw: dict[str, Any]
    err_code: int | None = None  # ProcessEof only
    err_message: str | None = None

    @property
    def is_eof(self) -> bool:
        return self.notification_type == "ProcessEof"


# --- parse -----------------------------------------------------------------------------------------

_EXPECTED = {
    "missing": "a value (the member is required)",
    "string_type": "a string",
    "string_too_short": "a non-empty string",
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
    "dict_type": "an object",
}


def _describe(value: Any) -> str:
    try:
        text = orjson.dumps(value).decode() if not isinstance(value, bytes) else repr(value)
    except orjson.JSONEncodeError:
        text = type(value).__name__
    return text if len(text) <= 60 else text[:57] + "..."


def _path(loc: Sequence[str | int]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "body"


def _json(raw: bytes | str, where: str) -> Any:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidNotificationError(where, "a JSON object", got=f"invalid JSON ({exc})") from None


def parse(raw: bytes | str) -> tuple[dict[str, Any], wire.Notification]:
    """Read a notification body: JSON, out of a CMQ envelope or a ``{"Response": ...}`` wrapper, validated."""
    document = _json(raw, "body")
    inner = wire.envelope_body(document)
    if inner is not None:
        document = _json(inner, "msgBody")
    document = wire.unwrap(document)
    if not isinstance(document, dict):
        raise InvalidNotificationError("body", "a JSON object", got=_describe(document))
    try:
        notification = wire.Notification.model_validate(document)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        expected = _EXPECTED.get(first["type"], messages.expected(first))
        if first["type"] == "string_too_long":
            expected = f"a string of at most {first.get('ctx', {}).get('max_length')} characters"
        got = None if first["type"] == "missing" else _describe(first.get("input"))
        raise InvalidNotificationError(_path(first["loc"]), expected, got=got) from None
    return document, notification


# --- verify ----------------------------------------------------------------------------------------


def expected_sign(timestamp: int, key: str) -> str:
    """``md5(str(Timestamp) + NotifyKey)`` as lowercase hex: timestamp first, then the key."""
    return hashlib.md5(f"{timestamp}{key}".encode(), usedforsecurity=False).hexdigest()


def verify_sign(
    notification: wire.Notification,
    *,
    keys: Sequence[str],
    policy: SignPolicy,
    now: float,
    skew: float,
) -> Verdict:
    """Check ``Sign`` against every configured key (rotation); ``Timestamp`` is an expiry."""
    if policy is SignPolicy.OFF:
        return Verdict.SKIPPED
    sign = notification.sign
    if not sign:
        if policy is SignPolicy.REQUIRED:
            raise SignatureError("Sign is missing and signatures are required")
        return Verdict.UNSIGNED
    timestamp = notification.timestamp
    if timestamp is None:
        raise SignatureError("Sign is present but Timestamp is missing")
    given = sign.strip().lower().encode()
    # Compare against every key, without stopping early, so timing tells nothing about which matched.
    matched = False
    for key in keys:
        matched |= hmac.compare_digest(expected_sign(timestamp, key).encode(), given)
    if not matched:
        raise SignatureError("Sign does not match any configured notify key")
    if now > timestamp + skew:
        raise SignatureError(f"signature expired at Timestamp {timestamp}")
    return Verdict.VALID


# --- identity --------------------------------------------------------------------------------------

# Members that change when the same notification is re-sent or re-signed; they are not its identity.
_VOLATILE = frozenset({"Timestamp", "Sign", "RequestId"})


_CONTAINERS = (dict, list)


def _pruned(value: Any) -> Any:
    # Absent, null and [] mean the same on the wire, so they must give the same identity too.
    # (Scalars are returned in place, not recursed into: this runs on every notification.)
    if type(value) is dict:
        return {
            k: _pruned(v) if type(v) in _CONTAINERS else v
            for k, v in value.items()
            if v is not None and v != []
        }
    if type(value) is list:
        return [_pruned(v) if type(v) in _CONTAINERS else v for v in value]
    return value


def event_id(document: dict[str, Any]) -> str:
    """sha256 of the canonical JSON of the notification without its volatile members."""
    body = {k: v for k, v in document.items() if k not in _VOLATILE}
    canonical = orjson.dumps(_pruned(body), option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(canonical).hexdigest()


# --- normalize -------------------------------------------------------------------------------------


def normalize(
    document: dict[str, Any],
    notification: wire.Notification,
    *,
    channel: Channel,
    received_at: float,
    verdict: Verdict,
) -> Event:
    eof = notification.process_eof_info
    try:
        identity = event_id(document)
    except orjson.JSONEncodeError as exc:  # e.g. nested deeper than the encoder goes (~250 levels)
        raise InvalidNotificationError("body", "JSON that can be stored", got=str(exc)) from None
    return Event(
        event_id=identity,
        task_id=notification.task_id,
        notification_type=notification.notification_type,
        session_id=notification.session_id or "",
        session_context=notification.session_context or "",
        channel=channel,
        received_at=received_at,
        verdict=verdict,
        findings=findings(notification),
        raw=document,
        err_code=eof.err_code if eof is not None else None,
        err_message=eof.message if eof is not None else None,
    )
