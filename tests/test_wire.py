"""Parsing the wire format: every example, every trap, nothing lost, bad input named."""

from __future__ import annotations

from typing import Any, TypeVar

import orjson
import pytest

from receiver import events, wire
from receiver.errors import InvalidNotificationError
from receiver.findings import findings
from tests.payloads import EXAMPLE_FILES, example, example_bytes

T = TypeVar("T")


def present(value: T | None) -> T:
    """A member the example has (the Structs type every member as optional)."""
    assert value is not None
    return value


@pytest.mark.parametrize("name", EXAMPLE_FILES)
def test_every_example_parses_into_its_notification_type(name: str) -> None:
    document, notification = events.parse(example_bytes(name))
    expected_type = name.split("-")[1].split(".")[0]
    if "envelope" in name:
        expected_type = "LiveRecordResult"
    assert notification.notification_type == expected_type
    assert notification.notification_type in wire.NOTIFICATION_TYPES
    assert notification.task_id
    assert document["TaskId"] == notification.task_id


def test_every_notification_type_of_the_spec_is_covered_by_an_example() -> None:
    seen = {events.parse(example_bytes(n))[1].notification_type for n in EXAMPLE_FILES}
    assert seen == set(wire.NOTIFICATION_TYPES)


def test_response_wrapper_is_unwrapped_and_its_request_id_kept_as_an_unknown_member() -> None:
    document, n = events.parse(example_bytes("01-AiReviewResult-VoicePorn.doc-verbatim.json"))
    assert "Response" not in document
    assert n.notification_type == "AiReviewResult"
    assert document["RequestId"] == "335bdaa3-db0e-46ce-9946-51941d9cb0f5"


def test_cmq_envelope_msgbody_is_read_whatever_the_key_case() -> None:
    inner = example("08-LiveRecordResult.constructed.json")
    for key in ("msgBody", "MsgBody", "msgbody"):
        _, n = events.parse(orjson.dumps({"TopicOwner": 1, key: orjson.dumps(inner).decode()}))
        assert n.notification_type == "LiveRecordResult"
        assert n.live_record_result_info is not None


def test_ocr_words_area_is_read_from_area_coords_not_area_coord_set() -> None:
    _, n = events.parse(example_bytes("05-AiRecognitionResult-Face-Ocr-Object-Tag.constructed.json"))
    assert n.ai_recognition_result_info is not None
    ocr = present(present(n.ai_recognition_result_info.result_set)[2].ocr_words_recognition_result_set)[0]
    assert ocr.area_coords == [40, 620, 380, 680]


def test_object_recognition_times_are_read_from_pts_offsets() -> None:
    _, n = events.parse(example_bytes("05-AiRecognitionResult-Face-Ocr-Object-Tag.constructed.json"))
    assert n.ai_recognition_result_info is not None
    obj = present(present(n.ai_recognition_result_info.result_set)[4].object_recognition_result_set)[0]
    assert (obj.start_pts_offset, obj.end_pts_offset) == (306.0, 311.0)


def test_smart_subtitle_times_are_read_from_capital_pts_names() -> None:
    _, n = events.parse(example_bytes("09-AiSmartSubtitleResult.constructed.json"))
    assert n.ai_smart_subtitle_result_info is not None
    sub = present(n.ai_smart_subtitle_result_info.smart_subtitle_result)[0]
    assert (sub.start_pts_time, sub.end_pts_time) == (12.32, 14.8)


def test_quality_control_prefers_the_newer_set_pair_and_falls_back_to_the_older() -> None:
    doc = example("07-AiQualityControlResult.constructed.json")
    info = doc["AiQualityControlResultInfo"]
    only_old = {
        **doc,
        "AiQualityControlResultInfo": {**info, "QualityControlResultSet": None, "DiagnoseResultSet": []},
    }
    only_new = {
        **doc,
        "AiQualityControlResultInfo": {**info, "QualityControlResults": None, "DiagnoseResults": None},
    }
    new_differs = {
        **doc,
        "AiQualityControlResultInfo": {
            **info,
            "QualityControlResultSet": [info["QualityControlResultSet"][0]],
        },
    }
    for variant, blur_and_novoice in ((only_old, 2), (only_new, 2)):
        _, n = events.parse(orjson.dumps(variant))
        assert n.ai_quality_control_result_info is not None
        assert len(n.ai_quality_control_result_info.quality_control) == blur_and_novoice
        assert len(n.ai_quality_control_result_info.diagnoses) == 2
    _, n = events.parse(orjson.dumps(new_differs))
    assert n.ai_quality_control_result_info is not None
    assert [r.type for r in n.ai_quality_control_result_info.quality_control] == ["Blur"]


@pytest.mark.parametrize("spelling", ["PornVoice", "VoicePorn", " PornVoice "])
def test_review_type_porn_voice_is_an_alias_of_voice_porn(spelling: str) -> None:
    doc = example("01-AiReviewResult-VoicePorn.doc-verbatim.json")
    doc["AiReviewResultInfo"]["ResultSet"][0]["Type"] = spelling
    _, n = events.parse(orjson.dumps(doc))
    assert n.ai_review_result_info is not None
    assert wire.review_kind(present(n.ai_review_result_info.result_set)[0].type) == "VoicePorn"


@pytest.mark.parametrize("spelling", ["Highlight ", " Description", " SegmentRecognition "])
def test_analysis_type_stray_spaces_are_stripped(spelling: str) -> None:
    doc = example("06-AiAnalysisResult-Segment-Description.constructed.json")
    doc["AiAnalysisResultInfo"]["ResultSet"][0]["Type"] = spelling
    _, n = events.parse(orjson.dumps(doc))
    assert n.ai_analysis_result_info is not None
    assert wire.trimmed(present(n.ai_analysis_result_info.result_set)[0].type) == spelling.strip()


@pytest.mark.parametrize("empty", ["absent", None, []])
def test_absent_null_and_empty_list_mean_the_same(empty: Any) -> None:
    doc = example("03-AiReviewResult-Image.constructed.json")
    item = doc["AiReviewResultInfo"]["ResultSet"][0]
    for key in ("ImageTerrorismResultSet", "ImagePoliticalResultSet", "VoicePornResultSet"):
        if empty == "absent":
            del item[key]
        else:
            item[key] = empty
    for key in ("AiRecognitionResultInfo", "LiveRecordResultInfo"):
        if empty == "absent":
            doc.pop(key, None)
        else:
            doc[key] = None
    _, n = events.parse(orjson.dumps(doc))
    assert n.ai_review_result_info is not None
    parsed = present(n.ai_review_result_info.result_set)[0]
    assert not parsed.image_terrorism_result_set
    assert not parsed.voice_porn_result_set
    assert n.ai_recognition_result_info is None
    assert len(findings(n)) == 2


def test_unknown_members_are_kept_at_every_level_in_the_stored_document() -> None:
    doc = example("05-AiRecognitionResult-Face-Ocr-Object-Tag.constructed.json")
    doc["BrandNewTopLevel"] = {"x": 1}
    doc["AiRecognitionResultInfo"]["ResultSet"][0]["FaceRecognitionResultSet"][0]["Gender"] = "f"
    document, n = events.parse(orjson.dumps(doc))
    assert n.ai_recognition_result_info is not None
    assert n.ai_recognition_result_info.result_set
    assert document == doc  # the stored payload is what was sent, unknown members and all
    assert document["AiRecognitionResultInfo"]["ResultSet"][0]["FaceRecognitionResultSet"][0]["Gender"] == "f"


def test_unknown_notification_type_is_accepted_with_its_payload() -> None:
    doc = {"NotificationType": "AiHologramResult", "TaskId": "t-1", "AiHologramResultInfo": {"Depth": 3}}
    document, n = events.parse(orjson.dumps(doc))
    assert n.notification_type == "AiHologramResult"
    assert n.notification_type not in wire.NOTIFICATION_TYPES
    assert document["AiHologramResultInfo"] == {"Depth": 3}
    assert findings(n) == []


def test_integer_confidence_is_a_number() -> None:
    _, n = events.parse(example_bytes("01-AiReviewResult-VoicePorn.doc-verbatim.json"))
    assert n.ai_review_result_info is not None
    assert present(present(n.ai_review_result_info.result_set)[0].voice_porn_result_set)[0].confidence == 98.0


@pytest.mark.parametrize(
    ("raw", "field", "expected"),
    [
        (b"", "body", "a JSON object"),
        (b"not json", "body", "a JSON object"),
        (b'{"NotificationType": "ProcessEof", "TaskId": "t"', "body", "a JSON object"),
        (b"[1, 2]", "body", "a JSON object"),
        (b'"ProcessEof"', "body", "a JSON object"),
        (b"null", "body", "a JSON object"),
        (b'{"TaskId": "t-1"}', "NotificationType", "a value (the member is required)"),
        (b'{"NotificationType": "ProcessEof"}', "TaskId", "a value (the member is required)"),
        (
            b'{"NotificationType": "ProcessEof", "TaskId": ""}',
            "TaskId",
            "a string of 1 to 256 visible ASCII characters",
        ),
        (b'{"NotificationType": 7, "TaskId": "t"}', "NotificationType", "a string"),
        (b'{"NotificationType": "ProcessEof", "TaskId": ["t"]}', "TaskId", "a string"),
        (
            b'{"NotificationType": "ProcessEof", "TaskId": "t", "ProcessEofInfo": {"ErrCode": "zero"}}',
            "ProcessEofInfo.ErrCode",
            "an integer",
        ),
        (
            b'{"NotificationType": "AiReviewResult", "TaskId": "t", "AiReviewResultInfo": "lots"}',
            "AiReviewResultInfo",
            "an object",
        ),
        (
            b'{"NotificationType": "AiReviewResult", "TaskId": "t", "AiReviewResultInfo": {"ResultSet":'
            b' [{"Type": "ImagePorn", "ImagePornResultSet": [{"Confidence": "high"}]}]}}',
            "AiReviewResultInfo.ResultSet[0].ImagePornResultSet[0].Confidence",
            "a number",
        ),
        (
            b'{"NotificationType": "ProcessEof", "TaskId": "t", "Timestamp": "soon"}',
            "Timestamp",
            "an integer",
        ),
        (b'{"msgBody": "{not json"}', "msgBody", "a JSON object"),
    ],
)
def test_malformed_input_names_the_field_and_what_was_expected(raw: bytes, field: str, expected: str) -> None:
    with pytest.raises(InvalidNotificationError) as caught:
        events.parse(raw)
    assert caught.value.field == field
    assert caught.value.expected == expected


def test_invalid_utf8_is_an_invalid_notification_not_a_crash() -> None:
    with pytest.raises(InvalidNotificationError):
        events.parse(b'{"NotificationType": "\xff\xfe", "TaskId": "t"}')
