#!/usr/bin/env bash
# Installs what the tests and the local run need from Debian's packages when missing:
# redis-server and redis-cli (the broker), openssl (the TLS tests make their certificates),
# curl (the oversized-body test drives it), ss (iproute2: the keepalive test lists sockets),
# faketime (libfaketime skews a worker's clock in the clock-skew test), prometheus and
# promtool (rule checks and the real-scrape test), chromium
# (the headless-browser tests drive Debian's /usr/bin/chromium), and, unless --redis-only, the
# client programs the tests drive (Python and Node CloudEvents SDKs, requests) into tests/clients.
set -euo pipefail
missing=()
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
command -v redis-cli >/dev/null 2>&1 || missing+=(redis-tools)
command -v openssl >/dev/null 2>&1 || missing+=(openssl)
if [ "${1:-}" != "--redis-only" ]; then
  { command -v prometheus >/dev/null 2>&1 && command -v promtool >/dev/null 2>&1; } || missing+=(prometheus)
  command -v curl >/dev/null 2>&1 || missing+=(curl)
  command -v ss >/dev/null 2>&1 || missing+=(iproute2)
  command -v faketime >/dev/null 2>&1 || missing+=(faketime)
  [ -x /usr/bin/chromium ] || missing+=(chromium)
  command -v node >/dev/null 2>&1 || missing+=(nodejs npm)
  python3 -m venv --help >/dev/null 2>&1 || missing+=(python3-venv)
fi
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
  echo "installing ${missing[*]} (Debian packages)..." >&2
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
[ "${1:-}" = "--redis-only" ] && exit 0
# Client programs at pinned versions; reinstalled only when their pin files change.
clients="$(cd "$(dirname "$0")/.." && pwd)/tests/clients"
stamp="$clients/.venv/.installed"
if [ ! -f "$stamp" ] || [ "$clients/requirements.txt" -nt "$stamp" ]; then
  echo "installing the Python test clients (tests/clients/requirements.txt)..." >&2
  python3 -m venv "$clients/.venv"
  "$clients/.venv/bin/pip" install -q --disable-pip-version-check -r "$clients/requirements.txt"
  touch "$stamp"
fi
if [ ! -d "$clients/node_modules" ] || [ "$clients/package-lock.json" -nt "$clients/node_modules" ]; then
  echo "installing the Node test clients (tests/clients/package-lock.json)..." >&2
  (cd "$clients" && npm ci --no-audit --no-fund --silent)
  touch "$clients/node_modules"
fi
