#!/usr/bin/env bash
# The benchmark of event-worker, in one command (see BENCHMARKS.md):
#
#   bench/run.sh [--backlog N] [--reps N] [--quick] [--latency-secs S] [--sections LIST]
#                [--no-wait] [--wait-quiet SECS] [--no-build] [--profile] [--rev REV]
#                [--worker-bin PATH] [--base-rev REV] [--instructions]
#                [--push-clients N] [--push-secs S] [--outbox-events N]
#
# Builds the release binaries (event-worker at the repo root, or of commit REV exported with
# `git archive` into /tmp/ew-bench-rev with --rev; ew-bench in bench/), waits for a quiet
# machine (no cargo/rustc/test process of anyone else; up to --wait-quiet seconds, 1200 by
# default, polling every 30 s; again before each sample, up to 10 min each and 40 min in all;
# a sample during which others used more than 30% of a core is run once more), starts its own
# redis-server (--save '' --appendonly no) on a free 127.0.0.1 port, and runs every scenario
# interleaved and repeated:
#   drain    raw XREADGROUP+XACK loop (1 conn, 2 conns, batch XACK), event-worker blackhole,
#            event-worker http to a local keep-alive sink; a preloaded --backlog (200000);
#            the references: raw loop with the batch XACK pipelined with the next read, raw
#            HTTP relay (1 thread, 64 hyper connections) to the same sink
#   bullmq   opt-in (needs node and npm): the drain section plus BullMQ 6 (Worker
#            concurrency 50; bench/bullmq/, `npm ci` there on first use)
#   backlog  event-worker blackhole at 10k, 100k and 1M backlogs (drain rate, peak RSS); the
#            10k and 100k drains (under a second each) are sampled 3 times per repetition
#   scale    1, 2 and 4 event-worker processes on one stream
#   latency  1k and 10k events/s for --latency-secs (20) s: publish to handler start
#   push     opt-in only (`--sections push`, not in the default sections): one event-worker
#            with [[push.channels]] rules (user.* -> user:{data.userId}, shared.* ->
#            shared:{data.room}, 10 rooms) and --push-clients (6000: 5/6 SSE, 1/6 WebSocket)
#            clients in ew-bench, each on its own user channel and one shared channel; 990 user
#            + 10 shared events/s: publish-to-client latency over --push-secs (20) s after a 5 s
#            warm-up, CPU, memory per idle connection, the same with 100 stalled clients, a
#            reconnect storm (time until all caught up, Redis commands per resume), and every
#            message checked received exactly once. Raises the open-file limit to the hard one.
#            Its table goes to BENCHMARKS.md "Push to apps" and bench/results/push-latest.md;
#            with --quick (600 clients, 5 s windows) only to bench/target/push-quick.md.
#   outbox   opt-in only (`--sections outbox`): the durable outbox. One release event-worker per
#            row (HTTP API token, a blackhole route), --outbox-events (20000) publishes through
#            POST /api/events/publish from 8 keep-alive connections in ew-bench: (a) outbox off
#            (and on the --base-rev build), (b) outbox on, fsync always, Redis up, (c) Redis
#            frozen (SIGSTOP) so every publish is queued, fsync always, (d) the same with fsync
#            100ms; p50/p99 and publishes/s, rows interleaved, --reps times. Then the drain:
#            100000 events queued (`outbox fill`), time until the stream holds them all with
#            the default drain_rate (1000/s: about 100 s) and with 100000. Its table goes to
#            BENCHMARKS.md "Durable outbox" and bench/results/outbox-latest.md; with --quick
#            (2000 publishes, 10000 drained) only to bench/target/outbox-quick.md.
#   cluster  opt-in only (`--sections cluster`): 1 Redis node against a 3-master Redis Cluster
#            on this machine, both started by ew-bench under bench/target/cluster-work (the
#            cluster like the test harness: --cluster-enabled yes, redis-cli --cluster create).
#            Drain of --backlog (200000) events over 50 type streams (256-byte data), one
#            event-worker (blackhole) from its start to the last ack; latency at 2000 events/s
#            for --latency-secs (20) s to an http route; Redis CPU and commands per node from
#            INFO before/after (commands also by command, INFO commandstats), the share per
#            master and the projected scaling; an idle worker's cost with 50 and 2000 types; then the cost of
#            [redis] wait_replicas (a master and one replica, --outbox-events publishes through
#            the API, wait off and on). Interleaved, --reps times. Its table goes to BENCHMARKS.md
#            "Redis Cluster" and bench/results/cluster-latest.md; with --quick (50000 events, 5 s,
#            2000 publishes, 1 repetition) only to bench/target/cluster-quick.md.
# --base-rev REV builds commit REV too (into /tmp/ew-bench-base) and adds its blackhole, http and batched http
# drains to the drain section as "event-worker @base, ..." rows, interleaved with the others in
# every repetition: two commits compared in one run (e.g. before and after a refactor); in the
# outbox section it adds row (a) on that build.
# EW_BENCH_DRAIN_ROWS="label part|label part" keeps only the drain rows whose label contains
# one of the parts (e.g. "http to local sink|raw HTTP relay" with --base-rev and more --reps:
# a focused comparison; written only to bench/target/results.md, never to BENCHMARKS.md); a part
# "=label" keeps the row of exactly that label.
# --instructions counts, instead of timing, the instructions the worker runs per event under
# valgrind's callgrind (needs valgrind: apt-get install valgrind): the blackhole, http and
# batched http drains, each at a 20000 and a 60000 backlog, per event = the difference / 40000
# (start-up cancels out). Deterministic to about 1% where this host's timing swings 10-25%, so
# it shows a change of the per-event path that a timed A/B cannot; with --base-rev the base
# build is counted too. Instructions are not time (a cache miss costs more than an add): a
# change is confirmed by timed runs. Writes bench/target/instructions.md; ~6 min per build.
# A full run writes its tables into BENCHMARKS.md (between the results markers) and every
# sample to bench/results/latest.tsv. --quick (1 repetition, small backlogs, 3 s latency runs,
# no waiting) writes only bench/target/quick.md. --profile runs one blackhole drain (the http
# route's with EW_BENCH_PROFILE=http) of the
# backlog under `perf record` and prints the hottest symbols instead.
# Everything it starts (redis-server, workers, sinks) is stopped on exit, failure included.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/.." && pwd)"
cmdline="bench/run.sh $*"

backlog=200000
reps=3
quick=0
wait_quiet=1200
build=1
profile=0
instructions=0
rev=""
base_rev=""
worker_bin=""
latency_secs=""
sections=""
push_clients=""
push_secs=""
outbox_events=""
while [ $# -gt 0 ]; do
  case "$1" in
    --backlog) backlog="$2"; shift 2 ;;
    --reps) reps="$2"; shift 2 ;;
    --quick) quick=1; shift ;;
    --latency-secs) latency_secs="$2"; shift 2 ;;
    --sections) sections="$2"; shift 2 ;;
    --no-wait) wait_quiet=0; shift ;;
    --wait-quiet) wait_quiet="$2"; shift 2 ;;
    --no-build) build=0; shift ;;
    --profile) profile=1; shift ;;
    --instructions) instructions=1; shift ;;
    --rev) rev="$2"; shift 2 ;;
    --worker-bin) worker_bin="$2"; shift 2 ;;
    --base-rev) base_rev="$2"; shift 2 ;;
    --push-clients) push_clients="$2"; shift 2 ;;
    --push-secs) push_secs="$2"; shift 2 ;;
    --outbox-events) outbox_events="$2"; shift 2 ;;
    -h|--help) sed -n '2,78p' "$0"; exit 0 ;;
    *) echo "bench/run.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done
# Instruction counts do not depend on what else runs: no waiting for a quiet machine.
[ "$instructions" = 1 ] && wait_quiet=0
if [ "$quick" = 1 ]; then
  [ "$backlog" = 200000 ] && backlog=50000
  [ "$reps" = 3 ] && reps=1
  wait_quiet=0
fi

command -v redis-server >/dev/null || { echo "bench/run.sh: redis-server not found (apt-get install redis-server)" >&2; exit 1; }

worker="$root/target/release/event-worker"
commit="$(git -C "$root" rev-parse --short HEAD)"
dirty=""
[ -n "$(git -C "$root" status --porcelain -- src Cargo.toml Cargo.lock)" ] && dirty=" (plus uncommitted changes in src/)"
if [ -n "$rev" ]; then
  commit="$(git -C "$root" rev-parse --short "$rev^{commit}")"
  dirty=""
  revdir=/tmp/ew-bench-rev
  worker="$revdir/target/release/event-worker"
fi
if [ -n "$rev" ] && [ "$build" = 0 ]; then
  commit="$(cat "$revdir/target/BUILT" 2>/dev/null || echo unknown) (built earlier by --rev)"
fi
if [ -n "$worker_bin" ]; then
  worker="$(cd "$(dirname "$worker_bin")" && pwd)/$(basename "$worker_bin")"
  commit="(binary $worker_bin)"
  dirty=""
fi
if [ "$build" = 1 ]; then
  echo "== building release binaries"
  if [ -n "$worker_bin" ]; then
    :
  elif [ -n "$rev" ]; then
    rm -rf "$revdir/src" && mkdir -p "$revdir/src"
    git -C "$root" archive --format=tar "$commit" | tar -x -C "$revdir/src"
    (cd "$revdir/src" && CARGO_TARGET_DIR="$revdir/target" cargo build --release --quiet --bin event-worker)
    echo "$commit" > "$revdir/target/BUILT"
  else
    (cd "$root" && cargo build --release --quiet --bin event-worker)
  fi
  (cd "$here" && cargo build --release --quiet)
fi
base_worker=""
if [ -n "$base_rev" ]; then
  base_commit="$(git -C "$root" rev-parse --short "$base_rev^{commit}")"
  basedir=/tmp/ew-bench-base
  base_worker="$basedir/target/release/event-worker"
  if [ ! -x "$base_worker" ] || [ "$(cat "$basedir/target/BUILT" 2>/dev/null)" != "$base_commit" ]; then
    rm -rf "$basedir/src" && mkdir -p "$basedir/src"
    git -C "$root" archive --format=tar "$base_commit" | tar -x -C "$basedir/src"
    (cd "$basedir/src" && CARGO_TARGET_DIR="$basedir/target" cargo build --release --quiet --bin event-worker)
    echo "$base_commit" > "$basedir/target/BUILT"
  fi
fi
if [[ ",$sections," == *,bullmq,* ]]; then
  command -v node >/dev/null && command -v npm >/dev/null \
    || { echo "bench/run.sh: the bullmq section needs node and npm (apt-get install nodejs npm)" >&2; exit 1; }
  if [ ! -d "$here/bullmq/node_modules" ] || [ "$here/bullmq/package-lock.json" -nt "$here/bullmq/node_modules" ]; then
    echo "== npm ci in bench/bullmq"
    (cd "$here/bullmq" && npm ci --no-audit --no-fund --silent && touch node_modules)
  fi
fi
ewbench="$here/target/release/ew-bench"
[ -x "$worker" ] && [ -x "$ewbench" ] || { echo "bench/run.sh: binaries missing (run without --no-build)" >&2; exit 1; }

# Others' builds and test suites on this shared machine: cargo, rustc, test binaries, debug workers.
others_busy() {
  ps -eo pid=,comm=,args= | awk -v me="$$" '
    $1 == me { next }
    $2 ~ /^(cargo|rustc|rustdoc|clippy-driver|cc|ld|promtool)$/ { print; next }
    $0 ~ /target\/(debug|release)\/deps\// || $0 ~ /target\/debug\/event-worker/ { print }'
}
if [ "$wait_quiet" -gt 0 ]; then
  waited=0
  while busy="$(others_busy)" && [ -n "$busy" ]; do
    if [ "$waited" -ge "$wait_quiet" ]; then
      echo "== still busy after ${wait_quiet}s; measuring anyway (the results say how much CPU others used)"
      break
    fi
    echo "== waiting for a quiet machine (${waited}s); running now:"
    echo "$busy" | cut -c1-150 | head -5
    sleep 30
    waited=$((waited + 30))
  done
fi

work="$(mktemp -d /tmp/ew-bench.XXXXXX)"
redis_pid=""
orch_pid=""
# Writes FILE between the marker lines BEGIN and END of BENCHMARKS.md (replacing what was
# there); fails when BENCHMARKS.md has no BEGIN marker.
splice_results() { # begin end file
  local bm="$root/BENCHMARKS.md"
  grep -qF "$1" "$bm" 2>/dev/null || return 1
  awk -v begin="$1" -v end="$2" -v file="$3" '
    $0 == begin { print; while ((getline line < file) > 0) print line; skip = 1; next }
    $0 == end { skip = 0 }
    !skip { print }' "$bm" > "$work/bm.new"
  cp "$work/bm.new" "$bm"
}

# Keeps an opt-in section's results (push, outbox, cluster): with --quick only in FILE;
# otherwise also in bench/results/NAME-latest.md and in BENCHMARKS.md's section TITLE between
# its NAME-results markers.
keep_section_results() { # name title file
  local name="$1" title="$2" file="$3"
  if [ "$quick" = 1 ]; then
    echo "== $name quick results (not written to BENCHMARKS.md): $file"
    return 0
  fi
  mkdir -p "$here/results"
  cp "$file" "$here/results/$name-latest.md"
  if splice_results "<!-- $name-results:begin (written by bench/run.sh --sections $name) -->" \
    "<!-- $name-results:end -->" "$file"; then
    echo "== $name results written to BENCHMARKS.md ($title) and bench/results/$name-latest.md"
  else
    echo "== $name results in bench/results/$name-latest.md (BENCHMARKS.md has no $name markers)"
  fi
}

cleanup() {
  [ -n "$orch_pid" ] && kill "$orch_pid" 2>/dev/null || true
  [ -n "$orch_pid" ] && wait "$orch_pid" 2>/dev/null || true
  if [ -n "$redis_pid" ]; then
    kill -CONT "$redis_pid" 2>/dev/null || true
    kill "$redis_pid" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$redis_pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$redis_pid" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

port="$("$ewbench" free-port)"
redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no --daemonize no \
  --dir "$work" --logfile "$work/redis.log" &
redis_pid=$!
echo "== redis-server pid $redis_pid on 127.0.0.1:$port"

mkdir -p "$here/target"
# The push section (opt-in) runs on its own, before the others named with it.
case ",$sections," in *,push,*) run_push=1 ;; *) run_push=0 ;; esac
sections="$(echo ",$sections," | sed 's/,push,/,/g; s/^,//; s/,$//')"
if [ "$run_push" = 1 ]; then
  if [ "$quick" = 1 ]; then
    pout="$here/target/push-quick.md"
    [ -z "$push_clients" ] && push_clients=600
    [ -z "$push_secs" ] && push_secs=5
    pargs=(--push-warmup 2)
  else
    pout="$here/target/push.md"
    pargs=(--push-warmup 5)
  fi
  [ -n "$push_clients" ] && pargs+=(--push-clients "$push_clients")
  [ -n "$push_secs" ] && pargs+=(--push-secs "$push_secs")
  pstart="$(date -u +%Y-%m-%dT%H:%MZ)"
  busy_note="$(others_busy | wc -l)"
  "$ewbench" push --port "$port" --worker "$worker" --logdir "$work/logs" --scripts-dir "$root/src" --out "$work/push.md" "${pargs[@]}" &
  orch_pid=$!
  if ! wait "$orch_pid"; then
    orch_pid=""
    echo "bench/run.sh: the push run failed; last lines of the process logs:" >&2
    for f in "$work"/logs/*.log; do [ -s "$f" ] && { echo "--- $f" >&2; tail -5 "$f" >&2; }; done
    exit 1
  fi
  orch_pid=""
  {
    echo "Run of $pstart: \`$cmdline\`"
    echo
    echo "- machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'), $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo) RAM, $(uname -sr); clients, publisher, worker and Redis share it"
    echo "- $(redis-server --version | cut -d' ' -f1-3) (--save '' --appendonly no, 127.0.0.1)"
    echo "- $(rustc --version), release builds; event-worker commit $commit$dirty, push defaults"
    echo "- others' build/test processes running at the start: $busy_note (the CPU row says how much others used)"
    echo
    cat "$work/push.md"
  } > "$pout"
  keep_section_results push "Push to apps" "$pout"
  cat "$pout"
  [ -z "$sections" ] && exit 0
fi
# The outbox section (opt-in) runs on its own too, after push.
case ",$sections," in *,outbox,*) run_outbox=1 ;; *) run_outbox=0 ;; esac
sections="$(echo ",$sections," | sed 's/,outbox,/,/g; s/^,//; s/,$//')"
if [ "$run_outbox" = 1 ]; then
  if [ "$quick" = 1 ]; then oout="$here/target/outbox-quick.md"; else oout="$here/target/outbox.md"; fi
  oargs=(--reps "$reps")
  [ "$quick" = 1 ] && oargs+=(--quick)
  [ -n "$outbox_events" ] && oargs+=(--events "$outbox_events")
  [ -n "$base_worker" ] && oargs+=(--base-worker "$base_worker")
  # The outbox directories: not under /tmp (the worker refuses it), on this disk.
  owork="$here/target/outbox-work"
  rm -rf "$owork"
  ostart="$(date -u +%Y-%m-%dT%H:%MZ)"
  busy_note="$(others_busy | wc -l)"
  "$ewbench" outbox --port "$port" --redis-pid "$redis_pid" --worker "$worker" --logdir "$work/logs" \
    --workdir "$owork" --out "$work/outbox.md" "${oargs[@]}" &
  orch_pid=$!
  if ! wait "$orch_pid"; then
    orch_pid=""
    kill -CONT "$redis_pid" 2>/dev/null || true
    echo "bench/run.sh: the outbox run failed; last lines of the process logs:" >&2
    for f in "$work"/logs/*.log; do [ -s "$f" ] && { echo "--- $f" >&2; tail -5 "$f" >&2; }; done
    exit 1
  fi
  orch_pid=""
  rm -rf "$owork"
  {
    echo "Run of $ostart: \`$cmdline\`"
    echo
    echo "- machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'), $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo) RAM, $(uname -sr); publisher, worker and Redis share it"
    echo "- $(redis-server --version | cut -d' ' -f1-3) (--save '' --appendonly no, 127.0.0.1); outbox directories on $(df -T "$here/target" | awk 'NR==2 {print $2}') (under bench/target)"
    echo "- $(rustc --version), release builds; event-worker commit $commit$dirty"
    [ -n "$base_rev" ] && echo "- \"@base\" row: event-worker commit $base_commit (--base-rev), same configuration, interleaved with the others"
    echo "- others' build/test processes running at the start: $busy_note$([ "$wait_quiet" = 0 ] && echo ' (run with --no-wait: not waited for)')"
    echo
    cat "$work/outbox.md"
  } > "$oout"
  keep_section_results outbox "Durable outbox" "$oout"
  cat "$oout"
  [ -z "$sections" ] && exit 0
fi
# The cluster section (opt-in) runs on its own too, after outbox; it starts its own Redis nodes.
case ",$sections," in *,cluster,*) run_cluster=1 ;; *) run_cluster=0 ;; esac
sections="$(echo ",$sections," | sed 's/,cluster,/,/g; s/^,//; s/,$//')"
if [ "$run_cluster" = 1 ]; then
  command -v redis-cli >/dev/null || { echo "bench/run.sh: the cluster section needs redis-cli (apt-get install redis-tools)" >&2; exit 1; }
  if [ "$quick" = 1 ]; then cout="$here/target/cluster-quick.md"; else cout="$here/target/cluster.md"; fi
  cargs=(--reps "$reps")
  [ "$quick" = 1 ] && cargs+=(--quick)
  cargs+=(--events "$backlog")
  [ -n "$latency_secs" ] && cargs+=(--secs "$latency_secs")
  [ -n "$outbox_events" ] && cargs+=(--publishes "$outbox_events")
  cwork="$here/target/cluster-work"
  rm -rf "$cwork"
  cstart="$(date -u +%Y-%m-%dT%H:%MZ)"
  busy_note="$(others_busy | wc -l)"
  "$ewbench" cluster --worker "$worker" --self "$ewbench" --logdir "$work/logs" --workdir "$cwork" \
    --out "$work/cluster.md" "${cargs[@]}" &
  orch_pid=$!
  if ! wait "$orch_pid"; then
    orch_pid=""
    echo "bench/run.sh: the cluster run failed; last lines of the process logs:" >&2
    for f in "$work"/logs/*.log; do [ -s "$f" ] && { echo "--- $f" >&2; tail -5 "$f" >&2; }; done
    exit 1
  fi
  orch_pid=""
  rm -rf "$cwork"
  {
    echo "Run of $cstart: \`$cmdline\`"
    echo
    echo "- machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'), $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo) RAM, $(uname -sr); publisher, worker, sink and every Redis node share it"
    echo "- $(redis-server --version | cut -d' ' -f1-3) (--save '' --appendonly no, 127.0.0.1); the cluster: 3 masters, no replicas, slots as \`redis-cli --cluster create\` spreads them"
    echo "- $(rustc --version), release builds; event-worker commit $commit$dirty, default configuration plus env, redis_url, group, api.listen and one route (\`cb.*\`)"
    echo "- others' build/test processes running at the start: $busy_note$([ "$wait_quiet" = 0 ] && echo ' (run with --no-wait: not waited for)')"
    echo
    cat "$work/cluster.md"
  } > "$cout"
  keep_section_results cluster "Redis Cluster" "$cout"
  cat "$cout"
  [ -z "$sections" ] && exit 0
fi
if [ "$instructions" = 1 ]; then
  command -v valgrind >/dev/null || { echo "bench/run.sh: --instructions needs valgrind (apt-get install valgrind)" >&2; exit 1; }
  cgdir="$work/callgrind"
  mkdir -p "$cgdir"
  # Instructions the worker BIN ran to drain a backlog of N events as drain row LABEL.
  count_instructions() {
    local bin="$1" label="$2" n="$3"
    rm -f "$cgdir"/cg.*
    printf '#!/bin/sh\nexec valgrind --tool=callgrind --callgrind-out-file=%s/cg.$$ %s "$@"\n' \
      "$cgdir" "$bin" > "$cgdir/worker.sh"
    chmod +x "$cgdir/worker.sh"
    EW_BENCH_DRAIN_ROWS="=$label" "$ewbench" orchestrate --port "$port" --worker "$cgdir/worker.sh" \
      --self "$ewbench" --logdir "$work/logs" --backlog "$n" --reps 1 --out "$cgdir/run.md" \
      --sections drain --sample-wait 0 > "$cgdir/run.log" 2>&1 \
      || { echo "bench/run.sh: the callgrind drain of $label failed (see $cgdir/run.log)" >&2; exit 1; }
    grep -h '^totals:' "$cgdir"/cg.* | awk '{ s += $2 } END { printf "%.0f\n", s }'
  }
  per_event() {
    local small large
    small="$(count_instructions "$1" "$2" 20000)"
    large="$(count_instructions "$1" "$2" 60000)"
    echo $(( (large - small) / 40000 ))
  }
  iout="$here/target/instructions.md"
  {
    echo "Run of $(date -u +%Y-%m-%dT%H:%MZ): \`$cmdline\`; event-worker commit $commit$dirty$([ -n "$base_rev" ] && echo "; @base: commit $base_commit")"
    echo
    echo "Instructions the worker runs per event (callgrind; the difference between a 60000 and a 20000 backlog, over 40000):"
    echo
    if [ -n "$base_worker" ]; then
      echo "| drain | this build | @base | change |"
      echo "| --- | ---: | ---: | ---: |"
    else
      echo "| drain | this build |"
      echo "| --- | ---: |"
    fi
  } > "$iout"
  for label in "event-worker, blackhole" "event-worker, http to local sink" \
    "event-worker, http batch (max_events 64) to local sink"; do
    echo "== callgrind: $label"
    now="$(per_event "$worker" "$label")"
    if [ -n "$base_worker" ]; then
      base="$(per_event "$base_worker" "$label")"
      echo "| $label | $now | $base | $(awk -v a="$now" -v b="$base" 'BEGIN { printf "%+.1f%%", (a - b) * 100 / b }') |" >> "$iout"
    else
      echo "| $label | $now |" >> "$iout"
    fi
  done
  cat "$iout"
  exit 0
fi
if [ "$quick" = 1 ]; then out="$here/target/quick.md"; else out="$here/target/results.md"; fi
args=(orchestrate --port "$port" --worker "$worker" --self "$ewbench" --logdir "$work/logs"
      --backlog "$backlog" --reps "$reps" --out "$out")
[ "$quick" = 1 ] && args+=(--quick)
[ "$wait_quiet" = 0 ] && args+=(--sample-wait 0)
[ -n "$latency_secs" ] && args+=(--latency-secs "$latency_secs")
[ -n "$sections" ] && args+=(--sections "$sections")
[ -n "$base_worker" ] && args+=(--base-worker "$base_worker")
if [ "$profile" = 1 ]; then
  command -v perf >/dev/null || { echo "bench/run.sh: perf not found (apt-get install linux-perf)" >&2; exit 1; }
  args+=(--profile "$here/target/perf.data")
fi

start_ts="$(date -u +%Y-%m-%dT%H:%MZ)"
"$ewbench" "${args[@]}" &
orch_pid=$!
if ! wait "$orch_pid"; then
  orch_pid=""
  echo "bench/run.sh: the run failed; last lines of the process logs:" >&2
  for f in "$work"/logs/*.log; do [ -s "$f" ] && { echo "--- $f" >&2; tail -5 "$f" >&2; }; done
  exit 1
fi
orch_pid=""

if [ "$profile" = 1 ]; then
  perf report -i "$here/target/perf.data" --no-children --sort dso,symbol --stdio --percent-limit 0.5 -g none \
    2>/dev/null | grep -v '^$' | sed 's/ *$//' > "$here/target/profile-self.txt" || true
  if [ -n "${PERF_CALL_GRAPH:-}" ]; then
    perf report -i "$here/target/perf.data" --children --sort symbol --stdio --percent-limit 3 -g none \
      2>/dev/null | grep -v '^$' | sed 's/ *$//' > "$here/target/profile-children.txt" || true
  fi
  echo "== hottest symbols (self time); full list: bench/target/profile-self.txt"
  grep -E '^ +[0-9]' "$here/target/profile-self.txt" | cut -c1-160 | head -45
  exit 0
fi

# Machine, versions, command: the header of the results.
cpu_model="$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
results="$work/results.md"
{
  echo "Run of $start_ts: \`$cmdline\`"
  echo
  echo "- machine: $(nproc) cores, $cpu_model, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo) RAM, $(uname -sr)"
  echo "- $(redis-server --version | cut -d' ' -f1-3) (--save '' --appendonly no, 127.0.0.1)"
  echo "- $(rustc --version), release builds"
  [ -n "$base_rev" ] && echo "- \"@base\" rows: event-worker commit $base_commit (--base-rev), same configuration, interleaved with the others"
  echo "- event-worker commit $commit$dirty, default configuration plus env, redis_url, group, api.listen and one route"
  echo "- events: 256-byte JSON \`data\` plus \`id\` (36 chars) and \`type\`, one stream \`events:bench:bench.drain\`"
  echo
  cat "$out"
} > "$results"

if [ "$quick" = 1 ] || [ -n "${EW_BENCH_DRAIN_ROWS:-}" ]; then
  cp "$results" "$out"
  echo "== partial results (--quick or EW_BENCH_DRAIN_ROWS; not written to BENCHMARKS.md): $out"
  cat "$out"
  exit 0
fi

mkdir -p "$here/results"
cp "$results" "$here/results/latest.md"
cp "${out%.md}.tsv" "$here/results/latest.tsv"
bm="$root/BENCHMARKS.md"
begin='<!-- results:begin (written by bench/run.sh) -->'
end='<!-- results:end -->'
if [ ! -f "$bm" ] || ! grep -qF "$begin" "$bm"; then
  { [ -f "$bm" ] && cat "$bm"; echo; echo "## Results"; echo; echo "$begin"; echo "$end"; } > "$work/bm.new"
  cp "$work/bm.new" "$bm"
fi
splice_results "$begin" "$end" "$results"
echo "== results written to BENCHMARKS.md and bench/results/latest.{md,tsv}"
cat "$results"
