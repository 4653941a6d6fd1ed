#!/usr/bin/env bash
# Lint: ruff's rules and format, and the import layers (pyproject.toml, [tool.importlinter]).
set -euo pipefail
cd "$(dirname "$0")/.."
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/lint-imports --no-cache
