#!/usr/bin/env bash
# Fault test of a real three-node headcount cluster in Docker: partition, kill,
# restart, graceful stop, scale 3 -> 5, down. Prints a table of the times it
# measured and exits non-zero if a limit was missed. See deploy/fault_test.py
# for what is measured and how, deploy/README.md for results.
#
# Exits 0 with "skipped: no Docker engine" where `docker info` fails.
#
#   HEADCOUNT_BINARY    the binary to put in the image (e.g. target/debug/headcount
#                       from `cargo test`); default: a release build
#   HEADCOUNT_SKIP_BUILD=1  use the existing image HC_IMAGE as it is
#   HC_IMAGE            image tag (default headcount:local)
#   HC_GOSSIP_INTERVAL  X for the test cluster (default 1s, the product default)
#   FAULT_KEEP=1        on failure, leave the cluster up for inspection
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

if ! command -v docker >/dev/null 2>&1 || ! docker info >/dev/null 2>&1; then
    echo "fault-test: skipped: no Docker engine (docker info failed)"
    exit 0
fi

# shellcheck source=deploy/python-env.sh
source "$here/python-env.sh"
deploy_python_env

export HC_IMAGE="${HC_IMAGE:-headcount:local}"
if [[ "${HEADCOUNT_SKIP_BUILD:-0}" != 1 ]]; then
    HEADCOUNT_IMAGE="$HC_IMAGE" "$here/build-image.sh"
fi

# fault_test.py cleans up after itself (compose down, its probe network) on
# success, failure, SIGINT and SIGTERM.
exec "$PY" -u "$here/fault_test.py"
