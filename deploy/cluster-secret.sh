#!/usr/bin/env bash
# Makes the compose cluster's secret, deploy/cluster-secret, if it does not
# exist: 32 random bytes as hex, never committed (.gitignore). Readable by
# uid 10001 in the container (compose mounts the host file as it is), so keep
# it on a machine you trust, or point HC_CLUSTER_SECRET_FILE at your own.
set -euo pipefail
file="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/cluster-secret"
if [[ ! -s "$file" ]]; then
    (umask 022 && od -An -N32 -tx1 /dev/urandom | tr -d ' \n' > "$file")
    printf 'cluster-secret: wrote a new random secret to %s\n' "$file" >&2
fi
