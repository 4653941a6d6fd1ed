"""Build step of docker/vllm-cpu.Dockerfile: the project's own vLLM installer, in an image.

Runs with the project's environment. Installs vLLM (CPU) into ``HOME/venv`` and builds the
model folder ``HOME/models/KEY`` exactly as ``pursuit llm up`` does (app/tooling/local_llm.py:
``ensure_venv``, ``ensure_model``). The command line is not frozen here: docker/vllm-cpu/serve.py
builds it at start with the same code, on the CPU that will run it (dtype, thread binding).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from app.llm import demo
from app.settings import Settings
from app.tooling import local_llm


def _echo(line: str) -> None:
    print(line, flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Install vLLM and build the model for the image.")
    parser.add_argument("--model", default=demo.DEFAULT_MODEL, choices=sorted(demo.MODELS))
    parser.add_argument("--home", type=Path, default=Path("/opt/llm"))
    args = parser.parse_args(argv)

    home = local_llm.llm_home(Settings(llm_home=args.home))
    try:
        local_llm.ensure_venv(home, echo=_echo)
        path = local_llm.ensure_model(home, demo.MODELS[args.model], echo=_echo)
    except local_llm.LocalServerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    _echo(f"model {args.model} ready in {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
