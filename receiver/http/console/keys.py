"""The console's typed keys: on its application, and on each request its guard has let through."""

from __future__ import annotations

from aiohttp import web
from jinja2 import Environment

from receiver.http.console.render import Asset
from receiver.http.console.sessions import Session, Sessions

SESSIONS = web.AppKey("console_sessions", Sessions)
ENV = web.AppKey("console_templates", Environment)
ASSETS: web.AppKey[dict[str, Asset]] = web.AppKey("console_assets")
SESSION = web.RequestKey("console_session", Session)
NEW_COOKIE = web.RequestKey("console_new_cookie", str)  # a session issued by this request
