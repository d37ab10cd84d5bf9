"""The console over HTTP, without a browser: where it is mounted, its guard (sessions, CSRF, Host),
its headers, its escaping; the API routes it brought; the attempt history the dispatcher keeps; the
counts ingest leaves in the store; and the pure views (timeline, transcript, previews, links)."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from receiver.app import create_app
from receiver.errors import SinkError
from receiver.http import openapi
from receiver.http.console import views
from receiver.http.console.sessions import Sessions
from receiver.http.keys import STORE
from receiver.http.webhook import webhook_app
from receiver.ports import DeliveryQuery, DeliveryState, EventRecord
from receiver.settings import Settings
from receiver.sinks.http import HttpSink
from tests import console_data
from tests.apps import FAST, ClientFactory, running_clock
from tests.payloads import FROZEN_NOW, NOTIFY_KEY, REVIEW, body, signed

TOKEN = "console-unit-token"


def app_for(tmp_path: Path, **more: Any) -> web.Application:
    settings = Settings.model_validate(
        {
            "store": {"url": f"sqlite:///{tmp_path}/c.db"},
            "verify": {"notify_keys": [NOTIFY_KEY]},
            "dispatch_poll_interval": 0.02,
            **more,
        }
    )
    return create_app(settings, clock=running_clock)


def csrf_of(page: str) -> str:
    found = re.search(r'name="csrf" value="([0-9a-f]+)"', page)
    assert found, page
    return found.group(1)


async def test_the_root_sends_a_browser_to_the_console_and_every_answer_has_the_headers(
    tmp_path: Path, aiohttp_client: ClientFactory
) -> None:
    client = await aiohttp_client(app_for(tmp_path))
    resp = await client.get("/", allow_redirects=False)
    assert (resp.status, resp.headers["Location"]) == (302, "/console/")
    for path in ("/console/", "/console/static/console.css", "/console/nowhere", "/console/tasks/none"):
        resp = await client.get(path, allow_redirects=False)
        csp = resp.headers.get("Content-Security-Policy", "")
        assert "script-src 'self'" in csp, path
        assert "default-src 'none'" in csp
        assert resp.headers["X-Content-Type-Options"] == "nosniff"
        assert resp.headers["X-Frame-Options"] == "DENY"
    page = await (await client.get("/console/")).text()
    assert re.search(r"\son[a-z]+\s*=", page) is None  # no inline handler
    [tag] = re.findall(r"<script[^>]*>", page)
    assert re.fullmatch(r'<script src="/console/static/console\.js\?v=[0-9a-f]+" defer>', tag)
    assert "style=" not in page  # no inline style either: the CSP allows none
    css = await client.get("/console/static/console.css")
    assert css.headers["Content-Type"].startswith("text/css")
    assert "immutable" in css.headers["Cache-Control"]


async def test_the_webhook_listener_of_a_split_deployment_serves_no_console(tmp_path: Path) -> None:
    settings = Settings.model_validate(
        {"store": {"url": f"sqlite:///{tmp_path}/c.db"}, "http": {"management_port": 18080}}
    )
    main = create_app(settings)
    webhook = webhook_app(settings, main)
    paths = {r.resource.canonical for r in webhook.router.routes() if r.resource is not None}
    assert not any(p == "/" or p.startswith("/console") for p in paths), paths
    assert any(p.startswith("/console") for p in (r.canonical for r in main.router.resources()))


async def test_without_a_token_the_console_is_open_but_its_forms_still_need_the_csrf_token(
    tmp_path: Path, aiohttp_client: ClientFactory
) -> None:
    client = await aiohttp_client(
        app_for(
            tmp_path,
            sinks=[
                {
                    "name": "down",
                    "kind": "memory",
                    "options": {"fail_first": 100},
                    **FAST,
                    "retry_schedule": [],
                }
            ],
        )
    )
    assert (await client.post("/v1/notifications", data=body(signed(REVIEW)))).status == 200
    store = client.app[STORE]

    async def dead() -> list[Any]:
        return list((await store.list_deliveries(DeliveryQuery(state=DeliveryState.DEAD))).items)

    deadline = asyncio.get_running_loop().time() + 10
    while not await dead():
        assert asyncio.get_running_loop().time() < deadline
        await asyncio.sleep(0.02)
    [row] = await dead()
    page = await client.get(f"/console/deliveries/{row.id}")
    assert page.status == 200
    token = csrf_of(await page.text())
    refused = await client.post(
        f"/console/deliveries/{row.id}/redrive", data={"csrf": "0" * 40}, allow_redirects=False
    )
    assert refused.status == 403
    assert [d.state for d in await dead()] == ["dead"]
    done = await client.post(
        f"/console/deliveries/{row.id}/redrive", data={"csrf": token}, allow_redirects=False
    )
    assert (done.status, done.headers["Location"]) == (303, f"/console/deliveries/{row.id}")
    assert not [d for d in await dead() if d.id == row.id and d.attempts == row.attempts]
    # A page elsewhere: its POST carries its own Origin, refused before anything is read.
    elsewhere = await client.post(
        f"/console/deliveries/{row.id}/redrive",
        data={"csrf": token},
        headers={"Origin": "https://evil.example"},
    )
    assert elsewhere.status == 403


async def test_with_a_token_nothing_but_the_login_page_is_served_until_it_is_given(
    tmp_path: Path, aiohttp_client: ClientFactory
) -> None:
    client = await aiohttp_client(app_for(tmp_path, api={"token": TOKEN}))
    for path in ("/console/", "/console/tasks", "/console/overview.json", "/console/events?text=ab"):
        resp = await client.get(path, allow_redirects=False)
        assert resp.status == 303, path
        assert resp.headers["Location"].startswith("/console/login?next=")
    posted = await client.post("/console/deliveries/redrive", data={"csrf": "x"}, allow_redirects=False)
    assert posted.status == 401
    login = await client.get("/console/login?next=/console/tasks")
    token = csrf_of(await login.text())
    wrong = await client.post(
        "/console/login", data={"csrf": token, "token": "nope", "next": "/console/tasks"}
    )
    assert wrong.status == 401
    no_csrf = await client.post("/console/login", data={"token": TOKEN}, allow_redirects=False)
    assert no_csrf.status == 403
    ok = await client.post(
        "/console/login",
        data={"csrf": token, "token": TOKEN, "next": "https://evil.example/"},
        allow_redirects=False,
    )
    assert (ok.status, ok.headers["Location"]) == (303, "/console/")  # never a redirect elsewhere
    cookie = ok.headers["Set-Cookie"]
    assert "HttpOnly" in cookie
    assert "SameSite=Strict" in cookie
    assert "Path=/console" in cookie
    assert "Secure" not in cookie  # plain HTTP here
    assert (await client.get("/console/overview.json")).status == 200
    # The bearer-token API is as it was: the console's cookie opens nothing there.
    assert (await client.get("/v1/tasks")).status == 401
    assert (await client.get("/v1/tasks", headers={"Authorization": f"Bearer {TOKEN}"})).status == 200


async def test_the_session_cookie_is_secure_when_the_request_came_over_tls(
    tmp_path: Path, aiohttp_client: ClientFactory
) -> None:
    client = await aiohttp_client(app_for(tmp_path, api={"token": TOKEN}))
    resp = await client.get("/console/login", headers={"X-Forwarded-Proto": "https"})
    assert "Secure" in resp.headers["Set-Cookie"]


def test_a_session_cookie_is_forged_expired_or_from_another_token_and_refused() -> None:
    now = [FROZEN_NOW]
    sessions = Sessions(TOKEN, clock=lambda: now[0])
    session, cookie = sessions.issue(authenticated=True)
    assert sessions.read(cookie) == session
    assert sessions.allowed(session)
    assert sessions.read(cookie.replace(".1.", ".0.")) is None  # the flag is signed
    assert sessions.read(cookie[:-1] + ("0" if cookie[-1] != "0" else "1")) is None
    assert Sessions("another-token", clock=lambda: now[0]).read(cookie) is None
    assert sessions.read("v1.é.1.1.abc") is None
    assert sessions.read("") is None
    assert sessions.read("x" * 300) is None
    assert sessions.csrf_ok(session, sessions.csrf(session))
    assert not sessions.csrf_ok(session, "é" * 40)
    assert not sessions.csrf_ok(None, sessions.csrf(session))
    other, _ = sessions.issue(authenticated=True)
    assert not sessions.csrf_ok(other, sessions.csrf(session))
    now[0] += sessions.max_age
    assert sessions.read(cookie) is None


async def test_payload_text_is_escaped_in_every_page(tmp_path: Path, aiohttp_client: ClientFactory) -> None:
    client = await aiohttp_client(app_for(tmp_path))
    for doc in console_data.markup():
        assert (await client.post("/v1/notifications", data=body(signed(doc)))).status == 200
    pages = [
        await (await client.get(p)).text()
        for p in ("/console/events", "/console/events/1", "/console/events/2")
    ]
    for page in pages:
        assert console_data.SCRIPT_TEXT not in page
        assert "<img src=x" not in page
    assert "&lt;script&gt;window.__pwned = 1&lt;/script&gt;" in pages[0]
    assert "&lt;img src=x onerror=" in pages[0]


# --- the API --------------------------------------------------------------------------------------


async def test_events_filters_are_checked_and_named_when_wrong(
    tmp_path: Path, aiohttp_client: ClientFactory
) -> None:
    client = await aiohttp_client(app_for(tmp_path))
    wrong = [
        ("text=a", "text"),
        ("min_confidence=high", "min_confidence"),
        ("min_confidence=nan", "min_confidence"),
        ("until=yesterday", "until"),
        ("order=up", "order"),
    ]
    for query, field in wrong:
        resp = await client.get(f"/v1/events?{query}")
        assert resp.status == 400, query
        assert (await resp.json())["error"]["field"] == field
    for doc in console_data.stream("https://img.example"):
        assert (await client.post("/v1/notifications", data=body(signed(doc)))).status == 200
    found = await (await client.get("/v1/events", params={"text": "今晚", "order": "desc"})).json()
    assert [e["notification_type"] for e in found["items"]] == [
        "AiSmartSubtitleResult",
        "AiRecognitionResult",
    ]
    blocks = await (
        await client.get("/v1/events", params={"suggestion": "block", "kind": "ImagePorn", "limit": "2"})
    ).json()
    assert len(blocks["items"]) == 2
    assert blocks["next"] is not None
    assert all(any(f["suggestion"] == "block" for f in e["findings"]) for e in blocks["items"])


async def test_a_deliverys_attempts_are_listed_with_status_latency_and_answer(
    tmp_path: Path, aiohttp_client: ClientFactory
) -> None:
    async def target(request: web.Request) -> web.Response:
        return web.Response(status=503, text="<b>busy</b>" + "x" * 2000)

    hook = web.Application()
    hook.router.add_post("/hook", target)
    server = await aiohttp_client(hook)
    url = str(server.make_url("/hook"))
    client = await aiohttp_client(
        app_for(
            tmp_path,
            sinks=[
                {"name": "h", "kind": "http", "options": {"url": url}, "retry_schedule": [60], "jitter": 0.0}
            ],
        )
    )
    assert (await client.post("/v1/notifications", data=body(signed(REVIEW)))).status == 200

    async def attempts() -> list[dict[str, Any]]:
        resp = await client.get("/v1/deliveries/1/attempts")
        return list((await resp.json())["items"]) if resp.status == 200 else []

    deadline = asyncio.get_running_loop().time() + 10
    while not await attempts():
        assert asyncio.get_running_loop().time() < deadline
        await asyncio.sleep(0.02)
    [a] = await attempts()
    assert (a["attempt"], a["outcome"], a["status"]) == (1, "failed", 503)
    assert a["snippet"].startswith("<b>busy</b>")
    assert len(a["snippet"]) == 512
    assert a["latency_ms"] > 0
    assert "503" in a["error"]
    doc = await (await client.get("/v1/deliveries/1/attempts")).json()
    assert doc["delivery"]["state"] == "pending"
    assert (await client.get("/v1/deliveries/999/attempts")).status == 404
    assert (await client.get("/v1/deliveries/x/attempts")).status == 400


async def test_the_http_sink_reports_the_status_and_first_bytes_of_an_answer(aiohttp_server: Any) -> None:
    async def ok(request: web.Request) -> web.Response:
        return web.Response(text='{"received": true}')

    async def busy(request: web.Request) -> web.Response:
        return web.Response(status=429, text="slow down")

    app = web.Application()
    app.router.add_post("/ok", ok)
    app.router.add_post("/busy", busy)
    server = await aiohttp_server(app)
    from tests.builders import delivery, record

    sink = HttpSink.from_options("s", {"url": str(server.make_url("/ok"))})
    busy_sink = HttpSink.from_options("b", {"url": str(server.make_url("/busy"))})
    try:
        receipt = await sink.deliver(*delivery(record()))
        assert (receipt.status, receipt.snippet) == (200, '{"received": true}')
        with pytest.raises(SinkError) as caught:
            await busy_sink.deliver(*delivery(record()))
        assert (caught.value.status, caught.value.snippet) == (429, "slow down")
    finally:
        await sink.aclose()
        await busy_sink.aclose()


def test_the_openapi_document_names_every_management_route(tmp_path: Path) -> None:
    app = app_for(tmp_path)
    served = set()
    for route in app.router.routes():
        info = route.resource.get_info() if route.resource is not None else {}
        path = info.get("path") or info.get("formatter")
        if path and path.startswith("/v1/") and route.method not in ("HEAD", "*"):
            served.add((route.method.lower(), path))
    documented = {(m, p) for p, ops in openapi.document()["paths"].items() for m in ops}
    assert served <= documented, served - documented
    params = {p["name"] for p in openapi.document()["paths"]["/v1/events"]["get"]["parameters"]}
    assert {"until", "kind", "label", "suggestion", "min_confidence", "text", "order"} <= params


async def test_every_outcome_is_counted_in_the_store_for_the_overview(
    tmp_path: Path, aiohttp_client: ClientFactory
) -> None:
    client = await aiohttp_client(app_for(tmp_path))
    assert (await client.post("/v1/notifications", data=body(signed(REVIEW)))).status == 200
    assert (await client.post("/v1/notifications", data=body(signed(REVIEW)))).status == 200
    assert (await client.post("/v1/notifications", data=body(signed(REVIEW, key="wrong")))).status == 401
    assert (await client.post("/v1/notifications", data=b"{")).status == 400
    store = client.app[STORE]
    want = {"stored": 1, "duplicate": 1, "unauthorized": 1, "invalid": 1}

    async def counted() -> dict[str, int]:
        totals: dict[str, int] = {}
        for _, outcome, n in await store.ingest_counts(0):
            totals[outcome] = totals.get(outcome, 0) + n
        return totals

    deadline = asyncio.get_running_loop().time() + 10
    while await counted() != want:  # flushed every two seconds
        assert asyncio.get_running_loop().time() < deadline, await counted()
        await asyncio.sleep(0.05)
    data = await (await client.get("/console/overview.json")).json()
    assert {k: data["outcomes"][k] for k in want} == want


# --- the views ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "safe"),
    [
        ("https://cos.example/a.jpg", True),
        ("http://10.0.0.1/x", True),
        ("javascript:alert(1)", False),
        ("data:image/svg+xml,<svg>", False),
        ("JAVASCRIPT:alert(1)", False),
        ("https://a b/", False),
        ("//evil.example/x", False),
        ("https:/x", False),
        (None, False),
        (3, False),
        ("https://x\u202e/", False),
    ],
)
def test_only_http_urls_become_links_or_images(url: Any, safe: bool) -> None:
    assert (views.safe_url(url) is not None) is safe


def test_a_preview_shows_control_and_direction_characters_and_stops_at_its_limit() -> None:
    text, cut = views.preview("ab\x00c\u202edef\nnext\x1b[31m".encode() + b"\xff", 100)
    assert text == "ab\\u{0000}c\\u{202e}def\nnext\\u{001b}[31m\ufffd"
    assert not cut
    assert views.preview(b"x" * 10, 4) == ("xxxx", True)


def record(seq: int, findings: list[dict[str, Any]], kind: str = "AiReviewResult") -> EventRecord:
    return EventRecord(
        seq,
        f"e{seq}",
        "T",
        "t",
        None,
        kind,
        "",
        "",
        "http",
        0.0,
        "valid",
        False,
        0,
        None,
        None,
        findings,
        b"{}",
    )


def finding(kind: str, start: float, **more: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "kind": kind,
        "label": None,
        "suggestion": None,
        "confidence": None,
        "start": start,
        "end": start + 1,
        "text": None,
        "translation": None,
        "url": None,
        "area": None,
        "severity": None,
        "attrs": {},
    }
    return {**base, **more}


def test_a_timeline_of_ten_thousand_events_draws_a_bounded_number_of_marks_strongest_first() -> None:
    events = [
        record(i, [finding("ImagePorn", i * 0.5, suggestion="pass" if i % 7 else "block")])
        for i in range(10_000)
    ]
    events.append(record(10_001, [finding("QualityControl", 100.0, label="Blur")], "AiQualityControlResult"))
    drawn = views.timeline(events)
    [moderation] = [lane for lane in drawn.lanes if lane.name == "Moderation"]
    assert len(moderation.marks) <= views.BINS
    assert moderation.count == 10_000
    assert {m.css for m in moderation.marks} == {"block"}  # every bin holds a block: it wins
    assert all(0 <= m.x <= views.WIDTH and m.x + m.width <= views.WIDTH + 0.01 for m in moderation.marks)
    assert [lane.name for lane in drawn.lanes] == ["Moderation", "Quality"]


def test_the_transcript_is_in_stream_time_order_without_partial_results_or_repeats() -> None:
    events = [
        record(1, [finding("SmartSubtitle", 9.0, text="later", translation="稍后")]),
        record(2, [finding("AsrFullTextRecognition", 2.0, text="first", attrs={"steady_state": True})]),
        record(3, [finding("AsrFullTextRecognition", 1.0, text="fir", attrs={"steady_state": False})]),
        record(4, [finding("AsrFullTextRecognition", 2.0, text="first")]),
        record(5, [finding("AsrWordsRecognition", 3.0, text="word")]),
    ]
    lines = views.transcript(events)
    assert [(line.start, line.text, line.translation) for line in lines] == [
        (2.0, "first", None),
        (9.0, "later", "稍后"),
    ]


async def test_a_tasks_page_shows_events_that_came_after_it_was_drawn_and_adopted_orphans(
    tmp_path: Path, aiohttp_client: ClientFactory
) -> None:
    client = await aiohttp_client(app_for(tmp_path))
    auth = {"Content-Type": "application/json"}

    async def notify(doc: dict[str, Any]) -> None:
        assert (await client.post("/v1/notifications", data=body(signed(doc)))).status == 200

    async def page() -> str:
        return await (await client.get(f"/console/tasks/{console_data.TASK_ID}")).text()

    await notify(console_data.speech(1.0, "the first line", "第一句", 1))  # an orphan: no task yet
    registered = await client.post("/v1/tasks", json={"task_id": console_data.TASK_ID}, headers=auth)
    assert registered.status == 201
    assert "the first line" in await page()
    await notify(console_data.speech(9.0, "the second line", "第二句", 2))
    drawn = await page()  # drawn again from where it was: only the new event read
    assert drawn.index("the first line") < drawn.index("the second line")
    other = "1300099999-procedure-live-other"
    await notify({**console_data.speech(5.0, "an orphan of another", "", 3), "TaskId": other})
    assert (await client.post("/v1/tasks", json={"task_id": other}, headers=auth)).status == 201
    assert "an orphan of another" in await (await client.get(f"/console/tasks/{other}")).text()


def test_every_template_and_asset_is_package_data_so_the_wheel_carries_it() -> None:
    import fnmatch
    import tomllib

    root = Path(__file__).resolve().parents[1]
    patterns = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    folder = root / "receiver" / "http" / "console"
    shipped = [
        p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file() and p.suffix != ".py"
    ]
    shipped = [p for p in shipped if "__pycache__" not in p]
    assert {"templates/base.html", "static/console.css", "static/console.js"} <= set(shipped)
    assert all(any(fnmatch.fnmatch(p, g) for g in patterns["receiver.http.console"]) for p in shipped), (
        shipped
    )
