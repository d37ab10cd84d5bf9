"""Management API of receiver's own operator events: ``GET /v1/operator-events``."""

from __future__ import annotations

from aiohttp import web

from receiver.documents import iso
from receiver.notices import KINDS
from receiver.web import STORE, BadParameterError, cursor_param, json_response, limit_param


async def list_operator_events(request: web.Request) -> web.Response:
    """Operator events, oldest first: one of a kind and subject per window, sent or not."""
    kind = request.query.get("kind")
    if kind is not None and kind not in KINDS:
        raise BadParameterError("kind", "one of " + ", ".join(KINDS))
    store = request.app[STORE]
    page = await store.list_operator_events(
        kind=kind, after=cursor_param(request), limit=limit_param(request)
    )
    items = [
        {
            "id": o.id,
            "kind": o.kind,
            "subject": o.subject,
            "at": iso(o.at),
            "window_start": iso(o.window_start),
            "detail": o.detail,
            "event_id": o.event_id,  # its event, when operator sinks take it
        }
        for o in page.items
    ]
    return json_response({"items": items, "next": page.next})


def add_routes(app: web.Application) -> None:
    app.router.add_get("/v1/operator-events", list_operator_events)
