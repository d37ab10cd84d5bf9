"""``TokenBucket``: a sink's rate limit, in events per second, with reservations (batched or not)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(slots=True)
class TokenBucket:
    """``rate`` tokens a second, at most ``burst`` saved up; one token per event.

    ``reserve`` takes the tokens at once, going into debt if it must, and says how long the caller
    has to wait before its events may go: callers queue up in the order they asked, and a batch
    larger than what is saved up still gets through (after its wait), never starved by single ones.
    """

    rate: float
    burst: float
    tokens: float = field(init=False)
    at: float | None = None  # when tokens was last brought up to date (monotonic seconds)
    held_back: int = 0  # events that had to wait, since start

    def __post_init__(self) -> None:
        self.tokens = self.burst  # starts full

    def _refill(self, now: float) -> None:
        if self.at is not None:
            self.tokens = min(self.burst, self.tokens + (now - self.at) * self.rate)
        self.at = now

    def reserve(self, n: int, now: float) -> float:
        """Take ``n`` tokens; the seconds until they are there (0: go now)."""
        self._refill(now)
        self.tokens -= n
        if self.tokens >= 0:
            return 0.0
        self.held_back += n
        return -self.tokens / self.rate

    def cancel(self, n: int, now: float) -> None:
        """Give back a reservation that was not used (the deliveries are rescheduled instead)."""
        self._refill(now)
        self.tokens = min(self.burst, self.tokens + n)

    def available(self, now: float) -> float:
        self._refill(now)
        return self.tokens

    def wait_for(self, n: float, now: float) -> float:
        """Seconds until ``n`` tokens are there, without taking them."""
        self._refill(now)
        return max(0.0, (n - self.tokens) / self.rate)
