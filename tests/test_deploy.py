"""The deployment files, checked without a Docker engine or a cluster: they parse, they name real
settings and commands, the probes and grace periods fit the service, and nothing is open by
default: compose needs its secrets given, publishes on 127.0.0.1, and carries no secret itself."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel

from receiver.emulator import EmulatorSettings
from receiver.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
K8S = ROOT / "deploy" / "k8s"
COMMANDS = {"serve", "consume", "dispatch", "emulate", "submit", "replay", "migrate", "reconcile", "abort"}


def annotation_of(env_name: str) -> Any:
    """The type of the setting ``RECEIVER_A__B`` names (settings.a.b); None when it names none."""
    model: type[BaseModel] = Settings
    parts = env_name.removeprefix("RECEIVER_").lower().split("__")
    annotation: Any = None
    for i, part in enumerate(parts):
        field = model.model_fields.get(part)
        if field is None:
            return None
        annotation = field.annotation
        if i < len(parts) - 1:
            if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
                return None
            model = annotation
    return annotation


def resolves(env_name: str) -> bool:
    """Does ``RECEIVER_A__B`` name a real setting (settings.a.b)?"""
    return not env_name.startswith("RECEIVER_") or annotation_of(env_name) is not None


def manifests() -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = []
    for path in sorted(K8S.glob("*.yaml")):
        docs.extend(d for d in yaml.safe_load_all(path.read_text()) if d)
    return docs


def only(kind: str) -> dict[str, Any]:
    [doc] = [d for d in manifests() if d["kind"] == kind]
    return doc


def test_every_manifest_parses_and_has_the_pieces() -> None:
    kinds = sorted(d["kind"] for d in manifests())
    assert kinds == ["ConfigMap", "Deployment", "HorizontalPodAutoscaler", "Secret", "Service"]
    for doc in manifests():
        assert {"apiVersion", "kind", "metadata"} <= set(doc), doc
        assert doc["metadata"]["name"]


def test_the_deployment_probes_and_drains_as_the_service_does() -> None:
    spec = only("Deployment")["spec"]["template"]["spec"]
    [container] = spec["containers"]
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    defaults = Settings()
    drain = defaults.http.shutdown_timeout + defaults.amqp.shutdown_timeout
    assert spec["terminationGracePeriodSeconds"] > drain
    assert container["args"][0] in COMMANDS
    assert spec["securityContext"]["runAsNonRoot"] is True


def test_every_environment_variable_names_a_real_setting_and_secrets_come_from_secrets() -> None:
    [container] = only("Deployment")["spec"]["template"]["spec"]["containers"]
    names = [e["name"] for e in container["env"]] + list(only("ConfigMap")["data"])
    assert not resolves("RECEIVER_HTTP__PROT")  # the check itself can fail
    assert not resolves("RECEIVER_HTTP__PORT__X")
    assert names
    for name in names:
        assert resolves(name), name
    for e in container["env"]:
        assert "value" not in e, f"{e['name']} must come from a Secret, not the manifest"
        assert e["valueFrom"]["secretKeyRef"]["name"] == only("Secret")["metadata"]["name"]
    assert set(only("Secret")["stringData"]) >= {
        e["valueFrom"]["secretKeyRef"]["key"]
        for e in container["env"]
        if not e["valueFrom"]["secretKeyRef"].get("optional")
    }
    assert all("CHANGE-ME" in v for v in only("Secret")["stringData"].values())


def test_the_configmap_values_are_valid_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in only("ConfigMap")["data"].items():
        monkeypatch.setenv(name, value)
    settings = Settings()
    assert settings.http.host == "0.0.0.0"
    assert settings.log.format == "json"


def test_the_service_and_autoscaler_point_at_the_deployment() -> None:
    deployment = only("Deployment")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert only("Service")["spec"]["selector"].items() <= labels.items()
    assert only("HorizontalPodAutoscaler")["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]


def test_compose_has_the_stack_and_names_real_settings_and_commands() -> None:
    compose = yaml.safe_load((ROOT / "deploy" / "compose.yaml").read_text())
    services = compose["services"]
    assert {"postgres", "rabbitmq", "receiver-1", "receiver-2", "emulator"} <= set(services)
    for name, service in services.items():
        for env_name in service.get("environment") or {}:
            assert resolves(env_name), f"{name}: {env_name}"
        if "command" in service:
            assert service["command"][0] in COMMANDS
    assert services["receiver-1"]["environment"]["RECEIVER_STORE__URL"].startswith("postgresql://")


def test_the_image_runs_as_a_numeric_non_root_user_with_a_healthcheck() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    users = [line.split()[1] for line in dockerfile.splitlines() if line.startswith("USER ")]
    assert users
    assert users[-1].isdigit()
    assert users[-1] != "0"
    assert "HEALTHCHECK" in dockerfile
    assert '"receiver", "--config", "config/receiver.toml"' in dockerfile


# --- compose: secrets required, loopback ports, no literal secrets --------------------------------

COMPOSE = ROOT / "deploy" / "compose.yaml"
REFERENCE = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}")
SECRETS = {
    "POSTGRES_PASSWORD": "pg-password",
    "RABBITMQ_PASSWORD": "mq-password",
    "RECEIVER_API__TOKEN": "api-token",
    "RECEIVER_VERIFY__NOTIFY_KEYS": '["notify-key"]',
    "MPS_SECRET_KEY": "mps-secret-key",
}
# user:password@ in a URL, either part possibly a ${...} reference (which may hold ":" or "?").
USERINFO = re.compile(r"://(?:\$\{[^}]*\}|[^:@/]*):(?P<password>\$\{[^}]*\}|[^@/]*)@")
NOT_SECRET = {"RABBITMQ_USER", "MPS_SECRET_ID"}  # names, not secrets: these may have defaults


class MissingVariableError(Exception):
    pass


def interpolate(value: Any, env: dict[str, str]) -> Any:
    """What docker compose makes of a value: ``${X}``, ``${X:-default}``, ``${X-default}``,
    ``${X:?message}`` (unset or empty: an error), ``${X?message}``."""
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if not isinstance(value, str):
        return value

    def one(m: re.Match[str]) -> str:
        name, op, arg = m["name"], m["op"], m["arg"]
        got = env.get(name)
        if op in (":?", "?") and (got is None or (op == ":?" and got == "")):
            raise MissingVariableError(f"{name}: {arg}")
        if (op == ":-" and not got) or (op == "-" and got is None):
            return str(arg)
        return got or ""

    assert "$$" not in value  # no escapes in our file: the substitution above would not know them
    return REFERENCE.sub(one, value)


def compose(env: dict[str, str] | None = None) -> dict[str, Any]:
    loaded = yaml.safe_load(COMPOSE.read_text())
    return dict(interpolate(loaded, SECRETS if env is None else env))


def references(text: str) -> list[re.Match[str]]:
    return list(REFERENCE.finditer(text))


def test_interpolation_as_compose_does_it() -> None:
    env = {"A": "a", "E": ""}
    assert interpolate("${A}-${B:-b}-${E:-e}-${E-x}", env) == "a-b-e-"
    assert interpolate(["${A:?need A}"], env) == ["a"]
    with pytest.raises(MissingVariableError, match="need E"):
        interpolate("${E:?need E}", env)
    assert interpolate("${E?set}", env) == ""


def test_compose_refuses_to_start_without_each_secret() -> None:
    required = {m["name"] for m in references(COMPOSE.read_text()) if m["op"] == ":?"}
    assert required == set(SECRETS)
    compose()  # all given: it starts
    for name in SECRETS:
        for env in ({k: v for k, v in SECRETS.items() if k != name}, {**SECRETS, name: ""}):
            with pytest.raises(MissingVariableError, match=name):
                compose(env)


def test_compose_carries_no_secret_of_its_own() -> None:
    """Only names may fall back to a default; every secret comes from the environment."""
    for m in references(COMPOSE.read_text()):
        if m["op"] in (":-", "-"):
            assert m["name"] in NOT_SECRET, f"{m['name']} must not have a default"
    raw = yaml.safe_load(COMPOSE.read_text())["services"]
    for name, service in raw.items():
        for key, value in (service.get("environment") or {}).items():
            annotation = annotation_of(key) if key.startswith("RECEIVER_") else None
            secret_setting = "SecretStr" in str(annotation) and not key.endswith("SECRET_ID")
            if secret_setting or key in ("POSTGRES_PASSWORD", "RABBITMQ_DEFAULT_PASS"):
                assert re.search(r"\$\{[A-Z_]+:\?", str(value)), f"{name}: {key} must be required"
            if "://" in str(value) and "@" in str(value):
                userinfo = USERINFO.search(str(value))
                assert userinfo is not None, f"{name}: {key}"
                assert re.fullmatch(r"\$\{[A-Z_]+:\?[^}]*\}", userinfo["password"]), f"{name}: {key}"


def test_compose_publishes_every_port_on_loopback_only() -> None:
    published = 0
    for name, service in compose()["services"].items():
        for port in service.get("ports") or []:
            published += 1
            if isinstance(port, dict):
                assert port.get("host_ip") == "127.0.0.1", f"{name}: {port}"
            else:
                assert str(port).startswith("127.0.0.1:"), f"{name}: {port} binds every interface"
    assert published >= 3


def settings_of(service: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> Settings:
    with monkeypatch.context() as m:
        for key in [k for k in os.environ if k.startswith("RECEIVER_")]:
            m.delenv(key)
        for key, value in service["environment"].items():
            m.setenv(key, str(value))
        return Settings()


def test_compose_gives_each_receiver_its_secrets_and_the_emulator_its_own_key(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    services = compose()["services"]
    emulator = settings_of(services["emulator"], monkeypatch).emulator
    assert emulator.host == "0.0.0.0"
    assert emulator.secret_key.get_secret_value() == SECRETS["MPS_SECRET_KEY"]
    assert emulator.amqp_url is not None
    assert "mq-password" in emulator.amqp_url.get_secret_value()
    for name in ("receiver-1", "receiver-2"):
        settings = settings_of(services[name], monkeypatch)
        assert settings.http.host == "0.0.0.0"  # so it must have a token, and has
        assert settings.api.token is not None
        assert settings.api.token.get_secret_value() == SECRETS["RECEIVER_API__TOKEN"]
        assert [k.get_secret_value() for k in settings.verify.notify_keys] == ["notify-key"]
        assert "pg-password" in settings.store.url
        # It signs with what the emulator checks, and finds it by its service name.
        assert settings.mps.credentials() == (emulator.secret_id, emulator.secret_key.get_secret_value())
        assert (settings.mps.endpoint, settings.mps.protocol) == (f"emulator:{emulator.port}", "http")


def test_the_emulator_in_compose_refuses_the_repository_key(monkeypatch: pytest.MonkeyPatch) -> None:
    public = {**SECRETS, "MPS_SECRET_KEY": EmulatorSettings().secret_key.get_secret_value()}
    with pytest.raises(ValueError, match=r"emulator\.secret_key"):
        settings_of(compose(public)["services"]["emulator"], monkeypatch)


def test_the_image_does_not_open_itself_to_the_network() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "RECEIVER_HTTP__HOST" not in "".join(
        line for line in dockerfile.splitlines() if line.startswith("ENV ")
    )


def test_k8s_opens_the_port_only_with_a_token_and_notify_keys_from_the_secret() -> None:
    [container] = only("Deployment")["spec"]["template"]["spec"]["containers"]
    assert only("ConfigMap")["data"]["RECEIVER_HTTP__HOST"] == "0.0.0.0"
    env = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in container["env"]}
    for name in ("RECEIVER_API__TOKEN", "RECEIVER_VERIFY__NOTIFY_KEYS"):
        assert env[name]["name"] == only("Secret")["metadata"]["name"]
        assert not env[name].get("optional"), f"{name} must not be optional"
        assert env[name]["key"] in only("Secret")["stringData"]


def test_the_env_example_names_every_required_variable_and_holds_no_value() -> None:
    lines = (ROOT / "deploy" / "env.example").read_text().splitlines()
    given = dict(line.split("=", 1) for line in lines if line and not line.startswith("#"))
    assert set(given) == set(SECRETS)
    assert set(given.values()) == {""}  # empty: compose refuses it until filled in
