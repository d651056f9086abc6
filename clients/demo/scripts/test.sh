#!/usr/bin/env bash
# The chat demo's browser test: Debian's Chromium (installed with apt-get when
# /usr/bin/chromium is missing: as root, else with sudo), playwright-core driving it, a real
# herald (HERALD_BIN, default target/debug/herald: cargo build --bin herald) on a fresh
# database of the PostgreSQL at HERALD_TEST_DATABASE_URL (default
# postgres://postgres@127.0.0.1:54329/herald). Screenshots land in clients/demo/test-output/.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x "${CHROMIUM:-/usr/bin/chromium}" ]; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo=sudo
  $sudo apt-get update
  $sudo apt-get install -y chromium
fi
npm ci --no-audit --no-fund
npm test
