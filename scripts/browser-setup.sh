#!/usr/bin/env bash
# What the browser tests (tests/browser) need: Debian's Chromium and playwright-core from npm.
# Idempotent; never downloads a Playwright browser (the system Chromium is driven instead).
set -euo pipefail
cd "$(dirname "$0")/.."

chromium="${PURSUIT_CHROMIUM:-/usr/bin/chromium}"
if [ ! -x "$chromium" ]; then
  echo "== browser: installing Debian's chromium"
  sudo_cmd=""
  if [ "$(id -u)" -ne 0 ]; then sudo_cmd="sudo"; fi
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq chromium
fi
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  echo "browser-setup: Node.js 20+ and npm are needed (e.g. apt-get install -y nodejs npm)" >&2
  exit 1
fi

cd tests/browser
if [ ! -d node_modules/playwright-core ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  echo "== browser: npm ci (playwright-core)"
  # PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD: playwright-core downloads nothing, but be explicit.
  PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund --loglevel=error
fi
