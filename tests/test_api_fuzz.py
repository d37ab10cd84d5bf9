"""schemathesis against the running service's own OpenAPI document: no 5xx, answers as documented."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.test_process import Server

pytestmark = pytest.mark.slow
TOKEN = "fuzz-token"


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    env = {"RECEIVER_API__TOKEN": TOKEN, "RECEIVER_VERIFY__NOTIFY_KEYS": '["fuzz-key"]'}
    s = Server(tmp_path, env, [])
    yield s
    s.stop()


def test_schemathesis_finds_no_server_error_and_every_answer_matches_the_document(server: Server) -> None:
    cli = Path(sys.executable).with_name("schemathesis")
    assert cli.exists() or shutil.which("schemathesis"), "schemathesis is a dev dependency"
    run = subprocess.run(
        [
            str(cli),
            "run",
            f"{server.url}/openapi.json",
            "-H",
            f"Authorization: Bearer {TOKEN}",
            "--checks",
            "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance",
            "--max-time",
            "25",
            "--workers",
            "2",
            "--seed",
            "20261125",
        ],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    assert "unhandled error" not in server.output()
