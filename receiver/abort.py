"""The abort use case: ``ManageTask`` (``OperationType=Abort``; the client keeps to the deployment's
budget of 20 requests/s), then the task ``aborting`` until its end is known (a ProcessEof, or a
reconcile that finds MPS saying FINISH: ``aborting`` tasks are among those a reconcile asks about)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import structlog

from receiver.errors import ConflictError
from receiver.ports import TaskBook
from receiver.tasks import Task, TaskState

log = structlog.get_logger("receiver.abort")


class Aborter(Protocol):
    async def abort_task(self, task_id: str) -> str: ...


async def abort(task: Task, store: TaskBook, client: Aborter, clock: Callable[[], float]) -> tuple[Task, str]:
    """Ask MPS to abort the task; returns it (``aborting``) and the RequestId. Raises
    ``ConflictError`` if it has ended or has no TaskId yet, ``MpsError`` as MPS refused."""
    if task.state.ended:
        raise ConflictError(f"the task has ended already ({task.state.value})")
    if task.task_id is None:
        raise ConflictError(
            f"the task has no MPS TaskId yet ({task.state.value}): ProcessLiveStream has not answered"
        )
    request_id = await client.abort_task(task.task_id)
    after = await store.mark_aborting(task.id, now=clock())
    log.info(
        "abort requested",
        task_id=task.task_id,
        request_id=request_id,
        state=after.state.value,
        was=task.state.value,
    )
    if after.state is not TaskState.ABORTING:  # its end came in meanwhile
        log.info(
            "the task ended while its abort was asked for", task_id=task.task_id, state=after.state.value
        )
    return after, request_id
