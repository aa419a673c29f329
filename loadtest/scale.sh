#!/usr/bin/env bash
# The scale run: builds release, holds 100,000 websocket connections (one
# topic each) on 6 headcount nodes from 6 load processes, checks every node
# agrees on the total, and rewrites the scale part of BENCHMARKS.md. Extra
# arguments go to `headcount-load scale` (e.g. `--interval 200ms`).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -p headcount -p headcount-load
exec target/release/headcount-load scale --benchmarks BENCHMARKS.md "$@"
