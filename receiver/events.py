"""The normalized ``Event`` and its ``Finding``s, and the pure steps that make one from raw bytes.

parse -> verify_sign -> normalize; ``event_id`` derives the identity MPS does not send. No I/O here.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import orjson
from pydantic import ValidationError

from receiver import wire
from receiver.errors import InvalidNotificationError, SignatureError


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
class Finding:
    """One result inside a notification, flattened to the same shape whatever its type."""

    kind: str
    label: str | None = None
    suggestion: str | None = None
    confidence: float | None = None
    start: float | None = None  # seconds (stream PTS or offset, as the type defines it)
    end: float | None = None
    text: str | None = None
    translation: str | None = None
    url: str | None = None
    area: list[int] | None = None  # [x1, y1, x2, y2] in pixels
    severity: str | None = None
    attrs: dict[str, Any] = field(default_factory=dict)  # the rest the type carries


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
    text = orjson.dumps(value).decode() if not isinstance(value, bytes) else repr(value)
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
        expected = _EXPECTED.get(first["type"], first["msg"].lower())
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


def _attrs(**values: Any) -> dict[str, Any]:
    return {k: v for k, v in values.items() if v is not None and v != [] and v != ""}


def _area(coords: list[int]) -> list[int] | None:
    return coords or None


def _review(info: wire.ReviewResultInfo) -> Iterator[Finding]:
    for item in info.result_set:
        groups: list[tuple[str, Iterable[wire.ReviewResult]]] = [
            ("ImagePorn", item.image_porn_result_set),
            ("ImageTerrorism", item.image_terrorism_result_set),
            ("ImagePolitical", item.image_political_result_set),
            ("VoicePorn", item.voice_porn_result_set),
        ]
        for kind, results in groups:
            for r in results:
                yield Finding(
                    kind=kind,
                    label=r.label,
                    suggestion=r.suggestion,
                    confidence=r.confidence,
                    start=r.start_pts_time,
                    end=r.end_pts_time,
                    url=getattr(r, "url", None),
                    area=_area(getattr(r, "area_coord_set", [])),
                    attrs=_attrs(
                        name=getattr(r, "name", None),
                        url_expires_at=getattr(r, "pic_url_expire_time", None),
                    ),
                )


def _recognition(info: wire.RecognitionResultInfo) -> Iterator[Finding]:
    for item in info.result_set:
        for face in item.face_recognition_result_set:
            yield Finding(
                kind="FaceRecognition",
                label=face.name,
                confidence=face.confidence,
                start=face.start_pts_time,
                end=face.end_pts_time,
                area=_area(face.area_coord_set),
                attrs=_attrs(person_id=face.id, library=face.type),
            )
        for asr in item.asr_words_recognition_result_set:
            yield Finding(
                kind="AsrWordsRecognition",
                label=asr.word,
                text=asr.word,
                confidence=asr.confidence,
                start=asr.start_pts_time,
                end=asr.end_pts_time,
            )
        for ocr in item.ocr_words_recognition_result_set:
            yield Finding(
                kind="OcrWordsRecognition",
                label=ocr.word,
                text=ocr.word,
                confidence=ocr.confidence,
                start=ocr.start_pts_time,
                end=ocr.end_pts_time,
                area=_area(ocr.area_coords),
            )
        for full in item.asr_full_text_recognition_result_set:
            yield Finding(
                kind="AsrFullTextRecognition",
                text=full.text,
                confidence=full.confidence,
                start=full.start_pts_time,
                end=full.end_pts_time,
                attrs=_attrs(
                    steady_state=full.steady_state,
                    user_id=full.user_id,
                    begin_time=full.start_time,
                    end_time=full.end_time,
                ),
            )
        for text in item.ocr_full_text_recognition_result_set:
            yield Finding(
                kind="OcrFullTextRecognition",
                text=text.text,
                confidence=text.confidence,
                start=text.start_pts_time,
                end=text.end_pts_time,
                area=_area(text.area_coord_set),
            )
        for trans in item.trans_text_recognition_result_set:
            yield Finding(
                kind="TransTextRecognition",
                text=trans.text,
                translation=trans.trans,
                confidence=trans.confidence,
                start=trans.start_pts_time,
                end=trans.end_pts_time,
                attrs=_attrs(
                    steady_state=trans.steady_state,
                    user_id=trans.user_id,
                    begin_time=trans.start_time,
                    end_time=trans.end_time,
                ),
            )
        for obj in item.object_recognition_result_set:
            yield Finding(
                kind="ObjectRecognition",
                label=obj.name,
                confidence=obj.confidence,
                start=obj.start_pts_offset,
                end=obj.end_pts_offset,
                url=obj.url,
                area=_area(obj.area_coord_set),
            )
        for tag in item.tag_recognition_result_set:
            yield Finding(
                kind="TagRecognition",
                label=tag.id,
                confidence=tag.confidence,
                start=tag.start_pts_time,
                end=tag.end_pts_time,
            )


def _analysis(info: wire.AnalysisResultInfo) -> Iterator[Finding]:
    for item in info.result_set:
        for seg in item.segment_result_set:
            yield Finding(
                kind="SegmentRecognition",
                label=seg.title,
                text=seg.summary,
                confidence=seg.confidence,
                start=seg.start_time_offset,
                end=seg.end_time_offset,
                url=seg.segment_url,
                attrs=_attrs(
                    cover_url=seg.cov_img_url,
                    keywords=seg.keywords,
                    begin_time=seg.begin_time,
                    end_time=seg.end_time,
                    audio_url=seg.audio_url,
                    audio_begin_time=seg.audio_begin_time,
                    audio_end_time=seg.audio_end_time,
                    person_position_url=seg.person_position_url,
                    person_id=seg.person_id,
                ),
            )
        for hl in item.highlight_result_set:
            starts = [s.start_time_offset for s in hl.segment_set if s.start_time_offset is not None]
            ends = [s.end_time_offset for s in hl.segment_set if s.end_time_offset is not None]
            yield Finding(
                kind="Highlight",
                confidence=hl.confidence,
                start=min(starts) if starts else None,
                end=max(ends) if ends else None,
                url=hl.highlight_url or hl.highlight_path,
                attrs=_attrs(
                    cover_url=hl.cov_img_url or hl.cov_img_path,
                    duration=hl.duration,
                    segments=[s.model_dump(exclude_none=True) for s in hl.segment_set],
                ),
            )
        if item.description_result is not None:
            for para in item.description_result.paragraphs:
                yield Finding(
                    kind="Description",
                    label=para.title,
                    text=para.summary,
                    start=para.start_time_offset,
                    end=para.end_time_offset,
                    attrs=_attrs(keywords=para.keywords, begin_time=para.begin_time, end_time=para.end_time),
                )


def _quality(info: wire.QualityControlResultInfo) -> Iterator[Finding]:
    for result in info.quality_control:
        for qc in result.quality_control_items:
            yield Finding(
                kind="QualityControl",
                label=result.type,
                confidence=qc.confidence,
                start=qc.start_time_offset,
                end=qc.end_time_offset,
                area=_area(qc.area_coord_set),
            )
    for diag in info.diagnoses:
        yield Finding(
            kind="Diagnose",
            label=diag.type,
            severity=diag.severity_level,
            text=diag.description,
            start=diag.timestamp,
            attrs=_attrs(category=diag.category, detected_at=diag.date_time),
        )


def _record(info: wire.RecordResultInfo) -> Iterator[Finding]:
    for f in info.file_results:
        yield Finding(
            kind="RecordFile",
            url=f.url,
            attrs=_attrs(
                record_over=info.record_over,
                size=f.size,
                duration=f.duration,
                begin_time=f.start_time,
                end_time=f.end_time,
            ),
        )


def _subtitles(info: wire.SmartSubtitleResultInfo) -> Iterator[Finding]:
    for sub in info.smart_subtitle_result:
        yield Finding(
            kind="SmartSubtitle",
            text=sub.text,
            translation=sub.trans,
            start=sub.start_pts_time,
            end=sub.end_pts_time,
            attrs=_attrs(
                steady_state=sub.steady_state,
                user_id=sub.user_id,
                begin_time=sub.start_time,
                end_time=sub.end_time,
            ),
        )


def findings(n: wire.Notification) -> list[Finding]:
    """Every result the notification carries, whatever member it came in (not only the typed one)."""
    out: list[Finding] = []
    if n.ai_review_result_info is not None:
        out.extend(_review(n.ai_review_result_info))
    if n.ai_recognition_result_info is not None:
        out.extend(_recognition(n.ai_recognition_result_info))
    if n.ai_analysis_result_info is not None:
        out.extend(_analysis(n.ai_analysis_result_info))
    if n.ai_quality_control_result_info is not None:
        out.extend(_quality(n.ai_quality_control_result_info))
    if n.live_record_result_info is not None:
        out.extend(_record(n.live_record_result_info))
    if n.ai_smart_subtitle_result_info is not None:
        out.extend(_subtitles(n.ai_smart_subtitle_result_info))
    return out


def normalize(
    document: dict[str, Any],
    notification: wire.Notification,
    *,
    channel: Channel,
    received_at: float,
    verdict: Verdict,
) -> Event:
    eof = notification.process_eof_info
    return Event(
        event_id=event_id(document),
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
