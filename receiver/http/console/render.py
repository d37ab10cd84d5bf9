"""How the console answers: Jinja2 templates with autoescape on (the one place payload text becomes
HTML, escaped), its assets from the package, and the headers every answer carries."""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import resources
from typing import Any

import orjson
from aiohttp import web
from jinja2 import Environment, PackageLoader, StrictUndefined

from receiver.http.console.views import safe_url

# No inline script, nothing from elsewhere but the snapshot images findings link to (MPS's storage).
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' https: http:;"
    " connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
# same-origin, not no-referrer: under no-referrer a browser sends "Origin: null" with our own forms,
# which the Origin check refuses. Images and links to elsewhere carry no referrer (their attributes).
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
}
TYPES = {".css": "text/css", ".js": "text/javascript", ".svg": "image/svg+xml"}


@dataclass(frozen=True, slots=True)
class Asset:
    body: bytes
    content_type: str
    version: str  # in its URL: a new version is a new URL, so it may be cached for good


def load_assets() -> dict[str, Asset]:
    folder = resources.files("receiver.http.console") / "static"
    assets = {}
    for item in folder.iterdir():
        suffix = "." + item.name.rsplit(".", 1)[-1]
        if suffix in TYPES:
            body = item.read_bytes()
            assets[item.name] = Asset(body, TYPES[suffix], hashlib.sha256(body).hexdigest()[:12])
    return assets


def when(ts: float | None) -> str:
    """A time as the console shows it: UTC, to the second."""
    if ts is None:
        return "—"
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S")


def age(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    s = max(0, int(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m {s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h {s // 60 % 60:02d}m"
    return f"{s // 86400}d {s // 3600 % 24}h"


def number(value: Any) -> str:
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        return f"{value:,.1f}" if value % 1 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}"
    return "—" if value is None else str(value)


def pretty(value: Any) -> str:
    """JSON for a reader (the template escapes it)."""
    return orjson.dumps(value, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS).decode()


def environment(assets: dict[str, Asset]) -> Environment:
    env = Environment(
        loader=PackageLoader("receiver.http.console", "templates"),
        autoescape=True,  # every template, every value: payload text is untrusted
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(when=when, age=age, number=number, pretty=pretty, safe_url=safe_url)

    def asset(name: str) -> str:
        return f"/console/static/{name}?v={assets[name].version}"

    env.globals["asset"] = asset
    return env


def html(env: Environment, template: str, status: int = 200, **context: Any) -> web.Response:
    body = env.get_template(template).render(**context)
    return web.Response(
        text=body, status=status, content_type="text/html", headers={"Cache-Control": "no-store"}
    )


def redirect(location: str) -> web.Response:
    """303 See Other: after a form, the browser GETs the page (returned, not raised, so that the
    guard can still set a cookie on it)."""
    return web.Response(status=303, headers={"Location": location, "Cache-Control": "no-store"})


async def secure_headers(request: web.Request, response: web.StreamResponse) -> None:
    """On every answer of the console, pages, assets, redirects and errors alike."""
    for name, value in HEADERS.items():
        response.headers.setdefault(name, value)
