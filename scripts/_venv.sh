# Sourced by demo.sh and test.sh, which set $SCRIPT (their name, for messages).
#   need_node     make sure Node.js 18+ is on PATH (from a clone it builds the JupyterLab extension);
#                 as root with apt-get, Debian's nodejs is installed when missing
#   install_venv EXTRA
#                 make sure .venv exists in the repository root and install greenjupyter[EXTRA] into it,
#                 saying what each step is doing; pip's whole output goes to .venv/install.log
# Needs Python 3.10+ with venv (Debian: apt-get install python3-venv); PYTHON= picks another interpreter.
PYTHON="${PYTHON:-python3}"

say() { echo "$SCRIPT: $*" >&2; }

node_major() {
    local version
    version="$(node --version 2>/dev/null)" || return 1
    version="${version#v}"
    echo "${version%%.*}"
}

need_node() {
    local major
    major="$(node_major)" || major=""
    if [ -n "$major" ] && [ "$major" -ge 18 ]; then
        return 0
    fi
    local found="none on PATH"
    [ -n "$major" ] && found="$(node --version)"
    if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
        # jlpm (shipped with jupyter-builder) does the build; Node alone is enough, npm is not used.
        say "Node.js 18+ is needed to build the JupyterLab extension (found: $found); installing Debian's nodejs with apt-get"
        if (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs >/dev/null); then
            major="$(node_major)" || major=""
            [ -n "$major" ] && found="$(node --version)"
        else
            say "apt-get could not install nodejs"
        fi
        if [ -n "$major" ] && [ "$major" -ge 18 ]; then
            return 0
        fi
    fi
    say "Node.js 18 or newer is needed to build greenjupyter's JupyterLab extension from a clone (found: $found); install it (Debian/Ubuntu: apt-get install nodejs, or https://nodejs.org) and run again. A wheel from PyPI needs no Node."
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

install_venv() {
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
