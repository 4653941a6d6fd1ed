#!/usr/bin/env bash
# Set up and serve Pursuit on the embedded default: SQLite in ./var, no Redis.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec .venv/bin/pursuit serve --host "${PURSUIT_HOST:-127.0.0.1}" --port "${PURSUIT_PORT:-8000}"
