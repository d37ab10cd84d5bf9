"""``Notifier``: how the emulator sends a notification, as MPS would: HTTP POST to ``NotifyUrl``
(retrying on non-2xx with backoff, our choice since MPS documents none) or a message on the
RabbitMQ queue or topic that the task's ``TaskNotifyConfig`` names (CMQ's stand-in)."""

from __future__ import annotations

import asyncio
from typing import Any

import aio_pika
import aiohttp
import structlog
from aio_pika.abc import AbstractChannel, AbstractRobustConnection
from pydantic import SecretStr

log = structlog.get_logger("receiver.emulator.notify")

HTTP_ATTEMPTS = 6  # 1 + 5 retries
HTTP_BACKOFF = 0.5  # seconds, doubling


class Notifier:
    def __init__(self, amqp_url: SecretStr | None) -> None:
        self._amqp_url = amqp_url
        self._http: aiohttp.ClientSession | None = None
        self._connection: AbstractRobustConnection | None = None
        self._channel: AbstractChannel | None = None
        self.sent = 0
        self.failed = 0

    async def send(self, notify: dict[str, Any], body: bytes) -> None:
        if notify.get("NotifyType") == "URL":
            await self._post(str(notify["NotifyUrl"]), body)
        else:
            await self._publish(notify, body)

    async def _post(self, url: str, body: bytes) -> None:
        if self._http is None:
            self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20))
        delay = HTTP_BACKOFF
        for attempt in range(1, HTTP_ATTEMPTS + 1):
            try:
                async with self._http.post(url, data=body, headers={"Content-Type": "application/json"}) as r:
                    await r.read()
                    if 200 <= r.status < 300:
                        self.sent += 1
                        return
                    reason = f"HTTP {r.status}"
            except (aiohttp.ClientError, TimeoutError) as exc:
                reason = repr(exc)
            log.warning("notification not taken; retrying", url=url, attempt=attempt, reason=reason)
            if attempt < HTTP_ATTEMPTS:
                await asyncio.sleep(delay)
                delay *= 2
        self.failed += 1
        log.error("notification dropped after retries", url=url)

    async def _publish(self, notify: dict[str, Any], body: bytes) -> None:
        if self._amqp_url is None:
            log.error("a TDMQ-CMQ task, but the emulator has no amqp_url: notification dropped")
            self.failed += 1
            return
        if self._channel is None:
            self._connection = await aio_pika.connect_robust(self._amqp_url.get_secret_value())
            self._channel = await self._connection.channel(publisher_confirms=True)
        message = aio_pika.Message(
            body, content_type="application/json", delivery_mode=aio_pika.DeliveryMode.PERSISTENT
        )
        if notify.get("CmqModel") == "Topic":
            exchange = await self._channel.get_exchange(str(notify["TopicName"]), ensure=False)
            await exchange.publish(message, routing_key="")
        else:
            await self._channel.default_exchange.publish(message, routing_key=str(notify["QueueName"]))
        self.sent += 1

    async def aclose(self) -> None:
        if self._http is not None:
            await self._http.close()
        if self._connection is not None:
            await self._connection.close()
