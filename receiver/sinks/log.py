"""``LogSink``: one structlog line per delivered event."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import structlog

from receiver import logs
from receiver.ports import Delivery
from receiver.sinks.options import SinkOptions

log = structlog.get_logger("receiver.sinks.log")


class LogOptions(SinkOptions):
    level: Literal["debug", "info", "warning"] = "info"


class LogSink:
    splices_payload = True  # it never reads the payload (documents.splices)

    def __init__(self, name: str, options: LogOptions) -> None:
        self.name = name
        self._level = options.level

    @classmethod
    def from_options(cls, name: str, options: Mapping[str, Any]) -> LogSink:
        return cls(name, LogOptions.model_validate(options))

    async def deliver(self, delivery: Delivery, document: dict[str, Any]) -> None:
        findings = document["findings"]
        fields = {
            "sink": self.name,
            "event_id": document["event_id"],
            "task_id": document["task_id"],
            "notification_type": document["notification_type"],
            "findings": len(findings),
            "suggestions": sorted({f["suggestion"] for f in findings if f.get("suggestion")}),
            "late": document["late"],
            "orphan": document["orphan"],
        }
        logs.line(log, "receiver.sinks.log", self._level, "event", fields)

    async def aclose(self) -> None:
        pass
