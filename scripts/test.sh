#!/usr/bin/env bash
# Run the test suite from a fresh checkout: scripts/test.sh [pytest arguments]
#
# Needs Python 3.10+ with venv (Debian: apt-get install python3-venv). Creates .venv in the
# repository root when it is missing and installs greenjupyter there with its test extra.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
PYTHON="${PYTHON:-python3}"

if [ ! -x .venv/bin/python ]; then
    if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 10))' 2>/dev/null; then
        echo "test.sh: greenjupyter needs Python 3.10 or newer; $PYTHON is $("$PYTHON" -V 2>&1 || echo missing)." >&2
        echo "test.sh: set PYTHON=/path/to/python3.x to choose another interpreter." >&2
        exit 1
    fi
    if ! "$PYTHON" -m venv .venv; then
        rm -rf .venv
        echo "test.sh: could not create a virtual environment; on Debian/Ubuntu: apt-get install python3-venv" >&2
        exit 1
    fi
fi

.venv/bin/python -m pip install --quiet --disable-pip-version-check -e '.[test]'
exec .venv/bin/python -m pytest "$@"
