"""``MemorySink``: keeps what it is given, and can be told to fail; for tests (yours too)."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import orjson

from receiver.errors import SinkError, SinkGoneError, UndeliverableError
from receiver.ports import Batch, Delivery
from receiver.sinks.options import SinkOptions
from receiver.tracing import TRACEPARENT


class MemoryOptions(SinkOptions):
    fail_first: int = 0  # fail this many deliveries before taking any
    delay: float = 0.0  # seconds each delivery takes
    undeliverable_types: frozenset[str] = frozenset()  # NotificationTypes it can never encode


class MemorySink:
    def __init__(self, name: str, options: MemoryOptions | None = None) -> None:
        self.name = name
        options = options or MemoryOptions()
        self.received: list[dict[str, Any]] = []
        self.attempts = 0
        self.fail_remaining = options.fail_first
        self.delay = options.delay
        self.undeliverable_types = options.undeliverable_types
        self.gone = False
        self.retry_after: float | None = None
        self.batches: list[tuple[str, list[str]]] = []  # each batch taken: its id, its event ids
        self.tried_batches: list[tuple[str, list[str]]] = []  # each batch offered, taken or not
        self.traceparents: list[str | None] = []  # what each attempt carried

    @classmethod
    def from_options(cls, name: str, options: Mapping[str, Any]) -> MemorySink:
        return cls(name, MemoryOptions.model_validate(options))

    async def deliver(self, delivery: Delivery, document: dict[str, Any]) -> None:
        self.encode(document)
        await self._take([document])

    def encode(self, document: dict[str, Any]) -> tuple[bytes, str]:
        if document["notification_type"] in self.undeliverable_types:
            raise UndeliverableError(f"cannot encode a {document['notification_type']}")
        return orjson.dumps(document), ""

    async def deliver_batch(self, batch: Batch) -> None:
        documents = [orjson.loads(body) for body in batch.bodies]
        self.tried_batches.append((batch.id, [d["event_id"] for d in documents]))
        await self._take(documents)
        self.batches.append((batch.id, [d["event_id"] for d in documents]))

    async def _take(self, documents: list[dict[str, Any]]) -> None:
        self.attempts += 1
        self.traceparents.append(TRACEPARENT.get())
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.gone:
            raise SinkGoneError("gone")
        if self.fail_remaining > 0:
            self.fail_remaining -= 1
            raise SinkError("told to fail", retry_after=self.retry_after)
        self.received.extend(documents)

    @property
    def event_ids(self) -> list[str]:
        return [d["event_id"] for d in self.received]

    async def aclose(self) -> None:
        pass
