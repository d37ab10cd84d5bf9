"""The JSON answers of the HTTP API: a document, or ``{"error": {"code", "message", ...}}``."""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        body=orjson.dumps(data), status=status, content_type="application/json", headers=headers
    )


def error_response(
    status: int, code: str, message: str, headers: dict[str, str] | None = None, **details: Any
) -> web.Response:
    body = {"code": code, "message": message, **{k: v for k, v in details.items() if v is not None}}
    return json_response({"error": body}, status, headers)
