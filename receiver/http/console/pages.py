"""The console's pages: overview, tasks, a task, events, an event, deliveries, a delivery, quarantine.

Each reads through the store's ports (what the JSON API reads) and renders a template; filters are
the API's own parameters, checked by the same functions, so a page and ``/v1/`` agree."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime
from typing import Any

from aiohttp import web
from yarl import URL

from receiver.documents import overdue
from receiver.http import keys
from receiver.http.console import views
from receiver.http.console.keys import ENV, SESSION, SESSIONS
from receiver.http.console.render import html, when
from receiver.http.events import event_query
from receiver.http.outbox import delivery_query, find_delivery
from receiver.http.params import BadParameterError, cursor_param, id_or_none
from receiver.http.responses import json_response
from receiver.http.tasks import state_param
from receiver.ports import DeliveryState, EventQuery, EventRecord
from receiver.tasks import TaskState

OUTCOMES = ("stored", "duplicate", "invalid", "unauthorized", "unavailable")
MINUTES = 15  # of the overview's chart
PAGE = 50
SUGGESTIONS = ("block", "review", "pass")


def base(request: web.Request, title: str, nav: str = "") -> dict[str, Any]:
    """What every page's frame needs: its title, the current section, the session's CSRF token."""
    sessions = request.app[SESSIONS]
    session = request.get(SESSION)
    return {
        "title": title,
        "nav": nav,
        "csrf": sessions.csrf(session) if session is not None else "",
        "signed_in": sessions.required and session is not None and session.authenticated,
    }


def render_page(
    request: web.Request, template: str, title: str, nav: str, status: int = 200, **ctx: Any
) -> web.Response:
    return html(request.app[ENV], template, status, **base(request, title, nav), **ctx)


def next_url(request: web.Request, cursor: str | None) -> str | None:
    return None if cursor is None else str(request.rel_url.update_query(cursor=cursor))


def _sinks(request: web.Request) -> list[str]:
    return sorted(request.config_dict.get(keys.SINK_NAMES) or ())


# --- overview --------------------------------------------------------------------------------------


async def overview_data(request: web.Request) -> dict[str, Any]:
    """Everything the overview shows, from the store (so every process and replica counts)."""
    config = request.config_dict
    store = config[keys.STORE]
    now = config[keys.CLOCK]()
    minute = int(now // 60)
    per_minute: Counter[int] = Counter()
    outcomes: Counter[str] = Counter({o: 0 for o in OUTCOMES})
    for m, outcome, n in await store.ingest_counts(minute - MINUTES + 1):
        per_minute[m] += n
        outcomes[outcome] += n
    rates = []
    for m in range(minute - MINUTES + 1, minute + 1):
        seconds = 60.0 if m < minute else max(1.0, now - m * 60)
        label = datetime.fromtimestamp(m * 60, UTC).strftime("%H:%M")
        rates.append((label, round(per_minute[m] / seconds, 2)))
    bars, top = views.rate_bars(rates)
    leased = config.get(keys.DISPATCHER)
    dispatcher = leased.current if leased is not None else None  # runs in one process per store
    live = dispatcher.status() if dispatcher is not None else {}
    sinks = []
    for s in await store.sink_backlog(_sinks(request)):
        breaker = live.get(s.sink, {}).get("breaker")
        sinks.append(
            {
                "sink": s.sink,
                "backlog": s.pending,
                "dead": s.dead,
                "oldest_undelivered_age_seconds": None
                if s.oldest_pending_at is None
                else round(max(0.0, now - s.oldest_pending_at), 1),
                "disabled": s.disabled,
                # The breaker lives in the dispatcher's process: known here only if it runs here.
                "breaker": "switched off" if s.disabled else (breaker or "elsewhere"),
            }
        )
    tasks = await store.task_counts()
    return {
        "now": when(now),
        "rate_now": rates[-1][1],
        "rates": [{"minute": label, "per_second": r} for label, r in rates],
        "bars": [{"x": b.x, "y": b.y, "width": b.width, "height": b.height, "label": b.label} for b in bars],
        "top": top,
        "outcomes": dict(outcomes),
        "tasks": {state.value: tasks.get(state.value, 0) for state in TaskState}
        | {k: v for k, v in tasks.items() if k not in {s.value for s in TaskState}},
        "sinks": sinks,
        "quarantine": await store.quarantine_count(),
    }


async def overview(request: web.Request) -> web.Response:
    data = await overview_data(request)
    return render_page(request, "overview.html", "Overview", "overview", data=data, minutes=MINUTES)


async def overview_json(request: web.Request) -> web.Response:
    """What the overview page polls to refresh itself."""
    response = json_response(await overview_data(request))
    response.headers["Cache-Control"] = "no-store"
    return response


# --- tasks -----------------------------------------------------------------------------------------


def _task_filters(request: web.Request) -> dict[str, Any]:
    q = request.query
    state = state_param(q["state"]) if q.get("state") else None
    label = None
    if q.get("label"):
        key, sep, value = q["label"].partition("=")
        if not sep or not key:
            raise BadParameterError("label", "key=value")
        label = (key, value)
    return {"state": state, "label": label, "search": q.get("q") or None}


async def tasks_page(request: web.Request) -> web.Response:
    try:
        filters = _task_filters(request)
        cursor = cursor_param(request)
    except BadParameterError as exc:
        return render_page(
            request,
            "tasks.html",
            "Tasks",
            "tasks",
            400,
            error=str(exc),
            tasks=[],
            next_url=None,
            q=request.query,
            states=list(TaskState),
        )
    store = request.config_dict[keys.STORE]
    page = await store.list_tasks(after=str(cursor), limit=PAGE, newest_first=True, **filters)
    now = request.config_dict[keys.CLOCK]()
    deadline = request.config_dict[keys.TASK_DEADLINE]
    items = [(t, overdue(t, now, deadline)) for t in page.items]
    return render_page(
        request,
        "tasks.html",
        "Tasks",
        "tasks",
        tasks=items,
        next_url=next_url(request, page.next),
        q=request.query,
        states=list(TaskState),
        error=None,
    )


# --- events ----------------------------------------------------------------------------------------


def event_view(e: EventRecord) -> dict[str, Any]:
    texts = [str(v) for f in e.findings for v in (f.get("text"), f.get("translation")) if v][:4]
    return {"record": e, "texts": texts, "findings": e.findings[:4], "more": max(0, len(e.findings) - 4)}


async def events_page(request: web.Request) -> web.Response:
    params = {k: v for k, v in request.query.items() if v != "" and k != "cursor"}
    params.setdefault("order", "desc")
    store = request.config_dict[keys.STORE]
    try:
        query = event_query(params, after=cursor_param(request), limit=PAGE)
    except BadParameterError as exc:
        return render_page(
            request,
            "events.html",
            "Events",
            "events",
            400,
            error=str(exc),
            events=[],
            next_url=None,
            q=request.query,
            suggestions=SUGGESTIONS,
        )
    page = await store.list_events(query)
    return render_page(
        request,
        "events.html",
        "Events",
        "events",
        error=None,
        events=[event_view(e) for e in page.items],
        next_url=next_url(request, page.next),
        q=request.query,
        suggestions=SUGGESTIONS,
    )


async def event_page(request: web.Request) -> web.Response:
    seq = id_or_none(request.match_info["seq"]) or 0
    page = (
        await request.config_dict[keys.STORE].list_events(EventQuery(after=seq - 1, limit=1)) if seq else None
    )
    if page is None or not page.items or page.items[0].seq != seq:
        return render_page(request, "error.html", "Not found", "events", 404, message="No such event.")
    return render_page(request, "event.html", f"Event {seq}", "events", e=page.items[0])


# --- deliveries ------------------------------------------------------------------------------------

DELIVERY_FILTERS = ("sink", "state", "task_id", "type", "since", "until")


def filters_of(request: web.Request) -> dict[str, str]:
    return {k: request.query[k] for k in DELIVERY_FILTERS if request.query.get(k)}


async def deliveries_page(request: web.Request) -> web.Response:
    filters = filters_of(request)
    store = request.config_dict[keys.STORE]
    try:
        query = delivery_query(filters, after=cursor_param(request), limit=PAGE)
    except BadParameterError as exc:
        return render_page(
            request,
            "deliveries.html",
            "Deliveries",
            "deliveries",
            400,
            error=str(exc),
            items=[],
            next_url=None,
            q=filters,
            sinks=[],
            sink_names=_sinks(request),
            states=tuple(DeliveryState),
            redrive_url=None,
            redriven=None,
        )
    page = await store.list_deliveries(query)
    sinks = await store.sink_backlog(_sinks(request))
    redriven = request.query.get("redriven")
    return render_page(
        request,
        "deliveries.html",
        "Deliveries",
        "deliveries",
        error=None,
        items=page.items,
        next_url=next_url(request, page.next),
        q=filters,
        sinks=sinks,
        sink_names=_sinks(request),
        states=tuple(DeliveryState),
        redrive_url=str(URL("/console/deliveries/redrive").with_query(filters)),
        redriven=int(redriven) if redriven and redriven.isdigit() else None,
        now=request.config_dict[keys.CLOCK](),
    )


async def delivery_page(request: web.Request) -> web.Response:
    delivery_id = id_or_none(request.match_info["id"])
    found = None if delivery_id is None else await find_delivery(request.config_dict, delivery_id)
    if found is None:
        return render_page(request, "error.html", "Not found", "deliveries", 404, message="No such delivery.")
    attempts = await request.config_dict[keys.STORE].list_attempts(found.id)
    return render_page(
        request, "delivery.html", f"Delivery {found.id}", "deliveries", d=found, attempts=attempts
    )


async def redrive_confirm(request: web.Request) -> web.Response:
    """The dry run: how many deliveries the filters match, and the button that redrives them."""
    filters = filters_of(request)
    try:
        query = delivery_query({"state": DeliveryState.DEAD, **filters})
    except BadParameterError as exc:
        return render_page(request, "error.html", "Redrive", "deliveries", 400, message=str(exc))
    n = await request.config_dict[keys.STORE].redrive(
        query, now=request.config_dict[keys.CLOCK](), dry_run=True
    )
    return render_page(
        request, "redrive.html", "Redrive", "deliveries", matched=n, q={"state": "dead", **filters}
    )


# --- quarantine ------------------------------------------------------------------------------------


async def quarantine_page(request: web.Request) -> web.Response:
    store = request.config_dict[keys.STORE]
    try:
        cursor = cursor_param(request)
    except BadParameterError:
        cursor = 0
    page = await store.list_quarantine(after=cursor, limit=PAGE)
    items = [(q, *views.preview(q.body, 2048)) for q in page.items]
    return render_page(
        request,
        "quarantine.html",
        "Quarantine",
        "quarantine",
        items=items,
        next_url=next_url(request, page.next),
        total=await store.quarantine_count(),
    )


def add_routes(console: web.Application) -> None:
    console.router.add_get("/", overview)
    console.router.add_get("/overview.json", overview_json)
    console.router.add_get("/tasks", tasks_page)
    console.router.add_get("/events", events_page)
    console.router.add_get("/events/{seq}", event_page)
    console.router.add_get("/deliveries", deliveries_page)
    console.router.add_get("/deliveries/redrive", redrive_confirm)
    console.router.add_get("/deliveries/{id}", delivery_page)
    console.router.add_get("/quarantine", quarantine_page)
