"""What the console's pages show, made from stored records: timelines, transcripts, charts, previews.

The timeline of a task on its stream's own time axis, its transcript, the overview's chart, safe
previews and links. Pure: no I/O, no markup (the templates escape and draw; nothing here is
trusted to be HTML).
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from receiver import wire
from receiver.ports import EventRecord, TimelineEvent

WIDTH = 1000  # the timeline's and the chart's drawing width (viewBox units)
BINS = 250  # marks per lane at most: a task of 10,000 events draws no more than this
SNAPSHOTS = 12  # images shown under a task's timeline
TRANSCRIPT_LINES = 500  # per page of a task's transcript
STRENGTH = {"block": 3, "review": 2, "pass": 1}

MODERATION = frozenset({"ImagePorn", "ImageTerrorism", "ImagePolitical", "VoicePorn"})
QUALITY = frozenset({"QualityControl", "Diagnose"})
ANALYSIS = frozenset({"SegmentRecognition", "Highlight", "Description"})
SPEECH = frozenset({"AsrFullTextRecognition", "TransTextRecognition", "SmartSubtitle"})
LANES = ("Moderation", "Quality", "Recognition", "Analysis", "Subtitles", "Recording")


def safe_url(url: object) -> str | None:
    """A URL a page may link to or load: http(s) only (never ``javascript:`` or ``data:``)."""
    if not isinstance(url, str) or len(url) > 4096:
        return None
    if any(unicodedata.category(c)[0] in ("C", "Z") for c in url):  # controls, spaces, separators
        return None
    try:
        parts = urlsplit(url)
    except ValueError:
        return None
    return url if parts.scheme in ("http", "https") and parts.netloc else None


_VISIBLE = frozenset("\n\t")
_BIDI = frozenset(
    "\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
)  # text direction overrides: a preview must read in the order it is stored


def preview(body: bytes | str, limit: int = 4096) -> tuple[str, bool]:
    """A body as text a page can show: UTF-8 (bad bytes replaced), control and direction characters
    written as ``\\u{..}``, cut at ``limit`` characters; and whether it was cut."""
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
    cut = len(text) > limit
    out = []
    for c in text[:limit]:
        if c in _VISIBLE:
            out.append(c)
        elif c in _BIDI or unicodedata.category(c) in ("Cc", "Cf", "Cs", "Co"):
            out.append(f"\\u{{{ord(c):04x}}}")
        else:
            out.append(c)
    return "".join(out), cut


# --- the timeline ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Mark:
    x: float
    width: float
    css: str  # block | review | pass | none | band | eof-ok | eof-failed
    title: str  # a tooltip (escaped by the template)


@dataclass(slots=True)
class Lane:
    name: str
    marks: list[Mark] = field(default_factory=list)
    count: int = 0  # findings drawn in it


@dataclass(frozen=True, slots=True)
class Snapshot:
    url: str
    label: str
    suggestion: str
    start: float | None
    seq: int


@dataclass(frozen=True, slots=True)
class RecordFile:
    url: str | None
    begin: str | None
    end: str | None
    duration: Any
    size: Any


@dataclass(slots=True)
class Timeline:
    duration: float
    lanes: list[Lane]
    ticks: list[tuple[float, str]]
    snapshots: list[Snapshot]
    records: list[RecordFile]
    eof: Mark | None
    events: int


def _lane_of(kind: str, suggestion: str | None) -> str:
    if kind in MODERATION or suggestion in STRENGTH:
        return "Moderation"
    if kind in QUALITY:
        return "Quality"
    if kind in ANALYSIS:
        return "Analysis"
    if kind == "SmartSubtitle":
        return "Subtitles"
    if kind == "RecordFile":
        return "Recording"
    return "Recognition"


def _num(v: object) -> float | None:
    return float(v) if isinstance(v, int | float) and not isinstance(v, bool) else None


def _wall(v: object) -> datetime | None:
    if not isinstance(v, str):
        return None
    try:
        return datetime.fromisoformat(v.replace("Z", "+00:00"))
    except ValueError:
        return None


def _clock(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


def _title(f: Mapping[str, Any]) -> str:
    parts = [str(f.get("kind"))]
    for key in ("label", "suggestion", "text", "severity"):
        if f.get(key):
            parts.append(str(f[key])[:120])
    if f.get("confidence") is not None:
        parts.append(f"{f['confidence']}%")
    start, end = _num(f.get("start")), _num(f.get("end"))
    if start is not None:
        parts.append(f"{start:.1f}s" + (f"–{end:.1f}s" if end is not None else ""))
    return " · ".join(parts)


class Drawing:
    """A task's timeline and transcript, added to event by event: a page of a long task reads only
    the events that arrived since it was last drawn (``last_seq``). What it keeps is compact (one
    tuple per finding with a stream time); the binning and the titles are done when drawn."""

    def __init__(self) -> None:
        self.last_seq = 0
        self.events = 0
        self._spans: list[
            tuple[str, float, float, str, dict[str, Any]]
        ] = []  # lane, start, end, css, finding
        self._snapshots: list[tuple[int, float, int, dict[str, Any]]] = []  # -strength, start, seq, finding
        self._records: list[dict[str, Any]] = []
        self._eof: tuple[bool, str] | None = None
        self._end = 0.0
        self._lines: list[Line] = []
        self._said: set[tuple[str, float, str]] = set()
        self._drawn: Timeline | None = None
        self._ordered: list[Line] | None = None
        # What pages made of this drawing (rendered fragments), until it changes.
        self.rendered: dict[Any, Any] = {}

    def add(self, events: Iterable[EventRecord | TimelineEvent]) -> Drawing:
        for e in events:
            self._drawn = self._ordered = None
            self.rendered.clear()
            self.last_seq = max(self.last_seq, e.seq)
            self.events += 1
            if e.notification_type == wire.PROCESS_EOF:
                ok = (e.err_code or 0) == 0
                self._eof = (
                    ok,
                    f"ProcessEof · {'finished' if ok else 'failed'} · {e.err_code} {e.err_message or ''}",
                )
            for f in e.findings:
                self._finding(e.seq, f)
        return self

    def _finding(self, seq: int, f: dict[str, Any]) -> None:
        kind = f.get("kind")
        if kind == "RecordFile":
            self._records.append(f)
            return
        start = _num(f.get("start"))
        if start is None:
            return
        end = _num(f.get("end"))
        end = max(start, end if end is not None else start)
        self._end = max(self._end, end)
        suggestion = f.get("suggestion")
        lane = _lane_of(str(kind), suggestion if isinstance(suggestion, str) else None)
        css = suggestion if suggestion in STRENGTH else ("band" if kind == "QualityControl" else "none")
        self._spans.append((lane, start, end, str(css), f))
        if lane == "Moderation" and f.get("url"):
            self._snapshots.append((-STRENGTH.get(str(suggestion), 0), start, seq, f))
        if kind in SPEECH and isinstance(f.get("text"), str):
            if (f.get("attrs") or {}).get("steady_state") is False:
                return  # a partial result: the steady one follows
            key = (str(kind), start, f["text"])
            if key not in self._said:
                self._said.add(key)
                translation = f.get("translation") if isinstance(f.get("translation"), str) else None
                self._lines.append(Line(start, _num(f.get("end")), str(kind), f["text"], translation, seq))

    def transcript(self) -> list[Line]:
        if self._ordered is None:
            self._ordered = sorted(self._lines, key=lambda line: (line.start, line.seq))
        return self._ordered

    def timeline(self) -> Timeline:
        """Every finding on the stream's time axis (PTS seconds), binned per lane so that a long
        task draws a bounded number of marks; the strongest suggestion wins a bin."""
        if self._drawn is None:
            self._drawn = self._draw()
        return self._drawn

    def _draw(self) -> Timeline:
        spans = list(self._spans)
        records: list[RecordFile] = []
        starts: list[tuple[datetime, dict[str, Any]]] = []
        for f in self._records:
            attrs = f.get("attrs") or {}
            records.append(
                RecordFile(
                    safe_url(f.get("url")),
                    attrs.get("begin_time"),
                    attrs.get("end_time"),
                    attrs.get("duration"),
                    attrs.get("size"),
                )
            )
            if (begin := _wall(attrs.get("begin_time"))) is not None:
                starts.append((begin, f))
        # Recording files carry wall-clock times: placed from the first one's start. A file may run
        # past the last finding (an hour's recording, ten minutes of results): it is cut at the
        # axis's end rather than stretch the axis, unless there is nothing else to draw.
        recorded = 0.0
        if starts:
            first = min(b for b, _ in starts)
            for begin, f in starts:
                offset = (begin - first).total_seconds()
                length = _num((f.get("attrs") or {}).get("duration")) or 0.0
                recorded = max(recorded, offset + length)
                spans.append(("Recording", offset, offset + length, "record", f))
        duration = max(self._end or recorded, 1.0)
        lanes = {name: Lane(name) for name in LANES}
        binned: dict[tuple[str, int], list[Any]] = {}
        for lane_name, start, end, css, f in spans:
            if start > duration:
                continue
            key = (lane_name, min(BINS - 1, int(start / duration * BINS)))
            lanes[lane_name].count += 1
            held = binned.get(key)
            if held is None:
                binned[key] = [start, end, css, f, 1]
                continue
            held[1] = max(held[1], end)
            held[4] += 1
            if STRENGTH.get(css, 0) > STRENGTH.get(held[2], 0):
                held[2], held[3] = css, f
        for (lane_name, _), (start, end, css, f, n) in sorted(binned.items(), key=lambda kv: kv[1][0]):
            x = start / duration * WIDTH
            width = max(2.0, (min(end, duration) - start) / duration * WIDTH)
            more = f" (+{n - 1} more here)" if n > 1 else ""
            lanes[lane_name].marks.append(
                Mark(round(x, 2), round(min(width, WIDTH - x), 2), css, _title(f) + more)
            )
        snapshots = []
        for _, start, seq, f in sorted(self._snapshots, key=lambda s: (s[0], s[1])):
            url = safe_url(f.get("url"))
            if url is not None:
                label = str(f.get("label") or f.get("kind"))
                snapshots.append(Snapshot(url, label, str(f.get("suggestion") or ""), start, seq))
                if len(snapshots) == SNAPSHOTS:
                    break
        step = _tick_step(duration)
        ticks = [(round(t / duration * WIDTH, 2), _clock(t)) for t in _frange(0.0, duration, step)]
        eof = None
        if self._eof is not None:
            eof = Mark(WIDTH - 3, 3, "eof-ok" if self._eof[0] else "eof-failed", self._eof[1])
        return Timeline(
            duration,
            [lane for lane in lanes.values() if lane.marks],
            ticks,
            snapshots,
            records,
            eof,
            self.events,
        )


def timeline(events: Sequence[EventRecord | TimelineEvent]) -> Timeline:
    return Drawing().add(events).timeline()


def _tick_step(duration: float) -> float:
    for step in (1, 5, 10, 30, 60, 300, 600, 1800, 3600, 7200, 21600):
        if duration / step <= 8:
            return float(step)
    return 86400.0


def _frange(start: float, stop: float, step: float) -> Iterable[float]:
    t = start
    while t <= stop:
        yield t
        t += step


# --- the transcript --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Line:
    start: float
    end: float | None
    kind: str
    text: str
    translation: str | None
    seq: int


def transcript(events: Iterable[EventRecord | TimelineEvent]) -> list[Line]:
    """Speech recognition, translation and subtitle results in stream-time order; partial results
    (``SteadyState`` false, sent again as a sentence grows) are left out, repeats shown once."""
    return Drawing().add(events).transcript()


# --- the overview's chart ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    label: str


CHART_HEIGHT = 120.0


def rate_bars(rates: Sequence[tuple[str, float]]) -> tuple[list[Bar], float]:
    """Bars for (label, notifications/s) in a ``WIDTH`` x ``CHART_HEIGHT`` box; and the scale top."""
    top = max([r for _, r in rates] + [1.0])
    width = WIDTH / max(len(rates), 1)
    bars = []
    for i, (label, rate) in enumerate(rates):
        h = rate / top * (CHART_HEIGHT - 4)
        bars.append(
            Bar(round(i * width + 1, 2), round(CHART_HEIGHT - h, 2), round(width - 2, 2), round(h, 2), label)
        )
    return bars, top
