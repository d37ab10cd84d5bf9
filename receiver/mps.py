"""``MpsClient``: ``ProcessLiveStream`` through the official SDK, off the event loop, within 100 req/s.

``RequestLimitExceeded`` is retried with backoff; any other MPS error becomes an ``MpsError`` with
its code. Credentials come from settings (the environment or a secret file), never from a request,
and are never logged.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from tencentcloud.common import credential
from tencentcloud.common.exception.tencent_cloud_sdk_exception import TencentCloudSDKException
from tencentcloud.common.profile.client_profile import ClientProfile
from tencentcloud.common.profile.http_profile import HttpProfile
from tencentcloud.mps.v20190612 import models, mps_client

from receiver.errors import ReceiverError
from receiver.settings import MpsSettings

log = structlog.get_logger("receiver.mps")
Sleep = Callable[[float], Awaitable[None]]


class MpsError(ReceiverError):
    """MPS (or the way to it) refused a call; ``mps_code`` is its error code (``AuthFailure.*``...)."""

    code = "mps_error"

    def __init__(self, mps_code: str, message: str, request_id: str | None = None) -> None:
        self.mps_code = mps_code
        self.message = message
        self.request_id = request_id
        super().__init__(f"{mps_code}: {message}")


class RateLimiter:
    """At most ``per_second`` starts in any one-second window (a sliding window)."""

    def __init__(
        self,
        per_second: int,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self._per_second = per_second
        self._clock = clock  # injectable, so tests need not wait real seconds
        self._sleep = sleep
        self._starts: deque[float] = deque()
        self._lock = asyncio.Lock()

    async def acquire(self) -> None:
        async with self._lock:
            while True:
                now = self._clock()
                while self._starts and now - self._starts[0] >= 1.0:
                    self._starts.popleft()
                if len(self._starts) < self._per_second:
                    self._starts.append(now)
                    return
                await self._sleep(1.0 - (now - self._starts[0]))


class MpsClient:
    def __init__(
        self,
        settings: MpsSettings,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        secret_id, secret_key = settings.credentials()
        http = HttpProfile(
            endpoint=settings.endpoint, protocol=settings.protocol, reqTimeout=int(settings.timeout)
        )
        self._client = mps_client.MpsClient(
            credential.Credential(secret_id, secret_key), settings.region, ClientProfile(httpProfile=http)
        )
        self._limiter = RateLimiter(settings.rate_limit, clock=clock, sleep=sleep)
        self._sleep = sleep
        self._retries = settings.max_retries

    async def process_live_stream(self, params: dict[str, Any]) -> tuple[str, str]:
        """Start a task; returns (TaskId, RequestId)."""
        delay = 0.2
        for attempt in range(self._retries + 1):
            await self._limiter.acquire()
            try:
                response = await asyncio.to_thread(self._call, params)
            except MpsError as exc:
                if exc.mps_code == "RequestLimitExceeded" and attempt < self._retries:
                    log.warning("MPS rate limit; retrying", attempt=attempt + 1, wait=delay)
                    await self._sleep(delay)
                    delay *= 2
                    continue
                raise
            return str(response.TaskId), str(response.RequestId)
        raise AssertionError("unreachable")

    def _call(self, params: dict[str, Any]) -> models.ProcessLiveStreamResponse:
        request = models.ProcessLiveStreamRequest()
        request.from_json_string(json.dumps(params))
        try:
            response = self._client.ProcessLiveStream(request)
        except TencentCloudSDKException as exc:
            raise MpsError(str(exc.get_code()), str(exc.get_message()), exc.get_request_id()) from None
        if not response.TaskId:  # e.g. an error body the SDK could not read as one
            raise MpsError("InternalError", "MPS answered without a TaskId", response.RequestId)
        return response
