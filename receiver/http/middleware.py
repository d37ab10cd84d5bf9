"""The middleware of every listener that turns each failure into a JSON answer naming what was wrong."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import structlog
from aiohttp import web

from receiver.errors import StoreUnavailableError
from receiver.http.keys import MAX_BODY
from receiver.http.params import BadParameterError
from receiver.http.responses import error_response

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
WEBHOOK_PATH = "/v1/notifications"

log = structlog.get_logger("receiver.web")


@web.middleware
async def errors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every error leaves as JSON naming what was wrong; nothing a client sends escapes as a 500 page."""
    try:
        return await handler(request)
    except BadParameterError as exc:
        return error_response(400, "invalid_parameter", str(exc), field=exc.field, expected=exc.expected)
    except StoreUnavailableError as exc:
        # The detail (a driver's message, a path) is for the operator's log, not for whoever asks;
        # the webhook's summary line already carries it.
        if request.path != WEBHOOK_PATH:
            log.error("store unavailable", path=request.path, method=request.method, error=str(exc))
        return error_response(503, exc.code, "the store is unavailable; retry later", {"Retry-After": "1"})
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        if exc.status == 413:
            limit = request.app[MAX_BODY]
            if request.path == WEBHOOK_PATH:  # still one summary line per notification
                log.warning("notification", channel="http", outcome="too_large", limit=limit)
            return error_response(
                413, "body_too_large", f"the body is over the limit of {limit} bytes", limit=limit
            )
        kept = {
            k: v for k, v in exc.headers.items() if k.lower() in ("allow", "retry-after", "www-authenticate")
        }
        return error_response(exc.status, exc.reason.lower().replace(" ", "_"), exc.reason, headers=kept)
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception("unhandled error", path=request.path, method=request.method)
        return error_response(500, "internal_error", "internal error; see the receiver's log")
