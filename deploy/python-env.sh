# shellcheck shell=bash
# Sourced by deploy/check-static.sh and deploy/fault-test.sh: makes sure a
# virtualenv with deploy/requirements.txt exists and sets $PY to its python.
#   HEADCOUNT_DEPLOY_VENV  where the virtualenv lives (default target/deploy-venv)
#   PYTHON                 the interpreter that creates it (default python3)
# The virtualenv is reused while requirements.txt is unchanged.
deploy_python_env() {
    local here root venv stamp want
    here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
    root="$(cd "$here/.." && pwd)"
    venv="${HEADCOUNT_DEPLOY_VENV:-$root/target/deploy-venv}"
    stamp="$venv/.requirements.sha256"
    want="$(sha256sum "$here/requirements.txt" | cut -d' ' -f1)"
    if [[ ! -x "$venv/bin/python" ]]; then
        echo "python-env: creating $venv" >&2
        "${PYTHON:-python3}" -m venv "$venv" || return 1
    fi
    if [[ "$(cat "$stamp" 2>/dev/null)" != "$want" ]]; then
        echo "python-env: pip install -r deploy/requirements.txt" >&2
        "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
            -r "$here/requirements.txt" || return 1
        echo "$want" >"$stamp"
    fi
    # shellcheck disable=SC2034 # used by the scripts that source this file
    PY="$venv/bin/python"
}
