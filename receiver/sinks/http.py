"""``HttpSink``: POSTs each event as JSON, signed with Standard Webhooks headers.

``webhook-id`` is the event id (the receiver's idempotency key), ``webhook-timestamp`` the send
time, ``webhook-signature`` an HMAC-SHA256 over ``id.timestamp.body`` (the ``standardwebhooks``
package). 2xx = delivered; 410 = the target is gone (the sink is switched off until re-enabled);
anything else, a timeout or a network error = retry, after ``Retry-After`` when the target gives one.
Redirects are never followed (a 3xx is a failure): a target must not be able to send the event and
its secret headers somewhere else. At most ``MAX_RESPONSE_BYTES`` of an answer are read.

A batch (``max_batch`` above 1) is one POST of a JSON array of event documents, each with its own
``event_id``; ``webhook-id`` is then the batch's id (kept when the batch is retried) and the
signature covers the whole array. With tracing on, ``traceparent`` names the attempt's span.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urljoin, urlsplit, urlunsplit

import aiohttp
import orjson
from pydantic import AnyHttpUrl, Field, SecretStr
from standardwebhooks.webhooks import Webhook

from receiver.errors import SinkError, SinkGoneError, UndeliverableError
from receiver.ports import SNIPPET_CHARS, Batch, Delivery, Receipt
from receiver.sinks.options import SinkOptions
from receiver.tracing import TRACEPARENT

# What we read of an answer: enough to finish a small reply on a kept-alive connection, never a
# body a hostile target makes huge (the rest is dropped with the connection).
MAX_RESPONSE_BYTES = 4096


class HttpOptions(SinkOptions):
    url: AnyHttpUrl
    secret: SecretStr | None = None  # "whsec_<base64>" as Standard Webhooks has it; None: unsigned
    timeout: float = Field(default=10.0, gt=0)
    headers: dict[str, str] = Field(default_factory=dict)


def retry_after(value: str | None, now: datetime) -> float | None:
    """Seconds from a ``Retry-After`` header: a number of seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, (when - now).total_seconds())


def redacted(url: str) -> str:
    """The URL without what may be secret in it (user info, query): for errors and logs."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


class HttpSink:
    splices_payload = True  # the payload is only encoded (documents.splices)

    def __init__(self, name: str, options: HttpOptions) -> None:
        self.name = name
        self.url = str(options.url)
        self._shown = redacted(self.url)
        self._signer = Webhook(options.secret.get_secret_value()) if options.secret else None
        self._timeout = aiohttp.ClientTimeout(total=options.timeout)
        self._headers = {"Content-Type": "application/json", **options.headers}
        self._session: aiohttp.ClientSession | None = None

    @classmethod
    def from_options(cls, name: str, options: Mapping[str, Any]) -> HttpSink:
        return cls(name, HttpOptions.model_validate(options))

    def encode(self, document: dict[str, Any]) -> tuple[bytes, str]:
        try:
            return orjson.dumps(document), ""
        except orjson.JSONEncodeError as exc:  # e.g. nested past orjson's depth: never sendable
            raise UndeliverableError(f"cannot encode the event as JSON: {exc}") from exc

    async def deliver(self, delivery: Delivery, document: dict[str, Any]) -> Receipt:
        payload, _ = self.encode(document)
        return await self._post(payload, document["event_id"])

    async def deliver_batch(self, batch: Batch) -> Receipt:
        return await self._post(b"[" + b",".join(batch.bodies) + b"]", batch.id)

    async def _post(self, payload: bytes, message_id: str) -> Receipt:
        if self._session is None:
            # No cookie jar: a target's cookies are not sent back with the next events.
            self._session = aiohttp.ClientSession(timeout=self._timeout, cookie_jar=aiohttp.DummyCookieJar())
        now = datetime.now(UTC)
        headers = {**self._headers, "webhook-id": message_id, "webhook-timestamp": str(int(now.timestamp()))}
        if self._signer is not None:
            headers["webhook-signature"] = self._signer.sign(message_id, now, payload.decode())
        if (traceparent := TRACEPARENT.get()) is not None:
            headers["traceparent"] = traceparent
        try:
            async with self._session.post(
                self.url, data=payload, headers=headers, allow_redirects=False
            ) as resp:
                answer = await resp.content.read(MAX_RESPONSE_BYTES)
                if not resp.content.at_eof():
                    resp.close()  # more than we read: drop the connection rather than drain it
                snippet = answer[: SNIPPET_CHARS * 4].decode("utf-8", "replace")[:SNIPPET_CHARS]
                if 200 <= resp.status < 300:
                    return Receipt(resp.status, snippet)
                if resp.status == 410:
                    raise SinkGoneError(f"{self._shown} answered 410 Gone", status=410, snippet=snippet)
                if 300 <= resp.status < 400:
                    location = resp.headers.get("Location")
                    shown = redacted(urljoin(str(resp.url), location)) if location else "nowhere"
                    raise SinkError(
                        f"{self._shown} answered {resp.status} redirecting to {shown}; redirects are"
                        " not followed: configure the final URL",
                        status=resp.status,
                        snippet=snippet,
                    )
                raise SinkError(
                    f"{self._shown} answered {resp.status}",
                    retry_after=retry_after(resp.headers.get("Retry-After"), now),
                    status=resp.status,
                    snippet=snippet,
                )
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise SinkError(f"{self._shown}: {type(exc).__name__}") from exc

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
