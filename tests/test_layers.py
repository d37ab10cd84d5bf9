"""The layering the design promises: the core and its use cases load no adapter's library."""

from __future__ import annotations

import subprocess
import sys

# The core (wire models, events, tasks), the use cases, the settings and what they share: none of
# these may need an adapter's library (aiohttp, aio-pika, a database driver, the cloud SDK).
CORE = (
    "receiver",
    "receiver.wire",
    "receiver.decoder",
    "receiver.events",
    "receiver.findings",
    "receiver.tasks",
    "receiver.routing",
    "receiver.batches",
    "receiver.ports",
    "receiver.errors",
    "receiver.messages",
    "receiver.settings",
    "receiver.config",
    "receiver.emulator.settings",
    "receiver.logs",
    "receiver.retries",
    "receiver.group_commit",
    "receiver.ingest",
    "receiver.dispatch",
    "receiver.submit",
    "receiver.reconcile",
    "receiver.notices",
    "receiver.digests",
    "receiver.documents",
)
ADAPTER_LIBRARIES = ("aiohttp", "aio_pika", "aiormq", "asyncpg", "tencentcloud", "prometheus_client")

PROBE = f"""
import importlib, sys
for name in {CORE!r}:
    importlib.import_module(name)
loaded = sorted({{m.split(".")[0] for m in sys.modules}} & set({ADAPTER_LIBRARIES!r}))
print(" ".join(loaded))
"""


def test_importing_the_core_loads_no_adapter_library() -> None:
    # A fresh interpreter: this one has loaded everything already.
    done = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True)
    assert done.stdout.split() == [], f"the core loaded {done.stdout.strip()}"


def test_create_app_is_still_found_on_the_package() -> None:
    import receiver
    from receiver.app import create_app

    assert receiver.create_app is create_app
