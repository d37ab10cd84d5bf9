"""``Recent``: a bounded map whose entries expire, the emulator's memory of tasks, SessionIds and
signatures (a long-running emulator must not grow with every request it has ever seen)."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Generic, TypeVar

V = TypeVar("V")


class Recent(Generic[V]):
    """At most ``limit`` entries, each forgotten ``max_age`` seconds after it was put; past the
    limit the oldest entry goes first. ``clock`` is monotonic seconds (injected by tests)."""

    def __init__(self, limit: int, max_age: float, clock: Callable[[], float] = time.monotonic) -> None:
        if limit <= 0 or max_age <= 0:
            raise ValueError("Recent: limit and max_age must be positive")
        self.limit = limit
        self.max_age = max_age
        self._clock = clock
        # Insertion order is time order (a key put again moves to the end), so expired entries
        # are always at the front and pruning is amortised O(1) per put.
        self._entries: OrderedDict[str, tuple[float, V]] = OrderedDict()

    def _prune(self, now: float) -> None:
        while self._entries:
            at, _ = next(iter(self._entries.values()))
            if now - at < self.max_age:
                break
            self._entries.popitem(last=False)

    def get(self, key: str) -> V | None:
        self._prune(self._clock())
        entry = self._entries.get(key)
        return None if entry is None else entry[1]

    def __contains__(self, key: str) -> bool:
        self._prune(self._clock())
        return key in self._entries

    def full(self) -> bool:
        """Would the next new key evict a live entry?"""
        self._prune(self._clock())
        return len(self._entries) >= self.limit

    def put(self, key: str, value: V) -> None:
        now = self._clock()
        self._prune(now)
        self._entries.pop(key, None)
        self._entries[key] = (now, value)
        while len(self._entries) > self.limit:
            self._entries.popitem(last=False)

    def values(self) -> list[V]:
        """The live entries, oldest first."""
        self._prune(self._clock())
        return [value for _, value in self._entries.values()]

    def __len__(self) -> int:
        self._prune(self._clock())
        return len(self._entries)
