"""msgspec Structs of the MPS live-stream notification wire format (ParseLiveStreamProcessNotification).

Field names are snake_case; the wire names are PascalCase (``rename="pascal"``), with the spec's
traps spelled out where they differ. Scalars take exactly the type the SDK's models give them
(tencentcloud-sdk-python-mps 3.1.194; ``tests/test_wire_sdk.py`` checks every field against it):
a boolean is not a number, a string is not a boolean, an integer refuses a fraction. A ``float``
member takes an integer too (JSON has one number type; the doc example sends ``Confidence: 98``).
Absent, ``null`` and ``[]`` mean the same for array members (read them with ``or ()``); unknown
members are skipped here and kept in the stored document. Lists and text are capped, so that
what one notification may carry is bounded.
"""

from __future__ import annotations

from typing import Annotated, Final, TypeVar

import msgspec

PROCESS_EOF: Final = "ProcessEof"  # the last notification of every task
NOTIFICATION_TYPES: Final = (
    "AiReviewResult",
    "AiRecognitionResult",
    "AiAnalysisResult",
    "AiQualityControlResult",
    "LiveRecordResult",
    "AiSmartSubtitleResult",
    PROCESS_EOF,
)

# What one notification may carry. Real ones hold a handful of results and a few KiB of text.
MAX_ITEMS: Final = 1000  # per array member
MAX_TEXT: Final = 16_384  # characters per string member
MAX_TASK_ID: Final = 256  # characters; it becomes a header and a routing key downstream
MAX_TYPE: Final = 64

T = TypeVar("T")

# An array member: absent, null and [] all mean "nothing here".
Many = Annotated[list[T], msgspec.Meta(max_length=MAX_ITEMS)] | None
Text = Annotated[str, msgspec.Meta(max_length=MAX_TEXT)] | None
Int64 = Annotated[int, msgspec.Meta(ge=-(2**63), le=2**63 - 1)]
UInt64 = Annotated[int, msgspec.Meta(ge=0)]  # msgspec reads up to 2**64 - 1, no further
Coords = Many[Int64]
# Visible ASCII, so they are safe as a header value or a routing key; stray spaces are trimmed later.
TaskId = Annotated[str, msgspec.Meta(pattern=rf"^ *[\x21-\x7e]{{1,{MAX_TASK_ID}}} *$")]
TypeName = Annotated[str, msgspec.Meta(pattern=rf"^ *[\x21-\x7e]{{1,{MAX_TYPE}}} *$")]


class WireStruct(msgspec.Struct, rename="pascal", omit_defaults=True):
    """Base of every wire model: PascalCase wire names, everything optional."""


class TimedResult(WireStruct):
    """Common shape of results positioned by stream PTS (``StartPtsTime``/``EndPtsTime``, seconds)."""

    start_pts_time: float | None = None
    end_pts_time: float | None = None
    confidence: float | None = None


# --- review (1.4) -------------------------------------------------------------------------------


class ReviewResult(TimedResult):
    suggestion: Text = None
    label: Text = None


class ImagePornResult(ReviewResult):
    url: Text = None
    pic_url_expire_time: Text = None


class ImageTerrorismResult(ImagePornResult):
    pass


class ImagePoliticalResult(ImagePornResult):
    name: Text = None
    area_coord_set: Coords = None


class VoicePornResult(ReviewResult):
    pass


class ReviewItem(WireStruct):
    type: Text = None  # see ``review_kind``
    image_porn_result_set: Many[ImagePornResult] = None
    image_terrorism_result_set: Many[ImageTerrorismResult] = None
    image_political_result_set: Many[ImagePoliticalResult] = None
    voice_porn_result_set: Many[VoicePornResult] = None


def review_kind(value: str | None) -> str | None:
    """The review item's ``Type``, trimmed; ``PornVoice`` is read as ``VoicePorn``."""
    # Until SDK 3.0.861 the docstring spelled the audio kind ``PornVoice``; the list field never changed.
    value = trimmed(value)
    return "VoicePorn" if value == "PornVoice" else value


def trimmed(value: str | None) -> str | None:
    # Trap: the SDK docstring writes ``Highlight `` and `` Description`` with stray spaces.
    return value.strip() if value is not None else None


class ReviewResultInfo(WireStruct):
    result_set: Many[ReviewItem] = None


# --- recognition (1.5) --------------------------------------------------------------------------


class FaceRecognitionResult(TimedResult):
    id: Text = None
    name: Text = None
    type: Text = None
    area_coord_set: Coords = None


class AsrWordsRecognitionResult(TimedResult):
    word: Text = None


class OcrWordsRecognitionResult(TimedResult):
    word: Text = None
    # Trap: OCR keywords carry ``AreaCoords``, every other area is ``AreaCoordSet``.
    area_coords: Coords = None


class AsrFullTextRecognitionResult(TimedResult):
    text: Text = None
    start_time: Text = None
    end_time: Text = None
    steady_state: bool | None = None
    user_id: Text = None


class OcrFullTextRecognitionResult(TimedResult):
    text: Text = None
    area_coord_set: Coords = None


class TransTextRecognitionResult(AsrFullTextRecognitionResult):
    trans: Text = None


class ObjectRecognitionResult(WireStruct):
    name: Text = None
    # Trap: object detection says ``StartPtsOffset``/``EndPtsOffset``; they are PTS seconds all the same.
    start_pts_offset: float | None = None
    end_pts_offset: float | None = None
    confidence: float | None = None
    area_coord_set: Coords = None
    url: Text = None


class TagRecognitionResult(TimedResult):
    id: Text = None


class RecognitionItem(WireStruct):
    type: Text = None
    face_recognition_result_set: Many[FaceRecognitionResult] = None
    asr_words_recognition_result_set: Many[AsrWordsRecognitionResult] = None
    ocr_words_recognition_result_set: Many[OcrWordsRecognitionResult] = None
    asr_full_text_recognition_result_set: Many[AsrFullTextRecognitionResult] = None
    ocr_full_text_recognition_result_set: Many[OcrFullTextRecognitionResult] = None
    trans_text_recognition_result_set: Many[TransTextRecognitionResult] = None
    object_recognition_result_set: Many[ObjectRecognitionResult] = None
    tag_recognition_result_set: Many[TagRecognitionResult] = None


class RecognitionResultInfo(WireStruct):
    result_set: Many[RecognitionItem] = None


# --- analysis (1.6) -----------------------------------------------------------------------------


class SegmentRecognitionItem(WireStruct):
    confidence: float | None = None
    start_time_offset: float | None = None
    end_time_offset: float | None = None
    segment_url: Text = None
    cov_img_url: Text = None
    title: Text = None
    summary: Text = None
    keywords: Many[Annotated[str, msgspec.Meta(max_length=MAX_TEXT)]] = None
    begin_time: Text = None
    end_time: Text = None
    audio_url: Text = None
    audio_begin_time: float | None = None
    audio_end_time: float | None = None
    person_position_url: Text = None
    person_id: Text = None


class HighlightSegmentItem(WireStruct):
    confidence: float | None = None
    start_time_offset: float | None = None
    end_time_offset: float | None = None
    segment_tags: Many[Annotated[str, msgspec.Meta(max_length=MAX_TEXT)]] = None
    begin_time: Text = None
    end_time: Text = None
    title: Text = None
    summary: Text = None


class HighlightItem(WireStruct):
    highlight_path: Text = None
    cov_img_path: Text = None
    confidence: float | None = None
    duration: float | None = None
    segment_set: Many[HighlightSegmentItem] = None
    highlight_url: Text = None
    cov_img_url: Text = None


class ParagraphInfo(WireStruct):
    summary: Text = None
    title: Text = None
    keywords: Many[Annotated[str, msgspec.Meta(max_length=MAX_TEXT)]] = None
    start_time_offset: float | None = None
    end_time_offset: float | None = None
    begin_time: Text = None
    end_time: Text = None


class DescriptionItem(WireStruct):
    paragraphs: Many[ParagraphInfo] = None


class AnalysisItem(WireStruct):
    type: Text = None  # read it ``trimmed``
    segment_result_set: Many[SegmentRecognitionItem] = None
    highlight_result_set: Many[HighlightItem] = None
    description_result: DescriptionItem | None = None


class AnalysisResultInfo(WireStruct):
    result_set: Many[AnalysisItem] = None


# --- quality control (1.7) ----------------------------------------------------------------------


class QualityControlItem(WireStruct):
    confidence: Int64 | None = None  # an integer 0-100 here, unlike everywhere else
    start_time_offset: float | None = None
    end_time_offset: float | None = None
    area_coord_set: Coords = None


class QualityControlResult(WireStruct):
    type: Text = None  # read it ``trimmed``
    quality_control_items: Many[QualityControlItem] = None


class DiagnoseResult(WireStruct):
    category: Text = None
    type: Text = None
    timestamp: float | None = None
    description: Text = None
    date_time: Text = None
    severity_level: Text = None


class QualityControlResultInfo(WireStruct):
    quality_control_results: Many[QualityControlResult] = None
    diagnose_results: Many[DiagnoseResult] = None
    quality_control_result_set: Many[QualityControlResult] = None
    diagnose_result_set: Many[DiagnoseResult] = None

    # Trap: two field pairs with one meaning; which one MPS fills is undocumented. The newer
    # ``*Set`` wins, the older name is the fallback, and never both (they may carry the same items).
    @property
    def quality_control(self) -> list[QualityControlResult]:
        return self.quality_control_result_set or self.quality_control_results or []

    @property
    def diagnoses(self) -> list[DiagnoseResult]:
        return self.diagnose_result_set or self.diagnose_results or []


# --- recording (1.8) and smart subtitles (1.9) ----------------------------------------------------


class LiveRecordFile(WireStruct):
    url: Text = None
    size: Int64 | None = None
    duration: Int64 | None = None  # an integer in the SDK; the unit is not stated
    start_time: Text = None
    end_time: Text = None


class RecordResultInfo(WireStruct):
    record_over: UInt64 | None = None
    file_results: Many[LiveRecordFile] = None


class SmartSubtitleResult(WireStruct):
    text: Text = None
    # Trap: capital ``PTS`` here, unlike ``StartPtsTime`` everywhere else.
    start_pts_time: float | None = msgspec.field(default=None, name="StartPTSTime")
    end_pts_time: float | None = msgspec.field(default=None, name="EndPTSTime")
    trans: Text = None
    start_time: Text = None
    end_time: Text = None
    steady_state: bool | None = None
    user_id: Text = None


class SmartSubtitleResultInfo(WireStruct):
    smart_subtitle_result: Many[SmartSubtitleResult] = None


# --- end of processing (1.3) and the notification itself (1.1) ------------------------------------


class ProcessEofInfo(WireStruct):
    err_code: Int64 | None = None
    message: Text = None


class Head(WireStruct):
    """The top-level members the Sign check and the routing need: read before anything else.

    MPS takes at most 50 and 1000 characters for ``SessionId`` and ``SessionContext``; a
    notification cannot carry more.
    """

    notification_type: TypeName
    task_id: TaskId
    session_id: Annotated[str, msgspec.Meta(max_length=50)] | None = None
    session_context: Annotated[str, msgspec.Meta(max_length=1000)] | None = None
    timestamp: Int64 | None = None
    sign: Annotated[str, msgspec.Meta(max_length=64)] | None = None


class Notification(Head):
    """One live-stream processing notification; an unknown ``NotificationType`` is kept as it is."""

    process_eof_info: ProcessEofInfo | None = None
    ai_review_result_info: ReviewResultInfo | None = None
    ai_recognition_result_info: RecognitionResultInfo | None = None
    ai_analysis_result_info: AnalysisResultInfo | None = None
    ai_quality_control_result_info: QualityControlResultInfo | None = None
    live_record_result_info: RecordResultInfo | None = None
    ai_smart_subtitle_result_info: SmartSubtitleResultInfo | None = None


# --- file-task notifications (ParseNotification) ----------------------------------------------------


class TaskRef(WireStruct):
    task_id: TaskId


class FileTaskNotification(WireStruct):
    """A file (VOD) task's notification pointed at the same URL: ``EventType``, and the TaskId inside
    the event object its schema names. Kept as a generic event of its ``EventType``."""

    event_type: TypeName
    workflow_task_event: TaskRef | None = None
    edit_media_task_event: TaskRef | None = None
    schedule_task_event: TaskRef | None = None
    batch_task_event: TaskRef | None = None
    extract_blind_watermark_task: TaskRef | None = None
    session_id: Annotated[str, msgspec.Meta(max_length=50)] | None = None
    session_context: Annotated[str, msgspec.Meta(max_length=1000)] | None = None
    timestamp: Int64 | None = None
    sign: Annotated[str, msgspec.Meta(max_length=64)] | None = None

    @property
    def task_id(self) -> str | None:
        for ref in (
            self.workflow_task_event,
            self.edit_media_task_event,
            self.schedule_task_event,
            self.batch_task_event,
            self.extract_blind_watermark_task,
        ):
            if ref is not None:
                return ref.task_id
        return None


class FileTaskHead(Head):
    """The head of a file-task notification, read into the shape of a live one."""
