"""Entrypoint of the vLLM CPU image: start vLLM with the command ``pursuit llm up`` would use.

The command line and environment come from app/tooling/local_llm.py (``server_command``,
``server_env``), computed here, at start, on the CPU that runs the model (the dtype follows its
bf16 support). Settings are the usual ``PURSUIT_LLM_*`` variables (the image sets
``PURSUIT_LLM_HOME``, ``PURSUIT_LLM_HOST``, ``PURSUIT_LLM_PORT``); ``PURSUIT_VLLM_MODEL`` names
the model built into the image. Variables set on the container win over the computed ones
(e.g. ``VLLM_CPU_KVCACHE_SPACE``), extra arguments are appended (for a repeated flag such as
``--served-model-name`` the last one wins), and the OpenMP threads are bound to all the CPUs
this container may use unless ``PURSUIT_LLM_OMP_THREADS_BIND`` says otherwise.
"""

from __future__ import annotations

import os
import sys

from app.llm import demo
from app.settings import Settings
from app.tooling import local_llm


def cpu_ranges(cpus: set[int]) -> str:
    """``{0, 1, 2, 5}`` -> ``"0-2,5"`` (the CPU list format vLLM hands to libnuma)."""
    ordered = sorted(cpus)
    parts: list[str] = []
    start = prev = ordered[0]
    for cpu in [*ordered[1:], None]:
        if cpu is not None and cpu == prev + 1:
            prev = cpu
            continue
        parts.append(f"{start}-{prev}" if prev > start else str(start))
        if cpu is not None:
            start = prev = cpu
    return ",".join(parts)


def command(extra: list[str]) -> tuple[list[str], dict[str, str]]:
    """The argv and environment to exec."""
    settings = Settings()
    if settings.llm_omp_threads_bind is None:
        # os.cpu_count() is the host's; the container may have fewer CPUs.
        bind = cpu_ranges(os.sched_getaffinity(0))
        settings = settings.model_copy(update={"llm_omp_threads_bind": bind})
    spec = demo.MODELS[os.environ.get("PURSUIT_VLLM_MODEL", demo.DEFAULT_MODEL)]
    home = local_llm.llm_home(settings)
    argv = local_llm.server_command(
        local_llm.venv_python(home), local_llm.model_dir(home, spec), spec, settings
    )
    env = {**local_llm.server_env(settings), **os.environ}
    return [*argv, *extra], env


def main() -> None:
    argv, env = command(sys.argv[1:])
    print(f"exec {' '.join(argv)}", file=sys.stderr, flush=True)
    os.execve(argv[0], argv, env)


if __name__ == "__main__":
    main()
