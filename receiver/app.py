"""The composition root: builds the adapters from settings, wires them to the use cases, runs them."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from typing import Literal

import structlog
from aiohttp import web

from receiver import web as routes
from receiver.consumer import AmqpConsumer
from receiver.errors import ConfigError
from receiver.events import Channel
from receiver.ingest import Ingestor
from receiver.ports import Store
from receiver.settings import Settings
from receiver.stores import open_store

log = structlog.get_logger("receiver.app")


def build_ingestor(settings: Settings, store: Store, clock: Callable[[], float] = time.time) -> Ingestor:
    verify = settings.verify
    policies = {channel: verify.policy_for(channel) for channel in Channel}
    return Ingestor(
        store,
        keys=verify.keys(),
        policies=policies,
        skew_seconds=verify.skew_seconds,
        max_batch=settings.store.max_batch,
        clock=clock,
    )


def create_app(
    settings: Settings,
    *,
    store: Store | None = None,
    clock: Callable[[], float] = time.time,
    role: Literal["serve", "consume"] = "serve",
) -> web.Application:
    """The aiohttp application. A ``store`` passed in is the caller's: it is used, not closed.

    ``serve``: the webhook and the management API, plus the AMQP consumer when ``amqp.url`` is set.
    ``consume``: the AMQP consumer alone (worker replicas), with the health probes.
    """
    # Check the signature settings now, before anything listens.
    policies = {channel.value: settings.verify.policy_for(channel).value for channel in Channel}
    app = web.Application(
        client_max_size=settings.http.max_body_bytes,
        middlewares=[routes.errors_middleware],
    )
    app[routes.MAX_BODY] = settings.http.max_body_bytes
    app[routes.API_TOKEN] = settings.api.token.get_secret_value() if settings.api.token else ""
    app[routes.CLOCK] = clock

    async def store_ctx(app: web.Application) -> AsyncIterator[None]:
        owned = store is None
        app[routes.STORE] = await open_store(settings.store) if store is None else store
        log.info("store open", url=settings.store.url if owned else type(store).__name__)
        yield
        if owned:
            await app[routes.STORE].aclose()
            log.info("store closed")

    async def ingest_ctx(app: web.Application) -> AsyncIterator[None]:
        ingestor = build_ingestor(settings, app[routes.STORE], clock)
        app[routes.INGESTOR] = ingestor
        if "off" in policies.values():
            log.warning(
                "signature checking is off for some channels: notifications are stored without"
                " proof that MPS sent them; set verify.notify_keys to turn it on",
                policies=policies,
            )
        else:
            log.info("signature checking", policies=policies, keys=len(settings.verify.keys()))
        yield
        await ingestor.drain()

    async def consumer_ctx(app: web.Application) -> AsyncIterator[None]:
        consumer = AmqpConsumer(
            app[routes.INGESTOR],
            app[routes.STORE],
            settings.amqp,
            max_body_bytes=settings.http.max_body_bytes,
        )
        await consumer.start()
        app[routes.CONSUMER] = consumer
        yield
        await consumer.stop()

    # Registered in dependency order; teardown runs in reverse.
    app.cleanup_ctx.append(store_ctx)
    app.cleanup_ctx.append(ingest_ctx)
    if role == "consume" and settings.amqp.url is None:
        raise ConfigError("consume: amqp.url is not set (RECEIVER_AMQP__URL)")
    if settings.amqp.url is not None:
        app.cleanup_ctx.append(consumer_ctx)
    if role == "serve":
        routes.add_routes(app)
    else:
        routes.add_probes(app)
    return app
