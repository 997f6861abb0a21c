#!/usr/bin/env bash
# Runs the daemon on a local default setup: installs Redis if needed, starts a local
# redis-server on 127.0.0.1:6379 (AOF on, noeviction) unless one answers there already,
# then runs `event-worker run` with examples/local.toml. Ctrl-C stops it gracefully.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/ensure-deps.sh --redis-only
if ! redis-cli -p 6379 ping >/dev/null 2>&1; then
  mkdir -p target/local-redis
  redis-server --port 6379 --bind 127.0.0.1 --daemonize yes \
    --dir "$PWD/target/local-redis" --logfile "$PWD/target/local-redis/redis.log" \
    --appendonly yes --appendfsync everysec --maxmemory-policy noeviction
  for _ in $(seq 1 50); do redis-cli -p 6379 ping >/dev/null 2>&1 && break; sleep 0.1; done
  echo "started redis-server on 127.0.0.1:6379 (data in target/local-redis)" >&2
fi
exec cargo run --release -- --config examples/local.toml run "$@"
