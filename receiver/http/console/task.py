"""The page of one task: its record, its timeline and transcript (drawn once per process and brought
up to date with the events since), its deliveries per sink, its events with their payloads."""

from __future__ import annotations

from collections import OrderedDict

from aiohttp import web
from markupsafe import Markup

from receiver.documents import overdue
from receiver.http import keys
from receiver.http.console import views
from receiver.http.console.keys import ENV
from receiver.http.console.pages import event_view, next_url, render_page
from receiver.http.params import BadParameterError, cursor_param
from receiver.ports import DeliveryState, EventQuery
from receiver.tasks import Task

TASK_EVENTS = 25  # events listed per page of a task
TIMELINE_EVENTS = 20_000  # events a task's timeline and transcript are drawn from, at most
DRAWN_TASKS = 32  # drawings kept (per process), the most recently viewed
DRAWINGS: web.AppKey[OrderedDict[str, views.Drawing]] = web.AppKey("console_drawings")


async def drawing_of(request: web.Request, task: Task) -> views.Drawing:
    """The task's drawing, brought up to date: from this process's last drawing of it, only the
    events since are read (a task of 10,000 events is read whole once, not on every page)."""
    store = request.config_dict[keys.STORE]
    cache = request.app[DRAWINGS]
    want = min(task.event_count + task.late_count, TIMELINE_EVENTS)
    drawing = cache.pop(task.id, None)
    if drawing is None or drawing.events > want:
        drawing = views.Drawing()
    if drawing.events < want:
        drawing.add(
            await store.task_timeline(task.id, after=drawing.last_seq, limit=TIMELINE_EVENTS - drawing.events)
        )
        if drawing.events != want:  # orphans adopted (older events), or more arrived meanwhile: all again
            drawing = views.Drawing().add(await store.task_timeline(task.id, after=0, limit=TIMELINE_EVENTS))
    cache[task.id] = drawing
    while len(cache) > DRAWN_TASKS:
        cache.popitem(last=False)
    return drawing


async def task_page(request: web.Request) -> web.Response:
    store = request.config_dict[keys.STORE]
    task = await store.get_task(request.match_info["task_id"])
    if task is None:
        return render_page(request, "error.html", "Not found", "tasks", 404, message="No such task.")
    try:
        cursor = cursor_param(request)
        offset = int(request.query.get("lines", "0"))
    except (BadParameterError, ValueError):
        cursor, offset = 0, 0
    drawing = await drawing_of(request, task)
    lines = drawing.transcript()
    offset = max(0, min(offset, len(lines)))
    truncated = task.event_count + task.late_count > TIMELINE_EVENTS
    # The timeline and the transcript's page, rendered (escaped) once until the task has new events.
    drawn = drawing.rendered.get(offset)
    if drawn is None:
        more = offset + views.TRANSCRIPT_LINES
        drawn = drawing.rendered[offset] = Markup(
            request.app[ENV]
            .get_template("drawing.html")
            .render(
                timeline=drawing.timeline(),
                truncated=truncated,
                width=views.WIDTH,
                lines=lines[offset:more],
                lines_total=len(lines),
                lines_offset=offset,
                more_lines=str(request.rel_url.with_query(lines=more)) if more < len(lines) else None,
            )
        )
    events = await store.list_events(EventQuery(task_ref=task.id, after=cursor, limit=TASK_EVENTS))
    counts = await store.task_delivery_counts(task.task_id) if task.task_id else []
    per_sink: dict[str, dict[str, int]] = {}
    for sink, state, n in counts:
        per_sink.setdefault(sink, dict.fromkeys(tuple(DeliveryState), 0))[state] = n
    config = request.config_dict
    return render_page(
        request,
        "task.html",
        f"Task {task.task_id or task.id}",
        "tasks",
        task=task,
        overdue=overdue(task, config[keys.CLOCK](), config[keys.TASK_DEADLINE]),
        drawn=drawn,
        events=[event_view(e) for e in events.items],
        next_url=next_url(request, events.next),
        deliveries=per_sink,
    )


def add_routes(console: web.Application) -> None:
    console[DRAWINGS] = OrderedDict()
    console.router.add_get("/tasks/{task_id}", task_page)
