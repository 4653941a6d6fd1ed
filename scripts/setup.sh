#!/usr/bin/env bash
# Create .venv from the lock file (uv, pinned), reproducibly. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."
UV_VERSION=0.13.9
if ! python3 -m uv --version 2>/dev/null | grep -q "$UV_VERSION"; then
  python3 -m pip install --quiet --disable-pip-version-check "uv==$UV_VERSION"
fi
python3 -m uv sync --frozen --extra dev --quiet
