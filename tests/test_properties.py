"""Property tests: whatever arrives, parsing and normalizing give an event or the typed error."""

from __future__ import annotations

from typing import Any

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from receiver import decoder, events
from receiver.errors import InvalidNotificationError
from receiver.events import Channel
from receiver.stores.rows import encode_findings
from tests.payloads import NOTIFICATION_FILES, example

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.floats(allow_nan=False) | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=20), children, max_size=4)
    ),
    max_leaves=30,
)
WIRE_KEYS = ["NotificationType", "TaskId", "ResultSet", "Type", "Confidence", "StartPtsTime", "AreaCoordSet",
             "ProcessEofInfo", "ErrCode", "AiReviewResultInfo", "ImagePornResultSet", "Timestamp", "Sign",
             "SessionContext", "Response", "msgBody"]  # fmt: skip


def attempt(raw: bytes) -> None:
    error: InvalidNotificationError | None
    try:  # the steps ingest takes
        data = decoder.unwrap(raw)
        head = decoder.read_head(data)
        notification = decoder.read_notification(data, head)
    except InvalidNotificationError as exc:
        error = exc
    else:
        error = None
    if error is not None:
        assert error.field
        assert error.expected
        return
    event = events.normalize(
        decoder.strip_sign(data, head=head),
        notification,
        channel=Channel.HTTP,
        received_at=0.0,
        check=events.SKIPPED,
    )
    assert len(event.event_id) == 64
    # The Sign pair is cut out of the bytes, and nothing else changes.
    kept = {k: v for k, v in orjson.loads(data).items() if k not in ("Timestamp", "Sign")}
    assert orjson.loads(event.body) == kept
    assert orjson.loads(decoder.strip_sign(data)) == kept  # the careful path agrees with the fast one
    encode_findings(event.findings)  # whatever came in, the findings can be stored (as the stores do)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=300))
def test_any_bytes_give_an_event_or_an_invalid_notification_error(raw: bytes) -> None:
    attempt(raw)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(json_values)
def test_any_json_value_gives_an_event_or_an_invalid_notification_error(value: Any) -> None:
    attempt(orjson.dumps(value))


@st.composite
def mutated_examples(draw: st.DrawFn) -> dict[str, Any]:
    """A real notification with some member, at any depth, replaced by an arbitrary JSON value."""
    doc = example(draw(st.sampled_from(NOTIFICATION_FILES)))
    node: Any = doc
    for _ in range(draw(st.integers(0, 6))):
        if isinstance(node, dict) and node:
            key = draw(st.sampled_from(sorted(node)))
            if not isinstance(node[key], dict | list) or draw(st.booleans()):
                node[key] = draw(json_values)
                return doc
            node = node[key]
        elif isinstance(node, list) and node:
            node = node[draw(st.integers(0, len(node) - 1))]
        else:
            break
    if isinstance(node, dict):
        node[draw(st.sampled_from(WIRE_KEYS))] = draw(json_values)
    return doc


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(mutated_examples())
def test_real_notifications_with_any_member_changed_never_raise_anything_else(doc: dict[str, Any]) -> None:
    attempt(orjson.dumps(doc))


def _datetime_iso(ts: float | None) -> str | None:
    from datetime import UTC, datetime

    return None if ts is None else datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")


@given(
    st.one_of(
        st.floats(min_value=0, max_value=4_102_444_800, allow_nan=False),  # to 2100
        st.integers(min_value=946_684_800, max_value=4_102_444_800).map(float),  # whole seconds
        st.integers(min_value=946_684_800_000_000, max_value=4_102_444_800_000_000).map(
            lambda us: us / 1e6 + st_half(us)
        ),
    )
)
def test_iso_writes_every_time_as_datetime_isoformat_does(ts: float) -> None:
    """The documents' cached ISO stamps (``documents.iso``) against datetime's own: the same text
    for any time, microseconds rounded half to even, none written when zero."""
    from receiver.documents import iso

    assert iso(ts) == _datetime_iso(ts)
    assert iso(ts + 0.5) == _datetime_iso(ts + 0.5)  # the cached second, and the one after it
    assert iso(ts) == _datetime_iso(ts)


def st_half(us: int) -> float:
    """Half a microsecond on some of them: the rounding ties."""
    return 5e-7 if us % 3 == 0 else 0.0


def test_iso_of_none_and_of_times_before_2000() -> None:
    from receiver.documents import iso

    assert iso(None) is None
    for ts in (0.0, 1.5, 946_684_799.9999996, 946_684_800.0, 946_684_800.0000005, 1_764_633_600.9999995):
        assert iso(ts) == _datetime_iso(ts)
