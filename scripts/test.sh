#!/usr/bin/env bash
# Run the test suite from a fresh checkout: scripts/test.sh [pytest arguments]
# Creates .venv in the repository root when missing and installs greenjupyter[test] there (which
# builds the JupyterLab extension: Node.js 18+ needed). The browser tests use Debian's Chromium:
# installed here with apt-get when missing and we are root; without it they are skipped, saying why.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
if [ ! -x "${GREENJUPYTER_CHROMIUM:-/usr/bin/chromium}" ] && [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
    echo "test.sh: installing Debian's chromium for the browser tests" >&2
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
        || echo "test.sh: could not install chromium; the browser tests will be skipped" >&2
fi
source scripts/_venv.sh test
exec .venv/bin/python -m pytest "$@"
