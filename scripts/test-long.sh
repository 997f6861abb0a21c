#!/usr/bin/env bash
# The long test tier (docs/reliability-matrix.md): every #[ignore]d integration test
# (T01 at 30,000 events, T08 with 10 kills, T12 consumer hygiene, T21 half-open
# blackhole, the periodic DLQ retention pass), one at a time.
#
# Optional bounded soak (RELIABILITY.md row J, opt-in): SOAK_ROUNDS=N repeats the fault
# rows (kill storms, pauses, stalls, proxy latency/cuts, TLS resets, kill -9 loops) N
# times (at most 20) and stops at the first failure. Loopback only, every loop bounded.
#
#   scripts/test-long.sh                 # long tier
#   SOAK_ROUNDS=3 scripts/test-long.sh   # long tier, then 3 soak rounds
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/ensure-deps.sh
start=$(date +%s)
cargo test --test it -- --ignored --test-threads=1 "$@"
rounds=${SOAK_ROUNDS:-0}
if (( rounds > 20 )); then rounds=20; fi
for ((i = 1; i <= rounds; i++)); do
    echo "=== soak round $i of $rounds ==="
    cargo test --test it -- --include-ignored \
        t08_ t09_ t17_ t18_ t19_ t20_ t21_ t22 t23_ \
        redis_kill9 repeated_kill9
done
echo "long tier done in $(( $(date +%s) - start )) s"
