"""``JsonlSink``: appends each event as one JSON line to a file, fsync'd in batches, rotated by size.

A delivery returns once its line is on disk: concurrent deliveries share one fsync (run off the
event loop). With ``max_batch`` above 1, a batch is its members' lines, written and fsync'd at
once. Rotation renames ``events.jsonl`` to ``events.jsonl.1`` (and shifts older ones up to
``keep``) when the file would pass ``max_bytes``.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import orjson
from pydantic import Field

from receiver.errors import SinkError, UndeliverableError
from receiver.group_commit import GroupCommit
from receiver.ports import Batch, Delivery
from receiver.sinks.options import SinkOptions


class JsonlOptions(SinkOptions):
    path: Path
    max_bytes: int = Field(default=100 * 1024 * 1024, gt=0)
    keep: int = Field(default=5, ge=0)


class JsonlSink:
    splices_payload = True  # the payload is only encoded (documents.splices)

    def __init__(self, name: str, options: JsonlOptions) -> None:
        self.name = name
        self.path = options.path
        self._max_bytes = options.max_bytes
        self._keep = options.keep
        self._file: Any = None
        self._size = 0
        self._group: GroupCommit[bytes, None] = GroupCommit(self._write_batch, max_batch=1024)

    @classmethod
    def from_options(cls, name: str, options: Mapping[str, Any]) -> JsonlSink:
        return cls(name, JsonlOptions.model_validate(options))

    async def deliver(self, delivery: Delivery, document: dict[str, Any]) -> None:
        line, _ = self.encode(document)
        await self._append(line)

    def encode(self, document: dict[str, Any]) -> tuple[bytes, str]:
        try:
            return orjson.dumps(document) + b"\n", ""
        except orjson.JSONEncodeError as exc:  # e.g. nested past orjson's depth: never writable
            raise UndeliverableError(f"cannot encode the event as JSON: {exc}") from None

    async def deliver_batch(self, batch: Batch) -> None:
        await self._append(b"".join(batch.bodies))

    async def _append(self, data: bytes) -> None:
        try:
            await self._group.submit(data)
        except Exception as exc:
            raise SinkError(f"could not write {self.path}: {exc}") from exc

    async def _write_batch(self, lines: Sequence[bytes]) -> list[None]:
        await asyncio.get_running_loop().run_in_executor(None, self._write_sync, lines)
        return [None] * len(lines)

    def _write_sync(self, lines: Sequence[bytes]) -> None:
        data = b"".join(lines)
        if self._file is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = self.path.open("ab")
            self._size = self._file.tell()
        if self._size and self._size + len(data) > self._max_bytes:
            self._rotate()
        self._file.write(data)
        self._file.flush()
        os.fsync(self._file.fileno())
        self._size += len(data)

    def _rotate(self) -> None:
        self._file.close()
        if self._keep == 0:
            self.path.unlink(missing_ok=True)
        else:
            for i in range(self._keep - 1, 0, -1):
                older = self.path.with_name(f"{self.path.name}.{i}")
                if older.exists():
                    older.replace(self.path.with_name(f"{self.path.name}.{i + 1}"))
            self.path.replace(self.path.with_name(f"{self.path.name}.1"))
        self._file = self.path.open("ab")
        self._size = 0

    async def aclose(self) -> None:
        await self._group.drain()
        if self._file is not None:
            self._file.close()
            self._file = None
