"""A local MPS: speaks ``ProcessLiveStream`` (Tencent Cloud API 3.0) and plays notifications back."""

from receiver.emulator.api import EmulatorSettings, create_emulator

__all__ = ["EmulatorSettings", "create_emulator"]
