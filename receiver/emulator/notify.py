"""``Notifier``: how the emulator sends a notification, as MPS would, by HTTP or on RabbitMQ.

HTTP: a POST to ``NotifyUrl``, retried on non-2xx or no answer as ``CallbackRetry`` says (none,
at a fixed interval, or with backoff; MPS documents no policy, so which one is an assumption).
RabbitMQ: a message on the queue or topic that the task's ``TaskNotifyConfig`` names (CMQ's
stand-in). A topic that no one has declared yet is declared here, as the durable fanout exchange
receiver's consumer declares by default; one that exists is used as it is, whatever its type.
"""

from __future__ import annotations

import asyncio
from typing import Any

import aio_pika
import aiohttp
import structlog
from aio_pika.abc import AbstractChannel, AbstractExchange, AbstractRobustConnection
from aio_pika.exceptions import ChannelNotFoundEntity, ChannelPreconditionFailed
from pydantic import SecretStr

from receiver.emulator.settings import HTTP_ATTEMPTS, HTTP_BACKOFF
from receiver.emulator.settings import CallbackRetry as CallbackRetry  # where it was first found

log = structlog.get_logger("receiver.emulator.notify")


class Notifier:
    def __init__(self, amqp_url: SecretStr | None, retry: CallbackRetry | None = None) -> None:
        self._amqp_url = amqp_url
        # Read now, not at import: the default follows the module's constants.
        self._retry = retry or CallbackRetry(attempts=HTTP_ATTEMPTS, interval=HTTP_BACKOFF)
        self._http: aiohttp.ClientSession | None = None
        self._connection: AbstractRobustConnection | None = None
        self._channel: AbstractChannel | None = None
        self._topics: dict[str, AbstractExchange] = {}
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
        waits = self._retry.waits()
        for attempt in range(1, len(waits) + 2):
            try:
                async with self._http.post(url, data=body, headers={"Content-Type": "application/json"}) as r:
                    await r.read()
                    if 200 <= r.status < 300:
                        self.sent += 1
                        return
                    reason = f"HTTP {r.status}"
            except (aiohttp.ClientError, TimeoutError) as exc:
                reason = repr(exc)
            if attempt > len(waits):
                break
            log.warning("notification not taken; retrying", url=url, attempt=attempt, reason=reason)
            await asyncio.sleep(waits[attempt - 1])
        self.failed += 1
        log.error(
            "notification dropped", url=url, attempts=len(waits) + 1, policy=self._retry.policy, reason=reason
        )

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
            exchange = await self._topic(str(notify["TopicName"]))
            await exchange.publish(message, routing_key="")
        else:
            await self._channel.default_exchange.publish(message, routing_key=str(notify["QueueName"]))
        self.sent += 1

    async def _topic(self, name: str) -> AbstractExchange:
        exchange = self._topics.get(name)
        if exchange is None:
            await self._ensure_topic(name)
            assert self._channel is not None
            exchange = await self._channel.get_exchange(name, ensure=False)
            self._topics[name] = exchange
        return exchange

    async def _ensure_topic(self, name: str) -> None:
        # On a channel of its own: the broker closes a channel whose passive declare finds nothing,
        # or whose declare names another type than the existing exchange's (a consumer may have
        # declared a "topic" exchange, or declared it between our two steps); either is fine here,
        # and the publishing channel must not be the one closed.
        assert self._connection is not None
        probes = [await self._connection.channel()]
        try:
            await probes[0].declare_exchange(name, passive=True)
        except ChannelNotFoundEntity:
            probes.append(await self._connection.channel())
            try:
                await probes[1].declare_exchange(name, aio_pika.ExchangeType.FANOUT, durable=True)
                log.info("declared the topic exchange", topic=name)
            except ChannelPreconditionFailed:
                pass
        finally:
            for probe in probes:
                if not probe.is_closed:
                    await probe.close()

    async def aclose(self) -> None:
        if self._http is not None:
            await self._http.close()
        if self._connection is not None:
            await self._connection.close()
