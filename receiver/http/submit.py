"""``POST /v1/tasks/submit``: start a task through ProcessLiveStream and record it."""

from __future__ import annotations

import structlog
from aiohttp import web

from receiver.documents import task_document
from receiver.errors import InvalidRequestError
from receiver.http.keys import (
    CLOCK,
    MASTER_KEY,
    MPS_CLIENT,
    MPS_PROBLEM,
    NOTIFY_KEYS,
    ROUTER,
    STORE,
    TASK_DEADLINE,
)
from receiver.http.params import BadParameterError, model_body
from receiver.http.responses import error_response, json_response
from receiver.mps import MpsError
from receiver.submit import SubmitRequest, submit

log = structlog.get_logger("receiver.submit_api")


def _status(code: str) -> int:
    if code == "InvalidParameterValue.SessionId":
        return 409  # that SessionId was used in the last 7 days
    if code.startswith(("InvalidParameter", "MissingParameter", "UnknownParameter")):
        return 400
    if code == "RequestLimitExceeded":
        return 503
    return 502  # AuthFailure.*, InternalError, ...: MPS or the way to it, not the request


async def submit_task(request: web.Request) -> web.Response:
    spec = await model_body(request, SubmitRequest)
    config = request.config_dict
    keys = config[NOTIFY_KEYS]
    # With a master key the task gets a key of its own, derived: none is expected in the request.
    if keys and config[MASTER_KEY] is None and spec.task_notify_config.notify_key not in keys:
        # MPS signs with the task's NotifyKey; with verification on, a key we do not hold means a
        # 401 for every notification of the task. Said, not refused: the keys may be rotating.
        log.warning(
            "submitted NotifyKey is not among verify.notify_keys: this task's notifications will be"
            " refused as unsigned or wrongly signed unless that key is added",
            notify_key_given=spec.task_notify_config.notify_key is not None,
            session_id=spec.session_id,
        )
    client = config[MPS_CLIENT]
    if client is None:
        return error_response(503, "not_configured", f"submitting is not configured: {config[MPS_PROBLEM]}")
    try:
        task = await submit(
            spec,
            config[STORE],
            client,
            config[CLOCK],
            master_key=config[MASTER_KEY],
            route=config.get(ROUTER),
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
    now = config[CLOCK]()
    return json_response(task_document(task, now=now, deadline=config[TASK_DEADLINE]), 201)


def add_routes(api: web.Application) -> None:
    api.router.add_post("/tasks/submit", submit_task)
