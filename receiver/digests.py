"""A task's digest: what all its events said, in one document, made once the task has ended. Pure."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable
from typing import Any

from receiver.documents import iso, task_document
from receiver.ports import EventRecord
from receiver.routing import DIGEST as DIGEST  # its notification_type
from receiver.tasks import Task

# Characters of transcript text a digest carries at most (the rest is cut, and it says so).
TRANSCRIPT_LIMIT = 64 * 1024
_STRENGTH = {"pass": 1, "review": 2, "block": 3}
# Finding kinds whose text makes the transcript, and what each is called there.
_SPOKEN = {
    "AsrFullTextRecognition": "speech",
    "TransTextRecognition": "translation",
    "SmartSubtitle": "subtitle",
}
_QUALITY = ("QualityControl", "Diagnose")


def digest_id(task_ref: str) -> str:
    """The digest's event id: one digest per task, however often it is made."""
    return f"receiver:digest:{task_ref}"


def _seconds(f: dict[str, Any]) -> float:
    start, end = f.get("start"), f.get("end")
    if isinstance(start, int | float) and isinstance(end, int | float) and end > start:
        return float(end - start)
    return 0.0


def digest(task: Task, events: Iterable[EventRecord]) -> dict[str, Any]:
    """Counts by notification type, finding kind and suggestion; the worst suggestion and when;
    quality-control issues with their total durations; recording files; the transcript from
    speech, translation and subtitles, in stream order (bounded); the task's labels and timings."""
    types: Counter[str] = Counter()
    kinds: Counter[str] = Counter()
    suggestions: Counter[str] = Counter()
    worst: dict[str, Any] | None = None
    quality: dict[tuple[str, str], dict[str, Any]] = {}
    recordings: list[dict[str, Any]] = []
    spoken: list[tuple[float, int, int, dict[str, Any]]] = []
    for e in events:
        if e.task_ref != task.id or e.channel == "receiver":
            continue  # receiver's own events (digests, operator events) are not the task's results
        types[e.notification_type] += 1
        for i, f in enumerate(e.findings):
            kind = f.get("kind") or "unknown"
            kinds[kind] += 1
            suggestion = f.get("suggestion")
            if suggestion:
                suggestions[suggestion] += 1
                if _STRENGTH.get(suggestion, 0) > _STRENGTH.get((worst or {}).get("suggestion", ""), 0):
                    worst = {
                        "suggestion": suggestion,
                        "kind": kind,
                        "label": f.get("label"),
                        "confidence": f.get("confidence"),
                        "start": f.get("start"),
                        "end": f.get("end"),
                        "event_id": e.event_id,
                        "received_at": iso(e.received_at),
                    }
            if kind in _QUALITY:
                label = f.get("label") or kind
                entry = quality.setdefault(
                    (kind, label), {"kind": kind, "label": label, "count": 0, "seconds": 0.0}
                )
                entry["count"] += 1
                entry["seconds"] = round(entry["seconds"] + _seconds(f), 3)
                if f.get("severity"):
                    entry["severity"] = f["severity"]
            elif kind == "RecordFile":
                attrs = f.get("attrs") or {}
                recordings.append(
                    {"url": f.get("url"), **{k: attrs[k] for k in sorted(attrs) if k != "record_over"}}
                )
            elif kind in _SPOKEN and (f.get("text") or f.get("translation")):
                if (f.get("attrs") or {}).get("steady_state") is False:
                    continue  # a partial result, said again in full later
                start = f.get("start")
                at = float(start) if isinstance(start, int | float) else math.inf
                line = {"source": _SPOKEN[kind], "start": start, "end": f.get("end"), "text": f.get("text")}
                if f.get("translation"):
                    line["translation"] = f["translation"]
                spoken.append((at, e.seq, i, line))
    spoken.sort(key=lambda item: item[:3])  # stream time, then the order received
    lines: list[dict[str, Any]] = []
    size = 0
    for *_, line in spoken:
        size += len(line.get("text") or "") + len(line.get("translation") or "")
        if size > TRANSCRIPT_LIMIT:
            break
        lines.append(line)
    task_doc = task_document(task)
    duration = (
        round(task.ended_at - task.first_event_at, 3)
        if task.ended_at is not None and task.first_event_at is not None
        else None
    )
    return {
        "task": {**task_doc, "duration_seconds": duration},
        "labels": task.labels,
        "events": dict(types),
        "findings": {"by_kind": dict(kinds), "by_suggestion": dict(suggestions)},
        "worst": worst,
        "quality": sorted(quality.values(), key=lambda q: (-q["seconds"], -q["count"], q["label"])),
        "recordings": recordings,
        "transcript": {"lines": lines, "truncated": len(lines) < len(spoken)},
    }
