#!/usr/bin/env bash
# Creates or updates the Python runtime's virtualenv: every package pinned with its hash in
# requirements.txt (pip --require-hashes), installed again only when that file changed.
#
#   backends/python/setup.sh        # venv at ${STACKLAB_PYTHON_VENV:-~/.cache/stacklab-python-venv}
#
# The interpreter is ${STACKLAB_PYTHON:-python3} (3.11 or newer). With STACKLAB_PYTHON_WHEELS=DIR
# the packages come from the wheels in DIR only (no index: how config/images/build.sh python
# bakes the venv into an image with no network), still checked against the hashes.
set -euo pipefail
here=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)
venv=${STACKLAB_PYTHON_VENV:-$HOME/.cache/stacklab-python-venv}
python=${STACKLAB_PYTHON:-python3}
requirements=$here/requirements.txt

if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    echo "setup.sh: $python is missing or older than 3.11; install Python 3.11+ (Debian: apt-get install python3 python3-venv)" >&2
    exit 1
fi
# One setup at a time per venv (scripts/test runs in several checkouts at once here): another
# run's half-made venv must not be taken for a finished one.
mkdir -p -- "$(dirname -- "$venv")"
exec 9>"$venv.lock"
flock 9
if [[ ! -x $venv/bin/python ]] || ! "$venv/bin/python" -c 'import pip' 2>/dev/null; then
    rm -rf -- "$venv"
    if ! "$python" -m venv "$venv"; then
        rm -rf -- "$venv"
        echo "setup.sh: could not make a virtualenv in $venv (Debian: apt-get install python3-venv)" >&2
        exit 1
    fi
fi
want=$(sha256sum <"$requirements")
have=$(cat "$venv/.requirements.sha256" 2>/dev/null || true)
if [[ $want != "$have" ]]; then
    echo "setup.sh: installing the Python runtime's packages into $venv" >&2
    rm -f -- "$venv/.requirements.sha256"
    source=()
    if [[ -n ${STACKLAB_PYTHON_WHEELS:-} ]]; then
        source=(--no-index --find-links "$STACKLAB_PYTHON_WHEELS")
    fi
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-input \
        --require-hashes --only-binary=:all: "${source[@]}" -r "$requirements"
    echo "$want" >"$venv/.requirements.sha256"
fi
