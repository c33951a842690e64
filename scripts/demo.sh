#!/usr/bin/env bash
# Open the greenjupyter demo notebook in JupyterLab, from a fresh checkout.
#
#   scripts/demo.sh                 # http://127.0.0.1:8888/lab
#   PORT=9999 scripts/demo.sh       # another port
#   TOKEN=secret scripts/demo.sh    # a fixed token instead of a random one (TOKEN= for none)
#
# Needs Python 3.10+ with venv (Debian: apt-get install python3-venv). Creates or reuses
# .venv in the repository root and installs greenjupyter there with its demo extra.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
PORT="${PORT:-8888}"
PYTHON="${PYTHON:-python3}"

if [ ! -x .venv/bin/python ]; then
    if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 10))' 2>/dev/null; then
        echo "demo.sh: greenjupyter needs Python 3.10 or newer; $PYTHON is $("$PYTHON" -V 2>&1 || echo missing)." >&2
        echo "demo.sh: set PYTHON=/path/to/python3.x to choose another interpreter." >&2
        exit 1
    fi
    echo "demo.sh: creating .venv with $("$PYTHON" -V 2>&1)" >&2
    if ! "$PYTHON" -m venv .venv; then
        rm -rf .venv
        echo "demo.sh: could not create a virtual environment; on Debian/Ubuntu: apt-get install python3-venv" >&2
        exit 1
    fi
fi

echo "demo.sh: installing greenjupyter[demo] into .venv (first time takes a minute)" >&2
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e '.[demo]'

args=(lab demo/demo.ipynb --ip=127.0.0.1 --port="$PORT")
if [ "$(id -u)" -eq 0 ]; then
    args+=(--allow-root)
fi
if [ -z "${DISPLAY:-}" ] && [ -z "${WAYLAND_DISPLAY:-}" ]; then
    args+=(--no-browser)
fi
if [ -n "${TOKEN+set}" ]; then
    args+=("--IdentityProvider.token=$TOKEN")
fi

echo "demo.sh: starting JupyterLab on http://127.0.0.1:$PORT/lab (Ctrl+C to stop)" >&2
exec .venv/bin/jupyter "${args[@]}"
