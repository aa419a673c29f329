#!/usr/bin/env bash
# The gossip run (issue 13): builds release, then for clusters of 3, 10 and 50
# real nodes reads the gossip bytes each node sends (idle, 10,000 quiet topics
# held, topics changing every round), kills nodes to time crash detection, and
# counts false suspicions; writes the `gossip` section of BENCHMARKS.md (or
# `gossip-lossP` with `--loss P`). It runs in a network namespace of its own
# (`unshare --net`, loopback only): `--loss` drops loopback UDP there with
# nftables (this kernel has no netem) without touching anyone else's traffic.
# Extra arguments go to `headcount-load gossip`, e.g.
#   bash loadtest/gossip.sh --sizes 10 --loss 10 --observe 5m
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -p headcount -p headcount-load
load="${CARGO_TARGET_DIR:-target}/release/headcount-load"
exec unshare --net sh -c 'ip link set lo up && exec "$0" "$@"' "$load" gossip --benchmarks BENCHMARKS.md "$@"
