#!/usr/bin/env bash
# Runs the daemon on a local default setup: installs Redis if needed, starts a local
# redis-server on 127.0.0.1:6379 (AOF on, noeviction) unless one answers there already,
# builds the release binary (the first, cold build takes about 5 minutes on 2 cores), then
# runs `event-worker run` with examples/local.toml. Ctrl-C stops the worker gracefully; the
# Redis it started keeps running (and keeping your events) until `redis-cli -p 6379 shutdown`.
#
# Redis data lives outside target/ (so `cargo clean` cannot delete a live server's data):
# ${XDG_STATE_HOME:-$HOME/.local/state}/event-worker/redis.
#
# Overrides (environment):
#   EVENT_WORKER_REDIS_PORT  port of the local Redis (default 6379)
#   EVENT_WORKER_STATE_DIR   state directory (default ${XDG_STATE_HOME:-$HOME/.local/state}/event-worker)
#   EVENT_WORKER_BIN         a prebuilt event-worker binary (default: cargo build --release)
set -euo pipefail
cd "$(dirname "$0")/.."
port="${EVENT_WORKER_REDIS_PORT:-6379}"
state="${EVENT_WORKER_STATE_DIR:-${XDG_STATE_HOME:-$HOME/.local/state}/event-worker}"
data="$state/redis"
scripts/ensure-deps.sh --redis-only
if redis-cli -p "$port" ping >/dev/null 2>&1; then
  echo "using the redis-server already answering on 127.0.0.1:$port" >&2
else
  mkdir -p "$data"
  redis-server --port "$port" --bind 127.0.0.1 --daemonize yes \
    --dir "$data" --logfile "$data/redis.log" \
    --appendonly yes --appendfsync everysec --maxmemory-policy noeviction
  for _ in $(seq 1 50); do redis-cli -p "$port" ping >/dev/null 2>&1 && break; sleep 0.1; done
  echo "started redis-server on 127.0.0.1:$port (data in $data)" >&2
  echo "it keeps running after the worker stops; stop it with: redis-cli -p $port shutdown" >&2
fi
if [ "$port" != 6379 ]; then
  export EVENTS_REDIS_URL="redis://127.0.0.1:$port"
fi
bin="${EVENT_WORKER_BIN:-}"
if [ -z "$bin" ]; then
  if [ ! -x target/release/event-worker ]; then
    echo "building the release binary (the first build takes about 5 minutes on 2 cores)..." >&2
  fi
  cargo build --release --quiet
  bin=target/release/event-worker
fi
echo "publish an event from another terminal: $bin --config examples/local.toml publish demo.hello '{\"hi\":1}'" >&2
exec "$bin" --config examples/local.toml run "$@"
