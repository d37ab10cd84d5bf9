"""``Finding``: one result of any notification type, flattened to one shape; ``findings()`` makes them."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import msgspec

from receiver import wire


class Finding(msgspec.Struct):
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
    attrs: dict[str, Any] = msgspec.field(default_factory=dict)  # the rest the type carries


def _attrs(**values: Any) -> dict[str, Any]:
    return {k: v for k, v in values.items() if v is not None and v != [] and v != ""}


def _area(coords: list[int] | None) -> list[int] | None:
    return coords or None


def _fields(struct: wire.WireStruct) -> dict[str, Any]:
    """A struct's members by their snake_case names, the unset ones left out."""
    return {name: v for name in struct.__struct_fields__ if (v := getattr(struct, name)) is not None}


def _review(info: wire.ReviewResultInfo) -> Iterator[Finding]:
    for item in info.result_set or ():
        groups: list[tuple[str, Iterable[wire.ReviewResult]]] = [
            ("ImagePorn", item.image_porn_result_set or []),
            ("ImageTerrorism", item.image_terrorism_result_set or []),
            ("ImagePolitical", item.image_political_result_set or []),
            ("VoicePorn", item.voice_porn_result_set or []),
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
                    area=_area(getattr(r, "area_coord_set", None)),
                    attrs=_attrs(
                        name=getattr(r, "name", None),
                        url_expires_at=getattr(r, "pic_url_expire_time", None),
                    ),
                )


def _recognition(info: wire.RecognitionResultInfo) -> Iterator[Finding]:
    for item in info.result_set or ():
        for face in item.face_recognition_result_set or ():
            yield Finding(
                kind="FaceRecognition",
                label=face.name,
                confidence=face.confidence,
                start=face.start_pts_time,
                end=face.end_pts_time,
                area=_area(face.area_coord_set),
                attrs=_attrs(person_id=face.id, library=face.type),
            )
        for asr in item.asr_words_recognition_result_set or ():
            yield Finding(
                kind="AsrWordsRecognition",
                label=asr.word,
                text=asr.word,
                confidence=asr.confidence,
                start=asr.start_pts_time,
                end=asr.end_pts_time,
            )
        for ocr in item.ocr_words_recognition_result_set or ():
            yield Finding(
                kind="OcrWordsRecognition",
                label=ocr.word,
                text=ocr.word,
                confidence=ocr.confidence,
                start=ocr.start_pts_time,
                end=ocr.end_pts_time,
                area=_area(ocr.area_coords),
            )
        for full in item.asr_full_text_recognition_result_set or ():
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
        for text in item.ocr_full_text_recognition_result_set or ():
            yield Finding(
                kind="OcrFullTextRecognition",
                text=text.text,
                confidence=text.confidence,
                start=text.start_pts_time,
                end=text.end_pts_time,
                area=_area(text.area_coord_set),
            )
        for trans in item.trans_text_recognition_result_set or ():
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
        for obj in item.object_recognition_result_set or ():
            yield Finding(
                kind="ObjectRecognition",
                label=obj.name,
                confidence=obj.confidence,
                start=obj.start_pts_offset,
                end=obj.end_pts_offset,
                url=obj.url,
                area=_area(obj.area_coord_set),
            )
        for tag in item.tag_recognition_result_set or ():
            yield Finding(
                kind="TagRecognition",
                label=tag.id,
                confidence=tag.confidence,
                start=tag.start_pts_time,
                end=tag.end_pts_time,
            )


def _analysis(info: wire.AnalysisResultInfo) -> Iterator[Finding]:
    for item in info.result_set or ():
        for seg in item.segment_result_set or ():
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
        for hl in item.highlight_result_set or ():
            segments = hl.segment_set or []
            starts = [s.start_time_offset for s in segments if s.start_time_offset is not None]
            ends = [s.end_time_offset for s in segments if s.end_time_offset is not None]
            yield Finding(
                kind="Highlight",
                confidence=hl.confidence,
                start=min(starts) if starts else None,
                end=max(ends) if ends else None,
                url=hl.highlight_url or hl.highlight_path,
                attrs=_attrs(
                    cover_url=hl.cov_img_url or hl.cov_img_path,
                    duration=hl.duration,
                    segments=[_fields(s) for s in segments],
                ),
            )
        if item.description_result is not None:
            for para in item.description_result.paragraphs or ():
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
        for qc in result.quality_control_items or ():
            yield Finding(
                kind="QualityControl",
                label=wire.trimmed(result.type),
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
    for f in info.file_results or ():
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
    for sub in info.smart_subtitle_result or ():
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
