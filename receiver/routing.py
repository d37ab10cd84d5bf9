"""Which sinks an event goes to: per-sink filters, evaluated at ingest (pure, no I/O)."""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import BaseModel, ConfigDict, Field

from receiver.events import Event
from receiver.findings import Finding
from receiver.ports import Router
from receiver.tasks import Task


class SinkFilter(BaseModel):
    """Every condition given must hold; an empty filter takes everything.

    The finding conditions (``kinds``, ``labels``, ``suggestions``, ``min_confidence``) pick
    results: an event that carries findings passes when at least one finding meets all of them
    together. An event that carries none (``ProcessEof``, an empty result) is not judged by them:
    use ``types`` to keep or drop those.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    types: frozenset[str] = Field(default_factory=frozenset)  # NotificationType
    kinds: frozenset[str] = Field(default_factory=frozenset)  # Finding.kind, e.g. ImagePorn, Diagnose
    labels: frozenset[str] = Field(default_factory=frozenset)  # Finding.label, e.g. porn, Blur
    suggestions: frozenset[str] = Field(default_factory=frozenset)  # pass | review | block
    min_confidence: float | None = None
    task_labels: dict[str, str] = Field(default_factory=dict)  # all must equal the task's; orphans fail

    @property
    def judges_findings(self) -> bool:
        return bool(self.kinds or self.labels or self.suggestions) or self.min_confidence is not None

    def finding_matches(self, f: Finding) -> bool:
        return (
            (not self.kinds or f.kind in self.kinds)
            and (not self.labels or f.label in self.labels)
            and (not self.suggestions or f.suggestion in self.suggestions)
            and (
                self.min_confidence is None
                or (f.confidence is not None and f.confidence >= self.min_confidence)
            )
        )

    def matches(self, event: Event, task: Task | None) -> bool:
        if self.types and event.notification_type not in self.types:
            return False
        if self.task_labels and (
            task is None or any(task.labels.get(k) != v for k, v in self.task_labels.items())
        ):
            return False
        if self.judges_findings and event.findings:
            return any(self.finding_matches(f) for f in event.findings)
        return True

    def matches_digest(self, task: Task) -> bool:
        """A task's digest (for a sink with ``digests``): ``types`` and ``task_labels`` judge it;
        it carries no findings, so the finding conditions do not."""
        if self.types and DIGEST not in self.types:
            return False
        return not self.task_labels or all(task.labels.get(k) == v for k, v in self.task_labels.items())


# The notification_type of a task digest (receiver.digests), as a filter's ``types`` names it.
DIGEST = "TaskDigest"


def router(filters: Sequence[tuple[str, SinkFilter]]) -> Router:
    """A ``Router`` over the configured sinks, in their configured order."""
    everything = [name for name, f in filters if f == SinkFilter()]
    if len(everything) == len(filters):
        names = tuple(everything)
        return lambda event, task: names

    def route(event: Event, task: Task | None) -> list[str]:
        return [name for name, f in filters if f.matches(event, task)]

    return route
