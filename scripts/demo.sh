#!/usr/bin/env bash
# Open the greenjupyter demo notebook in JupyterLab, from a fresh checkout.
#
#   scripts/demo.sh                 # http://127.0.0.1:8888/lab
#   PORT=9999 scripts/demo.sh       # another port
#   TOKEN=secret scripts/demo.sh    # a fixed token instead of a random one (TOKEN= for none)
#
# Creates or reuses .venv in the repository root and installs greenjupyter[demo] there.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
PORT="${PORT:-8888}"
echo "demo.sh: installing greenjupyter[demo] into .venv (first time takes a minute)" >&2
source scripts/_venv.sh demo

# A workspace of its own (kept under .venv, so the user's is untouched): demo/demo.ipynb with the
# greenjupyter sidebar open beside it, the same as on mybinder (binder/postBuild).
workspaces=.venv/greenjupyter-demo-workspaces
.venv/bin/jupyter lab workspaces import --LabWorkspaceImportApp.workspaces_dir="$workspaces" \
    demo/lab-workspace.json >/dev/null
args=(lab --ip=127.0.0.1 --port="$PORT" --ServerApp.root_dir=. --LabApp.workspaces_dir="$workspaces")
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
