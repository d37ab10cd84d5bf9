"""``AmqpConsumer``: takes MPS notifications from RabbitMQ (standing in for CMQ) into the same ingest.

Acknowledged only after the store commit, the deliveries of one commit in one frame (``acks``).
A message that can never succeed (not JSON, invalid, bad signature, too large) is quarantined,
republished to the dead-letter exchange with the reason in its headers, then acknowledged. When
the store is down, consuming pauses: the messages in hand are held (not requeued, so they do not
burn their delivery limit) and retried with backoff, and consuming resumes once the store answers.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import os
import time
import uuid
from collections import Counter
from collections.abc import Callable
from typing import Any

import aio_pika
import aiormq
import structlog
from aio_pika.abc import (
    AbstractChannel,
    AbstractExchange,
    AbstractIncomingMessage,
    AbstractQueue,
    AbstractRobustConnection,
)

from receiver import decoder, logs
from receiver.acks import Acks, settle
from receiver.errors import (
    InvalidNotificationError,
    NotLiveError,
    SignatureError,
    StoreUnavailableError,
    UnstorableError,
)
from receiver.events import Channel
from receiver.ingest import Ingestor
from receiver.ports import EventLog, Quarantined
from receiver.settings import AmqpSettings
from receiver.topology import declare_topology
from receiver.tracing import Tracing

log = structlog.get_logger("receiver.consumer")

REASON_HEADER = "x-receiver-reason"
DETAIL_HEADER = "x-receiver-detail"
FIELD_HEADER = "x-receiver-field"

START_ATTEMPTS = 5  # connect + declare, when the broker answers INTERNAL_ERROR
START_BACKOFF = 0.2  # seconds, doubled per attempt


def decode_body(body: bytes) -> bytes:
    """The notification JSON from an AMQP body: as is, or base64-decoded when it is base64 of JSON.

    (A CMQ envelope, ``{"msgBody": "..."}``, is JSON and is unwrapped by the shared parser.)
    """
    head = body.lstrip()[:1]
    if head in (b"{", b"["):
        return body
    try:
        decoded = base64.b64decode(body.strip(), validate=True)
    except (binascii.Error, ValueError):
        return body
    return decoded if decoded.lstrip()[:1] == b"{" else body


class AmqpConsumer:
    """One connection, one channel, one consumer on the configured queue; competing with replicas."""

    def __init__(
        self,
        ingestor: Ingestor,
        store: EventLog,
        settings: AmqpSettings,
        *,
        max_body_bytes: int,
        clock: Callable[[], float] = time.time,
        tracing: Tracing | None = None,
    ) -> None:
        self._ingestor = ingestor
        self._tracing = tracing  # a consumer span per message; None: tracing is off
        self._store = store
        self._settings = settings
        self._max_body = max_body_bytes
        self._clock = clock  # the app's: quarantine rows carry the same time as everything else
        self._connection: AbstractRobustConnection | None = None
        self._channel: AbstractChannel | None = None
        self._queue: AbstractQueue | None = None
        self._dlx: AbstractExchange | None = None
        self._consumer_tag: str | None = None
        self._store_ok = asyncio.Event()
        self._store_ok.set()
        self._resumer: asyncio.Task[None] | None = None
        self._inflight: set[asyncio.Task[Any]] = set()
        self._acks = Acks()  # sent once per loop pass: a commit's deliveries in one frame
        self._stopping = False
        self.counts: Counter[str] = Counter()
        # Named, so that the broker's operators (and our tests) can tell this connection apart.
        self.connection_name = (
            settings.connection_name or f"receiver-consumer-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        )

    # --- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        """Connect, declare the topology and consume.

        RabbitMQ answers two connections declaring the same quorum queue at the same moment (two
        workers or replicas starting together) with INTERNAL_ERROR and closes the connection; that
        start is retried on a fresh connection, a few times with backoff, before giving up.
        """
        for attempt in range(1, START_ATTEMPTS + 1):
            try:
                await self._start_once()
                return
            except aiormq.exceptions.ConnectionInternalError as exc:
                await self._discard_connection()
                if attempt == START_ATTEMPTS:
                    raise
                log.warning(
                    "broker refused the declaration (a concurrent start?); retrying",
                    attempt=attempt,
                    error=str(exc),
                )
                await asyncio.sleep(START_BACKOFF * 2 ** (attempt - 1))

    async def _discard_connection(self) -> None:
        connection, self._connection = self._connection, None
        self._channel, self._queue, self._dlx = None, None, None
        if connection is not None:
            with contextlib.suppress(Exception):
                await connection.close()

    async def _start_once(self) -> None:
        assert self._settings.url is not None
        self._connection = await aio_pika.connect_robust(
            self._settings.url.get_secret_value(),
            heartbeat=self._settings.heartbeat,
            reconnect_interval=self._settings.reconnect_interval,
            client_properties={"connection_name": self.connection_name},
        )
        self._connection.reconnect_callbacks.add(self._on_reconnect)
        self._channel = await self._connection.channel(publisher_confirms=True)
        await self._channel.set_qos(prefetch_count=self._settings.prefetch)
        self._queue, self._dlx = await declare_topology(self._connection, self._channel, self._settings)
        await self._consume()
        log.info(
            "consuming",
            queue=self._queue.name,
            model=self._settings.model,
            prefetch=self._settings.prefetch,
            dead_letter_queue=self._settings.dead_letter_queue,
            connection_name=self.connection_name,
        )

    async def stop(self) -> None:
        """Stop taking deliveries, let the ones in hand finish (bounded), then close.

        Deliveries held while the store is down keep being retried during the drain (the resumer
        keeps pinging, without consuming again), so a store that comes back within the timeout
        gets them committed and acknowledged; the rest are left unacknowledged for redelivery.
        """
        self._stopping = True
        await self._cancel_consumer()
        log.info("consumer stopping: no new deliveries", in_hand=len(self._inflight))
        finished = returned = 0
        if self._inflight:
            done, pending = await asyncio.wait(set(self._inflight), timeout=self._settings.shutdown_timeout)
            for task in pending:
                task.cancel()  # unacknowledged: the broker gives them to another consumer
            finished, returned = len(done), len(pending)
        if self._resumer is not None:
            self._resumer.cancel()
        log.info("consumer drained", finished=finished, returned_to_queue=returned)
        if self._connection is not None:
            await self._connection.close()
        log.info("consumer stopped", **self.counts)

    @property
    def connected(self) -> bool:
        return self._connection is not None and self._connection.connected.is_set()

    @property
    def state(self) -> str:
        if not self.connected:
            return "disconnected"
        return "paused: store unavailable" if not self._store_ok.is_set() else "consuming"

    async def _on_reconnect(self, *_: Any) -> None:
        self.counts["reconnects"] += 1
        log.warning("broker connection re-established; consuming resumes", **self.counts)

    async def _consume(self) -> None:
        assert self._queue is not None
        # Chosen once here: with tracing off, nothing is added per message.
        self._consumer_tag = await self._queue.consume(
            self._on_message if self._tracing is None else self._traced
        )

    async def _cancel_consumer(self) -> None:
        tag, self._consumer_tag = self._consumer_tag, None
        if tag is not None and self._queue is not None and self.connected:
            try:
                await self._queue.cancel(tag)
            except Exception as exc:  # the channel is gone, and the consumer with it
                log.warning("could not cancel the consumer", error=repr(exc))

    # --- one delivery -------------------------------------------------------------------------

    async def _on_message(self, message: AbstractIncomingMessage, traceparent: str | None = None) -> None:
        self._acks.received(message)  # first, before any await: tags register in the broker's order
        task = asyncio.current_task()
        if task is not None:
            self._inflight.add(task)
        # Every line logged for this delivery says where it came from (ingest adds the task).
        bound = logs.bind(channel=Channel.AMQP.value, message_id=message.message_id)
        try:
            await self._handle(message, traceparent)
        finally:
            self._acks.done(message)  # nacked, rejected or given up: its ack no longer awaited
            logs.unbind(bound)
            if task is not None:
                self._inflight.discard(task)

    async def _traced(self, message: AbstractIncomingMessage) -> None:
        assert self._tracing is not None
        assert self._queue is not None
        with self._tracing.consumer(self._queue.name, message.message_id, message.headers or {}) as span:
            await self._on_message(message, self._tracing.traceparent(span))

    async def _handle(self, message: AbstractIncomingMessage, traceparent: str | None = None) -> None:
        self.counts["consumed"] += 1
        if len(message.body) > self._max_body:
            # Never reaches ingest, so this is the notification's summary line (as the webhook's).
            log.warning(
                "notification",
                channel="amqp",
                outcome="too_large",
                limit=self._max_body,
                size=len(message.body),
            )
            await self._dead_letter(message, "too_large", f"body over {self._max_body} bytes", None)
            return
        body = decode_body(message.body)
        delay = 0.1
        while True:
            await self._store_ok.wait()
            try:
                result = await self._ingestor.ingest(body, Channel.AMQP, traceparent)
            except InvalidNotificationError as exc:
                await self._dead_letter(message, exc.code, str(exc), exc.field)
                return
            except SignatureError as exc:
                await self._dead_letter(message, exc.code, exc.reason, None)
                return
            except NotLiveError as exc:  # a file task's: taken off the queue, kept aside with the reason
                await self._dead_letter(message, exc.code, str(exc), None)
                return
            except UnstorableError as exc:
                await self._dead_letter(message, exc.code, str(exc), None)
                return
            except StoreUnavailableError:
                # Hold the message (no nack: a requeue would spend its delivery limit) and pause.
                self._pause()
                self.counts["held_retries"] += 1
                await asyncio.sleep(delay)
                delay = min(delay * 2, self._settings.store_retry_max)
                continue
            except Exception:
                log.exception("unexpected error; message requeued", message_id=message.message_id)
                self.counts["requeued"] += 1
                await settle(message.nack(requeue=True))
                return
            if result.recorded.duplicate:
                self.counts["duplicates"] += 1
            if await self._acks.ack(message):
                self.counts["acked"] += 1
            return

    async def _dead_letter(
        self, message: AbstractIncomingMessage, reason: str, detail: str, field: str | None
    ) -> None:
        """Quarantine, republish to the dead-letter exchange with the reason, then ack."""
        meta = {
            "message_id": message.message_id,
            "routing_key": message.routing_key,
            "redelivered": message.redelivered,
            "exchange": message.exchange,
        }
        # If the store is down, the dead-letter queue still has the message, with the reason.
        with contextlib.suppress(StoreUnavailableError):
            await self._store.quarantine(
                Quarantined(
                    channel=Channel.AMQP.value,
                    received_at=self._clock(),
                    reason=reason,
                    detail=detail,
                    field=field,
                    body=decoder.scrub(decode_body(message.body)),  # read through the API: no Sign pair
                    meta=meta,
                )
            )
        headers = dict(message.headers or {})
        headers.update({REASON_HEADER: reason, DETAIL_HEADER: detail[:1000]})
        if field:
            headers[FIELD_HEADER] = field
        try:
            assert self._dlx is not None
            await self._dlx.publish(
                aio_pika.Message(
                    message.body,
                    headers=headers,
                    content_type=message.content_type,
                    message_id=message.message_id,
                    delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                ),
                routing_key=self._settings.consumed_queue,
            )
        except Exception as exc:
            # Could not republish: reject, and the broker dead-letters it (without our headers).
            log.warning("dead-letter publish failed; rejecting instead", error=repr(exc))
            await settle(message.reject(requeue=False))
        else:
            await self._acks.ack(message)
        # No line of its own: the notification's one summary line (from ingest, or the too-large line
        # above) already says why; the count shows in /readyz and /metrics.
        self.counts["rejected"] += 1

    # --- store down: pause and resume -------------------------------------------------------------

    def _pause(self) -> None:
        if not self._store_ok.is_set() or (self._resumer is not None and not self._resumer.done()):
            return  # one resumer at a time
        self._store_ok.clear()
        log.error("store unavailable: consuming paused, deliveries in hand held")
        self._resumer = asyncio.create_task(self._resume_when_store_answers())

    async def _resume_when_store_answers(self) -> None:
        await self._cancel_consumer()
        delay = 0.1
        while True:
            self.counts["store_checks"] += 1
            try:
                await self._store.ping()
            except StoreUnavailableError:
                await asyncio.sleep(delay)
                delay = min(delay * 2, self._settings.store_retry_max)
                continue
            break
        if not self._stopping:
            await self._consume()
        self._store_ok.set()  # after the consumer is back: a failure from here on pauses it again
        log.info("store answers again: consuming resumed")
