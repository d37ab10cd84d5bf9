"""The deployment files, checked without a Docker engine or a cluster: they parse, they name real
settings and commands, and the probes and grace periods fit the service."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel

from receiver.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
K8S = ROOT / "deploy" / "k8s"
COMMANDS = {"serve", "consume", "dispatch", "emulate", "submit", "replay", "migrate"}


def resolves(env_name: str) -> bool:
    """Does ``RECEIVER_A__B`` name a real setting (settings.a.b)?"""
    if not env_name.startswith("RECEIVER_"):
        return True
    model: type[BaseModel] = Settings
    parts = env_name.removeprefix("RECEIVER_").lower().split("__")
    for i, part in enumerate(parts):
        field = model.model_fields.get(part)
        if field is None:
            return False
        annotation = field.annotation
        if i < len(parts) - 1:
            if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
                return False
            model = annotation
    return True


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
