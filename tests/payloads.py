"""The spec's example payloads and what the tests do to them: unwrap, sign, encode, normalize."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import orjson

from receiver import decoder, events
from receiver.events import Channel, Check, Event, expected_sign

EXAMPLES = Path(__file__).parent / "data" / "examples"
NOTIFY_KEY = "mpsDemoNotifyKey2025"  # the key the spec's examples are signed with
# Before every example's Timestamp (the earliest is 1750248641): the examples are not expired here.
FROZEN_NOW = 1_750_248_000.0

EXAMPLE_FILES = sorted(p.name for p in EXAMPLES.glob("*.json"))
NOTIFICATION_FILES = [n for n in EXAMPLE_FILES if "envelope" not in n]


def example_bytes(name: str) -> bytes:
    return (EXAMPLES / name).read_bytes()


def example(name: str) -> dict[str, Any]:
    """An example as a bare notification object (unwrapped from Response / CMQ envelope)."""
    doc = orjson.loads(example_bytes(name))
    if "Response" in doc:
        doc = doc["Response"]
    if "msgBody" in doc:
        doc = orjson.loads(doc["msgBody"])
    return dict(doc)


# The examples most tests send (never changed in place: tests spread them into new documents).
REVIEW = example("03-AiReviewResult-Image.constructed.json")
RECOGNITION = example("05-AiRecognitionResult-Face-Ocr-Object-Tag.constructed.json")
QUALITY = example("07-AiQualityControlResult.constructed.json")
EOF_DOC = example("02-ProcessEof.cmq-msgBody.verbatim.json")


def signed(doc: dict[str, Any], *, key: str = NOTIFY_KEY, timestamp: int | None = None) -> dict[str, Any]:
    out = copy.deepcopy(doc)
    ts = int(timestamp if timestamp is not None else FROZEN_NOW + 600)
    out["Timestamp"] = ts
    out["Sign"] = expected_sign(ts, key)
    return out


def body(doc: dict[str, Any]) -> bytes:
    return orjson.dumps(doc)


def event_of(
    raw: bytes | dict[str, Any],
    *,
    at: float = FROZEN_NOW,
    channel: Channel = Channel.HTTP,
    check: Check = events.SKIPPED,
) -> Event:
    """The event ingest would make of these bytes (a document is encoded first), Sign check aside."""
    data = decoder.unwrap(raw if isinstance(raw, bytes) else body(raw))
    head = decoder.read_head(data)
    notification = decoder.read_notification(data, head)
    return events.normalize(
        decoder.strip_sign(data, head=head), notification, channel=channel, received_at=at, check=check
    )
