"""``AmqpSink``: publishes each event to a topic exchange, persistent, with publisher confirms.

Delivered only once the broker confirms. Routing key ``mps.<NotificationType>.<what>``, where
``what`` is the strongest suggestion among the findings (block > review > pass), else the first
finding's kind, else ``none``: a consumer can bind ``mps.AiReviewResult.block`` or ``mps.#``.
An event the broker could never take (a routing key past AMQP's 255 bytes, a header so large the
broker closes the connection) is refused before publishing: undeliverable, not a broker failure.

A batch (``max_batch`` above 1) is one message, a JSON array of the documents of events that share
a routing key (the batch's key), its message id the batch's id (kept when it is retried), with
``x-batch-size``. With tracing on, a ``traceparent`` header names the attempt's span.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import aio_pika
import orjson
from aio_pika.abc import AbstractExchange, AbstractRobustConnection
from pydantic import Field, SecretStr

from receiver.errors import SinkError, UndeliverableError
from receiver.ports import Batch, Delivery
from receiver.sinks.options import SinkOptions
from receiver.tracing import TRACEPARENT

_STRENGTH = {"block": 3, "review": 2, "pass": 1}
MAX_ROUTING_KEY_BYTES = 255  # an AMQP short string
# Far above any real TaskId (tens of bytes), far below the frame size whose overflow makes the
# broker close the connection, and with it every delivery in flight on it.
MAX_HEADER_BYTES = 1024


class AmqpSinkOptions(SinkOptions):
    url: SecretStr
    exchange: str = "receiver.events"
    timeout: float = Field(default=10.0, gt=0)  # seconds for the broker's confirm


def routing_key(document: Mapping[str, Any]) -> str:
    findings = document.get("findings") or []
    suggestions = [f["suggestion"] for f in findings if f.get("suggestion") in _STRENGTH]
    if suggestions:
        what = max(suggestions, key=_STRENGTH.__getitem__)
    elif findings:
        what = findings[0]["kind"]
    else:
        what = "none"
    return f"mps.{document['notification_type']}.{what}"


def encoded(document: Mapping[str, Any]) -> tuple[aio_pika.Message, str]:
    """The message and its routing key; ``UndeliverableError`` if no broker could ever take them."""
    body, key = encoded_body(document)
    headers: dict[str, Any] = {"x-task-id": str(document["task_id"])}
    if (traceparent := TRACEPARENT.get()) is not None:
        headers["traceparent"] = traceparent
    message = aio_pika.Message(
        body,
        content_type="application/json",
        message_id=document["event_id"],
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        headers=headers,
    )
    return message, key


def encoded_body(document: Mapping[str, Any]) -> tuple[bytes, str]:
    """The document's JSON and routing key; ``UndeliverableError`` if no broker could take them."""
    key = routing_key(document)
    if len(key.encode()) > MAX_ROUTING_KEY_BYTES:
        raise UndeliverableError(
            f"routing key is {len(key.encode())} bytes, AMQP allows {MAX_ROUTING_KEY_BYTES}"
            " (notification_type or finding kind too long)"
        )
    task_id = str(document["task_id"])
    if len(task_id.encode()) > MAX_HEADER_BYTES:
        raise UndeliverableError(
            f"x-task-id header would be {len(task_id.encode())} bytes, at most {MAX_HEADER_BYTES} are sent"
        )
    try:
        return orjson.dumps(document), key
    except orjson.JSONEncodeError as exc:
        raise UndeliverableError(f"cannot encode the event as JSON: {exc}") from exc


class AmqpSink:
    splices_payload = True  # the payload is only encoded (documents.splices)

    def __init__(self, name: str, options: AmqpSinkOptions) -> None:
        self.name = name
        self._url = options.url
        self._exchange_name = options.exchange
        self._timeout = options.timeout
        self._connection: AbstractRobustConnection | None = None
        self._exchange: AbstractExchange | None = None
        self._setup = asyncio.Lock()  # concurrent first deliveries share one connection

    @classmethod
    def from_options(cls, name: str, options: Mapping[str, Any]) -> AmqpSink:
        return cls(name, AmqpSinkOptions.model_validate(options))

    async def _ready(self) -> AbstractExchange:
        async with self._setup:
            if self._exchange is None:
                connection = await aio_pika.connect_robust(
                    self._url.get_secret_value(),
                    timeout=self._timeout,
                    client_properties={"connection_name": f"receiver sink {self.name}"},
                )
                try:
                    channel = await connection.channel(publisher_confirms=True)
                    self._exchange = await channel.declare_exchange(
                        self._exchange_name, aio_pika.ExchangeType.TOPIC, durable=True
                    )
                except BaseException:
                    await connection.close()  # half set up: the next delivery starts over
                    raise
                self._connection = connection
            return self._exchange

    def encode(self, document: dict[str, Any]) -> tuple[bytes, str]:
        return encoded_body(document)

    async def deliver_batch(self, batch: Batch) -> None:
        headers: dict[str, Any] = {"x-batch-size": len(batch.bodies)}
        if (traceparent := TRACEPARENT.get()) is not None:
            headers["traceparent"] = traceparent
        message = aio_pika.Message(
            b"[" + b",".join(batch.bodies) + b"]",
            content_type="application/json",
            message_id=batch.id,
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            headers=headers,
        )
        await self._publish(message, batch.group)

    async def deliver(self, delivery: Delivery, document: dict[str, Any]) -> None:
        message, key = encoded(document)
        await self._publish(message, key)

    async def _publish(self, message: aio_pika.Message, key: str) -> None:
        try:
            exchange = await self._ready()
            await exchange.publish(message, routing_key=key, timeout=self._timeout)
        except Exception as exc:  # not confirmed, channel closed, broker away: retry later
            raise SinkError(f"publish to {self._exchange_name} failed: {exc!r}") from exc

    async def aclose(self) -> None:
        if self._connection is not None:
            await self._connection.close()
            self._connection = None
            self._exchange = None
