"""deploy/k8s: strict Kubernetes schemas (PyPI kubernetes-validate, offline) and wiring."""

from __future__ import annotations

import copy
from typing import Any

import kubernetes_validate
import pytest

from app.tooling import deploy_checks as checks
from app.tooling import local_llm


def _by_name() -> dict[tuple[str, str], dict[str, Any]]:
    return {(d["kind"], d["metadata"]["name"]): d for _, d in checks.k8s_documents()}


def test_manifests_match_the_kubernetes_schemas() -> None:
    assert checks.k8s_problems() == []


def test_schema_check_is_strict() -> None:
    api = copy.deepcopy(_by_name()[("Deployment", "pursuit-api")])
    api["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGett"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(api, checks.K8S_VERSION, strict=True)


def test_api_worker_and_migrate_pods() -> None:
    docs = _by_name()
    api = docs[("Deployment", "pursuit-api")]["spec"]
    assert api["replicas"] >= 2 and api["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    container = api["template"]["spec"]["containers"][0]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert docs[("Job", "pursuit-migrate")]["spec"]["template"]["spec"]["containers"][0][
        "args"
    ] == ["migrate"]
    assert docs[("Deployment", "pursuit-worker")]["spec"]["template"]["spec"]["containers"][0][
        "args"
    ] == ["worker"]
    for key in (
        ("Deployment", "pursuit-api"),
        ("Deployment", "pursuit-worker"),
        ("Job", "pursuit-migrate"),
    ):
        pod = docs[key]["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        for c in pod["containers"]:
            assert {e.get("secretRef", {}).get("name") for e in c["envFrom"]} >= {"pursuit-secrets"}
            assert c["securityContext"]["capabilities"]["drop"] == ["ALL"]
    # No secret in the repository: only a reference to one created outside it.
    assert not any(d["kind"] == "Secret" for _, d in checks.k8s_documents())


def test_vllm_serves_what_the_api_asks_for() -> None:
    docs = _by_name()
    config = docs[("ConfigMap", "pursuit-config")]["data"]
    vllm = docs[("Deployment", "vllm")]["spec"]["template"]["spec"]["containers"][0]
    assert f"--served-model-name={config['PURSUIT_LLM_MODEL']}" in vllm["args"]
    assert f"--max-logprobs={local_llm.MAX_LOGPROBS}" in vllm["args"]
    assert vllm["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert config["PURSUIT_LLM_BASE_URL"] == "http://vllm:8000"
