"""The register use case: record a task submitted elsewhere, so that its notifications (and the
orphans already stored) find it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Protocol

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from receiver.ports import Router
from receiver.tasks import Task, TaskState, new_id


class TaskRegistration(BaseModel):
    """``POST /v1/tasks``: a task submitted elsewhere, so that its notifications find it."""

    model_config = ConfigDict(extra="forbid")

    task_id: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=256)]
    session_id: str = Field(default="", max_length=50)
    session_context: str = Field(default="", max_length=1000)
    url: str = Field(default="", max_length=4096)
    labels: dict[str, str] = Field(default_factory=dict)


class Registry(Protocol):
    """What registering needs of the store."""

    async def register_task(self, task: Task, route: Router | None = None) -> tuple[Task, int]: ...


async def register(
    spec: TaskRegistration, store: Registry, clock: Callable[[], float], route: Router | None = None
) -> tuple[Task, int]:
    """The task as recorded and the number of orphan events it adopted (each routed again with the
    task known). Raises ``ConflictError`` if its ``task_id`` is registered already."""
    now = clock()
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
    return await store.register_task(task, route)
