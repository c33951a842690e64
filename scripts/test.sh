#!/usr/bin/env bash
# Run the test suite from a fresh checkout: scripts/test.sh [pytest arguments]
# Creates .venv in the repository root when missing and installs greenjupyter[test] there.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/_venv.sh test
exec .venv/bin/python -m pytest "$@"
