"""The official Tencent Cloud SDK as the tests drive it: a client on the emulator, one call, the
error code it raises, and how its docstrings spell a member's type."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestServer
from tencentcloud.common import credential
from tencentcloud.common.exception.tencent_cloud_sdk_exception import TencentCloudSDKException
from tencentcloud.common.profile.client_profile import ClientProfile
from tencentcloud.common.profile.http_profile import HttpProfile
from tencentcloud.mps.v20190612 import models, mps_client

SILENT = {"NotifyType": ""}  # MPS sends nothing for an empty NotifyType


def client(server: TestServer, *, secret_key: str = "s3cret") -> mps_client.MpsClient:
    profile = ClientProfile(httpProfile=HttpProfile(endpoint=f"127.0.0.1:{server.port}", protocol="http"))
    return mps_client.MpsClient(credential.Credential("AKIDtest", secret_key), "ap-guangzhou", profile)


def process(c: mps_client.MpsClient, **params: Any) -> models.ProcessLiveStreamResponse:
    request = models.ProcessLiveStreamRequest()
    request.from_json_string(__import__("json").dumps(params))
    return c.ProcessLiveStream(request)


async def error_code(call: Callable[[], object]) -> str:
    with pytest.raises(TencentCloudSDKException) as caught:
        await asyncio.to_thread(call)
    return str(caught.value.get_code())


def sdk_type(spelled: str) -> str:
    m = re.fullmatch(r":class:`tencentcloud\.mps\.v20190612\.models\.(\w+)`", spelled)
    return m.group(1) if m else spelled
