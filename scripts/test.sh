#!/usr/bin/env bash
# Installs everything the tests need into .venv (downloads cached under ~/.cache) and runs
# the whole suite: ruff (lint + format), mypy, pytest (doctests included).
# This is the README's test command; .ci/run runs exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."
export PIP_CACHE_DIR="${PIP_CACHE_DIR:-$HOME/.cache/pip}"
VENV=${STREAMLEARN_VENV:-.venv}
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip
"$VENV/bin/python" -m pip install -q -e ".[dev]"
export PATH="$PWD/$VENV/bin:$PATH"
echo "== ruff"; ruff check . && ruff format --check .
echo "== mypy"; mypy
echo "== pytest"; python -m pytest -q "$@"
