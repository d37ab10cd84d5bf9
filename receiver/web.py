"""aiohttp routes: the MPS webhook, the management API (tasks, events) and the health probes."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from typing import Annotated, Any

import orjson
import structlog
from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from receiver import decoder, messages, openapi
from receiver.consumer import AmqpConsumer
from receiver.dispatch import Dispatcher
from receiver.documents import event_document, iso, task_document
from receiver.errors import (
    ConflictError,
    InvalidNotificationError,
    NotLiveError,
    SignatureError,
    StoreUnavailableError,
    UnstorableError,
)
from receiver.events import Channel
from receiver.guards import WEBHOOK_PATH
from receiver.ingest import Ingestor
from receiver.leases import LeasedJob
from receiver.metrics import CONTENT_TYPE, Metrics, Snapshot
from receiver.ports import MIN_TEXT, EventQuery, Quarantined, Router, Store
from receiver.responses import error_response as error_response  # re-exported for the API modules
from receiver.responses import json_response as json_response
from receiver.tasks import Task, TaskState, new_id
from receiver.tracing import Tracing

log = structlog.get_logger("receiver.web")

INGESTOR = web.AppKey("ingestor", Ingestor)
STORE = web.AppKey("store", Store)
MAX_BODY = web.AppKey("max_body", int)
CLOCK: web.AppKey[Callable[[], float]] = web.AppKey("clock")
CONSUMER = web.AppKey("consumer", AmqpConsumer)
# The dispatcher runs in one process per store: ``.current`` is None in the others.
DISPATCHER: web.AppKey[LeasedJob[Dispatcher]] = web.AppKey("dispatcher")
METRICS = web.AppKey("metrics", Metrics)
ROUTER: web.AppKey[Router] = web.AppKey("router")  # set when sinks are configured
TASK_DEADLINE = web.AppKey("task_deadline", float)  # seconds; 0 = tasks are never overdue

_OK = b'{"code":0}'
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


# --- errors ------------------------------------------------------------------------------------


class BadParameterError(Exception):
    def __init__(self, field: str, expected: str) -> None:
        self.field = field
        self.expected = expected
        super().__init__(f"{field}: expected {expected}")


@web.middleware
async def errors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every error leaves as JSON naming what was wrong; nothing a client sends escapes as a 500 page."""
    try:
        return await handler(request)
    except BadParameterError as exc:
        return error_response(400, "invalid_parameter", str(exc), field=exc.field, expected=exc.expected)
    except StoreUnavailableError as exc:
        # The detail (a driver's message, a path) is for the operator's log, not for whoever asks;
        # the webhook's summary line already carries it.
        if request.path != WEBHOOK_PATH:
            log.error("store unavailable", path=request.path, method=request.method, error=str(exc))
        return error_response(503, exc.code, "the store is unavailable; retry later", {"Retry-After": "1"})
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        if exc.status == 413:
            limit = request.app[MAX_BODY]
            if request.path == WEBHOOK_PATH:  # still one summary line per notification
                log.warning("notification", channel="http", outcome="too_large", limit=limit)
            return error_response(
                413, "body_too_large", f"the body is over the limit of {limit} bytes", limit=limit
            )
        kept = {
            k: v for k, v in exc.headers.items() if k.lower() in ("allow", "retry-after", "www-authenticate")
        }
        return error_response(exc.status, exc.reason.lower().replace(" ", "_"), exc.reason, headers=kept)
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception("unhandled error", path=request.path, method=request.method)
        return error_response(500, "internal_error", "internal error; see the receiver's log")


# --- the webhook -------------------------------------------------------------------------------


async def receive_notification(request: web.Request, traceparent: str | None = None) -> web.Response:
    """``POST /v1/notifications``: answered ``200 {"code":0}`` only once the event is committed."""
    # Every line logged for this notification says which channel it came in (ingest adds the task).
    bound = structlog.contextvars.bind_contextvars(channel=Channel.HTTP.value)
    try:
        return await _receive(request, traceparent)
    finally:
        structlog.contextvars.reset_contextvars(**bound)


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


# --- management API ----------------------------------------------------------------------------


class TaskRegistration(BaseModel):
    """``POST /v1/tasks``: a task submitted elsewhere, so that its notifications find it."""

    model_config = ConfigDict(extra="forbid")

    task_id: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=256)]
    session_id: str = Field(default="", max_length=50)
    session_context: str = Field(default="", max_length=1000)
    url: str = Field(default="", max_length=4096)
    labels: dict[str, str] = Field(default_factory=dict)


async def register_task(request: web.Request) -> web.Response:
    try:
        body = orjson.loads(await request.read())
        spec = TaskRegistration.model_validate(body)
    except orjson.JSONDecodeError as exc:
        raise BadParameterError("body", f"a JSON object ({exc})") from None
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        field = ".".join(str(p) for p in first["loc"]) or "body"
        raise BadParameterError(field, messages.expected(first)) from None
    now = request.app[CLOCK]()
    task = Task(
        id=new_id(),
        task_id=spec.task_id.strip(),
        session_id=spec.session_id,
        session_context=spec.session_context,
        url=spec.url,
        labels=spec.labels,
        state=TaskState.SUBMITTED,
        created_at=now,
        updated_at=now,
    )
    try:
        task, adopted = await request.app[STORE].register_task(task, request.app.get(ROUTER))
    except ConflictError as exc:
        return error_response(409, exc.code, str(exc), field="task_id")
    log.info("task registered", task_id=task.task_id, adopted_events=adopted, state=task.state.value)
    return json_response({**_task_doc(request, task), "adopted_events": adopted}, 201)


def _task_doc(request: web.Request, task: Task) -> dict[str, Any]:
    return task_document(task, now=request.app[CLOCK](), deadline=request.app[TASK_DEADLINE])


async def get_task(request: web.Request) -> web.Response:
    task = await request.app[STORE].get_task(request.match_info["task_id"])
    if task is None:
        return error_response(404, "not_found", f"no task {request.match_info['task_id']!r}")
    return json_response(_task_doc(request, task))


def limit_param(request: web.Request) -> int:
    raw = request.query.get("limit", "100")
    if not (raw.isascii() and raw.isdigit()) or not 1 <= int(raw) <= 1000:
        raise BadParameterError("limit", "an integer from 1 to 1000")
    return int(raw)


def cursor_param(request: web.Request) -> int:
    raw = request.query.get("cursor", "0")
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 18:
        raise BadParameterError("cursor", "the 'next' value of a previous page")
    return int(raw)


async def list_tasks(request: web.Request) -> web.Response:
    state: TaskState | None = None
    if "state" in request.query:
        try:
            state = TaskState(request.query["state"])
        except ValueError:
            raise BadParameterError("state", "one of " + ", ".join(s.value for s in TaskState)) from None
    page = await request.app[STORE].list_tasks(
        state=state, after=str(cursor_param(request)), limit=limit_param(request)
    )
    return json_response({"items": [_task_doc(request, t) for t in page.items], "next": page.next})


def time_param(raw: str, name: str = "since") -> float:
    try:
        return float(raw)
    except ValueError:
        pass
    try:
        parsed = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise BadParameterError(name, "unix seconds or an ISO 8601 date-time") from None
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).timestamp()


async def _events_page(request: web.Request, query: EventQuery) -> web.Response:
    page = await request.app[STORE].list_events(query)
    return json_response({"items": [event_document(e) for e in page.items], "next": page.next})


def confidence_param(raw: str, name: str = "min_confidence") -> float:
    try:
        value = float(raw)
    except ValueError:
        raise BadParameterError(name, "a number") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise BadParameterError(name, "a finite number")
    return value


def text_param(raw: str, name: str = "text") -> str:
    if len(raw) < MIN_TEXT:
        raise BadParameterError(name, f"at least {MIN_TEXT} characters")
    return raw


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
        min_confidence=confidence_param(q["min_confidence"]) if "min_confidence" in q else None,
        text=text_param(q["text"]) if "text" in q else None,
        descending=q.get("order") == "desc",
        after=after,
        limit=limit,
    )


async def list_events(request: web.Request) -> web.Response:
    query = event_query(request.query, after=cursor_param(request), limit=limit_param(request))
    return await _events_page(request, query)


async def list_task_events(request: web.Request) -> web.Response:
    task = await request.app[STORE].get_task(request.match_info["task_id"])
    if task is None:
        return error_response(404, "not_found", f"no task {request.match_info['task_id']!r}")
    return await _events_page(
        request, EventQuery(task_ref=task.id, after=cursor_param(request), limit=limit_param(request))
    )


async def list_quarantine(request: web.Request) -> web.Response:
    """Messages that could never become events, with the reason (the body as text where it is)."""
    page = await request.app[STORE].list_quarantine(after=cursor_param(request), limit=limit_param(request))
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


# --- probes ------------------------------------------------------------------------------------


async def healthz(request: web.Request) -> web.Response:
    return json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    """Ready = the store takes writes and, when a consumer runs, the broker connection is up."""
    body: dict[str, Any] = {"status": "ready", "store": "ok"}
    try:
        await asyncio.wait_for(request.app[STORE].ping(), timeout=2.0)
    except (StoreUnavailableError, TimeoutError) as exc:
        # Probes are unauthenticated: the reason stays generic, the detail goes to the log.
        log.error("readiness: store unavailable", error=str(exc) or "ping timed out")
        body.update(status="unavailable", store="unavailable")
    consumer = request.app.get(CONSUMER)
    if consumer is not None:
        body["amqp"] = {"state": consumer.state, **consumer.counts}
        if not consumer.connected:
            body["status"] = "unavailable"
    return json_response(body, 200 if body["status"] == "ready" else 503)


async def metrics(request: web.Request) -> web.Response:
    """Prometheus text format. The gauges are read from the store now."""
    store = request.app[STORE]
    snap = Snapshot()
    try:
        for s in await store.sink_stats():
            snap.backlog[s.sink] = s.pending
            snap.dead[s.sink] = s.dead
            snap.oldest_pending_at[s.sink] = s.oldest_pending_at
        snap.tasks = await store.task_counts()
    except StoreUnavailableError:
        pass  # the counters still answer; the gauges are missing rather than wrong
    consumer = request.app.get(CONSUMER)
    if consumer is not None:
        snap.amqp = dict(consumer.counts)
    registry = request.app[METRICS]
    registry.snapshot = snap
    return web.Response(body=registry.render(), headers={"Content-Type": CONTENT_TYPE})


def add_probes(app: web.Application) -> None:
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)


async def openapi_document(request: web.Request) -> web.Response:
    return json_response(openapi.document())


def traced(tracing: Tracing) -> Handler:
    """The webhook in a server span (tracing on), whose trace is stored with the event."""

    async def receive(request: web.Request) -> web.StreamResponse:
        with tracing.server(request.method, request.path, request.headers) as span:
            response = await receive_notification(request, tracing.traceparent(span))
            span.set_attribute("http.response.status_code", response.status)
            return response

    return receive


def add_webhook(app: web.Application, tracing: Tracing | None = None) -> None:
    # Chosen once here: with tracing off the handler is the plain one, nothing added per request.
    app.router.add_post(WEBHOOK_PATH, receive_notification if tracing is None else traced(tracing))


def add_management(app: web.Application) -> None:
    """The routes ``guards.management_guard`` protects (all under ``/v1/``), and the API's document."""
    app.router.add_get("/openapi.json", openapi_document)
    app.router.add_post("/v1/tasks", register_task)
    app.router.add_get("/v1/tasks", list_tasks)
    app.router.add_get("/v1/tasks/{task_id}", get_task)
    app.router.add_get("/v1/tasks/{task_id}/events", list_task_events)
    app.router.add_get("/v1/events", list_events)
    app.router.add_get("/v1/quarantine", list_quarantine)
