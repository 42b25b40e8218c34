#!/usr/bin/env bash
# Create .venv and install InfraFabric: the runtime alone (`bootstrap.sh`, what `make demo`
# uses) or with the given extras (`bootstrap.sh dev`, what `make test` uses).
# Works on a fresh Debian machine that has only Python 3.11: if the venv
# module is missing (Debian splits it out), it installs python3-venv with apt.
set -euo pipefail
cd "$(dirname "$0")/.."
EXTRAS="${1:-}"
VENV=.venv
PYTHON="${PYTHON:-$(command -v python3.11 || command -v python3)}"

if [ ! -x "$VENV/bin/python" ]; then
    if ! "$PYTHON" -m venv "$VENV" 2>/dev/null; then
        rm -rf "$VENV"
        if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
            echo "bootstrap: installing python3-venv with apt-get" >&2
            apt-get update -qq && apt-get install -y -qq python3-venv >/dev/null
            "$PYTHON" -m venv "$VENV"
        else
            echo "bootstrap: '$PYTHON -m venv' failed; install python3-venv (apt-get install python3-venv)" >&2
            exit 1
        fi
    fi
fi

STAMP="$VENV/.installed-${EXTRAS:-runtime}"
TARGET="."
if [ -n "$EXTRAS" ]; then TARGET=".[$EXTRAS]"; fi
if [ ! -f "$STAMP" ] || [ pyproject.toml -nt "$STAMP" ]; then
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check -e "$TARGET"
    touch "$STAMP"
fi
"$VENV/bin/ifctl" chassis setup --quiet || echo "bootstrap: warning: the sandbox's Python/JS interpreters are not installed; run '$VENV/bin/ifctl chassis setup' later" >&2
