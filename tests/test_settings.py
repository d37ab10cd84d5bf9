"""Settings: the TOML file, RECEIVER_* overrides, secrets kept secret, impossible combinations refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from receiver.errors import ConfigError
from receiver.events import Channel, SignPolicy
from receiver.settings import load_settings

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
    with pytest.raises(ValueError, match="prot"):
        load_settings(config)
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "missing.toml")


def test_a_misspelt_key_does_not_show_its_value(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "r.toml"
    config.write_text('[verify]\nnotify_key = "SUPERSECRETKEY"\n')
    with pytest.raises(ValueError, match="notify_key") as caught:
        load_settings(config)
    assert "SUPERSECRETKEY" not in str(caught.value)
    monkeypatch.setenv("RECEIVER_API__TOKENN", "leaky-token")
    with pytest.raises(ValueError, match="tokenn") as env_caught:
        load_settings(None)
    assert "leaky-token" not in str(env_caught.value)
