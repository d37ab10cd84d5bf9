"""Normalization, derived identity and signature verification: pure functions on the spec's examples."""

from __future__ import annotations

import hashlib
from typing import Any

import orjson
import pytest

from receiver import decoder, events
from receiver.errors import SignatureError
from receiver.events import Channel, Event, NotifyKeys, SignPolicy, Verdict
from receiver.findings import Finding
from tests.payloads import FROZEN_NOW, NOTIFICATION_FILES, NOTIFY_KEY, body, example, example_bytes, signed


def normalized(raw: bytes, channel: Channel = Channel.HTTP) -> Event:
    data = decoder.unwrap(raw)
    n = decoder.read_notification(data)
    return events.normalize(
        decoder.strip_sign(data), n, channel=channel, received_at=FROZEN_NOW, check=events.SKIPPED
    )


def unsigned(doc: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in doc.items() if k not in ("Timestamp", "Sign")}


def only(findings: list[Finding], kind: str) -> Finding:
    matching = [f for f in findings if f.kind == kind]
    assert len(matching) == 1, [f.kind for f in findings]
    return matching[0]


# --- normalize -------------------------------------------------------------------------------


def test_voice_porn_review_becomes_one_block_finding() -> None:
    e = normalized(example_bytes("01-AiReviewResult-VoicePorn.doc-verbatim.json"))
    assert e.task_id == "2459149217-procedure-live-xxx51da009t0"
    assert e.notification_type == "AiReviewResult"
    assert e.findings == [
        Finding(
            kind="VoicePorn", label="sexual_moan", suggestion="block", confidence=98.0, start=0.266, end=4.146
        )
    ]


def test_image_review_keeps_url_expiry_name_and_area() -> None:
    e = normalized(example_bytes("03-AiReviewResult-Image.constructed.json"))
    assert e.session_context == '{"room":"r-1024","streamer":"u-42"}'
    porn = only(e.findings, "ImagePorn")
    assert (porn.label, porn.suggestion, porn.confidence, porn.start, porn.end) == (
        "porn",
        "block",
        91.0,
        125.04,
        130.04,
    )
    assert porn.url is not None
    assert porn.url.endswith("3f9d1c0b_125040.jpg")
    assert porn.attrs == {"url_expires_at": "2025-06-21T12:00:41Z"}
    political = only(e.findings, "ImagePolitical")
    assert political.area == [612, 88, 744, 201]
    assert political.attrs["name"] == "example_flag"
    assert political.suggestion == "review"


def test_speech_and_translation_recognition_carry_text_translation_and_steady_state() -> None:
    e = normalized(example_bytes("04-AiRecognitionResult-AsrTrans.adapted-from-doc.json"))
    trans = only(e.findings, "TransTextRecognition")
    assert trans.text is not None
    assert trans.text.startswith("How to ensure")
    assert trans.translation == trans.text
    assert (trans.start, trans.end, trans.confidence) == (0.2, 4.6, 100.0)
    assert trans.attrs == {
        "steady_state": True,
        "user_id": "123456",
        "begin_time": "2025-06-18T12:01:54Z",
        "end_time": "2025-06-18T12:01:58Z",
    }
    asr = only(e.findings, "AsrFullTextRecognition")
    assert asr.translation is None
    assert asr.attrs["begin_time"] == "2025-06-18T12:00:41Z"


def test_face_ocr_object_and_tag_recognition_each_become_a_finding_with_the_traps_read() -> None:
    e = normalized(example_bytes("05-AiRecognitionResult-Face-Ocr-Object-Tag.constructed.json"))
    assert e.session_id == "live-job-20250618-0001"
    assert [f.kind for f in e.findings] == [
        "FaceRecognition",
        "AsrWordsRecognition",
        "OcrWordsRecognition",
        "OcrFullTextRecognition",
        "ObjectRecognition",
        "TagRecognition",
    ]
    face = only(e.findings, "FaceRecognition")
    assert (face.label, face.area, face.attrs) == (
        "Demo Person",
        [420, 96, 598, 310],
        {"person_id": "person-0001", "library": "UserDefine"},
    )
    assert only(e.findings, "AsrWordsRecognition").text == "giveaway"
    ocr = only(e.findings, "OcrWordsRecognition")
    assert (ocr.label, ocr.area) == ("discount", [40, 620, 380, 680])
    assert only(e.findings, "OcrFullTextRecognition").text == "Limited offer - today only"
    obj = only(e.findings, "ObjectRecognition")
    assert (obj.label, obj.start, obj.end, obj.confidence) == ("guitar", 306.0, 311.0, 83.0)
    assert obj.url is not None
    assert obj.area == [700, 300, 1010, 690]
    tag = only(e.findings, "TagRecognition")
    assert (tag.label, tag.start, tag.end) == ("kill", 312.0, 318.0)


def test_analysis_segments_and_description_paragraphs_become_findings() -> None:
    e = normalized(example_bytes("06-AiAnalysisResult-Segment-Description.constructed.json"))
    seg = only(e.findings, "SegmentRecognition")
    assert (seg.label, seg.start, seg.end, seg.confidence) == (
        "Product demo: wireless earbuds",
        600.0,
        905.5,
        85.0,
    )
    assert seg.url is not None
    assert seg.url.endswith("seg_0001.mp4")
    assert seg.attrs["keywords"] == ["earbuds", "unboxing", "audio"]
    assert "audio_url" not in seg.attrs  # empty strings are not carried
    para = only(e.findings, "Description")
    assert (para.label, para.text, para.start, para.end) == (
        "Opening",
        "Opening and product introduction.",
        0.0,
        600.0,
    )


def test_analysis_highlight_spans_its_segments() -> None:
    doc = example("06-AiAnalysisResult-Segment-Description.constructed.json")
    doc["AiAnalysisResultInfo"]["ResultSet"] = [
        {
            "Type": "Highlight ",
            "HighlightResultSet": [
                {
                    "HighlightPath": "/out/hl.mp4",
                    "CovImgPath": "/out/hl.jpg",
                    "Confidence": 90,
                    "Duration": 12.5,
                    "SegmentSet": [
                        {
                            "Confidence": 80,
                            "StartTimeOffset": 30.0,
                            "EndTimeOffset": 35.0,
                            "SegmentTags": ["goal"],
                        },
                        {"Confidence": 85, "StartTimeOffset": 10.0, "EndTimeOffset": 17.5},
                    ],
                    "HighlightUrl": "https://x/hl.mp4",
                }
            ],
        }
    ]
    hl = only(normalized(body(doc)).findings, "Highlight")
    assert (hl.start, hl.end, hl.url, hl.confidence) == (10.0, 35.0, "https://x/hl.mp4", 90.0)
    assert hl.attrs["duration"] == 12.5
    assert hl.attrs["cover_url"] == "/out/hl.jpg"
    assert len(hl.attrs["segments"]) == 2


def test_quality_control_findings_are_not_doubled_when_both_field_pairs_are_filled() -> None:
    e = normalized(example_bytes("07-AiQualityControlResult.constructed.json"))
    assert [(f.kind, f.label) for f in e.findings] == [
        ("QualityControl", "Blur"),
        ("QualityControl", "NoVoice"),
        ("Diagnose", "PtsJitter"),
        ("Diagnose", "AudioStreamLack"),
    ]
    blur, novoice, jitter, lack = e.findings
    assert (blur.confidence, blur.start, blur.end, blur.area) == (78.0, 410.0, 416.0, [0, 0, 1280, 720])
    assert novoice.area is None
    assert (jitter.severity, jitter.start, jitter.text) == ("Warning", 433.52, "PTS jitter exceeds threshold")
    assert jitter.attrs == {"category": "TimeStampException", "detected_at": "2025-06-18T20:07:13+08:00"}
    assert lack.severity == "Error"


def test_record_files_carry_size_duration_and_whether_recording_is_over() -> None:
    e = normalized(example_bytes("08-LiveRecordResult.constructed.json"))
    record = only(e.findings, "RecordFile")
    assert record.url is not None
    assert record.url.endswith(".m3u8")
    assert record.attrs == {
        "record_over": 0,
        "size": 734003200,
        "duration": 3600,
        "begin_time": "2025-06-18T12:00:00Z",
        "end_time": "2025-06-18T13:00:00Z",
    }
    envelope = normalized(example_bytes("10-CMQ-ReceiveMessage-envelope.constructed.json"))
    assert [f.attrs["record_over"] for f in envelope.findings] == [1, 1]


def test_smart_subtitles_carry_text_translation_and_pts_seconds() -> None:
    sub = only(
        normalized(example_bytes("09-AiSmartSubtitleResult.constructed.json")).findings, "SmartSubtitle"
    )
    assert (sub.text, sub.translation, sub.start, sub.end) == (
        "欢迎来到今天的直播",
        "Welcome to today's live stream",
        12.32,
        14.8,
    )


def test_process_eof_carries_its_error_code_and_message() -> None:
    e = normalized(example_bytes("02-ProcessEof.cmq-msgBody.verbatim.json"))
    assert e.notification_type == "ProcessEof"
    assert (e.err_code, e.err_message, e.findings) == (0, "Success", [])


@pytest.mark.parametrize("name", NOTIFICATION_FILES)
def test_every_example_normalizes_with_its_raw_payload_beside_it(name: str) -> None:
    e = normalized(example_bytes(name), Channel.AMQP)
    assert e.raw == unsigned(example(name))  # the Sign is not passed on
    assert orjson.loads(e.body) == e.raw
    assert e.channel is Channel.AMQP
    assert e.received_at == FROZEN_NOW
    assert len(e.event_id) == 64
    expected_findings = {"02": 0, "01": 1, "03": 2, "04": 2, "05": 6, "06": 2, "07": 4, "08": 1, "09": 1}
    assert len(e.findings) == expected_findings[name[:2]]


# --- identity --------------------------------------------------------------------------------


def test_event_id_ignores_timestamp_sign_and_the_response_wrapper() -> None:
    doc = example("01-AiReviewResult-VoicePorn.doc-verbatim.json")
    plain = events.event_id(doc)
    assert events.event_id(signed(doc, timestamp=1_800_000_000)) == plain
    assert events.event_id(signed(doc, key="another-key", timestamp=1_900_000_000)) == plain
    wrapped_doc, _ = events.parse(example_bytes("01-AiReviewResult-VoicePorn.doc-verbatim.json"))
    assert events.event_id(wrapped_doc) == plain


def test_event_id_is_the_same_over_http_and_a_cmq_envelope() -> None:
    inner = example("08-LiveRecordResult.constructed.json")
    direct = normalized(body(inner), Channel.HTTP)
    via_cmq = normalized(orjson.dumps({"msgBody": orjson.dumps(inner).decode()}), Channel.AMQP)
    assert direct.event_id == via_cmq.event_id


def test_event_id_does_not_depend_on_key_order_or_null_versus_absent_members() -> None:
    doc = example("03-AiReviewResult-Image.constructed.json")
    reordered = dict(reversed(list(doc.items())))
    without_nulls = {k: v for k, v in doc.items() if v is not None}
    assert events.event_id(reordered) == events.event_id(doc) == events.event_id(without_nulls)


@pytest.mark.parametrize(
    "text",
    [
        b'{"TaskId": "T", "A": {"B": [ ], "C": 1}}',  # an empty list, spaced
        b'{"TaskId": "T", "A": {"B": null, "C": 1}}',
        b'{"TaskId": "T", "A": {"C": 1, "D": [{"E": [], "F": 2}]}, "G": [[]]}',
    ],
)
def test_event_id_from_the_bytes_is_the_canonical_one_whatever_they_hold(text: bytes) -> None:
    # Given the bytes, the pruning is skipped when they hold nothing to prune; never otherwise.
    doc = orjson.loads(text)
    assert events.event_id(doc, text) == events.event_id(doc)
    compact = orjson.loads(text.replace(b"[ ]", b"[]"))
    assert events.event_id(doc, text) == events.event_id(compact, orjson.dumps(compact))


def test_pruning_leaves_what_it_need_not_touch_as_it_is() -> None:
    kept = {"A": [1, {"B": 2}], "C": {"D": "x"}}
    assert events._pruned(kept) is kept
    doc = {"A": [1, {"B": None}], "C": {"D": "x"}, "E": []}
    pruned = events._pruned(doc)
    assert pruned == {"A": [1, {}], "C": {"D": "x"}}
    assert pruned["C"] is doc["C"]  # untouched on the way: not copied
    assert doc == {"A": [1, {"B": None}], "C": {"D": "x"}, "E": []}  # the input is never changed


@pytest.mark.parametrize(
    "change",
    [
        lambda d: d.__setitem__("TaskId", d["TaskId"] + "x"),
        lambda d: d.__setitem__("SessionContext", "other"),
        lambda d: d["AiReviewResultInfo"]["ResultSet"][0]["ImagePornResultSet"][0].__setitem__(
            "StartPtsTime", 125.05
        ),
    ],
)
def test_event_id_changes_with_any_content(change: Any) -> None:
    doc = example("03-AiReviewResult-Image.constructed.json")
    other = orjson.loads(body(doc))
    change(other)
    assert events.event_id(other) != events.event_id(doc)


# --- verify ----------------------------------------------------------------------------------


def verify(
    doc: dict[str, Any], policy: SignPolicy, *, keys: tuple[str, ...] = (NOTIFY_KEY,), now: float = FROZEN_NOW
) -> Verdict:
    head = decoder.read_head(decoder.unwrap(body(doc)))
    return events.verify_sign(head, keys=NotifyKeys(static=keys), policy=policy, now=now, skew=60).verdict


def test_sign_of_the_spec_worked_example() -> None:
    assert events.expected_sign(1750248641, "mpsDemoNotifyKey2025") == "346b893046b0346403af24a6e22331c4"


@pytest.mark.parametrize("name", [n for n in NOTIFICATION_FILES if n[:2] not in ("01", "02")])
def test_every_signed_example_verifies_with_the_demo_key(name: str) -> None:
    doc = example(name)  # the examples' Timestamps spread over hours: check each near its own
    assert verify(doc, SignPolicy.REQUIRED, now=doc["Timestamp"] - 300) is Verdict.VALID


def test_sign_compares_case_insensitively() -> None:
    doc = signed(example("02-ProcessEof.cmq-msgBody.verbatim.json"))
    doc["Sign"] = doc["Sign"].upper()
    assert verify(doc, SignPolicy.REQUIRED) is Verdict.VALID


def test_any_configured_key_verifies_so_keys_can_rotate() -> None:
    doc = signed(example("02-ProcessEof.cmq-msgBody.verbatim.json"), key="old-key")
    assert verify(doc, SignPolicy.REQUIRED, keys=("new-key", "old-key")) is Verdict.VALID
    with pytest.raises(SignatureError, match="does not match"):
        verify(doc, SignPolicy.REQUIRED, keys=("new-key",))


def test_key_first_order_is_not_accepted() -> None:
    doc = signed(example("02-ProcessEof.cmq-msgBody.verbatim.json"))
    doc["Sign"] = hashlib.md5(f"{NOTIFY_KEY}{doc['Timestamp']}".encode()).hexdigest()
    with pytest.raises(SignatureError):
        verify(doc, SignPolicy.REQUIRED)


def test_timestamp_is_an_expiry_with_a_skew_allowance() -> None:
    doc = signed(example("02-ProcessEof.cmq-msgBody.verbatim.json"), timestamp=int(FROZEN_NOW))
    assert verify(doc, SignPolicy.REQUIRED, now=FROZEN_NOW + 60) is Verdict.VALID
    with pytest.raises(SignatureError, match="expired"):
        verify(doc, SignPolicy.REQUIRED, now=FROZEN_NOW + 61)


def test_a_tampered_timestamp_breaks_the_sign() -> None:
    doc = signed(example("02-ProcessEof.cmq-msgBody.verbatim.json"))
    doc["Timestamp"] += 3600
    with pytest.raises(SignatureError, match="does not match"):
        verify(doc, SignPolicy.REQUIRED)


def test_unsigned_notifications_under_each_policy() -> None:
    doc = example("02-ProcessEof.cmq-msgBody.verbatim.json")  # predates Timestamp/Sign
    with pytest.raises(SignatureError, match="missing"):
        verify(doc, SignPolicy.REQUIRED)
    assert verify(doc, SignPolicy.IF_PRESENT) is Verdict.UNSIGNED
    assert verify(doc, SignPolicy.OFF) is Verdict.SKIPPED


def test_if_present_still_rejects_a_bad_sign() -> None:
    doc = signed(example("02-ProcessEof.cmq-msgBody.verbatim.json"), key="wrong")
    with pytest.raises(SignatureError):
        verify(doc, SignPolicy.IF_PRESENT)
    assert verify(doc, SignPolicy.OFF) is Verdict.SKIPPED


def test_sign_without_timestamp_is_rejected() -> None:
    doc = signed(example("02-ProcessEof.cmq-msgBody.verbatim.json"))
    del doc["Timestamp"]
    with pytest.raises(SignatureError, match="Timestamp is missing"):
        verify(doc, SignPolicy.IF_PRESENT)


def check(doc: dict[str, Any], keys: NotifyKeys, *, now: float = FROZEN_NOW) -> events.Check:
    head = decoder.read_head(decoder.unwrap(body(doc)))
    return events.verify_sign(head, keys=keys, policy=SignPolicy.REQUIRED, now=now, skew=60)


def test_the_verdict_says_which_static_key_matched() -> None:
    doc = signed(example("02-ProcessEof.cmq-msgBody.verbatim.json"), key="old-key")
    assert check(doc, NotifyKeys(static=("new-key", "old-key"))) == events.Check(Verdict.VALID, "static:1")


def test_a_timestamp_further_ahead_than_mps_signs_is_refused() -> None:
    doc = example("02-ProcessEof.cmq-msgBody.verbatim.json")
    keys = NotifyKeys(static=(NOTIFY_KEY,))
    assert check(signed(doc, timestamp=int(FROZEN_NOW) + 660), keys).verdict is Verdict.VALID
    with pytest.raises(SignatureError, match="further ahead"):
        check(signed(doc, timestamp=int(FROZEN_NOW) + 661), keys)
    with pytest.raises(SignatureError, match="further ahead"):
        check(signed(doc, timestamp=2**63 - 1), keys)


OWN = "receiver:0123456789abcdef0123456789abcdef"


def test_a_task_of_our_own_verifies_against_its_derived_key_only() -> None:
    doc = {**example("02-ProcessEof.cmq-msgBody.verbatim.json"), "SessionContext": OWN}
    keys = NotifyKeys(static=(NOTIFY_KEY,), master=("master-new", "master-old"))
    own_key = events.derived_key("master-old", OWN)
    assert check(signed(doc, key=own_key), keys) == events.Check(Verdict.VALID, "derived:1")
    # A valid pair made with a static key is no good for a task that has a key of its own...
    with pytest.raises(SignatureError, match="does not match"):
        check(signed(doc, key=NOTIFY_KEY), keys)
    # ...nor is another task's own key.
    other_key = events.derived_key("master-old", OWN[:-1] + "0")
    with pytest.raises(SignatureError, match="does not match"):
        check(signed(doc, key=other_key), keys)
    # A context of any other form still verifies with the static keys.
    theirs = {**doc, "SessionContext": "their-own"}
    assert check(signed(theirs, key=NOTIFY_KEY), keys) == events.Check(Verdict.VALID, "static:0")


def test_derived_keys_are_distinct_per_task_and_master_key() -> None:
    a = events.derived_key("m1", OWN)
    assert a == events.derived_key("m1", OWN)
    assert len(a) == 32
    assert len({a, events.derived_key("m2", OWN), events.derived_key("m1", OWN + "x")}) == 3
    assert "m1" not in a
