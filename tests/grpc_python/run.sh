#!/usr/bin/env bash
# Builds headcount, starts a two-node cluster on free loopback ports, and runs
# check.py (a Python gRPC client generated from the proto alone) against it:
# every public RPC plus service discovery by reflection.
#
#   tests/grpc_python/run.sh            # from anywhere
#   PYTHON=python3.12 tests/grpc_python/run.sh
#
# Exits with check.py's status.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
python="${PYTHON:-python3}"

"$python" -m pip install -q --disable-pip-version-check --root-user-action=ignore -r "$here/requirements.txt"
(cd "$root" && cargo build -q -p headcount)
bin="${CARGO_TARGET_DIR:-$root/target}/debug/headcount"

# Six free loopback ports: http, grpc, gossip (UDP) for two nodes.
read -r a_http a_grpc a_gossip b_http b_grpc b_gossip < <("$python" - <<'EOF'
import socket
held = []
ports = []
for kind in (socket.SOCK_STREAM, socket.SOCK_STREAM, socket.SOCK_DGRAM) * 2:
    s = socket.socket(socket.AF_INET, kind)
    s.bind(("127.0.0.1", 0))
    held.append(s)
    ports.append(str(s.getsockname()[1]))
print(" ".join(ports))
EOF
)

logs="$(mktemp -d)"
pids=()
cleanup() {
    for pid in "${pids[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in "${pids[@]}"; do
        for _ in $(seq 100); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    rm -rf "$logs"
}
trap cleanup EXIT

start() { # name http grpc gossip [seed]
    local args=(--node-name "$1" --http "127.0.0.1:$2" --grpc "127.0.0.1:$3" --gossip "127.0.0.1:$4"
        --gossip-interval 200ms --push-interval 200ms --data-dir "$logs/$1-data")
    if [[ -n "${5:-}" ]]; then args+=(--seeds "$5"); fi
    "$bin" "${args[@]}" >"$logs/$1.log" 2>&1 &
    pids+=("$!")
}

wait_ready() { # name http
    for _ in $(seq 200); do
        if "$python" -c "import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=1)" \
            "http://127.0.0.1:$2/readyz" 2>/dev/null; then
            return 0
        fi
        sleep 0.1
    done
    echo "FAIL node $1 not ready on 127.0.0.1:$2 within 20 s; its log:" >&2
    cat "$logs/$1.log" >&2
    return 1
}

start a "$a_http" "$a_grpc" "$a_gossip"
wait_ready a "$a_http"
start b "$b_http" "$b_grpc" "$b_gossip" "127.0.0.1:$a_gossip"
wait_ready b "$b_http"
echo "cluster: a grpc 127.0.0.1:$a_grpc, b http 127.0.0.1:$b_http"

status=0
"$python" "$here/check.py" "127.0.0.1:$a_grpc" --ws "127.0.0.1:$b_http" --members 2 || status=$?
if [[ $status -ne 0 ]]; then
    echo "--- node a log" >&2; tail -n 30 "$logs/a.log" >&2
    echo "--- node b log" >&2; tail -n 30 "$logs/b.log" >&2
fi
exit "$status"
