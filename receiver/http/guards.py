"""The HTTP edge's guards: who may use the management API, and how long a request body may take.

The management API is the sub-application under ``/v1/`` (every route there but the MPS webhook,
which the parent application serves); ``management_guard`` is its middleware. A browser is the threat
it guards against when no token is set (``make run``): a page the operator visits can send a
"simple" cross-site request (``text/plain``, a form, a body-less ``fetch``) without any preflight,
or reach a loopback receiver under its own name through DNS rebinding. So every management request
must name an allowed Host (and Origin, when it sends one), and every state-changing one must be
``application/json``, which no page can send cross-site without a CORS preflight we never answer.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import structlog
from aiohttp import web
from yarl import URL

from receiver.errors import ConfigError
from receiver.http.keys import BODY_TIMEOUT
from receiver.http.middleware import WEBHOOK_PATH
from receiver.http.responses import error_response
from receiver.settings import Settings

log = structlog.get_logger("receiver.guards")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
WILDCARDS = frozenset({"", "0.0.0.0", "::"})


@dataclass(frozen=True)
class Guard:
    """What the management API asks of a request: a token (``""``: none) and the Host names."""

    token: str
    hosts: frozenset[str] | None  # None: any Host and Origin (``http.allowed_hosts = ["*"]``)


GUARD = web.AppKey("guard", Guard)


def is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a name: it may resolve to anything


def allowed_hosts(settings: Settings) -> frozenset[str] | None:
    """``http.allowed_hosts``, the management listener's bind host, and loopback when it is reachable."""
    names = {h.strip().strip("[]").lower() for h in settings.http.allowed_hosts}
    if "*" in names:
        return None
    bind, _ = settings.http.management_address
    if is_loopback(bind) or bind in WILDCARDS:
        names |= LOOPBACK_NAMES
    if bind:
        names.add(bind.strip("[]").lower())
    return frozenset(names)


def guard_for(settings: Settings) -> Guard:
    token = settings.api.token.get_secret_value() if settings.api.token is not None else ""
    return Guard(token=token, hosts=allowed_hosts(settings))


def check_exposure(settings: Settings) -> None:
    """Refuse to serve the management API, tokenless, where anyone on the network can reach it."""
    host, port = settings.http.management_address
    has_token = settings.api.token is not None and settings.api.token.get_secret_value() != ""
    if is_loopback(host) or has_token or settings.api.open:
        return
    where = "http.management_host" if settings.http.split else "http.host"
    raise ConfigError(
        f"the management API would listen on {host or '*'}:{port} ({where}) without api.token:"
        " set api.token (RECEIVER_API__TOKEN), or listen on loopback"
        f" ({where} = 127.0.0.1; http.management_port gives the management API a listener of its"
        " own), or set api.open = true (RECEIVER_API__OPEN) if something in front of receiver"
        " guards it"
    )


def _hostname(value: str) -> str | None:
    """The name in a Host header (``name[:port]``, ``[v6]:port``), lower-cased; None if unreadable."""
    try:
        return URL(f"http://{value}").host
    except ValueError:
        return None


def _origin_host(origin: str) -> str | None:
    """The host of an Origin header (``scheme://host[:port]``); None for ``null`` or garbage."""
    try:
        return URL(origin).host
    except ValueError:
        return None


def _refused(status: int, code: str, message: str, field: str) -> web.Response:
    return error_response(status, code, message, field=field)


def _token_ok(request: web.Request, token: str) -> bool:
    scheme, _, credentials = request.headers.get("Authorization", "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(credentials.strip().encode(), token.encode())


def _content_ok(request: web.Request) -> bool:
    """A state change must come as JSON: a page cannot send that cross-site without a preflight.

    (The console's forms post elsewhere, under ``/console/``, with a CSRF token instead.)
    """
    return request.content_type == "application/json"


def refuse_host(request: web.Request, guard: Guard) -> web.Response | None:
    """The refusal of a request whose Host (or Origin, when sent) is not an allowed host, or None.

    First of all checks: a page that reached us through a rebound name learns nothing, not even
    the rules. (The console's guard asks the same.)"""
    if guard.hosts is None:
        return None
    if _hostname(request.host) not in guard.hosts:
        return _refused(
            403,
            "forbidden_host",
            f"the Host header names {request.host!r}, which this API does not answer;"
            " add the name to http.allowed_hosts",
            "Host",
        )
    origin = request.headers.get("Origin")
    if origin is not None and _origin_host(origin) not in guard.hosts:
        return _refused(
            403,
            "forbidden_origin",
            f"the Origin header names {origin!r}, which this API does not answer;"
            " add its host to http.allowed_hosts",
            "Origin",
        )
    return None


@web.middleware
async def management_guard(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Host, Origin, token and Content-Type of every request to the management API (the
    sub-application this is the middleware of, its unknown paths included), before its body."""
    guard = request.config_dict[GUARD]
    refused = refuse_host(request, guard)
    if refused is not None:
        return refused
    if guard.token and not _token_ok(request, guard.token):
        response = _refused(
            401,
            "unauthorized",
            "this API wants an Authorization: Bearer <token> header with the configured api token",
            "Authorization",
        )
        response.headers["WWW-Authenticate"] = "Bearer"
        return response
    if request.method in UNSAFE_METHODS and not _content_ok(request):
        return _refused(
            415,
            "unsupported_media_type",
            f"this request changes state and must be sent with Content-Type: application/json,"
            f" got {request.headers.get('Content-Type', 'none')!r}",
            "Content-Type",
        )
    return await handler(request)


@web.middleware
async def body_timeout(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Read the whole body within ``http.body_timeout``, else 408 and close: a sender that stops
    half-way would otherwise hold its connection and buffers for ever. Handlers then read the
    body from memory.

    Each application does this for its own routes: a sub-application lists this middleware where
    its checks want the body read (the management API after its token, never before)."""
    if request.match_info.apps[-1] is not request.app:  # a sub-application's route: its own turn
        return await handler(request)
    if request.body_exists and not request.content.is_eof():  # (all there already: no timer needed)
        limit = request.config_dict[BODY_TIMEOUT]
        try:
            async with asyncio.timeout(limit):
                await request.read()
        except TimeoutError:
            if request.path == WEBHOOK_PATH:  # still one summary line per notification
                log.warning("notification", channel="http", outcome="body_timeout", limit=limit)
            else:
                log.warning("request body timed out", path=request.path, method=request.method, limit=limit)
            response = _refused(
                408, "body_timeout", f"the request body did not arrive within {limit} s", "body"
            )
            response.force_close()
            await response.prepare(request)
            await response.write_eof()
            # Answered: close now rather than linger reading the rest of a body that stalled.
            request.protocol.force_close()
            return response
    return await handler(request)
