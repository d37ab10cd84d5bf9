"""What the console changes, each a POST its guard has checked for the session's CSRF token: sign in
and out, redrive one delivery or a filtered set (after its dry run), switch a sink back on. They
go through the API's own use cases (``receiver.http.outbox``)."""

from __future__ import annotations

import structlog
from aiohttp import web
from yarl import URL

from receiver.http.console.keys import ENV, NEW_COOKIE, SESSION, SESSIONS
from receiver.http.console.pages import DELIVERY_FILTERS, base
from receiver.http.console.render import html, redirect
from receiver.http.keys import SINK_NAMES
from receiver.http.outbox import delivery_query, redrive_deliveries, switch_on
from receiver.http.params import BadParameterError, id_or_none
from receiver.ports import DeliveryQuery, DeliveryState

log = structlog.get_logger("receiver.console")


def _back(target: object, default: str = "/console/") -> str:
    """Where to go after an action: a path of the console, never another site."""
    if (
        isinstance(target, str)
        and target.startswith("/console/")
        and "\\" not in target
        and all(c.isprintable() and not c.isspace() for c in target)
    ):
        return target
    return default


def _form_page(request: web.Request, template: str, status: int, title: str, **ctx: object) -> web.Response:
    return html(request.app[ENV], template, status, **base(request, title), **ctx)


async def login_form(request: web.Request) -> web.StreamResponse:
    sessions = request.app[SESSIONS]
    following = _back(request.query.get("next"))
    if sessions.allowed(request.get(SESSION)):
        return redirect(following)
    return _form_page(request, "login.html", 200, "Sign in", next=following, failed=False)


async def login(request: web.Request) -> web.StreamResponse:
    """The token, checked in constant time; then a new session (never the one the form came with)."""
    sessions = request.app[SESSIONS]
    form = await request.post()
    following = _back(form.get("next"))
    token = form.get("token")
    if not sessions.required:
        return redirect(following)
    if not isinstance(token, str) or not sessions.token_ok(token):
        log.warning("console sign-in refused", remote=request.remote)
        return _form_page(request, "login.html", 401, "Sign in", next=following, failed=True)
    _, cookie = sessions.issue(authenticated=True)
    request[NEW_COOKIE] = cookie
    log.info("console sign-in", remote=request.remote)
    return redirect(following)


async def logout(request: web.Request) -> web.StreamResponse:
    sessions = request.app[SESSIONS]
    _, cookie = sessions.issue(authenticated=False)
    request[NEW_COOKIE] = cookie
    return redirect("/console/login" if sessions.required else "/console/")


async def redrive_one(request: web.Request) -> web.StreamResponse:
    delivery_id = id_or_none(request.match_info["id"])
    if delivery_id is None:
        raise web.HTTPNotFound()
    n = await redrive_deliveries(request.config_dict, DeliveryQuery(id=delivery_id))
    log.info("console redrive", delivery=delivery_id, redriven=n)
    return redirect(f"/console/deliveries/{delivery_id}")


async def redrive_set(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    filters = {k: str(form[k]) for k in DELIVERY_FILTERS if form.get(k)}
    try:
        query = delivery_query({"state": DeliveryState.DEAD, **filters})
    except BadParameterError as exc:
        return _form_page(request, "error.html", 400, "Redrive", message=str(exc))
    n = await redrive_deliveries(request.config_dict, query)
    log.info("console redrive", redriven=n, **filters)
    return redirect(str(URL("/console/deliveries").with_query({**filters, "redriven": str(n)})))


async def enable_sink(request: web.Request) -> web.StreamResponse:
    name = request.match_info["name"]
    if name not in (request.config_dict.get(SINK_NAMES) or ()):
        return _form_page(
            request, "error.html", 404, "Not found", message="No sink of that name is configured."
        )
    await switch_on(request.config_dict, name)
    return redirect(_back((await request.post()).get("back"), "/console/deliveries"))


def add_routes(console: web.Application) -> None:
    console.router.add_post("/deliveries/redrive", redrive_set)
    console.router.add_post("/deliveries/{id}/redrive", redrive_one)
    console.router.add_post("/sinks/{name}/enable", enable_sink)
