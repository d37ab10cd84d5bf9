"""``Notices``: the events receiver makes itself, stored and sent through the outbox like the rest.

- **Operator events**: a sink's first dead letter, a sink switched off by 410, a breaker opening
  (told by the dispatcher), a task stalled, overdue or failed (found by a sweep of the store, and
  told at once when this process commits the end), signature failures over the threshold in a
  window (counted in the store, so every worker and replica adds to one count). One of a kind and
  subject per window: the store keeps them unique. Sent to the sinks marked ``operator``; those
  take no MPS event, and their own troubles raise none (no loops).
- **Task digests**: once a task has ended (``ProcessEof``, or any other end the store records),
  one digest of all its events for the sinks with ``digests = true``, in the task's line of the
  outbox (so after its last event). Made at once when this process commits the end, and by a
  sweep of the ended tasks that have none (another process's commit, a restart in between).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Callable, Sequence
from typing import Any

import structlog

from receiver import digests
from receiver.documents import iso
from receiver.errors import ReceiverError
from receiver.events import Channel, Event
from receiver.ports import EventQuery, NoticeBook, OperatorEvent, OwnEvent, Recorded
from receiver.routing import SinkFilter
from receiver.settings import OperatorSettings
from receiver.tasks import Task, TaskState

log = structlog.get_logger("receiver.notices")

OPERATOR_EVENT = "OperatorEvent"  # their notification_type
DIGEST_LOOKBACK = 86400.0  # seconds: ended tasks this recent get a digest if they have none
_SWEEP_LIMIT = 1000
SIGNATURES = "signature_failures"
KINDS = (
    "sink_dead_letter",
    "sink_gone",
    "breaker_open",
    "task_stalled",
    "task_overdue",
    "task_failed",
    SIGNATURES,
)


def _message(kind: str, subject: str, d: dict[str, Any]) -> str:
    """One line an operator reads (in a chat, say)."""
    if kind == "sink_dead_letter":
        return f"sink {subject}: a delivery went dead (kept, redrivable): {d.get('error')}"
    if kind == "sink_gone":
        return (
            f"sink {subject} is switched off: {d.get('reason')}; POST /v1/sinks/{subject}/enable resumes it"
        )
    if kind == "breaker_open":
        return f"sink {subject}: circuit breaker open after {d.get('failures')} failures: {d.get('error')}"
    task = d.get("task_id") or subject
    if kind == "task_stalled":
        return f"task {task} is stalled: no notification since {d.get('last_event_at')}"
    if kind == "task_overdue":
        return f"task {task} is overdue: started {d.get('created_at')}, still no end"
    if kind == "task_failed":
        return f"task {task} failed: {d.get('err_code')} {d.get('err_message')}"
    if kind == SIGNATURES:
        return f"{d.get('count')} notifications with a bad signature this window (over {d.get('threshold')})"
    return f"{kind}: {subject}"


class Notices:
    def __init__(
        self,
        store: NoticeBook,
        *,
        operator_sinks: Sequence[str],
        digest_sinks: Sequence[tuple[str, SinkFilter]],
        settings: OperatorSettings,
        task_deadline: float = 0.0,
        sweep_interval: float = 60.0,
        sweep: bool = True,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._operator_sinks = tuple(operator_sinks)
        self._digest_sinks = tuple(digest_sinks)
        self._window = settings.window
        self._threshold = settings.signature_failures
        self._deadline = task_deadline
        self._sweep_interval = sweep_interval
        self._sweeps = sweep  # one place sweeps (where maintenance runs); every process counts
        self._clock = clock
        self._signature_failures = 0  # since the last flush to the store
        self._pending: set[asyncio.Task[Any]] = set()

    @property
    def digests(self) -> bool:
        return bool(self._digest_sinks)

    # --- told by the others ---------------------------------------------------------------------

    def alert(self, kind: str, subject: str, detail: dict[str, Any], at: float | None = None) -> None:
        """Raise an operator event soon (in the background: the caller does not wait for the store)."""
        self._soon(self.raise_event(kind, subject, detail, self._clock() if at is None else at))

    def signature_failed(self, channel: Channel) -> None:
        self._signature_failures += 1  # counted here, added to the store's count every second

    def committed(self, events: Sequence[Event], recorded: Sequence[Recorded]) -> None:
        """Ingest in this process committed these: a task they ended gets its digest (and, failed,
        its operator event) now rather than at the next sweep."""
        for r in recorded:
            task = r.task
            if task is None or r.late or r.duplicate or task.ended_at is None or not task.state.ended:
                continue
            if task.state is TaskState.FAILED:
                self._soon(self._task_alert("task_failed", task))
            if self._digest_sinks:
                self._soon(self.make_digest(task))

    def _soon(self, work: Any) -> None:
        task = asyncio.create_task(work)
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    # --- operator events ------------------------------------------------------------------------

    async def raise_event(
        self, kind: str, subject: str, detail: dict[str, Any], at: float, task: Task | None = None
    ) -> bool:
        """Record the operator event unless one of this kind and subject is there for its window;
        True if this was the first. Never raises: an operator event must not break its teller."""
        window_start = math.floor(at / self._window) * self._window
        op = OperatorEvent(kind, subject, window_start, at, detail)
        document = {
            "kind": kind,
            "subject": subject,
            "message": _message(kind, subject, detail),
            "at": iso(at),
            "window_start": iso(window_start),
            "window_seconds": self._window,
            "detail": detail,
        }
        event = OwnEvent(
            event_id=f"receiver:operator:{kind}:{subject}:{int(window_start)}",
            notification_type=OPERATOR_EVENT,
            task_id=(task.task_id or "") if task else "",
            task_ref=task.id if task else None,
            task_key=f"receiver:operator:{kind}:{subject}",
            at=self._clock(),
            document=document,
        )
        try:
            new = await self._store.record_own_event(event, self._operator_sinks, op)
        except ReceiverError as exc:
            log.warning("operator event not recorded", kind=kind, subject=subject, error=str(exc))
            return False
        if new:
            log.warning("operator event", kind=kind, subject=subject, message=document["message"])
        return new

    async def _task_alert(self, kind: str, task: Task) -> bool:
        detail: dict[str, Any] = {"task_id": task.task_id, "state": task.state.value, "labels": task.labels}
        if kind == "task_failed":
            at = task.ended_at or task.updated_at
            detail.update(err_code=task.err_code, err_message=task.err_message)
        elif kind == "task_stalled":
            at = task.updated_at
            detail["last_event_at"] = iso(task.last_event_at or task.created_at)
        else:
            at = task.created_at + self._deadline
            detail.update(created_at=iso(task.created_at), deadline_seconds=self._deadline)
        return await self.raise_event(kind, task.id, detail, at, task)

    async def flush_signature_failures(self) -> None:
        n, self._signature_failures = self._signature_failures, 0
        if not n or not self._threshold:
            return
        now = self._clock()
        window_start = math.floor(now / self._window) * self._window
        try:
            total = await self._store.count_up(SIGNATURES, window_start, n)
        except ReceiverError:
            self._signature_failures += n  # counted again next time
            return
        if total >= self._threshold:
            detail = {"count": total, "threshold": self._threshold}
            await self.raise_event(SIGNATURES, "notifications", detail, now)

    # --- digests --------------------------------------------------------------------------------

    async def make_digest(self, task: Task) -> bool:
        """The digest of an ended task for the sinks that ask for it; True if it was new."""
        sinks = [name for name, f in self._digest_sinks if f.matches_digest(task)]
        if not sinks:
            return False
        try:
            records = []
            after = 0
            while True:
                page = await self._store.list_events(EventQuery(task_ref=task.id, after=after, limit=1000))
                records.extend(page.items)
                if page.next is None:
                    break
                after = int(page.next)
            current = await self._store.get_task(task.id) or task
            document = digests.digest(current, records)
            event = OwnEvent(
                event_id=digests.digest_id(task.id),
                notification_type=digests.DIGEST,
                task_id=current.task_id or "",
                task_ref=current.id,
                task_key=current.task_id or current.id,  # its task's line: after its last event
                at=self._clock(),
                document=document,
                session_id=current.session_id,
                session_context=current.session_context,
            )
            new = await self._store.record_own_event(event, sinks)
        except ReceiverError as exc:
            log.warning("digest not made; the next sweep retries", task_id=task.task_id, error=str(exc))
            return False
        if new:
            log.info(
                "task digest", task_id=task.task_id, events=sum(document["events"].values()), sinks=sinks
            )
        return new

    # --- the loop -------------------------------------------------------------------------------

    async def sweep(self) -> None:
        """Raise what the store shows (tasks failed, stalled, overdue lately) and digest the ended
        tasks that have none; what was raised or made already is not again (the store says so)."""
        now = self._clock()
        since = now - max(self._window, 2 * self._sweep_interval)
        started = (since - self._deadline, now - self._deadline) if self._deadline else None
        for task in await self._store.tasks_to_alert(since, started, _SWEEP_LIMIT):
            if task.state is TaskState.FAILED:
                await self._task_alert("task_failed", task)
            elif task.state is TaskState.STALLED and task.updated_at >= since:
                await self._task_alert("task_stalled", task)
            if self._deadline and not task.state.ended and task.created_at < now - self._deadline:
                await self._task_alert("task_overdue", task)
        if self._digest_sinks:
            for task in await self._store.undigested_tasks(now - DIGEST_LOOKBACK, _SWEEP_LIMIT):
                await self.make_digest(task)

    async def run(self, stop: asyncio.Event) -> None:
        """Every second: the signature failures counted here go to the store; every
        ``sweep_interval`` (where this process sweeps): a sweep. Returns once ``stop`` is set."""
        next_sweep = 0.0
        while not stop.is_set():
            await self.flush_signature_failures()
            if self._sweeps and time.monotonic() >= next_sweep:
                next_sweep = time.monotonic() + self._sweep_interval
                try:
                    await self.sweep()
                except ReceiverError as exc:
                    log.warning("operator sweep failed; the next one retries", error=str(exc))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=min(1.0, self._sweep_interval))
        await self.flush_signature_failures()
        if self._pending:
            await asyncio.wait(set(self._pending), timeout=5)
