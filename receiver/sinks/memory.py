"""``MemorySink``: keeps what it is given, and can be told to fail; for tests (yours too)."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from receiver.errors import SinkError, SinkGoneError, UndeliverableError
from receiver.ports import Delivery
from receiver.sinks.options import SinkOptions


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

    @classmethod
    def from_options(cls, name: str, options: Mapping[str, Any]) -> MemorySink:
        return cls(name, MemoryOptions.model_validate(options))

    async def deliver(self, delivery: Delivery, document: dict[str, Any]) -> None:
        self.attempts += 1
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.gone:
            raise SinkGoneError("gone")
        if document["notification_type"] in self.undeliverable_types:
            raise UndeliverableError(f"cannot encode a {document['notification_type']}")
        if self.fail_remaining > 0:
            self.fail_remaining -= 1
            raise SinkError("told to fail", retry_after=self.retry_after)
        self.received.append(document)

    @property
    def event_ids(self) -> list[str]:
        return [d["event_id"] for d in self.received]

    async def aclose(self) -> None:
        pass
