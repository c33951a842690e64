# Sourced by demo.sh and test.sh: make sure .venv exists in the repository root and install
# greenjupyter into it with the extra named in $1. Needs Python 3.10+ with venv
# (Debian: apt-get install python3-venv); PYTHON= picks another interpreter.
PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
    if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 10))' 2>/dev/null; then
        echo "greenjupyter needs Python 3.10 or newer; $PYTHON is $("$PYTHON" -V 2>&1 || echo missing)." >&2
        echo "Set PYTHON=/path/to/python3.x to choose another interpreter." >&2
        exit 1
    fi
    if ! "$PYTHON" -m venv .venv; then
        rm -rf .venv
        echo "could not create a virtual environment; on Debian/Ubuntu: apt-get install python3-venv" >&2
        exit 1
    fi
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e ".[$1]"
