"""The command line as a user meets it: help for every command, clear errors for bad arguments, and
nothing announced before the settings are known to work."""

from __future__ import annotations

import argparse
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import orjson
import pytest

from receiver import __main__ as cli

COMMANDS = ("serve", "consume", "dispatch", "migrate", "emulate", "submit", "replay", "reconcile", "abort")


@pytest.fixture(autouse=True)
def quiet_setup(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No config file from the repository, a store of the test's own, and structlog left as the
    tests have it: configure_logging would cache loggers bound to this test's captured stdout."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("RECEIVER_STORE__URL", f"sqlite:///{tmp_path}/cli.db")
    monkeypatch.setattr(cli, "configure_logging", lambda *args, **kwargs: None)


def subcommands() -> dict[str, argparse.ArgumentParser]:
    [action] = [a for a in cli.build_parser()._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(action.choices)


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    try:
        code = cli.main(argv)
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def test_the_top_help_names_every_command_with_a_line(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["--help"], capsys)
    assert code == 0
    assert set(subcommands()) == set(COMMANDS)
    for name in COMMANDS:
        [line] = [ln for ln in out.splitlines() if ln.strip().startswith(f"{name} ")]
        assert len(line.split()) > 3, line  # a name and a sentence, not a bare name


@pytest.mark.parametrize("name", COMMANDS)
def test_each_command_has_a_description_and_every_option_a_help(
    name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run([name, "--help"], capsys)
    assert code == 0
    parser = subcommands()[name]
    assert len(parser.description or "") > 40
    assert parser.description is not None
    assert parser.description.split(".")[0].lower() in out.replace("\n", " ").lower().replace("  ", " ")
    for action in parser._actions:
        assert action.help not in (None, argparse.SUPPRESS), (name, action.option_strings)


def test_a_label_without_equals_is_a_clear_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["submit", "--url", "rtmp://h/live/s", "--notify-url", "http://h/x", "--label", "bad"]
    code, _, err = run(argv, capsys)
    assert code == 2
    assert "argument --label: expected KEY=VALUE (e.g. room=42); got 'bad'" in err
    assert "Traceback" not in err


@pytest.fixture
def fake_receiver() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """A stand-in for a running receiver's /v1/tasks/submit: records what the CLI sends."""
    received: list[dict[str, Any]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            received.append(orjson.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            answer = b'{"task_id": "t-1"}'
            self.send_response(201)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", received
    server.shutdown()
    server.server_close()
    thread.join()


def test_labels_are_sent_as_given_values_may_hold_equals(
    fake_receiver: tuple[str, list[dict[str, Any]]], capsys: pytest.CaptureFixture[str]
) -> None:
    server, received = fake_receiver
    argv = ["submit", "--server", server, "--url", "rtmp://h/live/s", "--notify-url", "http://h/x"]
    code, out, err = run([*argv, "--label", "room=42", "--label", "q=a=b"], capsys)
    assert code == 0, err
    assert '"task_id": "t-1"' in out  # the answer, indented (structlog's default also prints here)
    [body] = received
    assert body["Labels"] == {"room": "42", "q": "a=b"}


@pytest.mark.parametrize("value", ["now", "1h", "-30m", "7d", "1700000000", "2026-01-31T12:00:00Z"])
def test_replay_takes_now_a_time_ago_unix_seconds_and_iso(
    value: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(["replay", f"--until={value}", "--dry-run"], capsys)
    assert code == 0, err
    assert "0 deliveries match" in err


def test_time_forms_mean_what_they_say() -> None:
    before = time.time()
    assert before <= cli._when("now") <= time.time()
    assert abs(cli._when("1h") - (before - 3600)) < 5
    assert abs(cli._when("-30m") - (before - 1800)) < 5
    assert cli._when("2026-01-31T12:00:00Z") == cli._when("2026-01-31T12:00:00+00:00") == 1769860800.0
    assert cli._when("2026-01-31T12:00:00") == 1769860800.0  # no zone: UTC


def test_a_bad_time_names_the_option_and_the_formats(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(["replay", "--until", "tomorrow-ish"], capsys)
    assert code == 2
    assert "argument --until: expected unix seconds, ISO 8601" in err
    assert "now" in err
    assert "invalid _when value" not in err


def test_consume_without_amqp_url_fails_before_announcing_it_listens(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, err = run(["consume"], capsys)
    assert code == 2
    assert "amqp.url is not set" in out + err
    assert "listening" not in out + err
