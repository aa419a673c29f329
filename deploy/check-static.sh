#!/usr/bin/env bash
# Static checks of docker-compose.yml and deploy/k8s (no Docker engine or
# Kubernetes cluster needed): Kubernetes schemas offline (kubernetes-validate),
# every flag/env name the manifests use exists in `headcount --help`, and the
# wiring (seeds, probes, PDB, secret, healthchecks). See deploy/check_static.py.
#
#   HEADCOUNT_BINARY  the binary whose --help is the reference (default:
#                     target/debug/headcount, built with cargo if missing)
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/.." && pwd)"
binary="${HEADCOUNT_BINARY:-${CARGO_TARGET_DIR:-$root/target}/debug/headcount}"
if [[ ! -x "$binary" ]]; then
    echo "check-static: building $binary" >&2
    (cd "$root" && cargo build -p headcount)
fi
# shellcheck source=deploy/python-env.sh
source "$here/python-env.sh"
deploy_python_env
exec "$PY" "$here/check_static.py" "$binary"
