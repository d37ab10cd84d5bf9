"""The wire Structs agree with the official SDK's models, member by member and type by type.

The SDK (tencentcloud-sdk-python-mps, pinned in pyproject.toml) documents each member's type in
its docstrings (``:type Confidence: float``). On an SDK upgrade this test names every member that
was added or changed, so the Structs follow MPS rather than what receiver happens to accept.
"""

from __future__ import annotations

import re
from importlib import metadata
from pathlib import Path
from typing import Any

import msgspec
import pytest
import tencentcloud.mps.v20190612.models as sdk

from receiver import wire
from tests.sdk import sdk_type

CHECKED_AGAINST = "3.1.194"

# Our Struct -> the SDK model it reads.
MODELS: dict[type[msgspec.Struct], str] = {
    wire.ProcessEofInfo: "LiveStreamProcessErrorInfo",
    wire.ReviewResultInfo: "LiveStreamAiReviewResultInfo",
    wire.ReviewItem: "LiveStreamAiReviewResultItem",
    wire.ImagePornResult: "LiveStreamAiReviewImagePornResult",
    wire.ImageTerrorismResult: "LiveStreamAiReviewImageTerrorismResult",
    wire.ImagePoliticalResult: "LiveStreamAiReviewImagePoliticalResult",
    wire.VoicePornResult: "LiveStreamAiReviewVoicePornResult",
    wire.RecognitionResultInfo: "LiveStreamAiRecognitionResultInfo",
    wire.RecognitionItem: "LiveStreamAiRecognitionResultItem",
    wire.FaceRecognitionResult: "LiveStreamFaceRecognitionResult",
    wire.AsrWordsRecognitionResult: "LiveStreamAsrWordsRecognitionResult",
    wire.OcrWordsRecognitionResult: "LiveStreamOcrWordsRecognitionResult",
    wire.AsrFullTextRecognitionResult: "LiveStreamAsrFullTextRecognitionResult",
    wire.OcrFullTextRecognitionResult: "LiveStreamOcrFullTextRecognitionResult",
    wire.TransTextRecognitionResult: "LiveStreamTransTextRecognitionResult",
    wire.ObjectRecognitionResult: "LiveStreamObjectRecognitionResult",
    wire.TagRecognitionResult: "LiveStreamTagRecognitionResult",
    wire.AnalysisResultInfo: "LiveStreamAiAnalysisResultInfo",
    wire.AnalysisItem: "LiveStreamAiAnalysisResultItem",
    wire.SegmentRecognitionItem: "SegmentRecognitionItem",
    wire.HighlightSegmentItem: "HighlightSegmentItem",
    wire.HighlightItem: "MediaAiAnalysisHighlightItem",
    wire.DescriptionItem: "LiveAiAnalysisDescriptionItem",
    wire.ParagraphInfo: "LiveAiParagraphInfo",
    wire.QualityControlResultInfo: "LiveStreamAiQualityControlResultInfo",
    wire.QualityControlResult: "QualityControlResult",
    wire.QualityControlItem: "QualityControlItem",
    wire.DiagnoseResult: "DiagnoseResult",
    wire.RecordResultInfo: "LiveStreamRecordResultInfo",
    wire.LiveRecordFile: "LiveRecordFile",
    wire.SmartSubtitleResultInfo: "LiveStreamAiSmartSubtitleResultInfo",
    wire.SmartSubtitleResult: "LiveSmartSubtitleResult",
    wire.Notification: "ParseLiveStreamProcessNotificationResponse",
}
# Members of an API response that a notification does not carry.
NOT_IN_NOTIFICATIONS = {"RequestId"}

_SOURCE = Path(sdk.__file__).read_text(encoding="utf-8")


def sdk_members(name: str) -> dict[str, str]:
    """``{wire name: SDK type}`` from the model's ``__init__`` docstring."""
    m = re.search(rf"\nclass {name}\(AbstractModel\):(.*?)\n        \"\"\"\n", _SOURCE, re.S)
    assert m, f"the SDK has no model {name}"
    return {
        k: v for k, v in re.findall(r":type (\w+): ([^\n]+)", m.group(1)) if k not in NOT_IN_NOTIFICATIONS
    }


def ours(t: msgspec.inspect.Type) -> str:
    """Our member's type in the SDK's words."""
    if isinstance(t, msgspec.inspect.UnionType):
        [t] = [x for x in t.types if not isinstance(x, msgspec.inspect.NoneType)]
    if isinstance(t, msgspec.inspect.IntType):
        return "int"
    if isinstance(t, msgspec.inspect.FloatType):
        return "float"
    if isinstance(t, msgspec.inspect.StrType):
        return "str"
    if isinstance(t, msgspec.inspect.BoolType):
        return "bool"
    if isinstance(t, msgspec.inspect.ListType):
        return f"list of {ours(t.item_type)}"
    if isinstance(t, msgspec.inspect.StructType):
        return MODELS[t.cls]
    raise AssertionError(f"no SDK spelling for {t}")


def test_the_sdk_is_the_version_the_structs_were_checked_against() -> None:
    assert metadata.version("tencentcloud-sdk-python-mps") == CHECKED_AGAINST


@pytest.mark.parametrize("struct", list(MODELS), ids=lambda s: s.__name__)
def test_every_member_has_the_sdk_name_and_type(struct: type[msgspec.Struct]) -> None:
    info = msgspec.inspect.type_info(struct)
    assert isinstance(info, msgspec.inspect.StructType)
    mine: dict[str, Any] = {f.encode_name: ours(f.type) for f in info.fields}
    theirs = {k: sdk_type(v) for k, v in sdk_members(MODELS[struct]).items()}
    assert mine == theirs
