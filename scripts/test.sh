#!/usr/bin/env bash
# The whole check, as CI runs it: set up, start services, lint, type-check, migrate-check, test.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh
# Which case this run tests: bf16 CPUs serve bfloat16 (posteriors move with batching), others
# float32. Flags and dtype come from app.tooling.local_llm, the code `pursuit llm up` decides with.
read -r served_dtype cpu_flags < <(.venv/bin/python -c '
from app.tooling.local_llm import BF16_FLAGS, cpu_dtype, cpu_flags
from app.settings import Settings
print(cpu_dtype(Settings()), *sorted(cpu_flags() & {"avx2", "avx512f", "amx_tile", *BF16_FLAGS}))')
echo "== CPU flags: ${cpu_flags:-none of avx2/avx512f/bf16/amx} -> the local vLLM serves $served_dtype"
scripts/browser-setup.sh
scripts/ensure-services.sh

echo "== lint"
scripts/lint.sh
scripts/validate-deploy.sh
echo "== typecheck"
.venv/bin/mypy

echo "== migrations: upgrade a fresh PostgreSQL database and a fresh SQLite file, then check drift"
run_db="pursuit_ci_$(date +%s)_$$"
psql -h 127.0.0.1 -U postgres -qc "CREATE DATABASE \"$run_db\""
scratch=$(mktemp -d)
trap 'psql -h 127.0.0.1 -U postgres -qc "DROP DATABASE IF EXISTS \"$run_db\" WITH (FORCE)" || true; rm -rf "$scratch"' EXIT
for url in "postgresql+asyncpg://postgres@127.0.0.1:5432/$run_db" "sqlite+aiosqlite:///$scratch/check.db"; do
  PURSUIT_DATABASE_URL="$url" .venv/bin/alembic upgrade head
  PURSUIT_DATABASE_URL="$url" .venv/bin/alembic check
done

echo "== local vLLM server (installs once into ~/.cache/pursuit/llm, then reuses it)"
.venv/bin/pursuit llm up

echo "== tests"
export PURSUIT_TEST_POSTGRES_URL="postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"
export PURSUIT_TEST_REDIS_URL="redis://127.0.0.1:6379/15"
.venv/bin/pytest -q "$@"

if [ "$served_dtype" != float32 ] && [ $# -eq 0 ]; then
  # The tight float32 expectations hold on every machine: the live gateway module once more,
  # against a float32 server beside the bf16 one.
  echo "== live LLM tests again on a float32 server (this machine serves $served_dtype)"
  export PURSUIT_LLM_PORT=8003 PURSUIT_LLM_DTYPE=float32
  .venv/bin/pursuit llm up
  .venv/bin/pytest -q tests/llm/test_llm_live.py
fi
