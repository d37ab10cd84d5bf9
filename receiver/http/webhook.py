"""The MPS webhook, ``POST /v1/notifications``: the body to the ingest use case, its verdict as the
answer; and the application of its own listener (``http.management_port`` set)."""

from __future__ import annotations

import contextlib

from aiohttp import web

from receiver import decoder, logs
from receiver.errors import (
    InvalidNotificationError,
    NotLiveError,
    SignatureError,
    StoreUnavailableError,
    UnstorableError,
)
from receiver.events import Channel
from receiver.http.guards import body_timeout
from receiver.http.keys import BODY_TIMEOUT, CLOCK, INGESTOR, MAX_BODY, STORE, TRACING
from receiver.http.middleware import WEBHOOK_PATH, Handler, errors_middleware
from receiver.http.probes import healthz
from receiver.http.responses import error_response, json_response
from receiver.ports import Quarantined
from receiver.settings import Settings
from receiver.tracing import Tracing

_OK = b'{"code":0}'


async def receive_notification(request: web.Request, traceparent: str | None = None) -> web.Response:
    """``POST /v1/notifications``: answered ``200 {"code":0}`` only once the event is committed."""
    # Every line logged for this notification says which channel it came in (ingest adds the task).
    bound = logs.bind(channel=Channel.HTTP.value)
    try:
        return await _receive(request, traceparent)
    finally:
        logs.unbind(bound)


async def _receive(request: web.Request, traceparent: str | None) -> web.Response:
    body = await request.read()
    try:
        await request.app[INGESTOR].ingest(body, Channel.HTTP, traceparent)
    except InvalidNotificationError as exc:
        if exc.signed:  # signed (or not asked to be) yet refused: keep it for inspection
            await _quarantine(request, body, exc.code, str(exc), exc.field)
        return error_response(400, exc.code, str(exc), field=exc.field, expected=exc.expected, got=exc.got)
    except SignatureError as exc:
        return error_response(401, exc.code, exc.reason)
    except NotLiveError as exc:  # genuine, but not ours to store: taken, kept aside, said so
        await _quarantine(request, body, exc.code, str(exc), None)
        return json_response({"code": 0, "message": str(exc)})
    except UnstorableError as exc:
        # Retrying cannot help: keep it for inspection and tell the sender so.
        await _quarantine(request, body, exc.code, str(exc), None)
        return error_response(422, exc.code, str(exc))
    return web.Response(body=_OK, content_type="application/json")


async def _quarantine(request: web.Request, body: bytes, reason: str, detail: str, field: str | None) -> None:
    # Kept without its Sign pair: a quarantine row is read through the API.
    now = request.app[CLOCK]()
    kept = Quarantined(Channel.HTTP.value, now, reason, detail, field, decoder.scrub(body), {})
    with contextlib.suppress(StoreUnavailableError):
        await request.app[STORE].quarantine(kept)


def traced(tracing: Tracing) -> Handler:
    """The webhook in a server span (tracing on), whose trace is stored with the event."""

    async def receive(request: web.Request) -> web.StreamResponse:
        with tracing.server(request.method, request.path, request.headers) as span:
            response = await receive_notification(request, tracing.traceparent(span))
            span.set_attribute("http.response.status_code", response.status)
            return response

    return receive


async def _method_not_allowed(request: web.Request) -> web.StreamResponse:
    raise web.HTTPMethodNotAllowed(request.method, ["POST"])


async def _not_here(request: web.Request) -> web.StreamResponse:
    raise web.HTTPNotFound()


def add_webhook(app: web.Application, tracing: Tracing | None = None) -> None:
    # Chosen once here: with tracing off the handler is the plain one, nothing added per request.
    resource = app.router.add_resource(WEBHOOK_PATH)
    resource.add_route("POST", receive_notification if tracing is None else traced(tracing))
    # Any other method is answered here, 405: the management API mounted beside it under /v1/
    # would otherwise take the path for one of its own (and ask for its token).
    resource.add_route("*", _method_not_allowed)


def keep_webhook_path(app: web.Application) -> None:
    """On a management listener without the webhook (``http.management_port`` set): the webhook's
    path is unknown there, a 404 whether the token is given or not (not the API's 401)."""
    app.router.add_route("*", WEBHOOK_PATH, _not_here)


def webhook_app(settings: Settings, main: web.Application) -> web.Application:
    """The webhook's own listener (``http.management_port`` set): ``POST /v1/notifications`` and
    ``/healthz``, on the ingestor and store of ``main``, which must have started first."""
    app = web.Application(
        client_max_size=settings.http.max_body_bytes, middlewares=[errors_middleware, body_timeout]
    )
    app[MAX_BODY] = settings.http.max_body_bytes
    app[BODY_TIMEOUT] = settings.http.body_timeout
    app[CLOCK] = main[CLOCK]

    async def share(app: web.Application) -> None:
        app[INGESTOR] = main[INGESTOR]
        app[STORE] = main[STORE]

    app.on_startup.append(share)
    add_webhook(app, main.get(TRACING))
    app.router.add_get("/healthz", healthz)
    return app
