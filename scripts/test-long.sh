#!/usr/bin/env bash
# The long test tier (docs/reliability-matrix.md): every #[ignore]d integration test
# (T01 at 30,000 events, T08 with 10 kills, T12 consumer hygiene, T21 half-open
# blackhole, T47 with 10,000 random types, the periodic DLQ retention pass, T163 outbox
# kill -9 loop (10 rounds, publishes falling back and draining), T166 (1,000 publishes from
# 4 threads while Redis is down, two kill -9s, then each drained once), T68 with a DLQ
# of 1,000,000 entries, T33 Redis Cluster resharding under load, T34 Redis Cluster failover under
# load), one at a time, then the T53 soak.
#
# T53 soak (docs/reliability-matrix.md row J): one daemon under steady load for SOAK_ROUNDS rounds of
# ~15 s (default 8, at most 300), one fault of groups B-D per round; samples RSS, FDs,
# Redis used_memory and the metric series each round and asserts they plateau.
#
# Optional repetition (opt-in): REPEAT_ROUNDS=N repeats the fault rows (kill storms,
# pauses, stalls, proxy latency/cuts, TLS resets, kill -9 loops) N times (at most 20) and
# stops at the first failure. Loopback only, every loop bounded.
#
#   scripts/test-long.sh                    # long tier (~7 min), then an 8-round soak (~2 min)
#   SOAK_ROUNDS=120 scripts/test-long.sh    # long tier, 30-minute soak
#   REPEAT_ROUNDS=3 scripts/test-long.sh    # long tier, soak, then 3 repetitions
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/ensure-deps.sh
start=$(date +%s)
cargo test --test it -- --ignored --test-threads=1 --skip t53_ "$@"
cargo test --test it t53_ -- --ignored --nocapture
rounds=${REPEAT_ROUNDS:-0}
if (( rounds > 20 )); then rounds=20; fi
for ((i = 1; i <= rounds; i++)); do
    echo "=== repetition $i of $rounds ==="
    cargo test --test it -- --include-ignored \
        t08_ t09_ t17_ t18_ t19_ t20_ t21_ t22 t23_ \
        t13_ t14_
done
echo "long tier done in $(( $(date +%s) - start )) s"
