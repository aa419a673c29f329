#!/usr/bin/env bash
# The standard benchmark suite: builds release, runs headcount against the
# bare baseline on this machine (at most 10 minutes) and rewrites the marked
# section of BENCHMARKS.md. Extra arguments go to `headcount-load suite`
# (e.g. `--no-write`).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -p headcount -p headcount-load
exec target/release/headcount-load suite --benchmarks BENCHMARKS.md "$@"
