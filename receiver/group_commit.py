"""``GroupCommit``: many concurrent callers, one commit each time, every caller answered by its own result.

No timer and no added latency: a lone item is committed at once; under load, a batch is what
arrived while the previous commit ran (at most ``max_batch``). Used by ingest (events) and by the
dispatcher (delivery outcomes).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

import structlog

from receiver.errors import StoreUnavailableError, UnstorableError

log = structlog.get_logger("receiver.group_commit")

T = TypeVar("T")
R = TypeVar("R")


class GroupCommit(Generic[T, R]):
    def __init__(self, commit: Callable[[Sequence[T]], Awaitable[Sequence[R]]], max_batch: int) -> None:
        self._commit = commit
        self._max_batch = max_batch
        self._pending: list[tuple[T, asyncio.Future[R]]] = []
        self._flusher: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None  # looked up once, not per item

    async def submit(self, item: T) -> R:
        loop = self._loop
        if loop is None or loop.is_closed():
            loop = self._loop = asyncio.get_running_loop()
        future: asyncio.Future[R] = loop.create_future()
        self._pending.append((item, future))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush())
        return await future

    async def submit_many(self, items: Sequence[T]) -> list[R]:
        """``submit`` for several items at once: committed together (or in the same order), and
        answered once all are; the first failure is raised."""
        loop = asyncio.get_running_loop()
        futures: list[asyncio.Future[R]] = []
        for item in items:
            future: asyncio.Future[R] = loop.create_future()
            self._pending.append((item, future))
            futures.append(future)
        if futures and (self._flusher is None or self._flusher.done()):
            self._flusher = asyncio.create_task(self._flush())
        return [await future for future in futures]

    async def _flush(self) -> None:
        while self._pending:
            batch = self._pending[: self._max_batch]
            del self._pending[: self._max_batch]
            await self._commit_batch(batch)

    async def _commit_batch(self, batch: list[tuple[T, asyncio.Future[R]]]) -> None:
        try:
            results = await self._commit([item for item, _ in batch])
        except StoreUnavailableError as exc:
            _fail(batch, exc)
        except Exception as exc:
            if len(batch) == 1:
                log.exception("the store refused an item")
                _fail(batch, UnstorableError(f"the store refused it: {exc!r}"))
                return
            # Something in this batch cannot be stored: commit one by one, so that only it fails.
            for one in batch:
                await self._commit_batch([one])
        except BaseException as exc:  # cancelled: every waiter must still hear about it
            _fail(batch, StoreUnavailableError(repr(exc)))
            raise
        else:
            for (_, future), result in zip(batch, results, strict=True):
                if not future.done():
                    future.set_result(result)

    async def drain(self) -> None:
        """Wait for the commit in progress and everything queued behind it."""
        while self._flusher is not None and not self._flusher.done():
            await asyncio.shield(self._flusher)


def _fail(batch: Sequence[tuple[object, asyncio.Future[R]]], error: Exception) -> None:
    for _, future in batch:
        if not future.done():
            future.set_exception(error)
