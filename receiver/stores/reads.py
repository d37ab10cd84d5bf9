"""What both stores share for the console's reads: the search columns derived from findings, and the
SQL of the event, task and outbox filters, written once with the two dialects' few differences.

The documents stay text (PostgreSQL's ``jsonb`` refuses ``\\u0000``); what the filters need is
derived from the findings in Python, at ingest, into ``event_search``: the kinds, labels and
suggestions as ``|``-delimited sets, the highest confidence, and the recognized text lower-cased
(Python's ``str.lower``, the same for both stores, CJK untouched). A finding filter is then a
substring test on those columns, which is necessary for a match; the exact rule (one finding meets
every condition, as sink filters have it) is checked on the page's rows (``matches``).
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Final, Literal, TypeVar

import orjson

from receiver.documents import OWN_CHANNEL
from receiver.findings import Finding
from receiver.ports import Attempt, EventQuery, EventRecord, Page, TimelineEvent

Dialect = Literal["sqlite", "postgres"]
R = TypeVar("R")

# The results whose text is recognized speech or writing: what the free-text filter searches.
TEXT_KINDS: Final = frozenset(
    {
        "AsrWordsRecognition",
        "AsrFullTextRecognition",
        "OcrWordsRecognition",
        "OcrFullTextRecognition",
        "TransTextRecognition",
        "SmartSubtitle",
    }
)

SEARCH_INSERT: Final = (
    "INSERT INTO event_search (seq, notification_type, received_at, kinds, labels, suggestions,"
    " confidence, text) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)


def _clean(value: str) -> str:
    """NUL cannot be stored in a PostgreSQL text: both stores keep U+FFFD in its place."""
    return value.replace("\x00", "\ufffd")


def _set(values: Iterable[str | None]) -> str:
    found = sorted({_clean(v) for v in values if v})
    return "|" + "|".join(found) + "|" if found else ""


def recognized_text(findings: Iterable[Finding]) -> str:
    """The recognized text of the findings, lower-cased, one line per piece."""
    parts: list[str] = []
    for f in findings:
        if f.kind in TEXT_KINDS:
            parts.extend(t for t in (f.text, f.translation) if t)
    return _clean("\n".join(parts).lower())


def search_row(
    seq: int, notification_type: str, received_at: float, findings: Sequence[Finding]
) -> tuple[Any, ...] | None:
    """The ``SEARCH_INSERT`` arguments for one stored event, or None if it has no findings."""
    if not findings:
        return None
    confidences = [f.confidence for f in findings if f.confidence is not None]
    return (
        seq,
        notification_type,
        received_at,
        _set(f.kind for f in findings),
        _set(f.label for f in findings),
        _set(f.suggestion for f in findings),
        max(confidences) if confidences else None,
        recognized_text(findings),
    )


BACKFILL_UPTO: Final = "SELECT upto FROM search_backfill"
BACKFILL_EVENTS: Final = (
    "SELECT seq, notification_type, received_at, findings FROM events WHERE seq <= ? AND seq > ? ORDER BY seq"
)
BACKFILL_INSERT: Final = SEARCH_INSERT + " ON CONFLICT (seq) DO NOTHING"
BACKFILL_DONE: Final = "UPDATE search_backfill SET upto = ?"


def backfill_rows(found: Iterable[Sequence[Any]]) -> list[tuple[Any, ...]]:
    """The search rows of events stored before there were any (``BACKFILL_EVENTS`` rows)."""
    out = []
    for seq, kind, received_at, findings in found:
        row = search_row(seq, kind, received_at, [Finding(**f) for f in orjson.loads(findings)])
        if row is not None:
            out.append(row)
    return out


def _finding_ok(q: EventQuery, f: dict[str, Any]) -> bool:
    if q.kind is not None and f.get("kind") != q.kind:
        return False
    if q.label is not None and f.get("label") != q.label:
        return False
    if q.suggestion is not None and f.get("suggestion") != q.suggestion:
        return False
    if q.min_confidence is not None:
        c = f.get("confidence")
        if c is None or c < q.min_confidence:
            return False
    return True


def matches(q: EventQuery, record: EventRecord) -> bool:
    """The exact rule for a row the SQL found: one finding meets every finding condition."""
    if q.kind is None and q.label is None and q.suggestion is None and q.min_confidence is None:
        return True
    return any(_finding_ok(q, f) for f in record.findings)


def _contains(dialect: Dialect, column: str) -> str:
    return f"instr({column}, ?) > 0" if dialect == "sqlite" else f"strpos({column}, ?) > 0"


def _like_escaped(value: str) -> str:
    return "%" + value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def unanswerable(*values: str | None) -> bool:
    """A filter value holding NUL: no stored value can equal it (PostgreSQL cannot store one), so
    both stores answer nothing rather than one of them an error."""
    return any(v is not None and "\x00" in v for v in values)


# Seqs one page of a search (finding or text conditions) looks through at most: a rare word must
# not cost a scan of the whole table per page. Past the window the page ends short, its ``next``
# where the window ended, and the following page goes on from there.
SEARCH_WINDOW = 100_000
SEARCH_TOP: Final = "SELECT coalesce(max(seq), 0) FROM event_search"


def event_page(
    q: EventQuery, found: Sequence[EventRecord], window: tuple[int, int] | None, top: int
) -> Page[EventRecord]:
    """A page of events from what ``event_statement`` found (one row more than the limit, if
    there are more): the rows the finding conditions truly meet, and where the next page starts."""
    page = found[: q.limit]
    items = [r for r in page if matches(q, r)]
    if len(found) > q.limit:
        return Page(items, str(page[-1].seq))
    return Page(items, None if window is None else window_next(q, window, top))


def search_window(q: EventQuery, top: int) -> tuple[int, int] | None:
    """The seqs (inclusive) this page of a search looks through, or None if none are left; ``top``
    is the highest seq ``event_search`` holds."""
    if q.descending:
        hi = min(q.after - 1, top) if q.after else top
        lo = max(1, hi - SEARCH_WINDOW + 1)
    else:
        lo, hi = q.after + 1, min(top, q.after + SEARCH_WINDOW)
    return None if hi < lo else (lo, hi)


def window_next(q: EventQuery, window: tuple[int, int], top: int) -> str | None:
    """Where the following page starts once a window is looked through without filling the page."""
    lo, hi = window
    if q.descending:
        return str(lo) if lo > 1 else None
    return str(hi) if hi < top else None


# Both stores index events by TaskId only where their task does not tell it (SQLite migration 0014,
# PostgreSQL 0012): a page by TaskId is read in two parts, each in seq order from its own index,
# and merged. The first part's condition is the partial index's own, word for word.
TASK_ID_PARTS: Final = (
    # the orphans, the events whose TaskId is not their task's, and the rows older than the index
    "e.task_id = ? AND (e.task_ref IS NULL OR e.foreign_task_id IS DISTINCT FROM 0)",
    # the events of the task with this TaskId that carry it (from the index by task)
    "e.task_ref = (SELECT id FROM tasks WHERE task_id = ?) AND e.task_id = ? AND e.foreign_task_id = 0",
)


def event_statements(
    q: EventQuery, columns: str, dialect: Dialect, window: tuple[int, int] | None = None
) -> list[tuple[str, list[Any]]]:
    """The SELECTs for a page (each ``LIMIT ?`` last, its argument not included): one, or with a
    TaskId one per part of ``TASK_ID_PARTS``, to be merged (``merge_pages``)."""
    if q.task_id is None:
        return [event_statement(q, columns, dialect, window)]
    return [
        event_statement(q, columns, dialect, window, task_id=(part, [q.task_id] * part.count("?")))
        for part in TASK_ID_PARTS
    ]


def merge_pages(q: EventQuery, parts: Sequence[Sequence[R]], seq: Callable[[R], int], n: int) -> list[R]:
    """The first ``n`` rows of the parts of one page, each part in the page's order, in that order."""
    if len(parts) == 1:
        return list(parts[0][:n])
    merged = heapq.merge(*parts, key=seq, reverse=q.descending)
    return list(itertools.islice(merged, n))


def event_statement(
    q: EventQuery,
    columns: str,
    dialect: Dialect,
    window: tuple[int, int] | None = None,
    task_id: tuple[str, list[Any]] | None = None,
) -> tuple[str, list[Any]]:
    """The SELECT (``?`` placeholders; ``LIMIT ?`` last, its argument not included) for a page;
    ``task_id``: the clause and arguments that stand for the TaskId condition, if not the plain one."""
    order = "DESC" if q.descending else "ASC"
    searching = q.searches
    # With finding conditions the narrow event_search table leads, and events are joined by seq.
    table = "event_search s JOIN events e ON e.seq = s.seq" if searching else "events e"
    lead = "s" if searching else "e"
    clauses: list[str] = []
    args: list[Any] = []
    if q.descending:
        if q.after:
            clauses.append(f"{lead}.seq < ?")
            args.append(q.after)
    else:
        clauses.append(f"{lead}.seq > ?")
        args.append(q.after)
    if task_id is not None:
        clauses.append(task_id[0])
        args.extend(task_id[1])
    # With a task given, its index leads: unary + keeps SQLite off the far wider index by type.
    by_type = "+" if dialect == "sqlite" and (q.task_id or q.task_ref) else ""
    for clause, value in (
        ("e.task_id = ?", q.task_id if task_id is None else None),
        ("e.task_ref = ?", q.task_ref),
        (f"{by_type}{lead}.notification_type = ?", q.notification_type),
        (f"{lead}.received_at >= ?", q.since),
        (f"{lead}.received_at < ?", q.until),
    ):
        if value is not None:
            clauses.append(clause)
            args.append(value)
    if q.orphan is not None:
        clauses.append(
            f"e.task_ref IS NULL AND e.channel <> '{OWN_CHANNEL}'" if q.orphan else "e.task_ref IS NOT NULL"
        )
    if window is not None:
        clauses.append("s.seq BETWEEN ? AND ?")
        args.extend(window)
    for column, value in (("kinds", q.kind), ("labels", q.label), ("suggestions", q.suggestion)):
        if value is not None:
            clauses.append(_contains(dialect, f"s.{column}"))
            args.append(f"|{_clean(value)}|")
    if q.min_confidence is not None:
        clauses.append("s.confidence >= ?")
        args.append(q.min_confidence)
    if q.text is not None:
        needle = _clean(q.text.lower())
        if dialect == "postgres" and len(needle) >= 3:
            # LIKE, and the partial index's own condition, so that the trigram index can answer it.
            # (Two characters make no trigram: the index would be read whole, slower than a scan.)
            clauses.append("s.text LIKE ? ESCAPE '\\' AND s.text <> ''")
            args.append(_like_escaped(needle))
        elif dialect == "postgres":
            clauses.append("strpos(s.text, ?) > 0")
            args.append(needle)
        else:
            clauses.append("instr(s.text, ?) > 0")
            args.append(needle)
    cols = ", ".join(f"e.{c.strip()}" for c in columns.split(","))
    where = " AND ".join(clauses) or "1 = 1"
    return f"SELECT {cols} FROM {table} WHERE {where} ORDER BY {lead}.seq {order} LIMIT ?", args


# A task's events in order, from the index by task, their payloads left in the store.
TIMELINE: Final = (
    "SELECT seq, notification_type, err_code, err_message, findings FROM events"
    " WHERE task_ref = ? AND seq > ? ORDER BY seq LIMIT ?"
)


def timeline_event(row: Sequence[Any]) -> TimelineEvent:
    return TimelineEvent(row[0], row[1], row[2], row[3], orjson.loads(row[4]))


def label_needle(key: str, value: str) -> str:
    """The label as it reads inside the stored labels (orjson, no spaces): ``"key":"value"``.

    Inside the JSON text of the labels this can only be a member: a quote inside a key or value is
    escaped, so the needle's quotes meet only the real ones."""
    return orjson.dumps(key).decode() + ":" + orjson.dumps(value).decode()


def task_statement(
    columns: str,
    dialect: Dialect,
    *,
    state: str | None,
    after: int,
    label: tuple[str, str] | None,
    search: str | None,
    newest_first: bool,
) -> tuple[str, list[Any]]:
    """The SELECT of a page of tasks (``rowid`` first, then ``columns``; ``LIMIT ?`` last)."""
    clauses: list[str] = []
    args: list[Any] = []
    if newest_first:
        if after:
            clauses.append("rowid < ?")
            args.append(after)
    else:
        clauses.append("rowid > ?")
        args.append(after)
    if state is not None:
        clauses.append("state = ?")
        args.append(state)
    if label is not None:
        clauses.append(_contains(dialect, "labels"))
        args.append(label_needle(*label))
    if search is not None:
        parts = " OR ".join(
            ["task_id = ?", "id = ?"]
            + [_contains(dialect, c) for c in ("task_id", "session_id", "session_context")]
        )
        clauses.append(f"({parts})")
        args.extend([search] * 5)
    where = " AND ".join(clauses) or "1 = 1"
    order = "DESC" if newest_first else "ASC"
    return f"SELECT rowid, {columns} FROM tasks WHERE {where} ORDER BY rowid {order} LIMIT ?", args


# --- the outbox ------------------------------------------------------------------------------------

ATTEMPT_INSERT: Final = (
    "INSERT INTO delivery_attempts (delivery_id, attempt, at, outcome, error, status, latency_ms, snippet)"
    " SELECT ?, ?, ?, ?, ?, ?, ?, ? WHERE EXISTS (SELECT 1 FROM deliveries WHERE id = ?)"
)
ATTEMPTS_OF: Final = (
    "SELECT delivery_id, attempt, at, outcome, error, status, latency_ms, snippet FROM delivery_attempts"
    " WHERE delivery_id = ? ORDER BY id"
)
# The attempt that delivered, kept on its delivery rather than as a row of delivery_attempts.
DELIVERED_ATTEMPT: Final = (
    "SELECT id, attempts, delivered_at, 'delivered', NULL, last_status, last_latency_ms, last_snippet"
    " FROM deliveries WHERE id = ? AND state = 'delivered'"
)
# Before a delivered delivery is redriven, its delivered attempt becomes a row of its history.
KEEP_DELIVERED: Final = (
    "INSERT INTO delivery_attempts (delivery_id, attempt, at, outcome, error, status, latency_ms, snippet)"
    " SELECT d.id, d.attempts, d.delivered_at, 'delivered', NULL, d.last_status, d.last_latency_ms,"
    " d.last_snippet FROM deliveries d WHERE d.id = ? AND d.state = 'delivered' AND NOT EXISTS ("
    "SELECT 1 FROM delivery_attempts a WHERE a.delivery_id = d.id AND a.attempt = d.attempts"
    " AND a.at = d.delivered_at AND a.outcome = 'delivered')"
)
# Each from one index: the pending ones (and the first in line) from the partial index of the due,
# the dead from (sink, state, id).
SINK_PENDING: Final = "SELECT count(*), min(id) FROM deliveries WHERE sink = ? AND state = 'pending'"
SINK_DEAD: Final = "SELECT count(*) FROM deliveries WHERE sink = ? AND state = 'dead'"
CREATED_AT: Final = "SELECT created_at FROM deliveries WHERE id = ?"
TASK_DELIVERY_COUNTS: Final = (
    "SELECT sink, state, count(*) FROM deliveries WHERE task_key = ?"
    " GROUP BY sink, state ORDER BY sink, state"
)

INGEST_COUNTS_ADD: Final = (
    "INSERT INTO ingest_counts (minute, outcome, n) VALUES (?, ?, ?)"
    " ON CONFLICT (minute, outcome) DO UPDATE SET n = ingest_counts.n + excluded.n"
)
INGEST_COUNTS_SINCE: Final = (
    "SELECT minute, outcome, n FROM ingest_counts WHERE minute >= ? ORDER BY minute, outcome"
)
INGEST_COUNTS_PURGE: Final = "DELETE FROM ingest_counts WHERE minute < ?"
QUARANTINE_COUNT: Final = "SELECT count(*) FROM quarantine"


def attempt_rows(settlements: Sequence[Any]) -> list[tuple[Any, ...]]:
    """The ``ATTEMPT_INSERT`` arguments of a batch of settlements (``ports.Settlement``): all but
    the deliveries, whose attempt their delivery row keeps (``DELIVERED_ATTEMPT``)."""
    outcome = {"pending": "failed", "dead": "dead"}
    return [
        (
            x.id,
            x.attempts,
            x.at,
            outcome.get(x.state, x.state),
            x.error,
            x.status,
            x.latency_ms,
            x.snippet,
            x.id,
        )
        for x in settlements
        if x.state != "delivered"
    ]


def history(attempts: Sequence[Attempt], delivered: Sequence[Any] | None) -> list[Attempt]:
    """A delivery's attempts: its ``ATTEMPTS_OF`` rows, then the one that delivered it
    (``DELIVERED_ATTEMPT``), unless a row already holds it (stored so before it was kept apart)."""
    if delivered is None:
        return list(attempts)
    last = Attempt(*delivered)
    if any(a.outcome == "delivered" and (a.attempt, a.at) == (last.attempt, last.at) for a in attempts):
        return list(attempts)
    return [*attempts, last]
