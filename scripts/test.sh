#!/usr/bin/env bash
# Run the test suite from a fresh checkout: scripts/test.sh [pytest arguments]
# Creates .venv in the repository root when missing and installs greenjupyter[test] there, which
# builds the JupyterLab extension: Node.js ^20.19 or >=22.12 is needed (when none is on PATH, one is
# fetched from PyPI into .venv). The browser tests use Debian's Chromium, installed with apt-get when
# run as root; without it they are skipped, saying why.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
SCRIPT=test.sh
source scripts/_venv.sh
need_node
if [ ! -x "${GREENJUPYTER_CHROMIUM:-/usr/bin/chromium}" ] && [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
    say "installing Debian's chromium with apt-get, for the browser tests (about 30 s)"
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
        || say "could not install chromium; the browser tests will be skipped"
fi
install_venv test
say "running the tests: pytest $*"
exec .venv/bin/python -m pytest "$@"
