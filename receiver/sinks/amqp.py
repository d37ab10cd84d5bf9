"""``AmqpSink``: publishes each event to a topic exchange, persistent, with publisher confirms.

Delivered only once the broker confirms. Routing key ``mps.<NotificationType>.<what>``, where
``what`` is the strongest suggestion among the findings (block > review > pass), else the first
finding's kind, else ``none``: a consumer can bind ``mps.AiReviewResult.block`` or ``mps.#``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import aio_pika
import orjson
from aio_pika.abc import AbstractExchange, AbstractRobustConnection
from pydantic import SecretStr

from receiver.errors import SinkError
from receiver.ports import Delivery
from receiver.sinks.options import SinkOptions

_STRENGTH = {"block": 3, "review": 2, "pass": 1}


class AmqpSinkOptions(SinkOptions):
    url: SecretStr
    exchange: str = "receiver.events"


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


class AmqpSink:
    def __init__(self, name: str, options: AmqpSinkOptions) -> None:
        self.name = name
        self._url = options.url
        self._exchange_name = options.exchange
        self._connection: AbstractRobustConnection | None = None
        self._exchange: AbstractExchange | None = None
        self._setup = asyncio.Lock()  # concurrent first deliveries share one connection

    @classmethod
    def from_options(cls, name: str, options: Mapping[str, Any]) -> AmqpSink:
        return cls(name, AmqpSinkOptions.model_validate(options))

    async def _ready(self) -> AbstractExchange:
        async with self._setup:
            if self._exchange is None:
                self._connection = await aio_pika.connect_robust(self._url.get_secret_value())
                channel = await self._connection.channel(publisher_confirms=True)
                self._exchange = await channel.declare_exchange(
                    self._exchange_name, aio_pika.ExchangeType.TOPIC, durable=True
                )
            return self._exchange

    async def deliver(self, delivery: Delivery, document: dict[str, Any]) -> None:
        try:
            exchange = await self._ready()
            await exchange.publish(
                aio_pika.Message(
                    orjson.dumps(document),
                    content_type="application/json",
                    message_id=document["event_id"],
                    delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                    headers={"x-task-id": document["task_id"]},
                ),
                routing_key=routing_key(document),
            )
        except Exception as exc:  # not confirmed, channel closed, broker away: retry later
            raise SinkError(f"publish to {self._exchange_name} failed: {exc!r}") from exc

    async def aclose(self) -> None:
        if self._connection is not None:
            await self._connection.close()
            self._connection = None
            self._exchange = None
