"""Reading a notification's bytes: unwrap, bound the nesting, read the head, decode, cut the Sign out.

The order is the point: the head (type, TaskId, SessionContext, Timestamp, Sign) is read first so
the Sign can be checked before the whole body is validated, and an unsigned flood costs little.
Errors name the member and what was expected. Pure, no I/O.
"""

from __future__ import annotations

import re
from typing import Any, Final, TypeVar

import msgspec

from receiver import wire
from receiver.errors import InvalidNotificationError

MAX_DEPTH: Final = 64  # nesting of arrays and objects; real notifications go 6 deep

_S = TypeVar("_S")


class _Outer(msgspec.Struct):
    """The top level of what arrived: a notification, a ``{"Response": ...}`` wrapper or a CMQ envelope."""

    NotificationType: Any = None
    Response: msgspec.Raw = msgspec.Raw(b"")
    msgBody: Any = None
    MsgBody: Any = None


_OUTER = msgspec.json.Decoder(_Outer)
_HEAD = msgspec.json.Decoder(wire.Head)
_FILE = msgspec.json.Decoder(wire.FileTaskNotification)
_FULL = msgspec.json.Decoder(wire.Notification)
_ANY = msgspec.json.Decoder()

_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.S)
_BRACKET = re.compile(rb'"(?:[^"\\]|\\.)*"|[\[\]{}]', re.S)


def _check_depth(raw: bytes, where: str) -> None:
    if raw.count(b"{") + raw.count(b"[") <= MAX_DEPTH:
        return  # cannot be deeper than it has brackets: the common case costs two counts
    depth = 0
    for match in _BRACKET.finditer(raw):
        token = match.group()
        if token in (b"{", b"["):
            depth += 1
            if depth > MAX_DEPTH:
                raise InvalidNotificationError(
                    where, f"JSON nested at most {MAX_DEPTH} levels deep", got="deeper nesting"
                )
        elif token in (b"}", b"]"):
            depth -= 1


def unwrap(raw: bytes | str) -> bytes:
    """The notification object's bytes, out of a CMQ envelope or a ``{"Response": ...}`` wrapper."""
    data = raw.encode() if isinstance(raw, str) else raw
    where = "body"
    for _ in range(2):  # an envelope's msgBody is itself JSON (perhaps a Response wrapper)
        _check_depth(data, where)
        try:
            outer = _OUTER.decode(data)
        except msgspec.ValidationError:
            raise InvalidNotificationError(where, "a JSON object", got=_describe_top(data)) from None
        except msgspec.DecodeError as exc:
            raise InvalidNotificationError(where, "a JSON object", got=f"invalid JSON ({exc})") from None
        if outer.NotificationType is not None:
            return data
        if outer.Response:
            response = bytes(outer.Response)
            if response[:1] == b"{":
                return response
        inner = _envelope_body(outer, data)
        if inner is None:
            return data  # the head decode names what is missing
        data, where = inner.encode(), "msgBody"
    return data


def read(raw: bytes | str) -> tuple[bytes, wire.Head]:
    """``unwrap`` and ``read_head`` at once: the notification's bytes and its head. A notification
    as it is (the common case) costs one skim of its top level; anything else goes the long way."""
    data = raw.encode() if isinstance(raw, str) else raw
    if data.count(b"{") + data.count(b"[") <= MAX_DEPTH:  # else unwrap checks the depth first
        try:
            return data, _HEAD.decode(data)  # it has a valid head at the top: not wrapped
        except (msgspec.ValidationError, msgspec.DecodeError):
            pass
    body = unwrap(data)
    return body, read_head(body)


def _envelope_body(outer: _Outer, data: bytes) -> str | None:
    # Key case varies between CMQ documents (``msgBody``, ``MsgBody``): matched case-insensitively.
    for value in (outer.msgBody, outer.MsgBody):
        if isinstance(value, str):
            return value
    if b"sgbody" not in data.lower():
        return None
    document = _ANY.decode(data)
    for key, value in document.items():
        if key.lower() == "msgbody" and isinstance(value, str):
            return value
    return None


def _describe_top(data: bytes) -> str:
    try:
        value = _ANY.decode(data)
    except msgspec.DecodeError as exc:
        return f"invalid JSON ({exc})"
    return _kind(value)


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    return {
        dict: "an object",
        list: "an array",
        str: "a string",
        int: "an integer",
        float: "a number",
        type(None): "null",
    }.get(type(value), type(value).__name__)


def read_head(body: bytes) -> wire.Head:
    """The top-level members, validated: enough to check the Sign and to route.

    A file task's notification (``EventType`` instead of ``NotificationType``) comes back as a
    ``FileTaskHead`` of its ``EventType``, with the TaskId its event object carries.
    """
    try:
        return _decode(_HEAD, body)
    except InvalidNotificationError as exc:
        if exc.field != "NotificationType" or exc.got is not None or b'"EventType"' not in body:
            raise
    event = _decode(_FILE, body)
    task_id = event.task_id
    if task_id is None:
        raise InvalidNotificationError(
            "WorkflowTaskEvent.TaskId", "the TaskId of the task event the EventType names"
        )
    return wire.FileTaskHead(
        notification_type=event.event_type,
        task_id=task_id,
        session_id=event.session_id,
        session_context=event.session_context,
        timestamp=event.timestamp,
        sign=event.sign,
    )


def read_notification(body: bytes, head: wire.Head | None = None) -> wire.Notification:
    """The whole notification, every member validated against its wire type and cap.

    A file task's notification is not a live one: it is kept whole in the stored document and read
    no further than its head (``head``, from ``read_head``).
    """
    if isinstance(head, wire.FileTaskHead):
        return wire.Notification(
            notification_type=head.notification_type,
            task_id=head.task_id,
            session_id=head.session_id,
            session_context=head.session_context,
            timestamp=head.timestamp,
            sign=head.sign,
        )
    return _decode(_FULL, body)


def _decode(decoder: msgspec.json.Decoder[_S], body: bytes) -> _S:
    try:
        return decoder.decode(body)
    except msgspec.ValidationError as exc:
        field, expected, got = explain(str(exc))
        raise InvalidNotificationError(field, expected, got=got) from None
    except msgspec.DecodeError as exc:  # not reached after unwrap(), which parsed it already
        raise InvalidNotificationError("body", "a JSON object", got=f"invalid JSON ({exc})") from None


# --- error messages ------------------------------------------------------------------------------

# msgspec reports one error as a string (pinned version; tests/test_decoder.py checks the format):
#   "Expected `int | null`, got `str` - at `$.A.B[0].C`", "Object missing required field `TaskId`",
#   "Expected `array` of length <= 1000 - at `$.X`", "Expected `str` matching regex '...' - at `$.T`"
_ERROR = re.compile(r"^(?P<what>.*?)(?: - at `\$(?P<path>[^`]*)`)?$", re.S)
_GOT = re.compile(r", got `(?P<got>[^`]+)`$")
_MISSING = re.compile(r"^Object missing required field `(?P<name>[^`]+)`$")
_TYPES = {
    "int": "an integer",
    "float": "a number",
    "str": "a string",
    "bool": "a boolean",
    "array": "an array",
    "object": "an object",
    "null": "null",
}
_PATTERNS = {
    "TaskId": f"a string of 1 to {wire.MAX_TASK_ID} visible ASCII characters",
    "NotificationType": f"a string of 1 to {wire.MAX_TYPE} visible ASCII characters",
}


def explain(message: str) -> tuple[str, str, str | None]:
    """(member path, what was expected, what came) out of a msgspec validation message."""
    m = _ERROR.match(message)
    what, path = (m.group("what"), m.group("path") or "") if m else (message, "")
    field = path.lstrip(".") or "body"
    missing = _MISSING.match(what)
    if missing:
        name = missing.group("name")
        return (f"{field}.{name}" if path else name), "a value (the member is required)", None
    got_match = _GOT.search(what)
    got = None
    if got_match:
        got = _TYPES.get(got_match.group("got"), got_match.group("got"))
        what = what[: got_match.start()]
    return field, _expected(what, field), got


def _expected(what: str, field: str) -> str:
    what = what.removeprefix("Expected ")
    if "matching regex" in what:
        return _PATTERNS.get(field.rsplit(".", 1)[-1], "a string of the expected form")
    m = re.match(r"^`(?P<types>[^`]+)`(?P<rest>.*)$", what)
    if not m:
        return what
    names = [t.strip() for t in m.group("types").split("|") if t.strip() != "null"]
    base = " or ".join(_TYPES.get(t, t) for t in names) or "null"
    rest = m.group("rest").strip()
    if rest.startswith("of length <= "):
        n = rest.removeprefix("of length <= ")
        return f"{base} of at most {n} {'characters' if names == ['str'] else 'items'}"
    if rest.startswith(("<=", ">=", "<", ">")):
        return f"{base} {rest}"
    return base


# --- the Sign out of what is kept ------------------------------------------------------------------

_SIGNING = re.compile(
    rb'"(?:Timestamp|Sign)"\s*:\s*(?:-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?|"(?:[^"\\]|\\.)*"|null)'
)


def strip_sign(body: bytes, *, max_depth: int = 1, head: wire.Head | None = None) -> bytes:
    """The notification without its top-level ``Timestamp`` and ``Sign`` members, cut out of the
    bytes: nothing else is re-encoded. A captured pair forges notifications; it is not passed on.
    ``max_depth=2`` also cuts them out of a ``{"Response": ...}`` wrapper.

    With the ``head`` read from these bytes, the members are found by their known values (a few
    ``bytes.find``): the hot path. Anything unusual (escapes, odd spacing, the same text twice)
    falls back to finding them by nesting depth."""
    if head is not None and max_depth == 1:
        fast = _strip_known(body, head)
        if fast is not None:
            return fast
    starts = [
        (m.start(), m.end())
        for m in _SIGNING.finditer(body)
        if (depth := _depth_at(body, m.start())) is not None and 1 <= depth <= max_depth
    ]
    # Last first, so the positions found still hold for the members before it.
    for start, end in reversed(starts):
        cut_from, cut_to = _member_span(body, start, end)
        body = body[:cut_from] + body[cut_to:]
    return body


class _Pair(msgspec.Struct):
    Timestamp: Any = msgspec.UNSET
    Sign: Any = msgspec.UNSET


_PAIR = msgspec.json.Decoder(_Pair)


def _strip_known(body: bytes, head: wire.Head) -> bytes | None:
    """Cut the members whose exact text the head tells, or None when that is not certain."""
    spans = []
    ts, sign = head.timestamp, head.sign
    if ts is not None:
        span = _find_once(body, b'"Timestamp":%d' % ts, b'"Timestamp": %d' % ts)
        if span is None or body[span[1] : span[1] + 1].isdigit():
            return None
        spans.append(span)
    elif b'"Timestamp":null' in body or b'"Timestamp": null' in body:
        return None  # a null member: rare, let the careful path cut it
    if sign is not None:
        value = sign.encode()
        span = _find_once(body, b'"Sign":"%s"' % value, b'"Sign": "%s"' % value)
        if span is None:
            return None
        spans.append(span)
    elif b'"Sign":null' in body or b'"Sign": null' in body:
        return None
    if len(spans) == 2 and spans[0][0] < spans[1][0]:
        spans.reverse()  # the later member first, so the earlier one's position still holds
    for start, end in spans:
        cut_from, cut_to = _member_span(body, start, end)
        body = body[:cut_from] + body[cut_to:]
    # What was cut must be the top-level pair: check it is gone (a skim of the top level, cheaper
    # than counting the names).
    left = _PAIR.decode(body)
    if left.Timestamp is not msgspec.UNSET or left.Sign is not msgspec.UNSET:
        return None
    return body


def _find_once(body: bytes, tight: bytes, spaced: bytes) -> tuple[int, int] | None:
    """Where a member's exact text stands (its first place). Inside a string the text cannot
    match (quotes are escaped there); a nested copy cut by mistake leaves the top-level member,
    which the caller's final skim sees, and then nothing of this cut is kept."""
    at = body.find(tight)
    if at >= 0:
        return at, at + len(tight)
    at = body.find(spaced)
    return None if at < 0 else (at, at + len(spaced))


def _depth_at(body: bytes, pos: int) -> int | None:
    """Nesting depth at ``pos``, or None when ``pos`` is inside a string."""
    prefix = _STRING.sub(b"", body[:pos])
    if b'"' in prefix:
        return None
    return prefix.count(b"{") + prefix.count(b"[") - prefix.count(b"}") - prefix.count(b"]")


def _member_span(body: bytes, start: int, end: int) -> tuple[int, int]:
    """The member with one of its neighbouring commas, so what is left stays valid JSON."""
    before = start
    while before > 0 and body[before - 1] in b" \t\r\n":
        before -= 1
    if before > 0 and body[before - 1 : before] == b",":
        return before - 1, end
    after = end
    while after < len(body) and body[after] in b" \t\r\n":
        after += 1
    if body[after : after + 1] == b",":
        return start, after + 1
    return start, end


_SIGNING_ANYWHERE = re.compile(rb'"(?:Timestamp|Sign)"\s*:\s*(?:-?\d+|"[^"]*")')


def scrub(raw: bytes) -> bytes:
    """What is kept of a refused body: the top-level pair cut out where it is a JSON object, and
    by byte search everywhere else (it may not be JSON at all)."""
    try:
        if isinstance(_ANY.decode(raw), dict):
            return strip_sign(raw, max_depth=2)
    except msgspec.DecodeError:
        pass
    return _SIGNING_ANYWHERE.sub(b'"":""', raw)
