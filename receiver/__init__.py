"""receiver: the customer side of Tencent Cloud MPS live-stream processing notifications."""

from receiver.app import create_app
from receiver.errors import ReceiverError
from receiver.events import Channel, Event, SignPolicy, Verdict
from receiver.findings import Finding
from receiver.settings import Settings, load_settings

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
