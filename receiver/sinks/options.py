"""The base of each sink kind's options model: unknown options are an error that names them."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class SinkOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)
