"""A stream's worth of notifications for the console's tests: moderation findings of every suggestion
(with snapshot images), speech and subtitles in two scripts, quality-control bands, a recording
file, ProcessEof; and notifications whose recognized text is markup (the escaping test)."""

from __future__ import annotations

import copy
from typing import Any

from tests.payloads import example

TASK_ID = "1300099999-procedure-live-console0001"
SCRIPT_TEXT = "<script>window.__pwned = 1</script>"
IMG_TEXT = '<img src=x onerror="window.__pwned = 2">'


def _with(doc: dict[str, Any], **changes: Any) -> dict[str, Any]:
    out = copy.deepcopy(doc)
    out.update(changes)
    return out


def review(at: float, suggestion: str, label: str, snapshot: str | None, n: int) -> dict[str, Any]:
    item: dict[str, Any] = {
        "StartPtsTime": at,
        "EndPtsTime": at + 5,
        "Confidence": 60.0 + n % 40,
        "Suggestion": suggestion,
        "Label": label,
    }
    if snapshot:
        item["Url"] = snapshot
    return {
        "NotificationType": "AiReviewResult",
        "TaskId": TASK_ID,
        "AiReviewResultInfo": {"ResultSet": [{"Type": "ImagePorn", "ImagePornResultSet": [item]}]},
        "SessionId": f"review-{n}",
        "SessionContext": "",
    }


def speech(at: float, text: str, trans: str, n: int) -> dict[str, Any]:
    full = {"Text": text, "StartPtsTime": at, "EndPtsTime": at + 4, "Confidence": 95, "SteadyState": True}
    tr = {**full, "Trans": trans}
    return {
        "NotificationType": "AiRecognitionResult",
        "TaskId": TASK_ID,
        "AiRecognitionResultInfo": {
            "ResultSet": [
                {"Type": "AsrFullTextRecognition", "AsrFullTextRecognitionResultSet": [full]},
                {"Type": "TransTextRecognition", "TransTextRecognitionResultSet": [tr]},
            ]
        },
        "SessionId": f"speech-{n}",
        "SessionContext": "",
    }


def subtitle(at: float, text: str, trans: str, n: int) -> dict[str, Any]:
    sub = {"Text": text, "StartPTSTime": at, "EndPTSTime": at + 3, "Trans": trans, "SteadyState": True}
    return {
        "NotificationType": "AiSmartSubtitleResult",
        "TaskId": TASK_ID,
        "AiSmartSubtitleResultInfo": {"SmartSubtitleResult": [sub]},
        "SessionId": f"subtitle-{n}",
        "SessionContext": "",
    }


def ocr(at: float, word: str, n: int) -> dict[str, Any]:
    item = {
        "Word": word,
        "StartPtsTime": at,
        "EndPtsTime": at + 2,
        "Confidence": 88.0,
        "AreaCoords": [1, 2, 3, 4],
    }
    return {
        "NotificationType": "AiRecognitionResult",
        "TaskId": TASK_ID,
        "AiRecognitionResultInfo": {
            "ResultSet": [{"Type": "OcrWordsRecognition", "OcrWordsRecognitionResultSet": [item]}]
        },
        "SessionId": f"ocr-{n}",
        "SessionContext": "",
    }


def stream(snapshot_base: str) -> list[dict[str, Any]]:
    """The notifications of one task, in the order MPS would send them (ProcessEof last)."""
    docs: list[dict[str, Any]] = []
    labels = [("block", "porn"), ("review", "sexy"), ("pass", "normal")]
    for i in range(18):
        suggestion, label = labels[i % 3]
        snap = f"{snapshot_base}/snapshot/{i}.svg" if suggestion != "pass" else None
        docs.append(review(20.0 + i * 31.5, suggestion, label, snap, i))
    lines = [
        ("Welcome to the evening stream", "欢迎来到今晚的直播"),
        ("Today we test the new camera", "今天我们测试新相机"),
        ("Please keep the chat friendly", "请保持聊天友好"),
        ("The giveaway starts in five minutes", "抽奖五分钟后开始"),
        ("Thank you for watching", "感谢观看"),
    ]
    for i, (text, trans) in enumerate(lines):
        docs.append(speech(40.0 + i * 95, text, trans, i))
        docs.append(subtitle(42.0 + i * 95, trans, text, i))
    for i, word in enumerate(["discount", "直播间", "limited"]):
        docs.append(ocr(100.0 + i * 150, word, i))
    docs.append(
        _with(example("07-AiQualityControlResult.constructed.json"), TaskId=TASK_ID, SessionContext="")
    )
    docs.append(_with(example("08-LiveRecordResult.constructed.json"), TaskId=TASK_ID, SessionContext=""))
    docs.append(_with(example("02-ProcessEof.cmq-msgBody.verbatim.json"), TaskId=TASK_ID, SessionContext=""))
    return docs


def markup() -> list[dict[str, Any]]:
    """Recognized text that is markup: a script and an image with an onerror handler."""
    return [ocr(700.0, SCRIPT_TEXT, 90), speech(705.0, IMG_TEXT, SCRIPT_TEXT, 91)]


def snapshot_svg(n: int) -> bytes:
    hue = (n * 47) % 360
    return (
        '<svg xmlns="http://www.w3.org/2000/svg" width="320" height="180" viewBox="0 0 320 180">'
        f'<rect width="320" height="180" fill="hsl({hue},45%,55%)"/>'
        f'<circle cx="{60 + n * 13 % 200}" cy="90" r="38" fill="hsl({(hue + 180) % 360},40%,80%)"/>'
        f'<text x="16" y="166" font-family="sans-serif" font-size="18" fill="#fff">frame {n}</text></svg>'
    ).encode()
