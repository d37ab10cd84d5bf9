"""Settings: the TOML file, RECEIVER_* overrides, secrets kept secret, impossible combinations refused."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, get_args, get_origin

import orjson
import pytest
from pydantic import BaseModel, ValidationError

from receiver.config import _env_names, load_settings
from receiver.errors import ConfigError
from receiver.events import Channel, SignPolicy
from receiver.settings import Settings
from receiver.sinks import build_sink
from receiver.sinks.log import LogOptions

ROOT = Path(__file__).resolve().parents[1]


def test_shipped_config_gives_the_embedded_default(monkeypatch: pytest.MonkeyPatch) -> None:
    s = load_settings(ROOT / "config" / "receiver.toml")
    assert (s.http.host, s.http.port, s.http.max_body_bytes) == ("127.0.0.1", 8080, 262_144)
    assert s.store.url == "sqlite:///var/receiver.db"
    assert not s.verify.keys()
    assert s.verify.policy_for(Channel.HTTP) is SignPolicy.OFF


def test_environment_overrides_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "r.toml"
    config.write_text('[http]\nport = 9000\n[verify]\nnotify_keys = ["from-file"]\n')
    monkeypatch.setenv("RECEIVER_HTTP__PORT", "9100")
    monkeypatch.setenv("RECEIVER_VERIFY__NOTIFY_KEYS", '["k-new", "k-old"]')
    monkeypatch.setenv("RECEIVER_API__TOKEN", "tok")
    s = load_settings(config)
    assert s.http.port == 9100
    assert s.verify.keys().static == ("k-new", "k-old")
    assert s.verify.policy_for(Channel.AMQP) is SignPolicy.REQUIRED  # a key is set: required by default
    assert s.api.token is not None
    assert s.api.token.get_secret_value() == "tok"


def test_secrets_do_not_show_in_a_repr_or_a_dump(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RECEIVER_VERIFY__NOTIFY_KEYS", '["hush-key"]')
    monkeypatch.setenv("RECEIVER_API__TOKEN", "hush-token")
    s = load_settings(None)
    for text in (repr(s), str(s), s.model_dump_json()):
        assert "hush-key" not in text
        assert "hush-token" not in text


def test_a_policy_that_needs_keys_without_any_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RECEIVER_VERIFY__POLICY", "required")
    with pytest.raises(ConfigError, match="needs at least one notify key"):
        load_settings(None).verify.policy_for(Channel.HTTP)


def test_per_channel_policy_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RECEIVER_VERIFY__NOTIFY_KEYS", '["k"]')
    monkeypatch.setenv("RECEIVER_VERIFY__AMQP_POLICY", "if-present")
    s = load_settings(None)
    assert s.verify.policy_for(Channel.HTTP) is SignPolicy.REQUIRED
    assert s.verify.policy_for(Channel.AMQP) is SignPolicy.IF_PRESENT


def test_unknown_keys_and_missing_files_are_errors(tmp_path: Path) -> None:
    config = tmp_path / "r.toml"
    config.write_text("[http]\nprot = 1\n")
    with pytest.raises(ConfigError, match="prot"):
        load_settings(config)
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "missing.toml")


def test_a_misspelt_key_does_not_show_its_value(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "r.toml"
    config.write_text('[verify]\nnotify_key = "SUPERSECRETKEY"\n')
    with pytest.raises(ConfigError, match="notify_key") as caught:
        load_settings(config)
    assert "SUPERSECRETKEY" not in str(caught.value)
    monkeypatch.setenv("RECEIVER_API__TOKENN", "leaky-token")
    with pytest.raises(ConfigError, match="RECEIVER_API__TOKENN") as env_caught:
        load_settings(None)
    assert "leaky-token" not in str(env_caught.value)


# --- the environment ---------------------------------------------------------------------------


def test_two_sinks_of_one_name_are_refused_by_the_model_itself() -> None:
    sinks = [{"name": "a", "kind": "log"}, {"name": "a", "kind": "memory"}, {"name": "b", "kind": "log"}]
    with pytest.raises(ValidationError, match="sinks: names must be unique, 'a' given more than once"):
        Settings.model_validate({"sinks": sinks})


def test_two_sinks_of_one_name_from_the_environment_are_a_config_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("RECEIVER_SINKS", '[{"name": "a", "kind": "log"}, {"name": "a", "kind": "log"}]')
    with pytest.raises(ConfigError, match="names must be unique") as caught:
        load_settings(None)
    assert "FromFile" not in str(caught.value)  # no model class name in what the user reads


@pytest.mark.parametrize(
    ("name", "nearest"),
    [
        ("RECEIVER_SINK", "RECEIVER_SINKS"),
        ("RECEIVER_SNIKS", "RECEIVER_SINKS"),
        ("receiver_sink", "RECEIVER_SINKS"),  # pydantic-settings reads names in any case
        ("RECEIVER_HTTP__PROT", "RECEIVER_HTTP__PORT"),
        ("RECEIVER_HTTP__PORT__X", "RECEIVER_HTTP__PORT"),
        ("RECEIVER_DISPATCH_POLL_INTERVALL", "RECEIVER_DISPATCH_POLL_INTERVAL"),
        ("RECEIVER_EMULATOR__SCENARIO__RATES", "RECEIVER_EMULATOR__SCENARIO__RATE"),
    ],
)
def test_an_unknown_receiver_variable_is_refused_with_the_nearest_name(
    monkeypatch: pytest.MonkeyPatch, name: str, nearest: str
) -> None:
    monkeypatch.setenv(name, "[]")
    with pytest.raises(ConfigError, match=f"^{name}: no such setting; did you mean {nearest}\\?$"):
        load_settings(None)


def test_nested_and_section_variables_that_name_settings_are_taken(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RECEIVER_HTTP__PORT", "9001")
    monkeypatch.setenv("RECEIVER_EMULATOR__SCENARIO__RATE", "7")
    monkeypatch.setenv("RECEIVER_LOG", '{"level": "debug"}')
    monkeypatch.setenv("RECEIVER_DISPATCH_IN_SERVE", "false")
    monkeypatch.setenv("OTHER_THING", "not ours")
    s = load_settings(None)
    assert (s.http.port, s.emulator.scenario.rate, s.log.level, s.dispatch_in_serve) == (
        9001,
        7,
        "debug",
        False,
    )


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("RECEIVER_VERIFY__NOTIFY_KEYS", 'expected a JSON array, e.g. ["a", "b"]'),
        ("RECEIVER_SINKS", "expected a JSON array"),
        ("RECEIVER_EMULATOR__SCENARIO__MIX", 'expected a JSON object, e.g. {"key": "value"}'),
        ("RECEIVER_HTTP", "expected a JSON object of the section's settings"),
    ],
)
def test_a_list_given_as_a_plain_string_says_json_is_expected(
    monkeypatch: pytest.MonkeyPatch, name: str, expected: str
) -> None:
    monkeypatch.setenv(name, "plain-secret-value")
    with pytest.raises(ConfigError, match=f"^{name}: {re.escape(expected)}") as caught:
        load_settings(None)
    assert "plain-secret-value" not in str(caught.value)


def test_the_variables_our_own_scripts_and_tests_set_are_settings() -> None:
    """The unknown-name check would refuse them: helper variables of tests and bench are not RECEIVER_*."""
    known = {name for name, _ in _env_names(Settings)}
    deliberate = {"RECEIVER_API__TOKENN", "RECEIVER_HTTP__PROT", "RECEIVER_HTTP__PORT__X", "RECEIVER_A__B"}
    files = [ROOT / "Makefile", ROOT / "Dockerfile", ROOT / "README.md"]
    for folder in ("bench", "scripts", "deploy", ".ci", "config", "tests"):
        files += [p for p in (ROOT / folder).rglob("*") if p.is_file() and "__pycache__" not in p.parts]
    used = {
        (name, path.name)
        for path in files
        if path.name != "test_settings.py"
        for name in re.findall(r"RECEIVER_[A-Z0-9_]*[A-Z0-9]", path.read_text(errors="ignore"))
    }
    assert used
    assert [(n, f) for n, f in sorted(used) if n not in known | deliberate] == []


# --- config/receiver.toml ----------------------------------------------------------------------


def documented_keys(text: str) -> set[str]:
    """Dotted keys set or shown commented out: ``http.port``, ``sinks.filter.types``, ``dispatch_in_serve``"""
    keys: set[str] = set()
    table = ""
    for raw in text.splitlines():
        line = raw.strip().lstrip("#").strip()
        if header := re.fullmatch(r"\[\[?\s*([\w.]+)\s*\]\]?", line):
            table = header.group(1)
            parts = table.split(".")
            keys.update(".".join(parts[: i + 1]) for i in range(len(parts)))
            continue
        if member := re.match(r"(\w+)\s*=\s*(.*)", line):
            key = f"{table}.{member.group(1)}" if table else member.group(1)
            keys.add(key)
            value = member.group(2)
            if value.startswith("{"):  # an inline table: its keys too
                keys.update(f"{key}.{inner}" for inner in re.findall(r"(\w+)\s*=", value))
    return keys


def setting_paths(model: type[BaseModel], prefix: str = "") -> set[str]:
    paths: set[str] = set()
    for name, field in model.model_fields.items():
        path = f"{prefix}{name}"
        paths.add(path)
        annotation = field.annotation
        inner = get_args(annotation)[0] if get_origin(annotation) is list else annotation
        if isinstance(inner, type) and issubclass(inner, BaseModel):
            paths |= setting_paths(inner, f"{path}.")
    return paths


def test_documented_keys_reads_what_it_should() -> None:
    text = '# top = 1\n[a]\nb = 2\n# c = 3\n# [[d]]\n# e = { f = 1, g = "x" }\n'
    assert documented_keys(text) == {"top", "a", "a.b", "a.c", "d", "d.e", "d.e.f", "d.e.g"}


def test_the_shipped_config_lists_every_setting() -> None:
    documented = documented_keys((ROOT / "config" / "receiver.toml").read_text())
    assert sorted(setting_paths(Settings) - documented) == []
    shipped = load_settings(ROOT / "config" / "receiver.toml").model_dump(exclude={"sinks"})
    assert shipped == Settings().model_dump(exclude={"sinks"})  # the values shown are the defaults


def test_setting_errors_name_the_setting_in_plain_terms(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RECEIVER_HTTP__PORT", "eighty")
    monkeypatch.setenv("RECEIVER_LOG__LEVEL", "loud")
    with pytest.raises(ConfigError) as caught:
        load_settings(None)
    assert str(caught.value) == (
        "http.port: expected an integer; log.level: expected 'debug', 'info', 'warning' or 'error'"
    )


def test_bad_sink_options_name_the_option_and_no_model_class() -> None:
    with pytest.raises(ConfigError) as caught:
        build_sink("alerts", "http", {"urll": "https://example.com/hook"})
    assert str(caught.value) == (
        "sinks.alerts: bad options for kind 'http': url: expected a value (the member is required);"
        " urll: expected a known member name (this one is not)"
    )


@pytest.mark.parametrize(
    ("sink", "message"),
    [
        ({"kind": "log", "max_batch": 10}, "sinks.s: max_batch: expected 1 for kind 'log'"),
        ({"kind": "memory", "max_wait": 1.0}, "sinks.s: max_wait: expected max_batch above 1"),
        ({"kind": "memory", "rate_burst": 5}, "sinks.s: rate_burst: expected rate_limit to be set too"),
        (
            {"kind": "memory", "rate_limit": 5, "rate_burst": 5, "max_batch": 10},
            "sinks.s: rate_burst: expected at least max_batch (10)",
        ),
        (
            {"kind": "memory", "operator": True, "filter": {"types": ["ProcessEof"]}},
            "sinks.s: filter: expected none on an operator sink",
        ),
        ({"kind": "memory", "operator": True, "digests": True}, "sinks.s: digests: expected false"),
        ({"kind": "memory", "rate_limit": 0}, "sinks.s.rate_limit: expected greater than 0"),
    ],
)
def test_sink_settings_that_cannot_work_are_refused_naming_the_sink_and_option(
    monkeypatch: pytest.MonkeyPatch, sink: dict[str, Any], message: str
) -> None:
    monkeypatch.setenv("RECEIVER_SINKS", orjson.dumps([{"name": "s", **sink}]).decode())
    with pytest.raises(ConfigError) as caught:
        load_settings(None)
    assert str(caught.value).startswith(message)


def test_a_plugin_sink_without_batches_is_refused_a_max_batch_at_start_up() -> None:
    from receiver.build import build_sinks
    from receiver.sinks.log import LogSink

    settings = Settings.model_validate({"sinks": [{"name": "s", "kind": "memory", "max_batch": 5}]})
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("receiver.build.build_sink", lambda name, kind, options: LogSink(name, LogOptions()))
        with pytest.raises(
            ConfigError, match=r"sinks\.s: max_batch: expected 1 for kind 'memory', whose sink"
        ):
            build_sinks(settings)


@pytest.mark.parametrize(
    ("url", "given", "expected"),
    [
        ("sqlite:///var/r.db", None, 1),  # one writer: a second commit would only wait for the first
        ("postgresql://u@h/db", None, 2),
        ("postgres://u@h/db", None, 2),
        ("postgresql://u@h/db", 1, 1),
        ("sqlite:///var/r.db", 3, 3),
    ],
)
def test_ingest_commits_in_flight_default_by_store_and_can_be_set(
    url: str, given: int | None, expected: int
) -> None:
    store: dict[str, Any] = {"url": url} if given is None else {"url": url, "commits_in_flight": given}
    assert Settings.model_validate({"store": store}).store.ingest_commits() == expected


def test_ingest_commits_in_flight_must_be_positive() -> None:
    with pytest.raises(ValidationError, match="commits_in_flight"):
        Settings.model_validate({"store": {"commits_in_flight": 0}})
