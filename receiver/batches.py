"""``Batcher``: gathers what a sink's lines offer into batches, and sends each one when it is full or
has waited ``max_wait``, at most ``concurrency`` at once.

Each line offers its next run of deliveries and waits for their settlements before it offers more,
so a task has one batch in flight at a time and its events keep their order inside and across
batches. A batch that failed is retried whole: its members carry its id, and they are gathered
into it again (same members, same id) until all are back, or for ``pinned_wait`` at most (a member
redriven or claimed elsewhere meanwhile: those at hand then go as a new batch).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar, cast

from receiver.ports import Batch, Delivery

R = TypeVar("R")  # what sending a batch says of each member, in order


def new_batch_id() -> str:
    return f"batch_{uuid.uuid4().hex}"


@dataclass(slots=True)
class _Open:
    id: str
    group: str
    expected: int | None  # a batch being retried: how many members it had
    deliveries: list[Delivery] = field(default_factory=list)
    bodies: list[bytes] = field(default_factory=list)
    waiters: list[tuple[int, int, asyncio.Future[list[object]]]] = field(default_factory=list)
    timer: asyncio.TimerHandle | None = None


class Batcher(Generic[R]):
    def __init__(
        self,
        *,
        max_batch: int,
        max_wait: float,
        pinned_wait: float,
        concurrency: int,
        send: Callable[[Batch], Awaitable[Sequence[R]]],
    ) -> None:
        self._max = max_batch
        self._wait = max_wait
        self._pinned_wait = pinned_wait
        self._slots = asyncio.Semaphore(concurrency)
        self._send = send
        self._open: dict[tuple[bool, str], _Open] = {}  # (pinned, batch id or group) -> batch
        self._sending: set[asyncio.Task[None]] = set()
        self.waiting = 0  # members in open batches

    async def offer(
        self,
        members: Sequence[tuple[Delivery, bytes]],
        group: str,
        pinned: tuple[str, int] | None = None,
    ) -> list[R]:
        """Put the leading ``members`` that fit into the open batch of ``group`` (or, ``pinned``,
        the batch of that id and size being gathered again); what became of them, once it is sent.
        Fewer answers than members: the rest did not fit, offer them again after these."""
        key = (True, pinned[0]) if pinned else (False, group)
        batch = self._open.get(key)
        if batch is None:
            batch = self._open[key] = _Open(
                pinned[0] if pinned else new_batch_id(), group, pinned[1] if pinned else None
            )
            wait = self._pinned_wait if pinned else self._wait
            batch.timer = asyncio.get_running_loop().call_later(wait, self._flush, key, batch)
        limit = batch.expected if batch.expected is not None else self._max
        taken = members[: max(1, limit - len(batch.deliveries))]
        future: asyncio.Future[list[object]] = asyncio.get_running_loop().create_future()
        batch.waiters.append((len(batch.deliveries), len(taken), future))
        for delivery, body in taken:
            batch.deliveries.append(delivery)
            batch.bodies.append(body)
        self.waiting += len(taken)
        if len(batch.deliveries) >= limit:
            self._flush(key, batch)
        return cast(list[R], await future)

    def flush_all(self) -> None:
        """Send every open batch now (shutting down: nothing more is coming)."""
        for key, batch in list(self._open.items()):
            self._flush(key, batch)

    def _flush(self, key: tuple[bool, str], batch: _Open) -> None:
        if self._open.get(key) is not batch:
            return  # sent already
        del self._open[key]
        if batch.timer is not None:
            batch.timer.cancel()
        self.waiting -= len(batch.deliveries)
        if batch.expected is not None and len(batch.deliveries) != batch.expected:
            batch.id = new_batch_id()  # not all of it came back: a new batch, under a new id
        task = asyncio.create_task(self._deliver(batch))
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)

    async def _deliver(self, batch: _Open) -> None:
        try:
            async with self._slots:
                settled = await self._send(Batch(batch.id, batch.group, batch.deliveries, batch.bodies))
        except BaseException as exc:
            for _, _, future in batch.waiters:
                if not future.done():
                    future.set_exception(exc if isinstance(exc, Exception) else asyncio.CancelledError())
            if not isinstance(exc, Exception):
                raise
            return
        for start, count, future in batch.waiters:
            if not future.done():
                future.set_result(list(settled[start : start + count]))
