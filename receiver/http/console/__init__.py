"""The operator console: server-rendered pages under ``/console/``, served beside the management API.

It is an aiohttp sub-application with its own guard: the Host (and Origin) rules of the management
API, a session cookie when ``api.token`` is set (the token is asked once, on the login page), and
a CSRF token in every form that changes something. It reads through the store's read ports and
acts through the same use cases as the API (redrive, switch a sink on).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from yarl import URL

from receiver.http import guards
from receiver.http.console import actions, pages, task
from receiver.http.console.keys import ASSETS, ENV, NEW_COOKIE, SESSION, SESSIONS
from receiver.http.console.render import environment, html, load_assets, redirect, secure_headers
from receiver.http.console.sessions import COOKIE, Sessions
from receiver.settings import Settings

__all__ = ["add_console"]

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
PUBLIC = frozenset({"login", "login_form", "static"})  # what needs no session


def _set_cookie(request: web.Request, response: web.StreamResponse, value: str, max_age: int) -> None:
    secure = request.secure or request.headers.get("X-Forwarded-Proto", "").lower() == "https"
    response.set_cookie(
        COOKIE, value, max_age=max_age, path="/console", httponly=True, samesite="Strict", secure=secure
    )


@web.middleware
async def console_guard(request: web.Request, handler: Handler) -> web.StreamResponse:
    refused = guards.refuse_host(request, request.config_dict[guards.GUARD])
    if refused is not None:
        return refused
    sessions = request.app[SESSIONS]
    session = sessions.read(request.cookies.get(COOKIE))
    name = request.match_info.route.name or ""
    if session is None and name != "static":
        # Anonymous until the token is given (or for good, without one): it carries the CSRF token.
        session, cookie = sessions.issue(authenticated=not sessions.required)
        request[NEW_COOKIE] = cookie
    if session is not None:
        request[SESSION] = session
    if name not in PUBLIC and not sessions.allowed(session):
        if request.method == "GET":
            response: web.StreamResponse = redirect(
                str(URL("/console/login").with_query(next=str(request.rel_url)))
            )
        else:
            response = html(request.app[ENV], "error.html", 401, **_base(request, "Sign in"),
                            message="Your session has ended: sign in again.")  # fmt: skip
    elif request.method == "POST" and not sessions.csrf_ok(session, (await request.post()).get("csrf")):
        response = html(
            request.app[ENV],
            "error.html",
            403,
            **_base(request, "Refused"),
            message="This form was refused: it did not come from a page of this console, or the page"
            " was older than your session. Go back, reload the page and try again.",
        )
    else:
        response = await handler(request)
    if NEW_COOKIE in request:
        _set_cookie(request, response, request[NEW_COOKIE], sessions.max_age)
    return response


def _base(request: web.Request, title: str, nav: str = "") -> dict[str, Any]:
    return pages.base(request, title, nav)


async def static(request: web.Request) -> web.Response:
    asset = request.app[ASSETS].get(request.match_info["name"])
    if asset is None:
        raise web.HTTPNotFound()
    return web.Response(
        body=asset.body,
        content_type=asset.content_type,
        headers={"Cache-Control": "public, max-age=31536000, immutable"},
    )


async def to_console(request: web.Request) -> web.StreamResponse:
    raise web.HTTPFound("/console/")


def add_console(app: web.Application, settings: Settings) -> None:
    """Mount the console on ``app`` (the one serving the management API): ``/console/``, and ``/``
    sends a browser there."""
    token = settings.api.token.get_secret_value() if settings.api.token is not None else ""
    # The body read first (within http.body_timeout), as the guard reads the form's CSRF token.
    console = web.Application(middlewares=[guards.body_timeout, console_guard])
    console[SESSIONS] = Sessions(token)
    assets = load_assets()
    console[ASSETS] = assets
    console[ENV] = environment(assets)
    console.on_response_prepare.append(secure_headers)
    console.router.add_get("/static/{name}", static, name="static")
    console.router.add_get("/login", actions.login_form, name="login_form")
    console.router.add_post("/login", actions.login, name="login")
    console.router.add_post("/logout", actions.logout)
    pages.add_routes(console)
    task.add_routes(console)
    actions.add_routes(console)
    app.add_subapp("/console/", console)
    app.router.add_get("/", to_console)
    app.router.add_get("/console", to_console)
