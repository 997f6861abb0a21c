#!/usr/bin/env bash
# Runs the whole test suite: unit tests, the integration suite against real redis-server
# processes (installed here when missing), and the examples' build.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/ensure-redis.sh
cargo test --all-targets "$@"
