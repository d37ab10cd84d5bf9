"""The exceptions receiver raises on purpose, all under one base, each knowing what a client did wrong."""

from __future__ import annotations


class ReceiverError(Exception):
    """Base of every error receiver raises on purpose."""

    code = "error"


class InvalidNotificationError(ReceiverError):
    """The bytes are not a notification we can read: names the field and what was expected there."""

    code = "invalid_notification"

    def __init__(self, field: str, expected: str, *, got: str | None = None) -> None:
        self.field = field
        self.expected = expected
        self.got = got
        # Found after the Sign was checked and good (or not asked for): worth keeping for inspection,
        # unlike what anyone could send unsigned.
        self.signed = False
        detail = f"{field}: expected {expected}"
        if got is not None:
            detail += f", got {got}"
        super().__init__(detail)


class SignatureError(ReceiverError):
    """The notification's ``Sign``/``Timestamp`` do not prove it came from MPS with one of our keys."""

    code = "invalid_signature"

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


class InvalidRequestError(ReceiverError):
    """A request to the API cannot be carried out as given: names the field and what was expected."""

    code = "invalid_parameter"

    def __init__(self, field: str, expected: str) -> None:
        self.field = field
        self.expected = expected
        super().__init__(f"{field}: expected {expected}")


class NotLiveError(ReceiverError):
    """A genuine MPS notification, but of a file task, not a live stream: acknowledged, and kept in
    the quarantine rather than stored as an event (``ingest.file_task_notifications``)."""

    code = "not_live"

    def __init__(self, event_type: str) -> None:
        self.event_type = event_type
        super().__init__(
            f"a file task's {event_type} notification, not a live-stream one: kept in quarantine"
        )


class StoreUnavailableError(ReceiverError):
    """The store could not commit; the sender should retry later (HTTP 503, AMQP no ack)."""

    code = "store_unavailable"


class UnstorableError(ReceiverError):
    """The store refused this one item for good (not for the moment): retrying will not help."""

    code = "unstorable"


class ConflictError(ReceiverError):
    """The request contradicts what is already stored (e.g. a task id registered twice)."""

    code = "conflict"


class ConfigError(ReceiverError):
    """The settings cannot work together; raised at start-up, before anything listens."""

    code = "config"


class MpsError(ReceiverError):
    """MPS (or the way to it) refused a call (submit, abort, a reconcile's question); ``mps_code`` is
    its error code (``AuthFailure.*``...): the API and the CLI answer by it."""

    code = "mps_error"

    def __init__(self, mps_code: str, message: str, request_id: str | None = None) -> None:
        self.mps_code = mps_code
        self.message = message
        self.request_id = request_id
        super().__init__(f"{mps_code}: {message}")


class SinkError(ReceiverError):
    """A delivery failed; it is retried on the sink's schedule (or after ``retry_after`` seconds).

    ``status`` and ``snippet``: the target's HTTP status and the first bytes of its answer, when it
    gave one (kept in the delivery's attempt history)."""

    code = "sink_error"

    def __init__(
        self,
        message: str,
        *,
        retry_after: float | None = None,
        status: int | None = None,
        snippet: str | None = None,
    ) -> None:
        self.retry_after = retry_after
        self.status = status
        self.snippet = snippet
        super().__init__(message)


class SinkGoneError(SinkError):
    """The target says it is gone for good (HTTP 410): the sink is switched off until re-enabled."""

    code = "sink_gone"


class UndeliverableError(SinkError):
    """This sink can never send this event (it cannot be encoded for the target): the delivery is
    dead at once, and the sink's circuit breaker does not count it (the target did nothing wrong)."""

    code = "undeliverable"
