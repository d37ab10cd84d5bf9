"""``POST /v1/tasks/submit``: start a task through ProcessLiveStream and record it."""

from __future__ import annotations

from collections.abc import AsyncIterator

import orjson
import structlog
from aiohttp import web
from pydantic import ValidationError

from receiver import messages
from receiver.documents import task_document
from receiver.errors import ConfigError, InvalidRequestError
from receiver.events import NotifyKeys
from receiver.mps import MpsClient, MpsError, shared_budgets
from receiver.settings import MpsSettings
from receiver.submit import SubmitRequest, submit
from receiver.web import (
    CLOCK,
    ROUTER,
    STORE,
    TASK_DEADLINE,
    BadParameterError,
    error_response,
    json_response,
)

log = structlog.get_logger("receiver.submit_api")
MPS_CLIENT: web.AppKey[MpsClient | None] = web.AppKey("mps_client")
MPS_PROBLEM = web.AppKey("mps_problem", str)
# The master key that signs new tasks (the first of verify.master_keys), or None.
MASTER_KEY: web.AppKey[str | None] = web.AppKey("master_key")
NOTIFY_KEYS: web.AppKey[frozenset[str]] = web.AppKey("notify_keys")  # the static ones


def _status(code: str) -> int:
    if code == "InvalidParameterValue.SessionId":
        return 409  # that SessionId was used in the last 7 days
    if code.startswith(("InvalidParameter", "MissingParameter", "UnknownParameter")):
        return 400
    if code == "RequestLimitExceeded":
        return 503
    return 502  # AuthFailure.*, InternalError, ...: MPS or the way to it, not the request


def _field_of(error: dict[str, object]) -> str:
    loc = ".".join(str(p) for p in error["loc"])  # type: ignore[attr-defined]
    message = str(error["msg"]).removeprefix("Value error, ")
    head, sep, _ = message.partition(": ")
    if sep and head.isidentifier():  # a cross-field check names the member it is about
        loc = f"{loc}.{head}" if loc else head
    return loc or "body"


async def submit_task(request: web.Request) -> web.Response:
    try:
        spec = SubmitRequest.model_validate(orjson.loads(await request.read()))
    except orjson.JSONDecodeError as exc:
        raise BadParameterError("body", f"a JSON object ({exc})") from None
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        raise BadParameterError(_field_of(dict(first)), messages.expected(first)) from None
    keys = request.app[NOTIFY_KEYS]
    # With a master key the task gets a key of its own, derived: none is expected in the request.
    if keys and request.app[MASTER_KEY] is None and spec.task_notify_config.notify_key not in keys:
        # MPS signs with the task's NotifyKey; with verification on, a key we do not hold means a
        # 401 for every notification of the task. Said, not refused: the keys may be rotating.
        log.warning(
            "submitted NotifyKey is not among verify.notify_keys: this task's notifications will be"
            " refused as unsigned or wrongly signed unless that key is added",
            notify_key_given=spec.task_notify_config.notify_key is not None,
            session_id=spec.session_id,
        )
    client = request.app[MPS_CLIENT]
    if client is None:
        return error_response(
            503, "not_configured", f"submitting is not configured: {request.app[MPS_PROBLEM]}"
        )
    try:
        task = await submit(
            spec,
            request.app[STORE],
            client,
            request.app[CLOCK],
            master_key=request.app[MASTER_KEY],
            route=request.app.get(ROUTER),
        )
    except InvalidRequestError as exc:
        raise BadParameterError(exc.field, exc.expected) from None
    except MpsError as exc:
        return error_response(
            _status(exc.mps_code),
            "mps_error",
            exc.message,
            mps_code=exc.mps_code,
            request_id=exc.request_id,
        )
    now = request.app[CLOCK]()
    return json_response(task_document(task, now=now, deadline=request.app[TASK_DEADLINE]), 201)


def add_routes(app: web.Application, settings: MpsSettings, keys: NotifyKeys | None = None) -> None:
    keys = keys or NotifyKeys()
    app[MASTER_KEY] = keys.master[0] if keys.master else None
    app[NOTIFY_KEYS] = frozenset(keys.static)

    async def mps_ctx(app: web.Application) -> AsyncIterator[None]:
        try:
            # The actions any process's API calls keep to one budget for all processes (the store's).
            app[MPS_CLIENT] = MpsClient(settings, budgets=shared_budgets(app[STORE], settings))
            app[MPS_PROBLEM] = ""
            log.info("submitting to MPS", endpoint=settings.endpoint, region=settings.region)
        except ConfigError as exc:  # the service runs; only submitting is off, and says why
            app[MPS_CLIENT] = None
            app[MPS_PROBLEM] = str(exc)
            log.warning("submitting is off: POST /v1/tasks/submit answers 503", reason=str(exc))
        yield

    app.cleanup_ctx.append(mps_ctx)
    app.router.add_post("/v1/tasks/submit", submit_task)
