"""The management API's events (all, or one task's, filtered) and its quarantine (what never became one)."""

from __future__ import annotations

from collections.abc import Mapping

from aiohttp import web

from receiver.documents import event_document, iso
from receiver.http.keys import STORE
from receiver.http.params import (
    BadParameterError,
    cursor_param,
    limit_param,
    number_param,
    text_param,
    time_param,
)
from receiver.http.responses import error_response, json_response
from receiver.ports import EventQuery


def event_query(q: Mapping[str, str], *, after: int = 0, limit: int = 100) -> EventQuery:
    """The filters of ``GET /v1/events`` (and of the console's events page), checked."""
    orphan: bool | None = None
    if "orphan" in q:
        if q["orphan"] not in ("true", "false"):
            raise BadParameterError("orphan", "true or false")
        orphan = q["orphan"] == "true"
    if q.get("order", "asc") not in ("asc", "desc"):
        raise BadParameterError("order", "asc or desc")
    return EventQuery(
        task_id=q.get("task_id"),
        notification_type=q.get("type"),
        since=time_param(q["since"]) if "since" in q else None,
        until=time_param(q["until"], "until") if "until" in q else None,
        orphan=orphan,
        kind=q.get("kind"),
        label=q.get("label"),
        suggestion=q.get("suggestion"),
        min_confidence=number_param(q["min_confidence"], "min_confidence") if "min_confidence" in q else None,
        text=text_param(q["text"]) if "text" in q else None,
        descending=q.get("order") == "desc",
        after=after,
        limit=limit,
    )


async def _events_page(request: web.Request, query: EventQuery) -> web.Response:
    page = await request.config_dict[STORE].list_events(query)
    return json_response({"items": [event_document(e, spliced=True) for e in page.items], "next": page.next})


async def list_events(request: web.Request) -> web.Response:
    query = event_query(request.query, after=cursor_param(request), limit=limit_param(request))
    return await _events_page(request, query)


async def list_task_events(request: web.Request) -> web.Response:
    task = await request.config_dict[STORE].get_task(request.match_info["task_id"])
    if task is None:
        return error_response(404, "not_found", f"no task {request.match_info['task_id']!r}")
    return await _events_page(
        request, EventQuery(task_ref=task.id, after=cursor_param(request), limit=limit_param(request))
    )


async def list_quarantine(request: web.Request) -> web.Response:
    """Messages that could never become events, with the reason (the body as text where it is)."""
    page = await request.config_dict[STORE].list_quarantine(
        after=cursor_param(request), limit=limit_param(request)
    )
    items = [
        {
            "id": q.id,
            "channel": q.channel,
            "received_at": iso(q.received_at),
            "reason": q.reason,
            "detail": q.detail,
            "field": q.field,
            "body": q.body.decode("utf-8", "replace"),
            "meta": q.meta,
        }
        for q in page.items
    ]
    return json_response({"items": items, "next": page.next})


def add_routes(api: web.Application) -> None:
    api.router.add_get("/tasks/{task_id}/events", list_task_events)
    api.router.add_get("/events", list_events)
    api.router.add_get("/quarantine", list_quarantine)
