#!/usr/bin/env bash
# Runs the whole test suite: unit tests, the integration suite against real redis-server
# processes, the examples' build, and promtool's checks of the Grafana alert rules.
# Installs redis-server, redis-tools and prometheus (Debian packages) when missing.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/ensure-deps.sh
cargo test --all-targets "$@"
promtool check rules grafana/alerts/event-worker.rules.yml
promtool test rules grafana/tests/event-worker.rules.test.yml
