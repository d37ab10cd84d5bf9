"""``GroupCommit``: many concurrent callers, one commit each time, every caller answered by its own result.

No timer: a lone item is committed a few loop passes later (microseconds when the loop is idle);
under load, a batch is what arrived while the previous commit ran, and what the loop brings to
``submit`` while it keeps bringing more (``GATHER_PASSES`` at most, ``max_batch`` items at most).
Each commit costs its fsync and its pages whatever it holds, and an AMQP consumer's deliveries
come in a few at a time: gathering took its mean batch from 11 to 48 at prefetch 100. Used by
ingest (events) and by the dispatcher (delivery outcomes).

``concurrency`` above 1 lets that many commits run at once (a database server, where one commit's
round trips would otherwise leave this process idle): each starts with what is queued when it
starts, and the next batch is what arrived meanwhile. What orders items of one key across
concurrent commits is the store's business (PostgreSQL: its lock per TaskId).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from typing import Any, Generic, NamedTuple, TypeVar

import structlog

from receiver.errors import StoreUnavailableError, UnstorableError

log = structlog.get_logger("receiver.group_commit")

# RideAlong: how long a settlement may wait for the next ingest commit (the issue: 250 ms), and how
# recently the last one must have run for the next to be worth waiting for.
RIDE_WAIT = 0.25
RIDE_FLOWING = 0.05

# Gathering a batch before its commit starts: at most this many event-loop passes, and it stops
# after this many passes in a row that bring no item.
GATHER_PASSES = 16
IDLE_PASSES = 3

T = TypeVar("T")
R = TypeVar("R")


class GroupCommit(Generic[T, R]):
    def __init__(
        self,
        commit: Callable[[Sequence[T]], Awaitable[Sequence[R]]],
        max_batch: int,
        concurrency: int = 1,
    ) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self._commit = commit
        self._max_batch = max_batch
        self._concurrency = concurrency
        self._pending: list[tuple[T, asyncio.Future[R]]] = []
        self._flushers: set[asyncio.Task[None]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None  # looked up once, not per item

    async def submit(self, item: T) -> R:
        loop = self._loop
        if loop is None or loop.is_closed():
            loop = self._loop = asyncio.get_running_loop()
        future: asyncio.Future[R] = loop.create_future()
        self._pending.append((item, future))
        if len(self._flushers) < self._concurrency:
            self._start_flusher()
        return await future

    def _start_flusher(self) -> None:
        # In a context of its own: a batch is nobody's notification, so the lines it logs carry
        # none of the context the first caller's adapter bound.
        flusher = asyncio.create_task(self._flush(), context=contextvars.Context())
        self._flushers.add(flusher)
        flusher.add_done_callback(self._flushers.discard)  # (one cancelled before it ran, too)

    async def submit_many(self, items: Sequence[T]) -> list[R]:
        """``submit`` for several items at once: committed together (or in the same order), and
        answered once all are; the first failure is raised."""
        loop = asyncio.get_running_loop()
        futures: list[asyncio.Future[R]] = []
        for item in items:
            future: asyncio.Future[R] = loop.create_future()
            self._pending.append((item, future))
            futures.append(future)
        if futures and len(self._flushers) < self._concurrency:
            self._start_flusher()
        return [await future for future in futures]

    async def _flush(self) -> None:
        try:
            while self._pending:
                await self._gather()
                batch = self._pending[: self._max_batch]
                del self._pending[: self._max_batch]
                await self._commit_batch(batch)
        finally:
            # Off the books as soon as it stops taking items (no await between the last look at
            # the queue and this): an item queued from now on starts a flusher of its own.
            self._flushers.discard(asyncio.current_task())

    async def _gather(self) -> None:
        """Let the loop run while items keep coming: each pass lets the callers already under
        way reach ``submit``, and one commit of them all costs less than several (a commit's
        fsync and its pages are paid per commit, not per item). A delivery takes a few passes
        from the socket to ``submit`` (frames read, a task for it, another for the callback), so
        a pass that brings nothing does not end it: ``IDLE_PASSES`` in a row do, as do
        ``max_batch`` items and ``GATHER_PASSES`` passes in all."""
        idle = 0
        for _ in range(GATHER_PASSES):
            seen = len(self._pending)
            if seen >= self._max_batch:
                return
            await asyncio.sleep(0)
            idle = idle + 1 if len(self._pending) == seen else 0
            if idle == IDLE_PASSES:
                return

    async def _commit_batch(self, batch: list[tuple[T, asyncio.Future[R]]]) -> None:
        try:
            results = await self._commit([item for item, _ in batch])
        except StoreUnavailableError as exc:
            _fail((f for _, f in batch), exc)
        except Exception as exc:
            if len(batch) == 1:
                log.exception("the store refused an item")
                _fail((f for _, f in batch), UnstorableError(f"the store refused it: {exc!r}"))
                return
            # Something in this batch cannot be stored: commit one by one, so that only it fails.
            for one in batch:
                await self._commit_batch([one])
        except BaseException as exc:  # cancelled: every waiter must still hear about it
            _fail((f for _, f in batch), StoreUnavailableError(repr(exc)))
            raise
        else:
            for (_, future), result in zip(batch, results, strict=True):
                if not future.done():
                    future.set_result(result)

    async def drain(self) -> None:
        """Wait for the commit in progress and everything queued behind it."""
        while self._flushers:
            await asyncio.shield(asyncio.gather(*self._flushers, return_exceptions=True))


def _fail(futures: Iterable[asyncio.Future[Any]], error: Exception) -> None:
    """Every waiter not yet answered hears ``error``."""
    for future in futures:
        if not future.done():
            future.set_exception(error)


class Rider(NamedTuple, Generic[T]):
    """Items waiting to ride along, the future their submitter awaits, and when they came."""

    items: Sequence[T]
    done: asyncio.Future[None]
    queued_at: float


class RideAlong(Generic[T]):
    """Items (the dispatcher's settlements) that wait for the next transaction of another kind
    (ingest) rather than pay for a transaction, and its fsync, of their own.

    A store calls ``carrying()`` around each transaction that can take them, ``take()`` inside it
    (from any thread), then ``done(taken)`` or ``undone(taken)``. ``submit`` waits for such a
    transaction to carry its items: one running or waiting, or, while they come often (one ran
    within the last ``flowing`` seconds), the next one, for ``wait`` seconds at most. Otherwise
    (ingest is idle: a replay, a backlog claimed from the store) it commits them at once, with
    ``alone``.
    Left over when the last carrier ends (it failed, or took its items before these came), they
    wait for the next one the same way, and are committed alone once their ``wait`` is up.

    A settlement held back is at most a redelivery if the process dies meanwhile, which at least
    once allows; the line it ends keeps its task's key busy until then, so order holds.
    """

    def __init__(
        self,
        alone: Callable[[list[T]], Awaitable[None]],
        *,
        wait: float = RIDE_WAIT,
        flowing: float = RIDE_FLOWING,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._alone = alone
        self._wait = wait
        self._flowing = flowing
        self._clock = clock
        self._carriers = 0  # transactions running or waiting that will take what is queued
        self._carried_at = -math.inf  # when the last one began or ended
        # Each with when it was queued (its deadline is ``wait`` after).
        self._queue: deque[Rider[T]] = deque()
        self._flusher: asyncio.Task[None] | None = None

    async def submit(self, items: Sequence[T]) -> None:
        now = self._clock()
        if not self._carriers and (self._wait <= 0 or now - self._carried_at > self._flowing):
            await self._alone(list(items))
            return
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.append(Rider(items, done, now))
        if not self._carriers:
            self._flush_soon()
        await done

    @contextlib.contextmanager
    def carrying(self) -> Iterator[None]:
        self._carriers += 1
        self._carried_at = self._clock()
        try:
            yield
        finally:
            self._carriers -= 1
            self._carried_at = self._clock()
            if not self._carriers and self._queue:
                self._flush_soon()

    def _flush_soon(self) -> None:
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.get_running_loop().create_task(self._flush())

    def take(self) -> list[Rider[T]]:
        """What is queued now (deque: safe to take from on another thread while the loop appends)."""
        taken = []
        while self._queue:
            taken.append(self._queue.popleft())
        return taken

    @staticmethod
    def items(taken: Sequence[Rider[T]]) -> list[T]:
        return [item for rider in taken for item in rider.items]

    @staticmethod
    def done(taken: Sequence[Rider[T]]) -> None:
        for rider in taken:
            if not rider.done.done():
                rider.done.set_result(None)

    def undone(self, taken: Sequence[Rider[T]]) -> None:
        """Not committed: back to the front of the queue, for the next carrier (or alone)."""
        self._queue.extendleft(reversed(taken))

    async def _flush(self) -> None:
        """While no carrier runs: wait out the oldest item's ``wait`` (a carrier that begins
        meanwhile takes them all), then commit what is queued alone."""
        while self._queue and not self._carriers:
            left = self._queue[0].queued_at + self._wait - self._clock()
            if left > 0:
                await asyncio.sleep(left)
                continue
            taken = self.take()
            try:
                await self._alone(self.items(taken))
            except BaseException as exc:
                failure = exc if isinstance(exc, StoreUnavailableError) else StoreUnavailableError(repr(exc))
                _fail((rider.done for rider in taken), failure)
                if not isinstance(exc, Exception):
                    raise
                continue
            self.done(taken)
