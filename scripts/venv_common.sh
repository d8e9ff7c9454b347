# Sourced by the scripts that build a side environment (scripts/bench_venv.sh, scripts/monailabel/setup_venv.sh,
# scripts/deploy/setup_venv.sh): step logging, one failure message, and creating or reusing the venv.
#
# The caller sets VENV (the venv's folder), PYTHON (the interpreter to create it with) and NAME (its own name, for
# messages), then calls `venv_create WHEEL_NOTE`; afterwards PIP is the venv's pip as an array.
# shellcheck shell=bash

step() { printf '\n==> %s\n' "$*"; }
fail() { printf '\n%s: FAILED: %s\n' "${NAME:-setup}" "$*" >&2; exit 1; }
trap 'fail "command on line $LINENO exited with status $? (see the output above)"' ERR

# venv_create NOTE: check $PYTHON (warn when it is not 3.11: NOTE names the local wheels that are for 3.11 only),
# create $VENV with it or reuse the one there, and set PIP.
venv_create() {
    command -v "$PYTHON" >/dev/null || fail "'$PYTHON' not found; set PYTHON=/path/to/python3.11"
    local pyver
    pyver="$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
    if [[ "$pyver" != "3.11" ]]; then
        echo "warning: $PYTHON is Python $pyver; $1 are for Python 3.11 (others download from PyPI)" >&2
    fi
    if [[ -x "$VENV/bin/python" ]]; then
        step "reusing $VENV ($("$VENV/bin/python" -V))"
    else
        step "creating $VENV with $PYTHON -m venv"
        "$PYTHON" -m venv "$VENV"
    fi
    PIP=("$VENV/bin/python" -m pip --disable-pip-version-check)
}
