"""The console's pages and the new API filters at scale: 1M events stored (bulk-inserted, not sent
through HTTP), on SQLite and on PostgreSQL, warm; p50/p95 of each request through the real app, a
deep cursor and a task of 10,000 events included. Then what the console's tables cost ingest:
``record_events`` in batches of 256 with and without the search rows and the outbox's task index.

    .venv/bin/python bench/console.py [--events 1000000] [--runs 20] [--store sqlite|postgres|both]

Writes bench/results/console.md.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import random
import sqlite3
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import msgspec
import orjson
from aiohttp import ClientSession, web
from aiohttp.test_utils import TestServer
from aiohttp.web_urldispatcher import PrefixedSubAppResource

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from receiver import decoder, events
from receiver.app import create_app
from receiver.events import Channel
from receiver.http.console.task import DRAWINGS
from receiver.settings import Settings
from receiver.stores import reads
from receiver.stores.postgres import PostgresStore
from receiver.stores.sqlite import SqliteStore
from receiver.stores.task_rows import TASK_COLUMN_COUNT, TASK_COLUMNS
from receiver.tasks import Task, TaskState

PG_ADMIN = os.environ.get("TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")
RESULTS = Path(__file__).parent / "results" / "console.md"
TASKS = 1000
BIG = 10_000  # events of task 0
SINK = "hook"
T0 = 1_764_000_000.0  # 2025-11-24: a month of events before NOW
NOW = T0 + 30 * 86400
RARE_EN = "xylophone"
RARE_CJK = "麒麟"

EN = ["welcome", "to", "the", "stream", "today", "we", "test", "new", "camera", "please", "keep", "chat",
      "friendly", "giveaway", "starts", "soon", "thank", "you"]  # fmt: skip
CJK = [
    "欢迎",
    "来到",
    "今晚",
    "直播",
    "测试",
    "相机",
    "聊天",
    "友好",
    "抽奖",
    "开始",
    "感谢",
    "观看",
    "朋友们",
]


def notification(kind: int, rng: random.Random, n: int, rare: bool = False) -> dict[str, Any]:
    """One notification of a realistic mix (its TaskId a placeholder filled per row)."""
    at = round(rng.uniform(0, 3600), 2)
    head = {"TaskId": "__TASK__", "SessionId": f"s-{n}", "SessionContext": ""}
    if kind < 40:
        suggestion = "block" if kind < 2 else "review" if kind < 6 else "pass"
        item = {
            "StartPtsTime": at,
            "EndPtsTime": at + 5,
            "Confidence": round(rng.uniform(50, 100), 1),
            "Suggestion": suggestion,
            "Label": rng.choice(["porn", "sexy", "normal", "guns", "flag"]),
            "Url": f"https://bucket.cos.example/snap/{n}.jpg",
        }
        review = {"Type": "ImagePorn", "ImagePornResultSet": [item]}
        return {"NotificationType": "AiReviewResult", **head, "AiReviewResultInfo": {"ResultSet": [review]}}
    words = " ".join(rng.choice(EN) for _ in range(8))
    zh = "".join(rng.choice(CJK) for _ in range(6))
    if rare:
        words, zh = words + " " + RARE_EN, zh + RARE_CJK
    if kind < 70:
        full = {
            "Text": words,
            "StartPtsTime": at,
            "EndPtsTime": at + 4,
            "Confidence": 95,
            "SteadyState": True,
        }
        info = {
            "ResultSet": [
                {"Type": "AsrFullTextRecognition", "AsrFullTextRecognitionResultSet": [full]},
                {"Type": "TransTextRecognition", "TransTextRecognitionResultSet": [{**full, "Trans": zh}]},
            ]
        }
        return {"NotificationType": "AiRecognitionResult", **head, "AiRecognitionResultInfo": info}
    if kind < 85:
        sub = {"Text": zh, "StartPTSTime": at, "EndPTSTime": at + 3, "Trans": words, "SteadyState": True}
        return {
            "NotificationType": "AiSmartSubtitleResult",
            **head,
            "AiSmartSubtitleResultInfo": {"SmartSubtitleResult": [sub]},
        }
    qc = {
        "Type": rng.choice(["Blur", "NoVoice", "Jitter"]),
        "QualityControlItems": [{"Confidence": 80, "StartTimeOffset": at, "EndTimeOffset": at + 6}],
    }
    return {
        "NotificationType": "AiQualityControlResult",
        **head,
        "AiQualityControlResultInfo": {"QualityControlResults": [qc]},
    }


def templates(count: int = 4000) -> list[tuple[str, str, list[Any], str]]:
    """(type, findings JSON, Findings, raw with a placeholder): normalized once each, reused per row."""
    rng = random.Random(7)
    out = []
    for n in range(count + 1):  # the last one has the rare words
        doc = notification(50, rng, n, rare=True) if n == count else notification(n % 100, rng, n)
        body = orjson.dumps(doc)
        data = decoder.unwrap(body)
        head = decoder.read_head(data)
        e = events.normalize(
            data,
            decoder.read_notification(data, head),
            channel=Channel.HTTP,
            received_at=T0,
            check=events.SKIPPED,
        )
        out.append((e.notification_type, msgspec.json.encode(e.findings).decode(), e.findings, body.decode()))
    return out


def task_ids() -> list[str]:
    return [f"1300000000-procedure-live-bench{t:05d}" for t in range(TASKS)]


def task_of(i: int, n: int) -> int:
    return 0 if i < BIG else 1 + (i - BIG) * (TASKS - 1) // max(1, n - BIG)


def rows(n: int) -> Iterator[tuple[tuple[Any, ...], tuple[Any, ...] | None, tuple[Any, ...]]]:
    """(events row, event_search row, deliveries row) for seq 1..n."""
    pool = templates()
    ids = task_ids()
    refs = [uuid.UUID(int=t).hex for t in range(TASKS)]
    step = (NOW - T0) / n
    for i in range(n):
        seq = i + 1
        # The rare words in one event of 50,000; the rest cycles through the templates.
        kind, findings_json, findings, raw = (
            pool[-1] if i % 50_000 == 7 else pool[(i * 7919) % (len(pool) - 1)]
        )
        t = task_of(i, n)
        at = T0 + i * step
        event = (
            seq,
            f"{seq:064x}",
            ids[t],
            refs[t],
            "task_id",
            kind,
            f"s-{seq}",
            "",
            "http",
            at,
            "valid",
            False,
            None,
            None,
            findings_json,
            raw.replace("__TASK__", ids[t]),
            "static:0",
            0,  # its TaskId is its task's: found by way of the task (migration 0014 / 0012)
        )
        search = reads.search_row(seq, kind, at, findings)
        state = "dead" if i % 200 == 3 else "pending" if i % 200 == 5 else "delivered"
        delivery = (
            seq,
            SINK,
            seq,
            ids[t],
            state,
            1,
            at,
            "answered 503" if state == "dead" else None,
            at,
            at,
            at if state == "delivered" else None,
        )
        yield event, search, delivery


EVENT_INSERT_COLUMNS = (
    "seq, event_id, task_id, task_ref, matched_by, notification_type, session_id, session_context, channel,"
    " received_at, verdict, late, err_code, err_message, findings, raw, sign_key, foreign_task_id"
)
DELIVERY_COLUMNS = (
    "id, sink, event_seq, task_key, state, attempts, next_attempt_at, last_error, created_at, updated_at,"
    " delivered_at"
)


def task_rows(n: int) -> list[tuple[Any, ...]]:
    ids = task_ids()
    counts = [0] * TASKS
    for i in range(n):
        counts[task_of(i, n)] += 1
    out = []
    for t in range(TASKS):
        state = "running" if t % 10 == 0 else "finished"
        labels = orjson.dumps({"room": str(t % 100), "team": "bench"}).decode()
        out.append(
            (
                uuid.UUID(int=t).hex,
                ids[t],
                f"session-{t}",
                f'{{"room":"r-{t}"}}',
                f"rtmp://live/{t}",
                labels,
                state,
                None,
                None,
                counts[t],
                0,
                T0,
                NOW,
                T0,
                NOW,
                None,
                None,
                "[]",  # checks (asking MPS): none
                None,
                None,
                None,
            )
        )
    return out


def quarantine_rows() -> list[tuple[Any, ...]]:
    body = b'{"NotificationType": "AiReviewResult", "TaskId": 5}'
    return [
        (
            "http",
            NOW - i,
            "invalid_notification",
            "TaskId: expected a string",
            "TaskId",
            body,
            "{}",
            "0" * 64,
            len(body),
        )
        for i in range(1000)
    ]


def counts_rows() -> list[tuple[Any, ...]]:
    minute = int(NOW // 60)
    return [
        (m, o, 1200 if o == "stored" else 3)
        for m in range(minute - 60, minute + 1)
        for o in ("stored", "duplicate", "invalid", "unauthorized")
    ]


ATTEMPTS = (
    "INSERT INTO delivery_attempts (delivery_id, attempt, at, outcome, error, status, latency_ms, snippet)"
    " SELECT id, 1, updated_at, 'dead', last_error, 503, 12.5, 'busy' FROM deliveries"
)


def reads_quarantine_insert() -> str:
    from receiver.stores.rows import QUARANTINE_INSERT

    return QUARANTINE_INSERT


def fill_sqlite(path: Path, n: int) -> None:
    con = sqlite3.connect(path, isolation_level=None)
    con.execute("PRAGMA journal_mode = WAL")
    con.execute("PRAGMA synchronous = OFF")
    con.execute("BEGIN")
    con.executemany(
        f"INSERT INTO tasks ({TASK_COLUMNS}) VALUES ({', '.join('?' * TASK_COLUMN_COUNT)})", task_rows(n)
    )
    chunk: list[Any] = []

    def flush() -> None:
        con.executemany(
            f"INSERT INTO events ({EVENT_INSERT_COLUMNS}) VALUES ({', '.join('?' * 18)})",
            [c[0] for c in chunk],
        )
        con.executemany(reads.SEARCH_INSERT, [c[1] for c in chunk if c[1] is not None])
        con.executemany(
            f"INSERT INTO deliveries ({DELIVERY_COLUMNS}) VALUES ({', '.join('?' * 11)})",
            [c[2] for c in chunk],
        )
        chunk.clear()

    for row in rows(n):
        chunk.append(row)
        if len(chunk) == 20_000:
            flush()
    flush()
    con.executemany(
        ATTEMPTS + " WHERE id = ?",
        [(i,) for i in range(4, n + 1, 200)],
    )
    con.executemany(reads.INGEST_COUNTS_ADD, counts_rows())
    con.executemany(
        reads_quarantine_insert(),
        quarantine_rows(),
    )
    con.execute("COMMIT")
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    con.close()


async def fill_postgres(url: str, n: int) -> None:
    con = await asyncpg.connect(url)
    try:
        await con.copy_records_to_table(
            "tasks", records=task_rows(n), columns=[c.strip() for c in TASK_COLUMNS.split(",")]
        )
        chunk: list[Any] = []

        async def flush() -> None:
            await con.copy_records_to_table(
                "events",
                records=[c[0] for c in chunk],
                columns=[c.strip() for c in EVENT_INSERT_COLUMNS.split(",")],
            )
            await con.copy_records_to_table(
                "event_search",
                records=[c[1] for c in chunk if c[1] is not None],
                columns=[
                    "seq",
                    "notification_type",
                    "received_at",
                    "kinds",
                    "labels",
                    "suggestions",
                    "confidence",
                    "text",
                ],
            )
            await con.copy_records_to_table(
                "deliveries",
                records=[c[2] for c in chunk],
                columns=[c.strip() for c in DELIVERY_COLUMNS.split(",")],
            )
            chunk.clear()

        for row in rows(n):
            chunk.append(row)
            if len(chunk) == 20_000:
                await flush()
        await flush()
        await con.execute("SELECT setval('events_seq_seq', $1)", n)
        await con.execute("SELECT setval('deliveries_id_seq', $1)", n)
        await con.execute(ATTEMPTS + " WHERE state = 'dead'")
        await con.executemany(
            "INSERT INTO ingest_counts (minute, outcome, n) VALUES ($1, $2, $3)", counts_rows()
        )
        await con.executemany(
            "INSERT INTO quarantine (channel, received_at, reason, detail, field, body, meta, body_sha256,"
            " body_size) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            quarantine_rows(),
        )
        await con.execute("VACUUM ANALYZE")
    finally:
        await con.close()


def requests(n: int) -> list[tuple[str, str]]:
    big = uuid.UUID(int=0).hex
    mid = uuid.UUID(int=TASKS // 2).hex
    deep = n - 1000 if n > 2000 else 0
    since = datetime.fromtimestamp(T0 + 10 * 86400, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    until = datetime.fromtimestamp(T0 + 10 * 86400 + 3600, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    tid = task_ids()[TASKS // 2]
    return [
        ("overview", "/console/"),
        ("overview (poll)", "/console/overview.json"),
        ("tasks", "/console/tasks"),
        ("tasks: state", "/console/tasks?state=running"),
        ("tasks: label", "/console/tasks?label=room%3D42"),
        ("tasks: search part of an id", "/console/tasks?q=bench00777"),
        ("task of 10k events", f"/console/tasks/{big}"),
        ("task of 10k events, deep page", f"/console/tasks/{big}?cursor={BIG - 100}"),
        ("task of 10k events, first view (cold)", f"/console/tasks/{big}?cold"),
        ("task of ~1k events", f"/console/tasks/{mid}"),
        ("events (newest)", "/console/events"),
        ("events: deep cursor", f"/console/events?order=asc&cursor={deep}"),
        ("events: type", "/console/events?type=AiQualityControlResult"),
        ("events: suggestion=block", "/console/events?suggestion=block"),
        ("events: kind + label", "/console/events?kind=ImagePorn&label=flag"),
        ("events: min_confidence=99", "/console/events?min_confidence=99.5"),
        ("events: time range", f"/console/events?since={since}&until={until}"),
        ("events: text, common", "/console/events?text=giveaway"),
        ("events: text, CJK 2 chars", "/console/events?text=%E7%9B%B4%E6%92%AD"),
        ("events: text, rare", f"/console/events?text={RARE_EN}"),
        ("events: text, rare CJK", "/console/events?text=%E9%BA%92%E9%BA%9F"),
        ("events: text, no match", "/console/events?text=zzzq"),
        ("event", f"/console/events/{n // 2}"),
        ("deliveries", "/console/deliveries"),
        ("deliveries: dead of a sink", f"/console/deliveries?sink={SINK}&state=dead"),
        ("deliveries: a task's", f"/console/deliveries?task_id={tid}"),
        ("delivery + attempts", "/console/deliveries/4"),
        ("redrive dry run (dead of a sink)", f"/console/deliveries/redrive?sink={SINK}"),
        ("quarantine", "/console/quarantine"),
        ("API events: text", f"/v1/events?text={RARE_CJK}"),
        ("API events: kind+suggestion", "/v1/events?kind=ImagePorn&suggestion=review"),
        ("API events: min_confidence", "/v1/events?min_confidence=99.5"),
        ("API events: label", "/v1/events?label=guns"),
        ("API events: since+until", f"/v1/events?since={since}&until={until}"),
        ("API events: newest first", "/v1/events?order=desc"),
        ("API events: deep cursor", f"/v1/events?cursor={deep}"),
        ("API events: a TaskId", f"/v1/events?task_id={tid}"),
        ("API events: a TaskId, newest first", f"/v1/events?task_id={tid}&order=desc"),
        ("API events: TaskId of 10k events, deep", f"/v1/events?task_id={task_ids()[0]}&cursor={BIG - 100}"),
        ("API deliveries: attempts", "/v1/deliveries/4/attempts"),
    ]


def pct(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def console_drawings(app: web.Application) -> Any:
    """The console's cache of drawn timelines, in whichever sub-application the console is."""
    for resource in app.router.resources():
        if isinstance(resource, PrefixedSubAppResource):
            sub = resource._app
            if DRAWINGS in sub:
                return sub[DRAWINGS]
            found = console_drawings(sub)
            if found is not None:
                return found
    return None


async def measure(store: Any, n: int, runs: int, url: str) -> list[tuple[str, float, float, int]]:
    settings = Settings.model_validate(
        {
            "store": {"url": url},
            "sinks": [{"name": SINK, "kind": "memory"}],
            "dispatch_in_serve": False,
            "maintenance": {"stall_after": 0, "retention_days": 0},
        }
    )
    app = create_app(settings, store=store, clock=lambda: NOW)
    drawings = console_drawings(app)
    server = TestServer(app)
    await server.start_server()
    out = []
    try:
        async with ClientSession() as http:
            for name, path in requests(n):
                times = []
                for i in range(runs + 2):  # two to warm up
                    if path.endswith("?cold"):
                        drawings.clear()  # as in a process that has not drawn this task yet
                    started = time.perf_counter()
                    async with http.get(server.make_url(path)) as r:
                        body = await r.read()
                        assert r.status == 200, (path, r.status, body[:300])
                    if i >= 2:
                        times.append((time.perf_counter() - started) * 1000)
                out.append((name, statistics.median(times), pct(times, 0.95), len(body)))
                print(f"  {name:40s} p50 {out[-1][1]:7.1f} ms  p95 {out[-1][2]:7.1f} ms", flush=True)
    finally:
        await server.close()
    return out


# --- what ingest pays -------------------------------------------------------------------------------


def ingest_batches(count: int) -> list[list[Any]]:
    rng = random.Random(11)
    out, batch = [], []
    for i in range(count):
        doc = notification(i % 100, rng, i)
        doc["TaskId"] = f"T-{i % 64}"
        body = orjson.dumps(doc)
        data = decoder.unwrap(body)
        head = decoder.read_head(data)
        e = events.normalize(
            data,
            decoder.read_notification(data, head),
            channel=Channel.HTTP,
            received_at=T0 + i,
            check=events.SKIPPED,
        )
        batch.append(e)
        if len(batch) == 256:
            out.append(batch)
            batch = []
    return out


async def ingest_cost(open_store: Any, drop: Any, count: int, rounds: int = 3) -> tuple[float, float]:
    """µs per event of record_events with the console's additions, and without them (the search rows
    not written, the indexes dropped); each on a fresh store, alternating, the best of ``rounds``."""
    batches = ingest_batches(count)
    best = {False: float("inf"), True: float("inf")}
    for _ in range(rounds):
        for without in (False, True):
            store = await open_store()
            original = reads.search_row
            try:
                if without:
                    await drop(store)
                    reads.search_row = lambda *a, **k: None
                for t in range(64):
                    task = Task(uuid.uuid4().hex, f"T-{t}", "", "", "", {}, TaskState.SUBMITTED, T0, T0)
                    await store.register_task(task)
                started = time.perf_counter()
                for b in batches:
                    await store.record_events(b, lambda e, t: [SINK])
                elapsed = time.perf_counter() - started
            finally:
                reads.search_row = original
                await store.aclose()
            best[without] = min(best[without], elapsed / (len(batches) * 256) * 1e6)
    return best[False], best[True]


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--store", choices=["sqlite", "postgres", "both"], default="both")
    parser.add_argument("--ingest-events", type=int, default=25_600)
    args = parser.parse_args()
    n = args.events
    report: dict[str, list[tuple[str, float, float, int]]] = {}
    costs: dict[str, tuple[float, float]] = {}
    loads: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="console-bench-") as tmp:
        if args.store in ("sqlite", "both"):
            path = Path(tmp) / "bench.db"
            s = await SqliteStore.open(path)
            await s.aclose()
            started = time.perf_counter()
            fill_sqlite(path, n)
            loads["SQLite"] = time.perf_counter() - started
            print(
                f"SQLite: {n:,} events loaded in {loads['SQLite']:.0f} s ({path.stat().st_size / 1e9:.2f} GB)"
            )
            store = await SqliteStore.open(path)
            try:
                report["SQLite"] = await measure(store, n, args.runs, f"sqlite:///{path}")
            finally:
                await store.aclose()
            path.unlink()

            async def open_sqlite() -> Any:
                return await SqliteStore.open(Path(tmp) / f"ingest-{uuid.uuid4().hex}.db")

            async def drop_sqlite(store: Any) -> None:
                await store._write_with(lambda w: w.con.execute("DROP INDEX deliveries_by_task"))

            costs["SQLite"] = await ingest_cost(open_sqlite, drop_sqlite, args.ingest_events)
        if args.store in ("postgres", "both"):
            admin = await asyncpg.connect(PG_ADMIN)
            name = f"console_bench_{uuid.uuid4().hex[:8]}"
            await admin.execute(f'CREATE DATABASE "{name}"')
            url = PG_ADMIN.rsplit("/", 1)[0] + "/" + name
            try:
                first = await PostgresStore.open(url)
                await first.aclose()
                started = time.perf_counter()
                await fill_postgres(url, n)
                loads["PostgreSQL"] = time.perf_counter() - started
                print(f"PostgreSQL: {n:,} events loaded in {loads['PostgreSQL']:.0f} s")
                pg = await PostgresStore.open(url)
                try:
                    report["PostgreSQL"] = await measure(pg, n, args.runs, url)
                finally:
                    await pg.aclose()
            finally:
                await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')

            async def open_pg() -> Any:
                db = f"console_ingest_{uuid.uuid4().hex[:8]}"
                await admin.execute(f'CREATE DATABASE "{db}"')
                opened.append(db)
                return await PostgresStore.open(PG_ADMIN.rsplit("/", 1)[0] + "/" + db)

            async def drop_pg(store: Any) -> None:
                await store._run(
                    lambda con: con.execute("DROP INDEX deliveries_by_task; DROP INDEX event_search_text")
                )

            opened: list[str] = []
            try:
                costs["PostgreSQL"] = await ingest_cost(open_pg, drop_pg, args.ingest_events)
            finally:
                for db in opened:
                    await admin.execute(f'DROP DATABASE "{db}" WITH (FORCE)')
                await admin.close()
    write_report(n, args.runs, report, costs, loads)


def write_report(
    n: int, runs: int, report: dict[str, Any], costs: dict[str, tuple[float, float]], loads: dict[str, float]
) -> None:
    stores = list(report)
    lines = [
        "# Console benchmark",
        "",
        f"Measured {datetime.now(UTC):%Y-%m-%d %H:%M} UTC on {platform.machine()}, {os.cpu_count()} cores,"
        f" Python {platform.python_version()}; `bench/console.py`.",
        f"{n:,} events bulk-inserted ({TASKS:,} tasks, one of {BIG:,} events; a mix of moderation, speech"
        " with translation, subtitles and quality control; one delivery each, 0.5% dead, 0.5% pending),",
        f"then each request {runs} times after two warm-up runs, one at a time, through the app (aiohttp, in"
        " process). Target: p95 <= 200 ms.",
        "",
        "| request | " + " | ".join(f"{s} p50 | {s} p95" for s in stores) + " |",
        "| --- | " + " | ".join("---: | ---:" for _ in stores) + " |",
    ]
    names = [name for name, *_ in report[stores[0]]]
    for i, name in enumerate(names):
        cells = []
        for s in stores:
            _, p50, p95, _ = report[s][i]
            cells.append(f"{p50:.1f} ms | {'**' if p95 > 200 else ''}{p95:.1f} ms{'**' if p95 > 200 else ''}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "Warm: this process has drawn the task before (a task's drawing is kept per process and brought up",
        "to date with the events since). The cold row clears that before each run: the first view of a",
        "task of 10,000 events in a process reads and draws all of them. A search (finding or text",
        "conditions) looks through at most 100,000 events a page, which bounds the rare and no-match rows.",
    ]
    lines += ["", "What the console's additions cost ingest (`record_events`, batches of 256, one sink):", ""]
    lines += ["| store | with them | without | cost per event |", "| --- | ---: | ---: | ---: |"]
    for s, (with_, without) in costs.items():
        share = (with_ / without - 1) * 100
        lines.append(
            f"| {s} | {with_:.1f} µs | {without:.1f} µs | {with_ - without:+.1f} µs ({share:+.0f}%) |"
        )
    lines += [
        "",
        "Load times (bulk, not measured above): " + ", ".join(f"{k} {v:.0f} s" for k, v in loads.items()),
        "",
    ]
    RESULTS.write_text("\n".join(lines))
    print(RESULTS.read_text())


if __name__ == "__main__":
    asyncio.run(main())
