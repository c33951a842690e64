#!/usr/bin/env bash
# Open the greenjupyter demo notebook in JupyterLab, from a fresh checkout.
#
#   scripts/demo.sh                 # http://127.0.0.1:8888/lab?token=...
#   PORT=9999 scripts/demo.sh       # another port
#   TOKEN=secret scripts/demo.sh    # a fixed token instead of a random one (TOKEN= for none)
#
# Creates or reuses .venv in the repository root and installs greenjupyter[demo] there, which builds
# the JupyterLab extension the first time: Node.js ^20.19 or >=22.12 is needed (when none is on PATH,
# one is fetched from PyPI into .venv).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
SCRIPT=demo.sh
PORT="${PORT:-8888}"
source scripts/_venv.sh
if [ ! -f greenjupyter/labextension/static/style.js ]; then  # not built yet
    need_node
fi
install_venv demo

# A workspace of its own (kept under .venv, so the user's is untouched): demo/demo.ipynb with the
# greenjupyter sidebar open beside it, the same as on mybinder (binder/postBuild).
say "preparing the JupyterLab workspace (demo/demo.ipynb with the greenjupyter sidebar open)"
workspaces=.venv/greenjupyter-demo-workspaces
.venv/bin/jupyter lab workspaces import --LabWorkspaceImportApp.workspaces_dir="$workspaces" \
    demo/lab-workspace.json >/dev/null
# port_retries=0: a busy port is an error, rather than another port than the URL printed below.
args=(lab --ip=127.0.0.1 --port="$PORT" --ServerApp.port_retries=0 --ServerApp.root_dir=.
      --LabApp.workspaces_dir="$workspaces")
if [ "$(id -u)" -eq 0 ]; then
    args+=(--allow-root)
fi
if [ -z "${DISPLAY:-}" ] && [ -z "${WAYLAND_DISPLAY:-}" ]; then
    args+=(--no-browser)
fi
# The token is chosen here, so that the URL printed below is one the server accepts.
if [ -z "${TOKEN+set}" ]; then
    TOKEN="$(.venv/bin/python -c 'import secrets; print(secrets.token_hex(24))')"
fi
args+=("--IdentityProvider.token=$TOKEN")
url="http://127.0.0.1:$PORT/lab${TOKEN:+?token=$TOKEN}"

say "starting JupyterLab; open $url (Ctrl+C to stop)"
exec .venv/bin/jupyter "${args[@]}"
