"""The console in a real browser: Debian's chromium, headless, driven by Playwright's Python package
(its wheel carries the driver; no browser is downloaded), on a real ``receiver serve`` fed through its
webhook, with an http sink whose target the test controls. A screenshot of each page, at 375 and
1366 px, goes to the test's output (``$CONSOLE_SCREENSHOTS`` or pytest's temporary directory)."""

from __future__ import annotations

import http.server
import os
import sqlite3
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pytest
from playwright.sync_api import Browser, BrowserContext, Page, sync_playwright

from tests import console_data
from tests.servers import Running, environment, free_port, live

pytestmark = pytest.mark.slow

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]  # fmt: skip
TOKEN = "console-test-token"
KEY = "console-test-key"
WIDTHS = (375, 1366)


@dataclass
class Target:
    """The http sink's target (its answer set by the test) and the snapshot images' host."""

    status: int = 503
    hits: list[int] = field(default_factory=list)
    server: http.server.ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.server_address[1]}"


def _target_handler(target: Target) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def do_POST(self) -> None:  # the sink's deliveries
            self.rfile.read(int(self.headers.get("Content-Length", "0")))
            target.hits.append(target.status)
            body = b'{"ok": true}' if target.status < 300 else b"<h1>try later</h1> busy"
            self.send_response(target.status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:  # snapshot images
            name = self.path.rsplit("/", 1)[-1].split(".")[0]
            body = console_data.snapshot_svg(int(name) if name.isdigit() else 0)
            self.send_response(200)
            self.send_header("Content-Type", "image/svg+xml")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    return Handler


@dataclass
class Console:
    url: str
    db: Path
    target: Target
    server: Running
    shots: Path

    def rows(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        with sqlite3.connect(f"file:{self.db}?mode=ro", uri=True) as con:
            return con.execute(sql, args).fetchall()

    def post(self, path: str, body: bytes, headers: dict[str, str] | None = None) -> int:
        request = urllib.request.Request(self.url + path, data=body, headers=headers or {}, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=10) as r:
                return int(r.status)
        except urllib.error.HTTPError as exc:
            return int(exc.code)

    def notify(self, doc: dict[str, Any]) -> int:
        return self.post("/v1/notifications", orjson.dumps(live(doc, key=KEY)))


def wait_for(what: str, check: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


@pytest.fixture(scope="module")
def console(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Console]:
    if not Path(CHROMIUM).exists():
        pytest.fail(
            "the browser tests need Debian's chromium: make test installs it (apt-get install chromium)"
        )
    tmp = tmp_path_factory.mktemp("console")
    shots = Path(os.environ.get("CONSOLE_SCREENSHOTS") or tmp / "screenshots")
    shots.mkdir(parents=True, exist_ok=True)
    target = Target()
    target.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _target_handler(target))
    threading.Thread(target=target.server.serve_forever, daemon=True).start()
    port = free_port()
    db = tmp / "console.db"
    sinks = [
        {"name": "hook", "kind": "http", "options": {"url": f"{target.url}/hook"}, "retry_schedule": [],
         "jitter": 0.0, "breaker_threshold": 1000},
        {"name": "archive", "kind": "jsonl", "options": {"path": str(tmp / "archive.jsonl")}},
    ]  # fmt: skip
    server = Running(
        tmp,
        environment(
            RECEIVER_HTTP__PORT=str(port),
            RECEIVER_STORE__URL=f"sqlite:///{db}",
            RECEIVER_API__TOKEN=TOKEN,
            RECEIVER_VERIFY__NOTIFY_KEYS=orjson.dumps([KEY]).decode(),
            RECEIVER_SINKS=orjson.dumps(sinks).decode(),
            RECEIVER_DISPATCH_POLL_INTERVAL="0.05",
        ),
        "serve",
        port,
    )
    c = Console(server.url, db, target, server, shots)
    try:
        auth = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
        labels = {"room": "42", "streamer": "<b>u-42</b>"}
        task = {"task_id": console_data.TASK_ID, "session_id": "evening-show", "labels": labels}
        assert c.post("/v1/tasks", orjson.dumps(task), auth) == 201
        docs = console_data.stream(target.url) + console_data.markup()
        for doc in docs:
            assert c.notify(doc) == 200, doc
        # Refused ones, counted too: a forged Sign (401), and a signed notification that is not valid
        # (400, kept in quarantine with markup in its body).
        forged = {
            **console_data.ocr(1.0, "forged", 99),
            "Timestamp": int(time.time()) + 600,
            "Sign": "0" * 32,
        }
        assert c.post("/v1/notifications", orjson.dumps(forged)) == 401
        bad = console_data.ocr(1.0, console_data.IMG_TEXT, 98)
        bad["AiRecognitionResultInfo"]["ResultSet"][0]["OcrWordsRecognitionResultSet"][0]["Confidence"] = (
            "high"
        )
        bad = live(bad, key=KEY)
        assert c.post("/v1/notifications", orjson.dumps(bad)) == 400
        n = len(docs)
        wait_for("every delivery settled", lambda: c.rows(
            "SELECT count(*) FROM deliveries WHERE state <> 'pending'")[0][0] == 2 * n)  # fmt: skip
        counted = (
            "SELECT coalesce(sum(n), 0) FROM ingest_counts"
            " WHERE outcome IN ('stored', 'unauthorized', 'invalid')"
        )
        wait_for("the counts flushed", lambda: c.rows(counted)[0][0] == n + 2)
        yield c
    finally:
        if server.proc.poll() is None:
            server.proc.kill()
            server.proc.wait()
        target.server.shutdown()
        target.server.server_close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


def sign_in(browser: Browser, console: Console, width: int = 1366) -> tuple[BrowserContext, Page]:
    context = browser.new_context(viewport={"width": width, "height": 900})
    page = context.new_page()
    page.goto(console.url + "/console/")
    page.fill("#token", TOKEN)
    page.press("#token", "Enter")
    page.wait_for_url(console.url + "/console/")
    return context, page


def no_sideways_scroll(page: Page) -> None:
    width, inner = page.evaluate("[document.scrollingElement.scrollWidth, window.innerWidth]")
    assert width <= inner, f"{page.url}: {width} px wide in a {inner} px window"


def test_the_token_is_asked_once_then_a_strict_http_only_cookie_keeps_the_session(
    browser: Browser, console: Console
) -> None:
    context = browser.new_context(viewport={"width": 1366, "height": 900})
    page = context.new_page()
    page.goto(console.url + "/console/tasks")
    assert page.url.startswith(console.url + "/console/login")
    assert page.locator("h1").inner_text() == "Sign in"
    page.screenshot(path=console.shots / "login-1366.png")
    assert "Moderation" not in page.content()
    assert console_data.TASK_ID not in page.content()
    page.fill("#token", "not-the-token")
    with page.expect_response(lambda r: r.url.endswith("/console/login")) as refused:
        page.press("#token", "Enter")
    assert refused.value.status == 401
    assert page.get_by_role("alert").inner_text() == "That is not the token."
    page.fill("#token", TOKEN)
    page.click("button[type=submit]:has-text('Sign in')")
    page.wait_for_url(console.url + "/console/tasks")  # where it was going
    assert console_data.TASK_ID in page.content()
    [cookie] = [c for c in context.cookies() if c["name"] == "receiver_console"]
    assert (cookie["httpOnly"], cookie["sameSite"], cookie["secure"], cookie["path"]) == (
        True,
        "Strict",
        False,
        "/console",
    )
    page.goto(console.url + "/console/events")  # no second prompt
    assert page.locator("h1").inner_text() == "Events"
    page.click("button:has-text('Sign out')")
    page.wait_for_url(console.url + "/console/login")
    page.goto(console.url + "/console/")
    assert page.url.startswith(console.url + "/console/login")
    context.close()


def _paths(console: Console) -> list[tuple[str, str]]:
    [(task_ref,)] = console.rows("SELECT id FROM tasks WHERE task_id = ?", console_data.TASK_ID)
    [(dead,)] = console.rows("SELECT min(id) FROM deliveries WHERE sink = 'hook' AND state = 'dead'")
    [(event,)] = console.rows("SELECT min(seq) FROM events WHERE notification_type = 'AiReviewResult'")
    return [
        ("overview", "/console/"),
        ("tasks", "/console/tasks?state=finished&label=room%3D42"),
        ("task", f"/console/tasks/{task_ref}"),
        ("events", "/console/events"),
        ("events-search", "/console/events?text=%E7%9B%B4%E6%92%AD"),  # 直播
        ("event", f"/console/events/{event}"),
        ("deliveries", "/console/deliveries?sink=hook"),
        ("delivery", f"/console/deliveries/{dead}"),
        ("redrive", "/console/deliveries/redrive?sink=hook"),
        ("quarantine", "/console/quarantine"),
    ]


def test_every_page_opens_on_the_run_and_reads_at_375_and_1366_px(browser: Browser, console: Console) -> None:
    context, page = sign_in(browser, console)
    for width in WIDTHS:
        page.set_viewport_size({"width": width, "height": 900})
        for name, path in _paths(console):
            response = page.goto(console.url + path)
            assert response is not None
            assert response.status == 200, path
            assert "script-src 'self'" in response.headers["content-security-policy"]
            assert page.locator("h1").is_visible()
            no_sideways_scroll(page)
            page.screenshot(path=console.shots / f"{name}-{width}.png", full_page=True)
            page.screenshot(path=console.shots / f"{name}-{width}-top.png")
    # What each shows, from the run.
    page.goto(console.url + "/console/")
    assert int(page.locator('[data-field="outcomes.unauthorized"]').inner_text()) == 1
    assert int(page.locator('[data-field="outcomes.invalid"]').inner_text()) == 1
    assert int(page.locator('[data-field="tasks.finished"]').inner_text()) == 1
    assert page.locator('tr[data-sink="hook"] [data-field="dead"]').inner_text() != "0"
    page.goto(console.url + _paths(console)[2][1])
    lanes = page.locator(".lane-name").all_inner_texts()
    assert {"Moderation", "Quality", "Recognition", "Subtitles", "Recording", "ProcessEof"} <= {
        lane.split()[0] for lane in lanes
    }
    assert page.locator(".mark.block").count() > 0
    assert page.locator(".mark.band").count() > 0
    transcript = page.locator(".transcript").inner_text()
    assert transcript.index("Welcome to the evening stream") < transcript.index("Thank you for watching")
    assert "欢迎来到今晚的直播" in transcript
    first = page.locator(".snapshots img").first
    first.scroll_into_view_if_needed()
    page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=first.element_handle())
    assert page.locator(".records a").first.get_attribute("href", timeout=1000).startswith("https://")  # type: ignore[union-attr]
    page.locator("details summary").first.click()
    assert '"NotificationType"' in page.locator("pre.raw").first.inner_text()
    page.goto(console.url + "/console/events?text=WELCOME")  # case-insensitive
    assert "Welcome to the evening stream" in page.locator("table.events").inner_text()
    page.goto(console.url + "/console/events?text=%E7%9B%B4%E6%92%AD")  # 直播: CJK, two characters
    rows = page.locator("table.events tbody tr")
    assert rows.count() >= 2
    assert all("直播" in t for t in rows.all_inner_texts())
    context.close()


def test_markup_in_recognized_text_is_shown_as_text_and_never_runs(
    browser: Browser, console: Console
) -> None:
    context, page = sign_in(browser, console)
    [(task_ref,)] = console.rows("SELECT id FROM tasks WHERE task_id = ?", console_data.TASK_ID)
    [(seq,)] = console.rows("SELECT max(seq) FROM events")
    for path in (f"/console/tasks/{task_ref}", "/console/events?text=%3Cscript", f"/console/events/{seq}",
                 "/console/quarantine"):  # fmt: skip
        response = page.goto(console.url + path)
        assert response is not None
        csp = response.headers["content-security-policy"]
        assert "script-src 'self'" in csp
        assert "unsafe-inline" not in csp
        for details in page.locator("details").all():
            details.evaluate("d => d.open = true")
        text = page.locator("main").inner_text()
        wanted = (
            [console_data.IMG_TEXT]
            if path.endswith("quarantine")
            else [console_data.SCRIPT_TEXT, console_data.IMG_TEXT]
        )
        for markup in wanted:
            assert markup in text or markup.replace('"', '\\"') in text, (path, markup)
        assert page.evaluate("window.__pwned") is None
        assert page.evaluate("document.querySelectorAll('img[src=\"x\"], [onerror]').length") == 0
        scripts = page.evaluate("[...document.scripts].map(s => s.src)")
        assert len(scripts) == 1, scripts
        assert "/console/static/console.js" in scripts[0]
    # The labels (from the task's registration) are markup too.
    page.goto(console.url + f"/console/tasks/{task_ref}")
    assert "streamer=<b>u-42</b>" in page.locator("main").inner_text()
    assert page.locator("main b").count() == 0
    context.close()


def _state(console: Console, delivery: int) -> tuple[str, int]:
    [(state, attempts)] = console.rows("SELECT state, attempts FROM deliveries WHERE id = ?", delivery)
    return state, attempts


def test_redrive_reached_with_tab_and_enter_delivers_a_dead_letter(
    browser: Browser, console: Console
) -> None:
    context, page = sign_in(browser, console)
    [(delivery,)] = console.rows("SELECT min(id) FROM deliveries WHERE sink = 'hook' AND state = 'dead'")
    page.goto(console.url + f"/console/deliveries/{delivery}")
    attempts = page.locator("table").last.inner_text()
    assert "503" in attempts
    assert "try later" in attempts
    assert " ms" in attempts
    console.target.status = 200
    for _ in range(80):
        page.keyboard.press("Tab")
        focused = page.evaluate("document.activeElement.textContent.trim()")
        if focused == "Redrive this delivery":
            break
    else:
        pytest.fail("Tab never reached the redrive button")
    outline = page.evaluate("getComputedStyle(document.activeElement).outlineStyle")
    assert outline != "none"  # the focus is visible
    with page.expect_navigation():
        page.keyboard.press("Enter")
    wait_for("the delivery delivered", lambda: _state(console, delivery) == ("delivered", 1))
    page.reload()
    assert "delivered" in page.locator("#delivery-state").inner_text()
    # The history the operator reads: the dead attempt, then the one that delivered it.
    rows = page.locator("table").last.locator("tbody tr")
    assert rows.count() == 2
    dead, delivered = (rows.nth(i).inner_text() for i in range(2))
    assert all(part in dead for part in ("dead", "503", "try later"))
    assert all(part in delivered for part in ("delivered", "200", '{"ok": true}'))
    page.screenshot(path=console.shots / "delivery-redriven-1366.png", full_page=True)
    context.close()


def test_redriving_the_filtered_set_shows_its_dry_run_count_first(browser: Browser, console: Console) -> None:
    context, page = sign_in(browser, console)
    console.target.status = 200
    dead = {r[0] for r in console.rows("SELECT id FROM deliveries WHERE sink = 'hook' AND state = 'dead'")}
    assert dead
    page.goto(console.url + "/console/deliveries?sink=hook&state=dead")
    page.click("text=Redrive the matching…")
    assert page.locator(".big").inner_text().split()[0] == str(len(dead))
    assert {
        r[0] for r in console.rows("SELECT id FROM deliveries WHERE state = 'dead' AND sink = 'hook'")
    } == dead
    page.click(f"button:has-text('Redrive {len(dead)} deliveries')")
    page.wait_for_url("**/console/deliveries?*redriven=*")
    assert page.get_by_role("status").inner_text().startswith(f"{len(dead)} deliveries")
    wait_for("every one delivered", lambda: not console.rows(
        "SELECT 1 FROM deliveries WHERE sink = 'hook' AND state <> 'delivered'"))  # fmt: skip
    context.close()


def test_a_form_without_the_sessions_csrf_token_is_refused(browser: Browser, console: Console) -> None:
    context, page = sign_in(browser, console)
    [(delivery,)] = console.rows("SELECT max(id) FROM deliveries")
    before = _state(console, delivery)
    page.goto(console.url + f"/console/deliveries/{delivery}")
    page.evaluate("document.querySelectorAll('input[name=csrf]').forEach(i => i.value = 'forged')")
    with page.expect_response(lambda r: r.url.endswith("/redrive")) as answer:
        page.click("button:has-text('Redrive this delivery')")
    assert answer.value.status == 403
    assert "refused" in page.locator("main").inner_text()
    assert _state(console, delivery) == before
    # From elsewhere, with the session's cookie but no token in the form: refused as well.
    cookie = next(c for c in context.cookies() if c["name"] == "receiver_console")
    status = console.post(
        f"/console/deliveries/{delivery}/redrive",
        b"csrf=",
        {
            "Cookie": f"receiver_console={cookie['value']}",
            "Content-Type": "application/x-www-form-urlencoded",
        },
    )
    assert status == 403
    assert _state(console, delivery) == before
    context.close()


def test_the_overview_refreshes_itself(browser: Browser, console: Console) -> None:
    context, page = sign_in(browser, console)
    page.evaluate("window.__same_page = true")
    field_ = page.locator('[data-field="outcomes.stored"]')
    before = int(field_.inner_text())
    assert console.notify(console_data.ocr(900.0, "one more", 200)) == 200
    page.wait_for_function(
        f"() => Number(document.querySelector('[data-field=\"outcomes.stored\"]').textContent) > {before}",
        timeout=20_000,
    )
    assert page.evaluate("window.__same_page") is True  # updated in place, not reloaded
    context.close()


def test_a_sink_its_target_switched_off_is_switched_back_on_from_the_overview(
    browser: Browser, console: Console
) -> None:
    console.target.status = 410
    assert console.notify(console_data.ocr(950.0, "gone", 201)) == 200
    wait_for("the sink switched off", lambda: bool(console.rows(
        "SELECT 1 FROM sink_state WHERE sink = 'hook' AND disabled_at IS NOT NULL")))  # fmt: skip
    console.target.status = 200
    context, page = sign_in(browser, console)
    button = page.locator('tr[data-sink="hook"] button:has-text("Switch on")')
    button.focus()
    with page.expect_navigation():
        page.keyboard.press("Enter")
    assert not console.rows("SELECT 1 FROM sink_state WHERE sink = 'hook' AND disabled_at IS NOT NULL")
    assert page.locator('tr[data-sink="hook"] button').count() == 0
    context.close()
