"""``Acks``: the consumer's acknowledgements, sent once per event-loop pass instead of one by one.

A delivery is acknowledged only after its commit (or its dead-lettering), as before; what changes
is the frame. The deliveries of one channel settled since the last pass that follow on from the
oldest unsettled one go out as one ``basic.ack`` with ``multiple`` set (a commit of 32 is one
frame, not 32); a settled delivery behind one still in hand (held while the store is down) is
acknowledged alone, so it never keeps its prefetch slot. ``multiple`` covers every unacknowledged
delivery up to its tag, so each delivery is registered (``received``) before anything else is
done with it, in the order the broker gave them, and leaves the books only once it is settled.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Awaitable
from typing import Any

import structlog
from aio_pika.abc import AbstractIncomingMessage

log = structlog.get_logger("receiver.consumer")

_Entry = tuple[AbstractIncomingMessage, "asyncio.Future[bool]"] | None


class Acks:
    def __init__(self) -> None:
        # Per channel, the deliveries the broker counts as unacknowledged, by tag in the order
        # given: None while in hand, (message, waiter) once settled here and not yet sent.
        self._open: dict[Any, OrderedDict[int, _Entry]] = {}
        self._scheduled = False
        self._sending: set[asyncio.Task[None]] = set()

    def received(self, message: AbstractIncomingMessage) -> None:
        """A delivery taken in hand (call before any ``await``, so that tags register in order)."""
        channel = _channel(message)
        if channel is not None and message.delivery_tag is not None:
            self._open.setdefault(channel, OrderedDict())[message.delivery_tag] = None

    def done(self, message: AbstractIncomingMessage) -> None:
        """A delivery finished without an ack from here (nacked, or given up): off the books, unless
        its ack is already waiting to go out."""
        channel, tag = _channel(message), message.delivery_tag
        line = self._open.get(channel) if channel is not None else None
        if line is not None and tag is not None and tag in line and line[tag] is None:
            del line[tag]
            if not line:
                del self._open[channel]
            self._schedule()  # the deliveries behind it may go now

    def ack(self, message: AbstractIncomingMessage) -> asyncio.Future[bool]:
        """Acknowledge at the end of this loop pass; the waiter says whether the frame went out."""
        waiter: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        channel, tag = _channel(message), message.delivery_tag
        line = self._open.get(channel) if channel is not None else None
        if line is None or tag is None or tag not in line:
            waiter.set_result(False)  # its channel is gone: the broker redelivers it
            return waiter
        line[tag] = (message, waiter)
        self._schedule()
        return waiter

    def _schedule(self) -> None:
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._scheduled = False
        for channel, line in list(self._open.items()):
            run: list[tuple[AbstractIncomingMessage, asyncio.Future[bool]]] = []
            while line:
                tag, entry = next(iter(line.items()))
                if entry is None:
                    break
                del line[tag]
                run.append(entry)
            alone = [(tag, entry) for tag, entry in line.items() if entry is not None]
            for tag, _ in alone:
                del line[tag]
            if not line:
                del self._open[channel]
            if run:
                self._send(run[-1][0], [w for _, w in run], multiple=len(run) > 1)
            for _, (message, waiter) in alone:
                self._send(message, [waiter], multiple=False)

    def _send(
        self, message: AbstractIncomingMessage, waiters: list[asyncio.Future[bool]], *, multiple: bool
    ) -> None:
        task = asyncio.create_task(_ack(message, waiters, multiple))
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)


async def settle(op: Awaitable[None]) -> bool:
    """Send an ack, nack or reject; False when its channel is gone (the broker will redeliver the
    delivery, and the duplicate is counted, not stored twice)."""
    try:
        await op
    except Exception as exc:
        log.warning("could not settle a delivery; it will be redelivered", error=repr(exc))
        return False
    return True


async def _ack(message: AbstractIncomingMessage, waiters: list[asyncio.Future[bool]], multiple: bool) -> None:
    sent = await settle(message.ack(multiple=multiple))
    for waiter in waiters:
        if not waiter.done():
            waiter.set_result(sent)


def _channel(message: AbstractIncomingMessage) -> Any:
    try:
        return message.channel
    except Exception:  # closed
        return None
