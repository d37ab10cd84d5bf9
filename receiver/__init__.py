"""receiver: the customer side of Tencent Cloud MPS live-stream processing notifications.

The core is exported here; ``create_app`` (aiohttp and every adapter) is loaded on first use, so
that ``import receiver`` loads no adapter.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from receiver.config import load_settings
from receiver.errors import ReceiverError
from receiver.events import Channel, Event, SignPolicy, Verdict
from receiver.findings import Finding
from receiver.settings import Settings

if TYPE_CHECKING:
    from receiver.app import create_app

__all__ = [
    "Channel",
    "Event",
    "Finding",
    "ReceiverError",
    "Settings",
    "SignPolicy",
    "Verdict",
    "create_app",
    "load_settings",
]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    if name == "create_app":
        from receiver.app import create_app

        return create_app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
