"""Loading the settings: the TOML file overlaid by ``RECEIVER_*`` environment variables, each name checked.

Read once, in ``main``; nothing else reads the environment.
"""

from __future__ import annotations

import difflib
import json
import os
import re
import tomllib
import types
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Union, get_args, get_origin

from pydantic import BaseModel, ValidationError
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsError,
    TomlConfigSettingsSource,
)

from receiver import messages
from receiver.errors import ConfigError
from receiver.settings import Settings

ENV_PREFIX = "RECEIVER_"


def _unwrap(annotation: Any) -> list[Any]:
    """The types an annotation allows, ``None`` left out (``X | None`` is X)."""
    if get_origin(annotation) in (Union, types.UnionType):
        return [a for a in get_args(annotation) if a is not type(None)]
    return [annotation]


def _model_of(annotation: Any) -> type[BaseModel] | None:
    for a in _unwrap(annotation):
        if isinstance(a, type) and issubclass(a, BaseModel):
            return a
    return None


def _json_kind(annotation: Any) -> str | None:
    """What JSON pydantic-settings expects for a field set from one variable (None: a plain value)."""
    for a in _unwrap(annotation):
        origin = get_origin(a) or a
        if origin in (list, tuple, set, frozenset):
            return 'a JSON array, e.g. ["a", "b"]'
        if origin is dict:
            return 'a JSON object, e.g. {"key": "value"}'
        if isinstance(origin, type) and issubclass(origin, BaseModel):
            return "a JSON object of the section's settings (or one variable per setting, with __)"
    return None


def _env_names(model: type[BaseModel], prefix: str = ENV_PREFIX) -> Iterator[tuple[str, Any]]:
    """Every variable that names a setting: ``RECEIVER_SINKS``, ``RECEIVER_HTTP``, ``RECEIVER_HTTP__PORT``."""
    for name, field in model.model_fields.items():
        env = f"{prefix}{name.upper()}"
        yield env, field.annotation
        nested = _model_of(field.annotation)
        if nested is not None:
            yield from _env_names(nested, f"{env}__")


def check_environment(environ: Mapping[str, str]) -> None:
    """Refuse a ``RECEIVER_*`` variable that names no setting (a typo would be ignored otherwise),
    and a list or table given as a plain string (pydantic-settings wants JSON there)."""
    valid = dict(_env_names(Settings))
    for name, value in sorted(environ.items()):
        upper = name.upper()  # pydantic-settings reads names case-insensitively
        if not upper.startswith(ENV_PREFIX):
            continue
        if upper not in valid:
            near = difflib.get_close_matches(upper, valid, n=1, cutoff=0.6)
            hint = f"; did you mean {near[0]}?" if near else ""
            raise ConfigError(f"{name}: no such setting{hint}")
        kind = _json_kind(valid[upper])
        if kind is None:
            continue
        try:
            json.loads(value)
        except ValueError:
            # The value is not shown: it may be a secret (notify keys, sink options).
            raise ConfigError(f"{name}: expected {kind}; got a value that is not JSON") from None


def _sinks_by_name(message: str, config_file: Path | None, environ: Mapping[str, str]) -> str:
    """``sinks.0.rate_limit`` said as ``sinks.alerts.rate_limit``: the sink by the name it was given
    (from RECEIVER_SINKS when set, as the settings take it, else from the file)."""
    given: Any = None
    env = next((v for k, v in environ.items() if k.upper() == f"{ENV_PREFIX}SINKS"), None)
    try:
        if env is not None:
            given = json.loads(env)
        elif config_file is not None:
            given = tomllib.loads(config_file.read_text()).get("sinks")
    except (ValueError, OSError):
        return message
    if not isinstance(given, list):
        return message
    names = [s.get("name") if isinstance(s, dict) else None for s in given]

    def named(match: re.Match[str]) -> str:
        i = int(match.group(1))
        name = names[i] if i < len(names) else None
        return f"sinks.{name}." if isinstance(name, str) and name else match.group(0)

    return re.sub(r"\bsinks\.(\d+)\.", named, message)


def load_settings(config_file: Path | None = None, environ: Mapping[str, str] | None = None) -> Settings:
    """Read the TOML file (if any), then let ``RECEIVER_*`` variables override it.

    ``environ`` is what is checked for unknown ``RECEIVER_*`` names (default: ``os.environ``, which
    pydantic-settings reads).
    """
    if config_file is not None and not config_file.is_file():
        raise ConfigError(f"config file {config_file} does not exist")
    environ = os.environ if environ is None else environ
    check_environment(environ)

    class FromFile(Settings):
        @classmethod
        def settings_customise_sources(
            cls,
            settings_cls: type[BaseSettings],
            init_settings: PydanticBaseSettingsSource,
            env_settings: PydanticBaseSettingsSource,
            dotenv_settings: PydanticBaseSettingsSource,
            file_secret_settings: PydanticBaseSettingsSource,
        ) -> tuple[PydanticBaseSettingsSource, ...]:
            sources = [init_settings, env_settings]
            if config_file is not None:
                sources.append(TomlConfigSettingsSource(settings_cls, toml_file=config_file))
            return tuple(sources)

    try:
        settings = Settings.model_validate(FromFile().model_dump())
    except ValidationError as exc:
        raise ConfigError(_sinks_by_name(messages.describe(exc), config_file, environ)) from None
    except SettingsError as exc:
        raise ConfigError(f"{exc} (lists and tables in RECEIVER_* variables are JSON)") from None
    # OTEL_* are not ours (not RECEIVER_*): the OpenTelemetry variables, read here once and no
    # more (the SDK is given what they say rather than reading the environment itself).
    return settings.model_copy(update={"tracing": settings.tracing.with_environment(environ)})
