"""Scenarios: what a task's stream "produces", as a deterministic plan of notifications (pure).

A plan is a list of (seconds after the task started, notification); the same task and seed give
the same plan. It has notifications of each kind the task asked for, then ``ProcessEof``, and can
carry duplicates, neighbours swapped, notifications after the end, and a failing ``ProcessEof``.
Beyond the plan, a scenario says whether the ProcessEof is lost (the task still ends at MPS, as
``DescribeTaskDetail`` shows), and how an abort (``ManageTask``) ends the task: with a ProcessEof
or without one, and with which code.
"""

from __future__ import annotations

import random
from typing import Any

import msgspec
from pydantic import BaseModel, ConfigDict, Field

from receiver import wire

Notification = dict[str, Any]


class Scenario(BaseModel):
    model_config = ConfigDict(extra="forbid")

    duration: float = Field(default=5.0, ge=0)  # seconds of stream life before ProcessEof
    rate: float = Field(default=4.0, gt=0)  # notifications per second while the stream lives
    mix: dict[str, float] = Field(default_factory=dict)  # NotificationType -> weight; {} = equal
    seed: int = 1
    duplicates: float = Field(default=0.0, ge=0, le=1)  # chance a notification is sent twice
    reorder: float = Field(default=0.0, ge=0, le=1)  # chance a notification swaps with the next
    late: int = Field(default=0, ge=0)  # notifications sent after ProcessEof
    eof_err_code: int = 0  # non-zero: the stream ends in error
    eof_message: str = "Success"
    lose_eof: bool = False  # the ProcessEof is never sent; MPS still says FINISH when asked
    # An abort (ManageTask) ends the stream at once; MPS documents neither whether a ProcessEof
    # follows nor its code: both are the scenario's (assumed: one is sent, code 0).
    abort_eof: bool = True
    abort_err_code: int = 0
    abort_message: str = "Task aborted by ManageTask"


def kinds_requested(request: dict[str, Any]) -> list[str]:
    """The notification types a ProcessLiveStream request asks for."""
    kinds = []
    for field, kind in (
        ("AiContentReviewTask", "AiReviewResult"),
        ("AiRecognitionTask", "AiRecognitionResult"),
        ("AiAnalysisTask", "AiAnalysisResult"),
        ("AiQualityControlTask", "AiQualityControlResult"),
        ("SmartSubtitlesTask", "AiSmartSubtitleResult"),
        ("OutputStorage", "LiveRecordResult"),
    ):
        if request.get(field):
            kinds.append(kind)
    return kinds


def _result(kind: str, rng: random.Random, at: float) -> dict[str, Any]:
    span = {"StartPtsTime": round(at, 3), "EndPtsTime": round(at + rng.uniform(1, 5), 3)}
    confidence = round(rng.uniform(50, 100), 1)
    if kind == "AiReviewResult":
        review_type, label = rng.choice(
            [("ImagePorn", "porn"), ("ImageTerrorism", "guns"), ("VoicePorn", "sexual_moan")]
        )
        item = {**span, "Confidence": confidence, "Label": label,
                "Suggestion": rng.choice(["pass", "review", "block"])}  # fmt: skip
        return {
            "AiReviewResultInfo": {"ResultSet": [{"Type": review_type, f"{review_type}ResultSet": [item]}]}
        }
    if kind == "AiRecognitionResult":
        words = rng.choice(["giveaway", "discount", "welcome", "goal"])
        word = {**span, "Confidence": confidence, "Word": words}
        item = {"Type": "AsrWordsRecognition", "AsrWordsRecognitionResultSet": [word]}
        return {"AiRecognitionResultInfo": {"ResultSet": [item]}}
    if kind == "AiAnalysisResult":
        segment = {
            "Confidence": confidence,
            "StartTimeOffset": round(at, 3),
            "EndTimeOffset": round(at + 30, 3),
            "Title": f"segment at {at:.0f}s",
            "Summary": "emulated segment",
        }
        return {
            "AiAnalysisResultInfo": {
                "ResultSet": [{"Type": "SegmentRecognition", "SegmentResultSet": [segment]}]
            }
        }
    if kind == "AiQualityControlResult":
        qc_type = rng.choice(["Blur", "NoVoice", "Jitter", "LowLighting"])
        return {"AiQualityControlResultInfo": {"QualityControlResultSet": [
            {"Type": qc_type, "QualityControlItems": [
                {"Confidence": int(confidence), "StartTimeOffset": round(at, 3),
                 "EndTimeOffset": round(at + 2, 3)}]}]}}  # fmt: skip
    if kind == "AiSmartSubtitleResult":
        return {"AiSmartSubtitleResultInfo": {"SmartSubtitleResult": [
            {"Text": "emulated subtitle", "Trans": "sous-titre émulé", "StartPTSTime": round(at, 3),
             "EndPTSTime": round(at + 2, 3), "SteadyState": True}]}}  # fmt: skip
    if kind == "LiveRecordResult":
        return {"LiveRecordResultInfo": {"RecordOver": 0, "FileResults": [
            {"Url": f"https://emulated-bucket/record/{at:.0f}.m3u8", "Size": rng.randint(10**6, 10**8),
             "Duration": 60}]}}  # fmt: skip
    raise ValueError(f"unknown notification type {kind!r}")


def eof(task_id: str, request: dict[str, Any], err_code: int, message: str) -> Notification:
    """The ProcessEof of a task."""
    return {
        "NotificationType": wire.PROCESS_EOF,
        "TaskId": task_id,
        "SessionId": request.get("SessionId", ""),
        "SessionContext": request.get("SessionContext", ""),
        "ProcessEofInfo": {"ErrCode": err_code, "Message": message},
    }


def plan(task_id: str, request: dict[str, Any], scenario: Scenario) -> list[tuple[float, Notification]]:
    """The notifications for one task, in the order they are sent, with their send times."""
    rng = random.Random(f"{scenario.seed}:{task_id}")
    kinds = kinds_requested(request) or ["AiReviewResult"]
    weights = [scenario.mix.get(k, 0.0 if scenario.mix else 1.0) for k in kinds]
    if not any(weights):
        weights = [1.0] * len(kinds)
    base = {
        "TaskId": task_id,
        "SessionId": request.get("SessionId", ""),
        "SessionContext": request.get("SessionContext", ""),
    }
    out: list[tuple[float, Notification]] = []
    count = int(scenario.duration * scenario.rate)
    for i in range(count):
        at = i / scenario.rate
        kind = rng.choices(kinds, weights)[0]
        out.append((at, {"NotificationType": kind, **base, **_result(kind, rng, at)}))
        if rng.random() < scenario.duplicates:
            out.append((at, out[-1][1]))
    for i in range(len(out) - 1):
        if rng.random() < scenario.reorder:
            (a, x), (b, y) = out[i], out[i + 1]
            out[i], out[i + 1] = (a, y), (b, x)
    end = scenario.duration
    out.append((end, eof(task_id, request, scenario.eof_err_code, scenario.eof_message)))
    for i in range(scenario.late):
        kind = rng.choice(kinds)
        out.append((end + 0.1 * (i + 1), {"NotificationType": kind, **base, **_result(kind, rng, end + i)}))
    for _, notification in out:  # every emitted notification is a valid wire notification
        msgspec.convert(notification, wire.Notification)
    return out
