"""Pydantic models of the MPS live-stream notification wire format (ParseLiveStreamProcessNotification).

Wire names are the aliases (PascalCase, with the spec's traps spelled out where they differ);
absent, ``null`` and ``[]`` mean the same; unknown members are kept so a payload round-trips.
"""

from __future__ import annotations

from typing import Annotated, Any, Final, TypeVar

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator
from pydantic.alias_generators import to_pascal

NOTIFICATION_TYPES: Final = (
    "AiReviewResult",
    "AiRecognitionResult",
    "AiAnalysisResult",
    "AiQualityControlResult",
    "LiveRecordResult",
    "AiSmartSubtitleResult",
    "ProcessEof",
)

T = TypeVar("T")


def _null_as_empty(value: Any) -> Any:
    return [] if value is None else value


# A list member where absent, null and [] all mean "nothing here".
Many = Annotated[list[T], BeforeValidator(_null_as_empty), Field(default_factory=list)]


def _strip(value: Any) -> Any:
    return value.strip() if isinstance(value, str) else value


class WireModel(BaseModel):
    """Base of every wire model: PascalCase aliases, unknown members kept, snake_case names accepted."""

    model_config = ConfigDict(
        alias_generator=to_pascal,
        populate_by_name=True,
        extra="allow",
    )


class TimedResult(WireModel):
    """Common shape of results positioned by stream PTS (``StartPtsTime``/``EndPtsTime``, seconds)."""

    start_pts_time: float | None = None
    end_pts_time: float | None = None
    confidence: float | None = None


# --- review (1.4) -------------------------------------------------------------------------------


class ReviewResult(TimedResult):
    suggestion: str | None = None
    label: str | None = None


class ImagePornResult(ReviewResult):
    url: str | None = None
    pic_url_expire_time: str | None = None


class ImageTerrorismResult(ImagePornResult):
    pass


class ImagePoliticalResult(ImagePornResult):
    name: str | None = None
    area_coord_set: Many[int]


class VoicePornResult(ReviewResult):
    pass


def _review_type(value: Any) -> Any:
    value = _strip(value)
    # Until SDK 3.0.861 the docstring spelled the audio kind ``PornVoice``; the list field never changed.
    return "VoicePorn" if value == "PornVoice" else value


class ReviewItem(WireModel):
    type: Annotated[str | None, BeforeValidator(_review_type)] = None
    image_porn_result_set: Many[ImagePornResult]
    image_terrorism_result_set: Many[ImageTerrorismResult]
    image_political_result_set: Many[ImagePoliticalResult]
    voice_porn_result_set: Many[VoicePornResult]


class ReviewResultInfo(WireModel):
    result_set: Many[ReviewItem]


# --- recognition (1.5) --------------------------------------------------------------------------


class FaceRecognitionResult(TimedResult):
    id: str | None = None
    name: str | None = None
    type: str | None = None
    area_coord_set: Many[int]


class AsrWordsRecognitionResult(TimedResult):
    word: str | None = None


class OcrWordsRecognitionResult(TimedResult):
    word: str | None = None
    # Trap: OCR keywords carry ``AreaCoords``, every other area is ``AreaCoordSet``.
    area_coords: Many[int]


class AsrFullTextRecognitionResult(TimedResult):
    text: str | None = None
    start_time: str | None = None
    end_time: str | None = None
    steady_state: bool | None = None
    user_id: str | None = None


class OcrFullTextRecognitionResult(TimedResult):
    text: str | None = None
    area_coord_set: Many[int]


class TransTextRecognitionResult(AsrFullTextRecognitionResult):
    trans: str | None = None


class ObjectRecognitionResult(WireModel):
    name: str | None = None
    # Trap: object detection says ``StartPtsOffset``/``EndPtsOffset``; they are PTS seconds all the same.
    start_pts_offset: float | None = None
    end_pts_offset: float | None = None
    confidence: float | None = None
    area_coord_set: Many[int]
    url: str | None = None


class TagRecognitionResult(TimedResult):
    id: str | None = None


class RecognitionItem(WireModel):
    type: Annotated[str | None, BeforeValidator(_strip)] = None
    face_recognition_result_set: Many[FaceRecognitionResult]
    asr_words_recognition_result_set: Many[AsrWordsRecognitionResult]
    ocr_words_recognition_result_set: Many[OcrWordsRecognitionResult]
    asr_full_text_recognition_result_set: Many[AsrFullTextRecognitionResult]
    ocr_full_text_recognition_result_set: Many[OcrFullTextRecognitionResult]
    trans_text_recognition_result_set: Many[TransTextRecognitionResult]
    object_recognition_result_set: Many[ObjectRecognitionResult]
    tag_recognition_result_set: Many[TagRecognitionResult]


class RecognitionResultInfo(WireModel):
    result_set: Many[RecognitionItem]


# --- analysis (1.6) -----------------------------------------------------------------------------


class SegmentRecognitionItem(WireModel):
    confidence: float | None = None
    start_time_offset: float | None = None
    end_time_offset: float | None = None
    segment_url: str | None = None
    cov_img_url: str | None = None
    title: str | None = None
    summary: str | None = None
    keywords: Many[str]
    begin_time: str | None = None
    end_time: str | None = None
    audio_url: str | None = None
    audio_begin_time: float | None = None
    audio_end_time: float | None = None
    person_position_url: str | None = None
    person_id: str | None = None


class HighlightSegmentItem(WireModel):
    confidence: float | None = None
    start_time_offset: float | None = None
    end_time_offset: float | None = None
    segment_tags: Many[str]
    begin_time: str | None = None
    end_time: str | None = None
    title: str | None = None
    summary: str | None = None


class HighlightItem(WireModel):
    highlight_path: str | None = None
    cov_img_path: str | None = None
    confidence: float | None = None
    duration: float | None = None
    segment_set: Many[HighlightSegmentItem]
    highlight_url: str | None = None
    cov_img_url: str | None = None


class ParagraphInfo(WireModel):
    summary: str | None = None
    title: str | None = None
    keywords: Many[str]
    start_time_offset: float | None = None
    end_time_offset: float | None = None
    begin_time: str | None = None
    end_time: str | None = None


class DescriptionItem(WireModel):
    paragraphs: Many[ParagraphInfo]


class AnalysisItem(WireModel):
    # Trap: the SDK docstring writes ``Highlight `` and `` Description`` with stray spaces.
    type: Annotated[str | None, BeforeValidator(_strip)] = None
    segment_result_set: Many[SegmentRecognitionItem]
    highlight_result_set: Many[HighlightItem]
    description_result: DescriptionItem | None = None


class AnalysisResultInfo(WireModel):
    result_set: Many[AnalysisItem]


# --- quality control (1.7) ----------------------------------------------------------------------


class QualityControlItem(WireModel):
    confidence: float | None = None
    start_time_offset: float | None = None
    end_time_offset: float | None = None
    area_coord_set: Many[int]


class QualityControlResult(WireModel):
    type: Annotated[str | None, BeforeValidator(_strip)] = None
    quality_control_items: Many[QualityControlItem]


class DiagnoseResult(WireModel):
    category: str | None = None
    type: str | None = None
    timestamp: float | None = None
    description: str | None = None
    date_time: str | None = None
    severity_level: str | None = None


class QualityControlResultInfo(WireModel):
    quality_control_results: Many[QualityControlResult]
    diagnose_results: Many[DiagnoseResult]
    quality_control_result_set: Many[QualityControlResult]
    diagnose_result_set: Many[DiagnoseResult]

    # Trap: two field pairs with one meaning; which one MPS fills is undocumented. The newer
    # ``*Set`` wins, the older name is the fallback, and never both (they may carry the same items).
    @property
    def quality_control(self) -> list[QualityControlResult]:
        return self.quality_control_result_set or self.quality_control_results

    @property
    def diagnoses(self) -> list[DiagnoseResult]:
        return self.diagnose_result_set or self.diagnose_results


# --- recording (1.8) and smart subtitles (1.9) ----------------------------------------------------


class LiveRecordFile(WireModel):
    url: str | None = None
    size: int | None = None
    duration: float | None = None
    start_time: str | None = None
    end_time: str | None = None


class RecordResultInfo(WireModel):
    record_over: int | None = None
    file_results: Many[LiveRecordFile]


class SmartSubtitleResult(WireModel):
    text: str | None = None
    # Trap: capital ``PTS`` here, unlike ``StartPtsTime`` everywhere else.
    start_pts_time: float | None = Field(default=None, alias="StartPTSTime")
    end_pts_time: float | None = Field(default=None, alias="EndPTSTime")
    trans: str | None = None
    start_time: str | None = None
    end_time: str | None = None
    steady_state: bool | None = None
    user_id: str | None = None


class SmartSubtitleResultInfo(WireModel):
    smart_subtitle_result: Many[SmartSubtitleResult]


# --- end of processing (1.3) and the notification itself (1.1) ------------------------------------


# A whole number the store can keep in an integer column (SQLite and PostgreSQL bigint).
Int64 = Annotated[int, Field(ge=-(2**63), le=2**63 - 1)]


class ProcessEofInfo(WireModel):
    err_code: Int64 | None = None
    message: str | None = None


class Notification(WireModel):
    """One live-stream processing notification; an unknown ``NotificationType`` is kept as it is."""

    notification_type: str = Field(min_length=1)
    task_id: str = Field(min_length=1)
    process_eof_info: ProcessEofInfo | None = None
    ai_review_result_info: ReviewResultInfo | None = None
    ai_recognition_result_info: RecognitionResultInfo | None = None
    ai_analysis_result_info: AnalysisResultInfo | None = None
    ai_quality_control_result_info: QualityControlResultInfo | None = None
    live_record_result_info: RecordResultInfo | None = None
    ai_smart_subtitle_result_info: SmartSubtitleResultInfo | None = None
    # MPS takes at most 50 and 1000 characters for these; a notification cannot carry more.
    session_id: str | None = Field(default=None, max_length=50)
    session_context: str | None = Field(default=None, max_length=1000)
    timestamp: Int64 | None = None
    sign: str | None = None

    @field_validator("notification_type", "task_id", mode="before")
    @classmethod
    def _trimmed(cls, value: Any) -> Any:
        return _strip(value)

    @property
    def is_known_type(self) -> bool:
        return self.notification_type in NOTIFICATION_TYPES


def envelope_body(document: Any) -> str | None:
    """The ``msgBody`` string of a CMQ envelope (ReceiveMessage, or a topic's JSON-format HTTP push).

    Key case varies between CMQ documents (``msgBody``, ``MsgBody``), so it is matched case-insensitively.
    """
    if not isinstance(document, dict) or "NotificationType" in document:
        return None
    for key, value in document.items():
        if key.lower() == "msgbody" and isinstance(value, str):
            return value
    return None


def unwrap(document: Any) -> Any:
    """Take a notification out of a ``{"Response": {...}}`` API-response wrapper, if it has one."""
    if (
        isinstance(document, dict)
        and "NotificationType" not in document
        and isinstance(document.get("Response"), dict)
    ):
        return document["Response"]
    return document
