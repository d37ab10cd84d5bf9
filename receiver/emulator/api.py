"""The emulator's Tencent Cloud API 3.0 endpoint: ``POST /`` with ``X-TC-Action`` one of
``ProcessLiveStream``, ``DescribeTaskDetail``, ``DescribeTasks``, ``ManageTask``.

Checks the TC3-HMAC-SHA256 signature against its configured credentials (±5 minutes; the signed
headers must include ``content-type;host``; no unsigned payloads; a signature is good for one
ProcessLiveStream), holds each action to MPS's rate limit (100, 100, 100, 20 requests/s),
validates the request as MPS does, answers ``{"Response": {..., "RequestId"}}`` or ``{"Response": {"Error":
{"Code", "Message"}, "RequestId"}}`` with ``Content-Type: application/json`` exactly (the SDK
ignores errors under any other value). An accepted ProcessLiveStream task plays its scenario:
notifications over the stream's life, then ``ProcessEof``, to the notify target; the task APIs
read and change it (``book``).
"""

from __future__ import annotations

import asyncio
import hashlib
import time
import uuid
from collections import deque
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import orjson
import structlog
from aiohttp import web

from receiver import tc3, wire
from receiver.emulator import book
from receiver.emulator.book import ApiError, EmulatedTask
from receiver.emulator.notify import Notifier
from receiver.emulator.recent import Recent
from receiver.emulator.scenario import Scenario, eof, plan
from receiver.emulator.settings import EmulatorSettings as EmulatorSettings  # where it was first found

log = structlog.get_logger("receiver.emulator")

VERSION = "2019-06-12"
SESSION_ID_WINDOW = 7 * 24 * 3600
SESSION_IDS_KEPT = 100_000  # past this, the oldest SessionIds may be reused before their 7 days
TASKS_KEPT = 10_000
TASK_MAX_AGE = 7 * 24 * 3600  # MPS answers about the tasks of the last 7 days
# Requests per second per action, as the real API.
RATE_LIMITS = {"ProcessLiveStream": 100, "DescribeTaskDetail": 100, "DescribeTasks": 100, "ManageTask": 20}
# A signature stays replayable while its X-TC-Timestamp is within the skew: at most 2 x skew after
# it was first seen. Only requests that passed the rate limit are remembered, so this many always
# fits; reaching it means the limit was bypassed, and the request is refused rather than forgetting
# a signature that could then be replayed.
REPLAY_WINDOW = 2 * tc3.MAX_SKEW
SIGNATURES_KEPT = RATE_LIMITS["ProcessLiveStream"] * (REPLAY_WINDOW + 1)
# A task's stream URL may name one of emulator.scenarios in this query parameter.
SCENARIO_PARAMETER = "emulator_scenario"
STREAM_SCHEMES = ("rtmp", "rtmps", "http", "https", "srt", "trtc", "webrtc")
TASK_INPUTS = (
    "AiContentReviewTask",
    "AiRecognitionTask",
    "AiAnalysisTask",
    "AiQualityControlTask",
    "SmartSubtitlesTask",
)


def _answer(body: dict[str, Any]) -> web.Response:
    # Exactly "application/json": the official SDK reads Response.Error only under that value.
    return web.Response(body=orjson.dumps({"Response": body}), headers={"Content-Type": "application/json"})


class Emulator:
    def __init__(self, settings: EmulatorSettings, notifier: Notifier) -> None:
        self.settings = settings
        self.notifier = notifier
        self.scenario = settings.scenario
        if settings.scenario_file is not None:
            self.scenario = _load_scenario(settings.scenario_file)
        self.session_ids: Recent[bool] = Recent(SESSION_IDS_KEPT, SESSION_ID_WINDOW)
        self.signatures: Recent[bool] = Recent(SIGNATURES_KEPT, REPLAY_WINDOW)
        self.recent: dict[str, deque[float]] = {action: deque() for action in RATE_LIMITS}
        self.tasks: Recent[EmulatedTask] = Recent(TASKS_KEPT, TASK_MAX_AGE)
        self.players: set[asyncio.Task[None]] = set()

    async def handle(self, request: web.Request) -> web.Response:
        request_id = str(uuid.uuid4())
        try:
            body = await request.read()
            action = request.headers.get("X-TC-Action", "")
            # Only a ProcessLiveStream is taken once: a replayed one would start a task whose
            # notifications go wherever it names. The task APIs read, or abort what is aborting
            # already: a repeat within the second of its signature (a poll) is answered as MPS does.
            once = action == "ProcessLiveStream"
            signature = self._authenticate(request, body, once=once)
            if action not in RATE_LIMITS:
                raise ApiError("InvalidAction", f"the action {action!r} is not supported by the emulator")
            if request.headers.get("X-TC-Version") != VERSION:
                raise ApiError("NoSuchVersion", f"version must be {VERSION}")
            self._rate_limit(action)
            if once:
                self._remember(signature)
            params = orjson.loads(body) if body else {}
            if not isinstance(params, dict):
                raise ApiError("InvalidParameter", "the request body must be a JSON object")
            if action == "ProcessLiveStream":
                task = self._accept(params)
            elif action == "DescribeTaskDetail":
                return _answer(book.describe_task_detail(self.tasks, params, request_id))
            elif action == "DescribeTasks":
                return _answer(book.describe_tasks(self.tasks, params, request_id, time.time()))
            else:
                answer = book.manage_task(self.tasks, params, request_id)
                log.info("abort requested", task_id=params.get("TaskId"))
                return _answer(answer)
        except ApiError as exc:
            log.info("rejected", code=exc.code, message=exc.message)
            return _answer({"Error": {"Code": exc.code, "Message": exc.message}, "RequestId": request_id})
        except orjson.JSONDecodeError:
            error = {"Code": "InvalidParameter", "Message": "the request body is not JSON"}
            return _answer({"Error": error, "RequestId": request_id})
        player = asyncio.create_task(self._play(task))
        self.players.add(player)
        player.add_done_callback(self.players.discard)
        log.info("task accepted", task_id=task.task_id, url=params.get("Url"))
        if self.settings.response_delay:
            await asyncio.sleep(self.settings.response_delay)
        return _answer({"TaskId": task.task_id, "RequestId": request_id})

    # --- checks -------------------------------------------------------------------------------

    def _authenticate(self, request: web.Request, body: bytes, *, once: bool) -> str:
        """The request's signature, once it is proven (and, with ``once``, not seen before)."""
        try:
            auth = tc3.verify(
                secret_id=self.settings.secret_id,
                secret_key=self.settings.secret_key.get_secret_value(),
                service="mps",
                method=request.method,
                headers=dict(request.headers),
                body=body,
                now=time.time(),
                query=request.query_string,
                required_headers=tuple(self.settings.required_signed_headers),
            )
        except tc3.Tc3Error as exc:
            raise ApiError(exc.api_code, exc.message) from None
        if once and auth.signature.lower() in self.signatures:
            raise ApiError(
                "AuthFailure.SignatureFailure", "this signature was already used: a request is signed once"
            )
        return auth.signature.lower()

    def _remember(self, signature: str) -> None:
        # After the rate limit: a request refused there may come again under the same signature
        # (receiver's MPS client retries RequestLimitExceeded at once, often within the second the
        # SDK's timestamp has), and what is remembered stays bounded by the limit.
        if self.signatures.full():
            raise ApiError("RequestLimitExceeded", "too many signed requests in the replay window")
        self.signatures.put(signature, True)

    def _rate_limit(self, action: str) -> None:
        now = time.monotonic()
        recent, limit = self.recent[action], RATE_LIMITS[action]
        while recent and now - recent[0] > 1.0:
            recent.popleft()
        if len(recent) >= limit:
            raise ApiError("RequestLimitExceeded", f"more than {limit} {action} requests in a second")
        recent.append(now)

    def _scenario_for(self, url: str) -> Scenario:
        names = parse_qs(urlparse(url).query).get(SCENARIO_PARAMETER)
        if not names:
            return self.scenario
        scenario = self.settings.scenarios.get(names[0])
        if scenario is None:
            known = ", ".join(sorted(self.settings.scenarios)) or "none configured"
            raise ApiError(
                "InvalidParameter", f"Url names the emulator scenario {names[0]!r}, not one of: {known}"
            )
        return scenario

    def _accept(self, p: dict[str, Any]) -> EmulatedTask:
        for name in ("Url", "TaskNotifyConfig"):
            if not p.get(name):
                raise ApiError("MissingParameter", f"the parameter {name} is required")
        url = p["Url"]
        if not isinstance(url, str) or urlparse(url).scheme not in STREAM_SCHEMES:
            raise ApiError("InvalidParameter", f"Url must be a live stream URL ({', '.join(STREAM_SCHEMES)})")
        scenario = self._scenario_for(url)
        notify = p["TaskNotifyConfig"]
        if not isinstance(notify, dict):
            raise ApiError("InvalidParameter", "TaskNotifyConfig must be an object")
        kind = notify.get("NotifyType")
        if kind == "URL":
            if not notify.get("NotifyUrl"):
                raise ApiError(
                    "InvalidParameter", "TaskNotifyConfig.NotifyUrl is required when NotifyType is URL"
                )
        elif kind in ("TDMQ-CMQ", "CMQ"):
            model = notify.get("CmqModel")
            target = {"Queue": "QueueName", "Topic": "TopicName"}.get(str(model))
            if target is None or not notify.get(target):
                raise ApiError(
                    "InvalidParameter", "TaskNotifyConfig needs CmqModel Queue+QueueName or Topic+TopicName"
                )
        elif kind:
            raise ApiError("InvalidParameter", f"TaskNotifyConfig.NotifyType {kind!r} is not URL or TDMQ-CMQ")
        for name in TASK_INPUTS:
            task_input = p.get(name)
            if task_input is None:
                continue
            definition = task_input.get("Definition") if isinstance(task_input, dict) else None
            if definition is not None and (not isinstance(definition, int) or definition <= 0):
                raise ApiError(
                    "InvalidParameterValue.Definition", f"{name}.Definition must be a positive template id"
                )
        session_id = p.get("SessionId") or ""
        if len(session_id) > 50:
            raise ApiError("InvalidParameterValue.SessionIdTooLong", "SessionId is longer than 50 characters")
        if len(p.get("SessionContext") or "") > 1000:
            raise ApiError(
                "InvalidParameterValue.SessionContextTooLong", "SessionContext is longer than 1000"
            )
        if session_id:
            if session_id in self.session_ids:
                raise ApiError(
                    "InvalidParameterValue.SessionId", f"SessionId {session_id!r} was used in the last 7 days"
                )
            self.session_ids.put(session_id, True)
        task_id = f"1300000000-procedure-live-{uuid.uuid4().hex}"
        task = EmulatedTask(task_id, p, scenario, created_at=time.time())
        self.tasks.put(task_id, task)
        return task

    # --- the stream's life --------------------------------------------------------------------

    async def _play(self, task: EmulatedTask) -> None:
        """The task's stream: its notifications in time, ``FINISH`` at its end (its ProcessEof sent
        unless the scenario loses it), or at once when aborted (a ProcessEof or none, as the
        scenario says). An empty NotifyType: MPS sends nothing at all, the task lives all the same."""
        p, scenario = task.params, task.scenario
        started = time.monotonic()
        task.begin_at = time.time()
        for at, notification in plan(task.task_id, p, scenario):
            if await self._aborted_before(task, started + at / self.settings.speed):
                break
            if notification["NotificationType"] == wire.PROCESS_EOF:
                task.finish(scenario.eof_err_code, scenario.eof_message)
                if scenario.lose_eof:
                    log.info("ProcessEof lost, as the scenario says", task_id=task.task_id)
                    continue
            await self._send(p, notification)
        if task.finish_at is None:  # aborted before its end
            task.finish(scenario.abort_err_code, scenario.abort_message)
            log.info("task aborted", task_id=task.task_id, process_eof=scenario.abort_eof)
            if scenario.abort_eof:
                await self._send(p, eof(task.task_id, p, scenario.abort_err_code, scenario.abort_message))
        log.info("stream ended", task_id=task.task_id)

    async def _aborted_before(self, task: EmulatedTask, deadline: float) -> bool:
        delay = deadline - time.monotonic()
        if delay <= 0:
            return task.aborted.is_set()
        try:
            await asyncio.wait_for(task.aborted.wait(), timeout=delay)
        except TimeoutError:
            return False
        return True

    async def _send(self, p: dict[str, Any], notification: dict[str, Any]) -> None:
        notify = p["TaskNotifyConfig"]
        if not notify.get("NotifyType"):
            return
        signed = dict(notification)
        key = notify.get("NotifyKey")
        if key:
            ts = int(time.time()) + 600
            signed["Timestamp"] = ts
            signed["Sign"] = hashlib.md5(f"{ts}{key}".encode(), usedforsecurity=False).hexdigest()
        await self.notifier.send(notify, orjson.dumps(signed))

    async def aclose(self) -> None:
        for player in list(self.players):
            player.cancel()
        await asyncio.gather(*self.players, return_exceptions=True)
        await self.notifier.aclose()


def _load_scenario(path: Path) -> Scenario:
    import tomllib

    text = path.read_bytes()
    data = tomllib.loads(text.decode()) if path.suffix == ".toml" else orjson.loads(text)
    return Scenario.model_validate(data)


EMULATOR = web.AppKey("emulator", Emulator)


def create_emulator(settings: EmulatorSettings) -> web.Application:
    app = web.Application(client_max_size=1024 * 1024)

    async def emulator_ctx(app: web.Application) -> Any:
        emulator = Emulator(settings, Notifier(settings.amqp_url, settings.callback_retry))
        app[EMULATOR] = emulator
        yield
        await emulator.aclose()

    async def handle(request: web.Request) -> web.Response:
        return await request.app[EMULATOR].handle(request)

    app.cleanup_ctx.append(emulator_ctx)
    app.router.add_post("/", handle)
    return app
