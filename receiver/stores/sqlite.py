"""``SqliteStore``: the embedded default store, one SQLite file in WAL mode.

All writes run on one dedicated thread with one connection (SQLite has one writer anyway), each
``record_events`` batch in one ``BEGIN IMMEDIATE`` transaction; reads use a second connection on
their own thread, which WAL lets run beside the writer.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Literal, TypeVar

import orjson

from receiver import tasks
from receiver.errors import ConflictError, StoreUnavailableError
from receiver.events import Event
from receiver.ports import EventQuery, EventRecord, Page, Recorded
from receiver.tasks import MatchedBy, Task, TaskState

R = TypeVar("R")

_TASK_COLUMNS = (
    "id, task_id, session_id, session_context, url, labels, state, err_code, err_message, event_count,"
    " late_count, created_at, updated_at, first_event_at, last_event_at, ended_at"
)
_EVENT_COLUMNS = (
    "seq, event_id, task_id, task_ref, matched_by, notification_type, session_id, session_context,"
    " channel, received_at, verdict, late, duplicates, err_code, err_message, findings, raw"
)
_INSERT_EVENT = (
    "INSERT INTO events (event_id, task_id, task_ref, matched_by, notification_type, session_id,"
    " session_context, channel, received_at, verdict, late, err_code, err_message, findings, raw)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_UPDATE_TASK = (
    "UPDATE tasks SET task_id = ?, state = ?, err_code = ?, err_message = ?, event_count = ?,"
    " late_count = ?, updated_at = ?, first_event_at = ?, last_event_at = ?, ended_at = ? WHERE id = ?"
)


def _task(row: Sequence[Any]) -> Task:
    return Task(
        id=row[0],
        task_id=row[1],
        session_id=row[2],
        session_context=row[3],
        url=row[4],
        labels=orjson.loads(row[5]),
        state=TaskState(row[6]),
        err_code=row[7],
        err_message=row[8],
        event_count=row[9],
        late_count=row[10],
        created_at=row[11],
        updated_at=row[12],
        first_event_at=row[13],
        last_event_at=row[14],
        ended_at=row[15],
    )


def _event_record(row: Sequence[Any]) -> EventRecord:
    return EventRecord(
        seq=row[0],
        event_id=row[1],
        task_id=row[2],
        task_ref=row[3],
        matched_by=MatchedBy(row[4]) if row[4] else None,
        notification_type=row[5],
        session_id=row[6],
        session_context=row[7],
        channel=row[8],
        received_at=row[9],
        verdict=row[10],
        late=bool(row[11]),
        duplicates=row[12],
        err_code=row[13],
        err_message=row[14],
        findings=orjson.loads(row[15]),
        raw=orjson.loads(row[16]),
    )


def _update_task(con: sqlite3.Connection, t: Task) -> None:
    con.execute(
        _UPDATE_TASK,
        (
            t.task_id,
            t.state.value,
            t.err_code,
            t.err_message,
            t.event_count,
            t.late_count,
            t.updated_at,
            t.first_event_at,
            t.last_event_at,
            t.ended_at,
            t.id,
        ),
    )


@dataclass(frozen=True, slots=True)
class _Orphan:
    """The columns of a stored orphan event that the task rules read."""

    seq: int
    task_id: str
    session_context: str
    notification_type: str
    received_at: float
    err_code: int | None
    err_message: str | None


def migrate(con: sqlite3.Connection) -> int:
    """Apply the numbered ``migrations/sqlite/*.sql`` files newer than ``PRAGMA user_version``."""
    current = con.execute("PRAGMA user_version").fetchone()[0]
    folder = resources.files("receiver.stores") / "migrations" / "sqlite"
    scripts = sorted((p for p in folder.iterdir() if p.name.endswith(".sql")), key=lambda p: p.name)
    for script in scripts:
        version = int(script.name.split("_", 1)[0])
        if version <= current:
            continue
        # executescript commits first; the version bump sits in the script's own transaction.
        con.executescript(f"BEGIN;\n{script.read_text()}\nPRAGMA user_version = {version};\nCOMMIT;")
        current = version
    return int(current)


class SqliteStore:
    """The ``Store`` port on one SQLite file."""

    def __init__(
        self,
        path: Path,
        *,
        synchronous: Literal["FULL", "NORMAL"] = "FULL",
        busy_timeout_ms: int = 5000,
    ) -> None:
        self.path = path
        self._synchronous = synchronous
        self._busy_timeout_ms = busy_timeout_ms
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="sqlite-writer")
        self._reader = ThreadPoolExecutor(1, thread_name_prefix="sqlite-reader")
        self._wcon: sqlite3.Connection | None = None
        self._rcon: sqlite3.Connection | None = None

    # --- lifecycle ----------------------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        con = sqlite3.connect(
            self.path,
            isolation_level=None,  # we issue BEGIN/COMMIT ourselves
            check_same_thread=False,
            timeout=self._busy_timeout_ms / 1000,
        )
        con.execute("PRAGMA journal_mode = WAL")
        # FULL: a commit is on disk before we answer 200, even across a power cut.
        con.execute(f"PRAGMA synchronous = {self._synchronous}")
        con.execute("PRAGMA foreign_keys = ON")
        return con

    def _open_writer(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._wcon = self._connect()
        migrate(self._wcon)

    def _open_reader(self) -> None:
        self._rcon = self._connect()
        self._rcon.execute("PRAGMA query_only = ON")

    @classmethod
    async def open(
        cls,
        path: Path,
        *,
        synchronous: Literal["FULL", "NORMAL"] = "FULL",
        busy_timeout_ms: int = 5000,
    ) -> SqliteStore:
        store = cls(path, synchronous=synchronous, busy_timeout_ms=busy_timeout_ms)
        try:
            await store._write(store._open_writer)
            await store._read(store._open_reader)
        except BaseException:
            await store.aclose()
            raise
        return store

    async def aclose(self) -> None:
        def close(con: sqlite3.Connection | None) -> None:
            if con is not None:
                con.close()

        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._writer, close, self._wcon)
        await loop.run_in_executor(self._reader, close, self._rcon)
        self._wcon = self._rcon = None
        self._writer.shutdown(wait=True)
        self._reader.shutdown(wait=True)

    async def _write(self, fn: Callable[[], R]) -> R:
        return await asyncio.get_running_loop().run_in_executor(self._writer, fn)

    async def _read(self, fn: Callable[[], R]) -> R:
        return await asyncio.get_running_loop().run_in_executor(self._reader, fn)

    def _transaction(self, body: Callable[[sqlite3.Connection], R]) -> R:
        """Run ``body`` in one ``BEGIN IMMEDIATE`` transaction on the writer connection."""
        con = self._wcon
        if con is None:
            raise StoreUnavailableError("the store is closed")
        try:
            con.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise StoreUnavailableError(f"sqlite: {exc}") from exc
        try:
            result = body(con)
            con.execute("COMMIT")
        except BaseException as exc:
            if con.in_transaction:
                con.execute("ROLLBACK")
            if isinstance(exc, sqlite3.OperationalError):
                raise StoreUnavailableError(f"sqlite: {exc}") from exc
            raise
        return result

    # --- ingest ---------------------------------------------------------------------------------

    async def record_events(self, events: Sequence[Event]) -> list[Recorded]:
        return await self._write(lambda: self._transaction(lambda con: [_record(con, e) for e in events]))

    # --- tasks ----------------------------------------------------------------------------------

    async def register_task(self, task: Task) -> tuple[Task, int]:
        return await self._write(lambda: self._transaction(lambda con: _register(con, task)))

    async def get_task(self, task_id: str) -> Task | None:
        def run() -> Task | None:
            assert self._rcon is not None
            row = self._rcon.execute(
                f"SELECT {_TASK_COLUMNS} FROM tasks WHERE task_id = ? UNION ALL"
                f" SELECT {_TASK_COLUMNS} FROM tasks WHERE id = ? LIMIT 1",
                (task_id, task_id),
            ).fetchone()
            return _task(row) if row else None

        return await self._read_safely(run)

    async def list_tasks(self, *, state: TaskState | None, after: str | None, limit: int) -> Page[Task]:
        cursor = int(after) if after else 0

        def run() -> Page[Task]:
            assert self._rcon is not None
            sql = f"SELECT rowid, {_TASK_COLUMNS} FROM tasks WHERE rowid > ?"
            args: list[Any] = [cursor]
            if state is not None:
                sql += " AND state = ?"
                args.append(state.value)
            sql += " ORDER BY rowid LIMIT ?"
            args.append(limit + 1)
            rows = self._rcon.execute(sql, args).fetchall()
            more = len(rows) > limit
            rows = rows[:limit]
            return Page([_task(r[1:]) for r in rows], str(rows[-1][0]) if more else None)

        return await self._read_safely(run)

    async def list_events(self, query: EventQuery) -> Page[EventRecord]:
        def run() -> Page[EventRecord]:
            assert self._rcon is not None
            sql = f"SELECT {_EVENT_COLUMNS} FROM events WHERE seq > ?"
            args: list[Any] = [query.after]
            for column, value in (
                ("task_id", query.task_id),
                ("task_ref", query.task_ref),
                ("notification_type", query.notification_type),
            ):
                if value is not None:
                    sql += f" AND {column} = ?"
                    args.append(value)
            if query.since is not None:
                sql += " AND received_at >= ?"
                args.append(query.since)
            if query.orphan is not None:
                sql += " AND task_ref IS NULL" if query.orphan else " AND task_ref IS NOT NULL"
            sql += " ORDER BY seq LIMIT ?"
            args.append(query.limit + 1)
            rows = self._rcon.execute(sql, args).fetchall()
            more = len(rows) > query.limit
            items = [_event_record(r) for r in rows[: query.limit]]
            return Page(items, str(items[-1].seq) if more else None)

        return await self._read_safely(run)

    async def _read_safely(self, fn: Callable[[], R]) -> R:
        if self._rcon is None:
            raise StoreUnavailableError("the store is closed")
        try:
            return await self._read(fn)
        except sqlite3.Error as exc:
            raise StoreUnavailableError(f"sqlite: {exc}") from exc

    async def ping(self) -> None:
        # Readiness means "can take a write": take the write lock and let it go.
        await self._write(lambda: self._transaction(lambda con: None))

    async def count_events(self) -> int:
        def run() -> int:
            assert self._rcon is not None
            return int(self._rcon.execute("SELECT count(*) FROM events").fetchone()[0])

        return await self._read_safely(run)


# --- the transaction bodies (writer thread) -----------------------------------------------------


def _count_duplicate(con: sqlite3.Connection, e: Event, existing: Sequence[Any]) -> Recorded:
    seq, task_ref, matched_by, late = existing
    con.execute(
        "UPDATE events SET duplicates = duplicates + 1, last_duplicate_at = ? WHERE seq = ?",
        (e.received_at, seq),
    )
    task = _load_task(con, "id", task_ref) if task_ref else None
    return Recorded(e.event_id, seq, True, task, MatchedBy(matched_by) if matched_by else None, bool(late))


def _record(con: sqlite3.Connection, e: Event) -> Recorded:
    existing = con.execute(
        "SELECT seq, task_ref, matched_by, late FROM events WHERE event_id = ?", (e.event_id,)
    ).fetchone()
    if existing is not None:
        return _count_duplicate(con, e, existing)

    by_context: list[Task] = []
    if e.session_context:
        by_context = [
            _task(r)
            for r in con.execute(
                f"SELECT {_TASK_COLUMNS} FROM tasks WHERE session_context = ? LIMIT 16",
                (e.session_context,),
            )
        ]
    by_task_id = None if len(by_context) == 1 else _load_task(con, "task_id", e.task_id)
    found = tasks.match(e, by_context, by_task_id)

    task: Task | None = None
    matched_by: MatchedBy | None = None
    late = False
    if found is not None:
        matched, matched_by = found
        transition = tasks.apply(matched, e)
        task, late = transition.task, transition.late
        _update_task(con, task)

    cur = con.execute(
        _INSERT_EVENT,
        (
            e.event_id,
            e.task_id,
            task.id if task else None,
            matched_by.value if matched_by else None,
            e.notification_type,
            e.session_id,
            e.session_context,
            e.channel.value,
            e.received_at,
            e.verdict.value,
            late,
            e.err_code,
            e.err_message,
            orjson.dumps(e.findings),
            orjson.dumps(e.raw),
        ),
    )
    assert cur.lastrowid is not None
    return Recorded(e.event_id, cur.lastrowid, False, task, matched_by, late)


def _load_task(con: sqlite3.Connection, column: Literal["id", "task_id"], value: str) -> Task | None:
    row = con.execute(f"SELECT {_TASK_COLUMNS} FROM tasks WHERE {column} = ?", (value,)).fetchone()
    return _task(row) if row else None


def _register(con: sqlite3.Connection, task: Task) -> tuple[Task, int]:
    if task.task_id is not None and _load_task(con, "task_id", task.task_id) is not None:
        raise ConflictError(f"task_id {task.task_id!r} is already registered")
    con.execute(
        f"INSERT INTO tasks ({_TASK_COLUMNS}) VALUES ({', '.join('?' * 16)})",
        (
            task.id,
            task.task_id,
            task.session_id,
            task.session_context,
            task.url,
            orjson.dumps(task.labels),
            task.state.value,
            task.err_code,
            task.err_message,
            task.event_count,
            task.late_count,
            task.created_at,
            task.updated_at,
            task.first_event_at,
            task.last_event_at,
            task.ended_at,
        ),
    )
    # Orphans that this task would have matched had it been registered first, in the order received.
    orphans = [
        _Orphan(*r)
        for r in con.execute(
            "SELECT seq, task_id, session_context, notification_type, received_at, err_code, err_message"
            " FROM events WHERE task_ref IS NULL"
            " AND (task_id = ? OR (session_context <> '' AND session_context = ?)) ORDER BY seq",
            (task.task_id or "", task.session_context),
        )
    ]
    for orphan in orphans:
        matched_by = (
            MatchedBy.SESSION_CONTEXT
            if task.session_context and orphan.session_context == task.session_context
            else MatchedBy.TASK_ID
        )
        transition = tasks.apply(task, orphan)
        task = transition.task
        con.execute(
            "UPDATE events SET task_ref = ?, matched_by = ?, late = ? WHERE seq = ?",
            (task.id, matched_by.value, transition.late, orphan.seq),
        )
    if orphans:
        _update_task(con, task)
    return task, len(orphans)
