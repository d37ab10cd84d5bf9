"""A local MPS: speaks ``ProcessLiveStream`` (Tencent Cloud API 3.0) and plays notifications back."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from receiver.emulator.settings import EmulatorSettings

if TYPE_CHECKING:
    from receiver.emulator.api import create_emulator

__all__ = ["EmulatorSettings", "create_emulator"]


def __getattr__(name: str) -> Any:
    # Loaded on first use: the settings need no aiohttp, the app does.
    if name == "create_emulator":
        from receiver.emulator.api import create_emulator

        return create_emulator
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
