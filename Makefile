.PHONY: setup run test lint format typecheck services

setup:  ## Create .venv from the lock file
	scripts/setup.sh

run:  ## Set up and serve on the embedded default (SQLite, local CPU vLLM)
	scripts/run.sh

test:  ## Set up, start PostgreSQL/Redis if down, lint, type-check, check migrations, run tests
	scripts/test.sh

lint: setup  ## ruff (rules, format) and the import layers (import-linter)
	scripts/lint.sh

format: setup
	.venv/bin/ruff check --fix .
	.venv/bin/ruff format .

typecheck: setup
	.venv/bin/mypy

services:  ## Start PostgreSQL and Redis if they are down
	scripts/ensure-services.sh
