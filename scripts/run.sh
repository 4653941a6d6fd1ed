#!/usr/bin/env bash
# Set up and serve Pursuit on the embedded default: SQLite in ./var, no Redis, and a real
# vLLM server on this CPU (`pursuit llm up`: installs once, then reuses; SmolLM2-135M unless
# PURSUIT_LOCAL_MODEL=qwen1.5b). Point PURSUIT_LLM_BASE_URL elsewhere to skip the local one.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
if [[ -z "${PURSUIT_LLM_BASE_URL:-}" ]]; then
  .venv/bin/pursuit llm up --model "${PURSUIT_LOCAL_MODEL:-smollm2}"
  eval "$(.venv/bin/pursuit llm env)"
fi
exec .venv/bin/pursuit serve --host "${PURSUIT_HOST:-127.0.0.1}" --port "${PURSUIT_PORT:-8000}"
