"""Draw the HTTP ingest and sink tables as bars: bench/results/bench.png (quick runs: quick/bench.png),
from the JSON the benchmarks write beside their Markdown. Bars are read faster than figures.

    .venv/bin/python bench/chart.py
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")
import matplotlib.pyplot as plt

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import RESULTS

HTTP_LABELS = {
    "bare": "bare aiohttp handler",
    "full": "receiver, SQLite FULL",
    "normal": "receiver, SQLite NORMAL",
    "pg": "receiver, PostgreSQL",
    "fastapi": "FastAPI + SQLAlchemy\n(tutorial style)",
    "workers1": "receiver --workers 1\n(both cores)",
    "workers2": "receiver --workers 2\n(both cores)",
}
SINK_LABELS = {
    "none": "no sinks",
    "log_jsonl": "log + jsonl",
    "three": "log + jsonl + http",
    "three_dispatch": "log + jsonl + http,\ndispatch on core 1",
    "three_workers": "log + jsonl + http,\n--workers 2",
    "shipped": "shipped config\n(log sink), soak",
}
OURS_COLOR, OTHER_COLOR, BASE_COLOR = "#2b6cb0", "#a0aec0", "#2f855a"


def load(name: str) -> dict[str, Any] | None:
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def color(key: str) -> str:
    return BASE_COLOR if key in ("bare", "none") else OTHER_COLOR if key == "fastapi" else OURS_COLOR


def bars(ax: Any, labels: list[str], values: list[float], colors: list[str], notes: list[str]) -> None:
    y = range(len(labels))
    ax.barh(list(y), values, color=colors)
    ax.set_yticks(list(y), labels, fontsize=9)
    ax.invert_yaxis()
    top = max(values, default=1) or 1
    for i, (v, note) in enumerate(zip(values, notes, strict=True)):
        ax.text(v + top * 0.01, i, note, va="center", fontsize=8.5)
    ax.set_xlim(0, top * 1.5)
    ax.grid(axis="x", alpha=0.3)
    ax.spines[["top", "right"]].set_visible(False)


def main() -> int:
    http, sinks = load("ingest-http"), load("sinks")
    if http is None and sinks is None:
        print(f"chart: no results under {RESULTS}", file=sys.stderr)
        return 1
    panels = (2 if http else 0) + (1 if sinks else 0)
    fig, axes = plt.subplots(panels, 1, figsize=(10, 3.2 * panels + 0.8), squeeze=False)
    ax_iter = iter(axes[:, 0])
    quick = (http or sinks or {}).get("quick")
    when = (http or sinks or {}).get("measured", "")
    if http:
        rows = http["rows"]
        labels = [HTTP_LABELS.get(r["key"], r["key"]) for r in rows]
        colors = [color(r["key"]) for r in rows]
        ax = next(ax_iter)
        notes = [f"{r['rps']:,.0f}/s  {r['vs_bare']:.2f}x  p99 {r['p99_ms']:.1f} ms" for r in rows]
        bars(ax, labels, [r["rps"] for r in rows], colors, notes)
        ax.set_title(
            "HTTP ingest: requests/s (64 connections; one-process rows pinned to one core)", fontsize=10
        )
        ax.xaxis.set_major_formatter(matplotlib.ticker.StrMethodFormatter("{x:,.0f}"))
        ax = next(ax_iter)
        bars(ax, labels, [r["cpu_us"] for r in rows], colors, [f"{r['cpu_us']:,.0f} µs" for r in rows])
        ax.set_title(
            "HTTP ingest: CPU µs per notification (every server process; lower is better)", fontsize=10
        )
    if sinks:
        rows = sinks["rows"]
        ax = next(ax_iter)
        labels = [SINK_LABELS.get(r["key"], r["key"]) for r in rows]
        values = [r["vs_none"] or 0.0 for r in rows]
        notes = []
        for r in rows:
            state = {None: "", True: "  backlog bounded", False: "  backlog GROWING"}[r["bounded"]]
            oldest = f", oldest {r['end_oldest_s']:.1f} s" if r.get("end_oldest_s") is not None else ""
            notes.append(f"{r['vs_none']:.2f}x  {r['cpu_us']:,.0f} µs{state}{oldest}")
        bars(ax, labels, values, [color(r["key"]) for r in rows], notes)
        ax.axvline(0.8, color="#c53030", linestyle="--", linewidth=1)
        ax.text(0.8, -0.45, " 0.8x target", color="#c53030", fontsize=8, va="bottom")
        lat = sinks.get("latency")
        title = "Ingest with sinks: requests/s against no sinks (closed loop, one core unless said)"
        if lat:
            void = " (void: send lag)" if lat["void"] else ""
            title += f"\ningest-to-sink p99, open loop at {lat['rate']:,.0f}/s: {lat['p99_ms']:,.0f} ms{void}"
            if batched := sinks.get("latency_batched"):
                void = " (void: send lag)" if batched["void"] else ""
                title += f"; batched (64, 10 ms): {batched['p99_ms']:,.0f} ms{void}"
        ax.set_title(title, fontsize=10)
    head = f"receiver benchmarks, {when}" + ("  QUICK RUN (noisy smoke test)" if quick else "")
    fig.suptitle(head, fontsize=11, color="#c53030" if quick else "black")
    fig.tight_layout()
    out = RESULTS / "bench.png"
    fig.savefig(out, dpi=110)
    print(f"chart: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
