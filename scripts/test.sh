#!/usr/bin/env bash
# Installs everything the tests need into .venv (downloads cached under ~/.cache) and Debian's
# prometheus package (promtool and a real server) when absent, starts the real Kafka broker
# (scripts/kafka.sh: Apache Kafka from Maven Central, KRaft, 127.0.0.1:9092) and runs the
# whole suite: ruff (lint + format), mypy, the import layers (import-linter), pytest
# (doctests included).
# This is the README's test command; .ci/run runs exactly this. The broker is left running
# for the next run (scripts/kafka.sh stop stops it); under CI=true it starts from empty data
# (a cached ~/.cache may hold an earlier run's topics) and is stopped at exit.
set -euo pipefail
cd "$(dirname "$0")/.."
export PIP_CACHE_DIR="${PIP_CACHE_DIR:-$HOME/.cache/pip}"
VENV=${STREAMLEARN_VENV:-.venv}
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip
"$VENV/bin/python" -m pip install -q -e ".[dev]"
export PATH="$PWD/$VENV/bin:$PATH"
# A real Prometheus (and promtool) for deploy/ and the end-to-end scrape test: Debian's package.
if ! command -v promtool >/dev/null || ! command -v prometheus >/dev/null; then
  echo "== prometheus (Debian package)"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends prometheus >/dev/null
  # The package may start a system service; the tests run their own server on a free port.
  $SUDO systemctl stop prometheus 2>/dev/null || true
fi
echo "== kafka"
if [ "${CI:-}" = "true" ]; then ./scripts/kafka.sh reset; fi
./scripts/kafka.sh start
if [ "${CI:-}" = "true" ]; then trap './scripts/kafka.sh stop' EXIT; fi
# One command a line: under set -e a failure on the left of && would not stop the script.
echo "== ruff"; ruff check .; ruff format --check .
echo "== mypy"; mypy
echo "== import layers"; lint-imports --no-cache
echo "== pytest"; python -m pytest -q "$@"
