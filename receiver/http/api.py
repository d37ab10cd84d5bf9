"""The management API as one aiohttp sub-application under ``/v1/``, behind one guard
(Host, Origin, bearer token, JSON for a change), and the parts served beside it."""

from __future__ import annotations

from aiohttp import web

from receiver.http import abort, events, notices, openapi, outbox, submit, tasks
from receiver.http.console import add_console
from receiver.http.guards import body_timeout, management_guard
from receiver.http.responses import json_response
from receiver.settings import Settings

PREFIX = "/v1"


def management_api() -> web.Application:
    """Every route of ``/v1/`` but the webhook: the guard first, then the body is read."""
    api = web.Application(middlewares=[management_guard, body_timeout])
    tasks.add_routes(api)
    events.add_routes(api)
    outbox.add_routes(api)
    notices.add_routes(api)
    submit.add_routes(api)
    abort.add_routes(api)
    return api


async def openapi_document(request: web.Request) -> web.Response:
    return json_response(openapi.document())


def add_management(app: web.Application, settings: Settings) -> None:
    """On the application that serves the management side: the API, its document (which needs
    no token), and the console (with its own session guard)."""
    app.router.add_get("/openapi.json", openapi_document)
    app.add_subapp(PREFIX, management_api())
    add_console(app, settings)
