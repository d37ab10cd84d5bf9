"""``POST /v1/tasks/{task_id}/abort``: ask MPS to abort a task (``ManageTask``), which then shows
``aborting`` until its end is known."""

from __future__ import annotations

from aiohttp import web

from receiver.abort import abort
from receiver.documents import task_document
from receiver.errors import ConflictError
from receiver.http.keys import CLOCK, MPS_CLIENT, MPS_PROBLEM, STORE, TASK_DEADLINE
from receiver.http.responses import error_response, json_response
from receiver.mps import NOT_FOUND_CODES, MpsError


def mps_status(code: str) -> int:
    """The HTTP status for an MPS error to ManageTask, as clear as submit's."""
    if code in NOT_FOUND_CODES:
        return 404  # MPS does not know the TaskId (wrong, or older than its 7 days)
    if code == "InvalidParameterValue.NotProcessingTask":
        return 409  # it has ended at MPS already: a reconcile will say how
    if code == "RequestLimitExceeded":
        return 503  # the budget of 20 requests/s, receiver's or MPS's, is spent
    return 502  # AuthFailure.*, InternalError, ...: MPS or the way to it


async def abort_task(request: web.Request) -> web.Response:
    config = request.config_dict
    store = config[STORE]
    task = await store.get_task(request.match_info["task_id"])
    if task is None:
        return error_response(404, "not_found", f"no task {request.match_info['task_id']!r}")
    client = config[MPS_CLIENT]
    if client is None:
        return error_response(503, "not_configured", f"asking MPS is not configured: {config[MPS_PROBLEM]}")
    try:
        task, request_id = await abort(task, store, client, config[CLOCK])
    except ConflictError as exc:
        return error_response(409, exc.code, str(exc), state=task.state.value)
    except MpsError as exc:
        headers = {"Retry-After": "1"} if exc.mps_code == "RequestLimitExceeded" else None
        return error_response(
            mps_status(exc.mps_code),
            "mps_error",
            exc.message,
            headers,
            mps_code=exc.mps_code,
            request_id=exc.request_id,
        )
    doc = task_document(task, now=config[CLOCK](), deadline=config[TASK_DEADLINE])
    return json_response({**doc, "abort_request_id": request_id}, 202)


def add_routes(api: web.Application) -> None:
    api.router.add_post("/tasks/{task_id}/abort", abort_task)
