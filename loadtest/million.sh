#!/usr/bin/env bash
# The million run (issue 13): builds release, starts 52 headcount nodes and 52
# load processes (at most 20,000 open files per process: ~19,231 sockets
# each, on two 127.0.1.x source addresses of ~28k ports each) and asks for
# 1,000,000 websocket connections over 10,000 topics, every topic on every
# node; then checks every node agrees on the total and writes the `million`
# section of BENCHMARKS.md (outside the generated one, so `render` keeps it).
# The load processes stop opening connections once the machine's available
# memory falls under 3 GiB: if the box cannot hold a million, the section says
# how many it held and what ran out instead of the OOM killer picking a
# process. It runs in a network namespace of its own: the host's conntrack
# table (nf_conntrack_max 262,144, on because of Docker's NAT rules) would
# drop connections beyond that, and a fresh namespace has no rules, so no
# tracking, and shares no loopback ports with anyone else's tests.
# MALLOC_ARENA_MAX=2 (glibc) keeps the nodes' blocking threads from growing
# arenas of their own. The load processes also stop opening connections 5
# minutes after they start (the time budget of a run on this 2-core box: the
# rate falls as the cluster saturates). Extra arguments go to
# `headcount-load scale`.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -p headcount -p headcount-load
load="${CARGO_TARGET_DIR:-target}/release/headcount-load"
export MALLOC_ARENA_MAX="${MALLOC_ARENA_MAX:-2}"
exec unshare --net sh -c 'ip link set lo up && exec "$0" "$@"' "$load" scale --section million \
  --nodes 52 --procs 52 --connections 1000000 --topics 10000 \
  --min-available-mib 3072 --connect-for 5m --connect-timeout 1800s \
  --benchmarks BENCHMARKS.md "$@"
