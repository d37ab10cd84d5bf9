"""The management API's tasks: register one submitted elsewhere, list them, read one."""

from __future__ import annotations

from typing import Any

import structlog
from aiohttp import web

from receiver.documents import task_document
from receiver.errors import ConflictError
from receiver.http.keys import CLOCK, ROUTER, STORE, TASK_DEADLINE
from receiver.http.params import BadParameterError, cursor_param, limit_param, model_body
from receiver.http.responses import error_response, json_response
from receiver.register import TaskRegistration, register
from receiver.tasks import Task, TaskState

log = structlog.get_logger("receiver.web")


def task_doc(request: web.Request, task: Task) -> dict[str, Any]:
    config = request.config_dict
    return task_document(task, now=config[CLOCK](), deadline=config[TASK_DEADLINE])


def state_param(raw: str) -> TaskState:
    try:
        return TaskState(raw)
    except ValueError:
        raise BadParameterError("state", "one of " + ", ".join(s.value for s in TaskState)) from None


async def register_task(request: web.Request) -> web.Response:
    spec = await model_body(request, TaskRegistration)
    config = request.config_dict
    try:
        task, adopted = await register(spec, config[STORE], config[CLOCK], config.get(ROUTER))
    except ConflictError as exc:
        return error_response(409, exc.code, str(exc), field="task_id")
    log.info("task registered", task_id=task.task_id, adopted_events=adopted, state=task.state.value)
    return json_response({**task_doc(request, task), "adopted_events": adopted}, 201)


async def get_task(request: web.Request) -> web.Response:
    task = await request.config_dict[STORE].get_task(request.match_info["task_id"])
    if task is None:
        return error_response(404, "not_found", f"no task {request.match_info['task_id']!r}")
    return json_response(task_doc(request, task))


async def list_tasks(request: web.Request) -> web.Response:
    state = state_param(request.query["state"]) if "state" in request.query else None
    page = await request.config_dict[STORE].list_tasks(
        state=state, after=str(cursor_param(request)), limit=limit_param(request)
    )
    return json_response({"items": [task_doc(request, t) for t in page.items], "next": page.next})


def add_routes(api: web.Application) -> None:
    api.router.add_post("/tasks", register_task)
    api.router.add_get("/tasks", list_tasks)
    api.router.add_get("/tasks/{task_id}", get_task)
