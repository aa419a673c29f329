#!/usr/bin/env bash
# What visit history costs on the join path: join + leave churn against a node
# with history (the default, flushing every 10 s) and one with --no-history, in
# alternating rounds on the same machine, same client, same run.
#
#   cargo build --release -p headcount -p headcount-load
#   loadtest/history-churn.sh [rounds] [seconds per round]
#
# Prints one line per round and the median of the paired ratios (history on /
# off) of cycles/s and of server CPU per cycle. BENCHMARKS.md quotes its output.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds="${1:-4}"
seconds="${2:-10}"
bin="${CARGO_TARGET_DIR:-target}/release"
work="$(mktemp -d "${TMPDIR:-/tmp}/history-churn.XXXXXX")"
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

start() { # name http grpc gossip extra...; sets $started to the pid
    local name="$1" http="$2" grpc="$3" gossip="$4"
    shift 4
    "$bin/headcount" --node-name "$name" --http "127.0.0.1:$http" --grpc "127.0.0.1:$grpc" \
        --gossip "127.0.0.1:$gossip" --data-dir "$work/$name" --max-connections-per-ip 100000 \
        "$@" >/dev/null 2>"$work/$name.log" &
    started="$!"
    pids+=("$started")
}
start history-on 18080 19090 17946
on_pid="$started"
start history-off 28080 29090 27946 --no-history
off_pid="$started"
for port in 18080 28080; do
    for _ in $(seq 100); do curl -sf "127.0.0.1:$port/healthz" >/dev/null && break; sleep 0.1; done
done

churn() { # port pid
    "$bin/headcount-load" churn --targets "127.0.0.1:$1" --server-pid "$2" --duration "${seconds}s" \
        --topics 100 --concurrency 32
}
results="$work/results"
for round in $(seq "$rounds"); do
    for side in on off; do
        if [[ $side == on ]]; then json="$(churn 18080 "$on_pid")"; else json="$(churn 28080 "$off_pid")"; fi
        echo "$round $side $json" >>"$results"
    done
done
views="$(curl -s 127.0.0.1:18080/stats?prefix=load/ | python3 -c 'import json,sys; print(json.load(sys.stdin)["views"])')"
python3 - "$results" "$views" <<'PY'
import json, statistics, sys
rows = {}
for line in open(sys.argv[1]):
    round_, side, text = line.split(" ", 2)
    rows.setdefault(int(round_), {})[side] = json.loads(text)
rate, cpu = [], []
for r, sides in sorted(rows.items()):
    on, off = sides["on"], sides["off"]
    rate.append(on["cycles_per_sec"] / off["cycles_per_sec"])
    cpu.append(on["server_cpu_us_per_cycle"] / off["server_cpu_us_per_cycle"])
    print(f"round {r}: history on {on['cycles_per_sec']:.0f} cycles/s, {on['server_cpu_us_per_cycle']:.1f} us CPU/cycle;"
          f" off {off['cycles_per_sec']:.0f} cycles/s, {off['server_cpu_us_per_cycle']:.1f} us CPU/cycle")
print(f"median of paired ratios (on/off): cycles/s {statistics.median(rate):.3f}x, server CPU per cycle {statistics.median(cpu):.3f}x")
print(f"views recorded by the history node: {sys.argv[2]}")
PY
