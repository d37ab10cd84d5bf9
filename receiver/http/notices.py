"""``GET /v1/operator-events``: receiver's own operator events, oldest first."""

from __future__ import annotations

from aiohttp import web

from receiver.documents import iso
from receiver.http.keys import STORE
from receiver.http.params import choice_param, cursor_param, limit_param
from receiver.http.responses import json_response
from receiver.notices import KINDS


async def list_operator_events(request: web.Request) -> web.Response:
    """Operator events, oldest first: one of a kind and subject per window, sent or not."""
    kind = request.query.get("kind")
    if kind is not None:
        choice_param(kind, "kind", tuple(KINDS))
    page = await request.config_dict[STORE].list_operator_events(
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


def add_routes(api: web.Application) -> None:
    api.router.add_get("/operator-events", list_operator_events)
