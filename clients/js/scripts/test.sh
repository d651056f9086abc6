#!/usr/bin/env bash
# Installs, type-checks and tests clients/js against a real Herald. Needs Node ≥ 20, the
# herald binary (HERALD_BIN, default target/debug/herald: cargo build --bin herald) and a
# PostgreSQL at HERALD_TEST_DATABASE_URL (default postgres://postgres@127.0.0.1:54329/herald).
set -euo pipefail
cd "$(dirname "$0")/.."
npm ci --no-audit --no-fund
npm run lint
npm test
