"""The normalized ``Event`` and the pure steps that make one from raw bytes.

(read the head ->) verify_sign -> (read the rest ->) normalize; ``event_id`` derives the identity MPS
does not send. Reading the bytes is ``decoder``'s. No I/O here.
The flattening of each result type into ``Finding``s lives in ``findings``.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import orjson

from receiver import decoder, wire
from receiver.errors import InvalidNotificationError, SignatureError
from receiver.findings import Finding, findings


class Channel(StrEnum):
    HTTP = "http"
    AMQP = "amqp"
    RECONCILE = "reconcile"  # receiver's own events, from what MPS answered when asked (no notification)


# The channels notifications arrive on (each with its signature policy).
NOTIFICATION_CHANNELS = (Channel.HTTP, Channel.AMQP)


class SignPolicy(StrEnum):
    REQUIRED = "required"
    IF_PRESENT = "if-present"
    OFF = "off"


class Verdict(StrEnum):
    VALID = "valid"  # signed with one of our keys, not expired when received
    UNSIGNED = "unsigned"  # no Sign, accepted because the policy is if-present
    SKIPPED = "skipped"  # policy off: nothing was checked
    OWN = "own"  # receiver's own event (a reconcile end): no notification, no Sign to check


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
    body: bytes  # what is stored: the notification as received, unwrapped, Timestamp and Sign cut out
    sign_key: str | None = None  # which key verified the Sign (``Check.key``)
    traceparent: str | None = None  # the trace it came in with, with tracing on (W3C traceparent)
    err_code: int | None = None  # ProcessEof only
    err_message: str | None = None


# --- read ----------------------------------------------------------------------------------------


def parse(raw: bytes | str) -> tuple[dict[str, Any], wire.Notification]:
    """Read a whole notification body (unwrapped, validated) at once: for tests and tools.

    Ingest reads it in two steps instead (``decoder.read_head``, the Sign, then
    ``decoder.read_notification``), so that an unsigned body is refused before it is validated.
    """
    body = decoder.unwrap(raw)
    notification = decoder.read_notification(body, decoder.read_head(body))
    return orjson.loads(body), notification


# --- verify ----------------------------------------------------------------------------------------

# The SessionContext receiver generates for the tasks it submits: "receiver:<our task id>". A
# notification carrying one is checked against that task's own key only (see ``derived_key``).
OWN_CONTEXT_PREFIX = "receiver:"


@dataclass(frozen=True, slots=True)
class NotifyKeys:
    """The keys a Sign may be made with: static ones (rotation: any verifies), and master keys from
    which each task receiver submits gets a key of its own (the first signs, any verifies)."""

    static: tuple[str, ...] = ()
    master: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.static or self.master)


def derived_key(master: str, session_context: str) -> str:
    """A task's own NotifyKey: HMAC-SHA256(master key, SessionContext), 32 hex characters.

    A captured (Timestamp, Sign) pair then forges notifications for that one task only.
    Never stored, returned or logged: it is derived again whenever it is needed.
    """
    mac = hmac.new(master.encode(), session_context.encode(), hashlib.sha256)
    return mac.hexdigest()[:32]


def expected_sign(timestamp: int, key: str) -> str:
    """``md5(str(Timestamp) + NotifyKey)`` as lowercase hex: timestamp first, then the key."""
    return hashlib.md5(f"{timestamp}{key}".encode(), usedforsecurity=False).hexdigest()


@dataclass(frozen=True, slots=True)
class Check:
    """The verdict on a notification's Sign, and which key made it: ``derived:N`` (the task's own
    key from master key N), ``static:N`` (notify key N), or None when nothing was matched."""

    verdict: Verdict
    key: str | None = None


SKIPPED = Check(Verdict.SKIPPED)
UNSIGNED = Check(Verdict.UNSIGNED)


def verify_sign(
    head: wire.Head,
    *,
    keys: NotifyKeys,
    policy: SignPolicy,
    now: float,
    skew: float,
    max_ahead: float = 600.0,
) -> Check:
    """Check ``Sign``: ``Timestamp`` is an expiry, no further ahead than MPS's validity allows.

    A notification whose SessionContext is receiver's own form is checked against its task's
    derived key only (when master keys are set); any other against every static key (rotation).
    """
    if policy is SignPolicy.OFF:
        return SKIPPED
    sign = head.sign
    if not sign:
        if policy is SignPolicy.REQUIRED:
            raise SignatureError("Sign is missing and signatures are required")
        return UNSIGNED
    timestamp = head.timestamp
    if timestamp is None:
        raise SignatureError("Sign is present but Timestamp is missing")
    context = head.session_context or ""
    if keys.master and context.startswith(OWN_CONTEXT_PREFIX):
        candidates = [(f"derived:{i}", derived_key(m, context)) for i, m in enumerate(keys.master)]
    else:
        candidates = [(f"static:{i}", k) for i, k in enumerate(keys.static)]
    given = sign.strip().lower().encode()
    # Compare against every key, without stopping early, so timing tells nothing about which matched.
    matched: str | None = None
    for label, key in candidates:
        if hmac.compare_digest(expected_sign(timestamp, key).encode(), given) and matched is None:
            matched = label
    if matched is None:
        raise SignatureError("Sign does not match any configured notify key")
    if now > timestamp + skew:
        raise SignatureError(f"signature expired at Timestamp {timestamp}")
    if timestamp > now + max_ahead + skew:
        raise SignatureError(
            f"Timestamp {timestamp} is further ahead than MPS signs ({max_ahead:g} s plus {skew:g} s of skew)"
        )
    return Check(Verdict.VALID, matched)


# --- identity --------------------------------------------------------------------------------------

# Members that change when the same notification is re-sent or re-signed; they are not its identity.
_VOLATILE = frozenset({"Timestamp", "Sign", "RequestId"})


_EMPTY_LIST = re.compile(rb"\[\s*\]")


def _pruned(value: Any) -> Any:
    """``value`` without the members that are null or ``[]`` (at any depth): absent, null and
    ``[]`` mean the same on the wire, so they must give the same identity too.

    Copy on write: a dict or list with nothing to drop is returned as it is, and only the
    containers on the way to a dropped member are rebuilt (this runs on every notification)."""
    if type(value) is dict:
        out: dict[str, Any] | None = None
        for k, v in value.items():
            t = type(v)
            if v is None or (t is list and not v):
                if out is None:
                    out = _prefix(value, k)
                continue
            if t is dict or t is list:
                kept = _pruned(v)
                if kept is not v and out is None:
                    out = _prefix(value, k)
                v = kept
            if out is not None:
                out[k] = v
        return value if out is None else out
    if type(value) is list:
        copied: list[Any] | None = None
        for i, v in enumerate(value):
            t = type(v)
            if t is dict or t is list:
                kept = _pruned(v)
                if kept is not v and copied is None:
                    copied = value[:i]
                v = kept
            if copied is not None:
                copied.append(v)
        return value if copied is None else copied
    return value


def _prefix(value: dict[str, Any], stop: str) -> dict[str, Any]:
    """The members of ``value`` before ``stop``, in order."""
    out = {}
    for k, v in value.items():
        if k == stop:
            break
        out[k] = v
    return out


def event_id(document: dict[str, Any], body: bytes | None = None) -> str:
    """sha256 of the canonical JSON of the notification without its volatile members.

    ``body``, the bytes ``document`` was read from, lets the pruning be skipped when they hold
    no ``null`` and no ``[]`` at all (then there is nothing to prune)."""
    top = {k: v for k, v in document.items() if k not in _VOLATILE}
    if body is None or b"null" in body or _EMPTY_LIST.search(body):
        top = _pruned(top)
    canonical = orjson.dumps(top, option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(canonical).hexdigest()


# --- normalize -------------------------------------------------------------------------------------


def normalize(
    body: bytes,
    notification: wire.Notification,
    *,
    channel: Channel,
    received_at: float,
    check: Check,
) -> Event:
    """The event of a notification whose Sign was checked; ``body`` is what is kept (Sign cut out)."""
    eof = notification.process_eof_info
    document = orjson.loads(body)
    try:
        identity = event_id(document, body)
    except orjson.JSONEncodeError as exc:  # not reached: the nesting was bounded on the way in
        raise InvalidNotificationError("body", "JSON that can be stored", got=str(exc)) from None
    return Event(
        event_id=identity,
        task_id=notification.task_id.strip(),
        notification_type=notification.notification_type.strip(),
        session_id=notification.session_id or "",
        session_context=notification.session_context or "",
        channel=channel,
        received_at=received_at,
        verdict=check.verdict,
        findings=findings(notification),
        raw=document,
        body=body,
        sign_key=check.key,
        err_code=eof.err_code if eof is not None else None,
        err_message=eof.message if eof is not None else None,
    )
