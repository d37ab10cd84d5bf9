"""The submit use case: check ``ProcessLiveStream`` parameters, record the task, call MPS, record the answer.

The record is written *before* the call (state ``submitting``) with a ``SessionContext`` that
names it, so a notification that arrives before the call returns is matched, and a crash mid-call
leaves a visible record rather than a ghost task.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal, Protocol
from urllib.parse import urlparse

import structlog
from pydantic import BaseModel, ConfigDict, Field, PositiveInt, field_validator, model_validator
from pydantic.alias_generators import to_pascal

from receiver.errors import InvalidRequestError
from receiver.events import OWN_CONTEXT_PREFIX, derived_key
from receiver.ports import Router, TaskBook
from receiver.tasks import Task, TaskState, new_id

log = structlog.get_logger("receiver.submit")

_MAX_CONTEXT = 1000  # MPS's limit on SessionContext
STREAM_SCHEMES = ("rtmp", "rtmps", "http", "https", "srt", "trtc", "webrtc")


class Strict(BaseModel):
    """The API's request models: ProcessLiveStream's PascalCase wire names, snake_case accepted."""

    model_config = ConfigDict(alias_generator=to_pascal, populate_by_name=True, extra="forbid")


class NotifyConfig(Strict):
    notify_type: Literal["URL", "TDMQ-CMQ", "CMQ"]
    notify_url: str | None = Field(default=None, alias="NotifyUrl")
    cmq_model: Literal["Queue", "Topic"] | None = Field(default=None, alias="CmqModel")
    cmq_region: str | None = Field(default=None, alias="CmqRegion")
    queue_name: str | None = None
    topic_name: str | None = None
    notify_key: str | None = None

    @model_validator(mode="after")
    def _complete(self) -> NotifyConfig:
        if self.notify_type == "URL":
            if not self.notify_url or urlparse(self.notify_url).scheme not in ("http", "https"):
                raise ValueError("NotifyUrl: an http(s) URL is required when NotifyType is URL")
        elif self.cmq_model is None:
            raise ValueError("CmqModel: Queue or Topic is required when NotifyType is TDMQ-CMQ")
        elif self.cmq_model == "Queue" and not self.queue_name:
            raise ValueError("QueueName: required when CmqModel is Queue")
        elif self.cmq_model == "Topic" and not self.topic_name:
            raise ValueError("TopicName: required when CmqModel is Topic")
        return self


class ReviewTask(Strict):
    """``AiContentReviewTaskInput``. Each task type takes only its own extension member: a
    misplaced one is refused by name (the SDK would drop it with a warning)."""

    definition: PositiveInt


class RecognitionTask(Strict):
    """``AiRecognitionTaskInput``."""

    definition: PositiveInt
    user_ext_para: str | None = None


class AnalysisTask(Strict):
    """``AiAnalysisTaskInput``."""

    definition: PositiveInt
    extended_parameter: str | None = None


class QualityControlTask(Strict):
    """``AiQualityControlTaskInput``: the template is optional."""

    definition: PositiveInt | None = None
    channel_ext_para: str | None = None


class SubtitlesTask(Strict):
    """``LiveSmartSubtitlesTaskInput``: the template is optional."""

    definition: PositiveInt | None = None
    user_ext_para: str | None = None


class SubmitRequest(Strict):
    """The ``ProcessLiveStream`` parameters, by their wire names, plus ``Labels`` of ours."""

    url: str
    task_notify_config: NotifyConfig
    output_storage: dict[str, Any] | None = None
    output_dir: str = "/"
    ai_content_review_task: ReviewTask | None = None
    ai_recognition_task: RecognitionTask | None = None
    ai_analysis_task: AnalysisTask | None = None
    ai_quality_control_task: QualityControlTask | None = None
    smart_subtitles_task: SubtitlesTask | None = None
    resource_id: str | None = None
    session_id: str | None = Field(default=None, max_length=50)
    session_context: str | None = Field(default=None, max_length=1000)
    schedule_id: PositiveInt | None = None
    labels: dict[str, str] = Field(default_factory=dict)

    @field_validator("session_context")
    @classmethod
    def _not_ours(cls, value: str | None) -> str | None:
        if value is not None and value.startswith(OWN_CONTEXT_PREFIX):
            raise ValueError(
                f"a SessionContext not starting with {OWN_CONTEXT_PREFIX!r} (receiver's own form)"
            )
        return value

    @field_validator("url")
    @classmethod
    def _stream_url(cls, value: str) -> str:
        if urlparse(value).scheme not in STREAM_SCHEMES or not urlparse(value).netloc:
            raise ValueError(f"a live stream URL ({', '.join(STREAM_SCHEMES)})")
        return value

    def mps_params(self, session_context: str, notify_key: str | None = None) -> dict[str, Any]:
        params = self.model_dump(by_alias=True, exclude_none=True, exclude={"labels"})
        params["SessionContext"] = session_context
        if notify_key is not None:
            params["TaskNotifyConfig"]["NotifyKey"] = notify_key
        if self.task_notify_config.notify_type == "CMQ":  # the legacy name of TDMQ-CMQ
            params["TaskNotifyConfig"]["NotifyType"] = "TDMQ-CMQ"
        return params


class Submitter(Protocol):
    async def process_live_stream(self, params: dict[str, Any]) -> tuple[str, str]: ...


async def submit(
    request: SubmitRequest,
    store: TaskBook,
    client: Submitter,
    clock: Callable[[], float],
    *,
    master_key: str | None = None,
    route: Router | None = None,
) -> Task:
    """Record, call, record. Raises what the client raises (after recording the failure).

    With a ``master_key``, the task gets a NotifyKey of its own, derived from it and the
    SessionContext receiver generates (``events.derived_key``): never stored, returned or logged.
    ``route`` routes the orphans the task adopts, as ingest would have had the task been known.
    """
    if master_key is not None and request.task_notify_config.notify_key is not None:
        raise InvalidRequestError(
            "TaskNotifyConfig.NotifyKey",
            "no NotifyKey: with verify.master_keys set, receiver derives each task's own key",
        )
    now = clock()
    ref = new_id()
    context = request.session_context or f"{OWN_CONTEXT_PREFIX}{ref}"
    if master_key is not None and request.session_context:
        # The task's key is derived from a context of receiver's own form: the caller's rides after it.
        context = f"{OWN_CONTEXT_PREFIX}{ref}:{request.session_context}"
        if len(context) > _MAX_CONTEXT:
            raise InvalidRequestError(
                "SessionContext",
                f"a string of at most {_MAX_CONTEXT - len(context) + len(request.session_context)}"
                f" characters (receiver prefixes it with {OWN_CONTEXT_PREFIX!r}, its task id and ':')",
            )
    notify_key = derived_key(master_key, context) if master_key is not None else None
    task = Task(
        id=ref,
        task_id=None,
        session_id=request.session_id or "",
        session_context=context,
        url=request.url,
        labels=request.labels,
        state=TaskState.SUBMITTING,
        created_at=now,
        updated_at=now,
    )
    await store.register_task(task, route)
    try:
        task_id, request_id = await client.process_live_stream(request.mps_params(context, notify_key))
    except Exception as exc:
        await store.finish_submission(
            ref, task_id=None, request_id=None, error=f"submit failed: {exc}", now=clock()
        )
        raise
    task, adopted = await store.finish_submission(
        ref, task_id=task_id, request_id=request_id, error=None, now=clock(), route=route
    )
    log.info(
        "task submitted", task_id=task_id, request_id=request_id, state=task.state.value, adopted=adopted
    )
    return task
