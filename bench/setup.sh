#!/usr/bin/env bash
# Builds the benchmark's own environment (.venv-bench): streamlearn plus the peers.
# deep-river 0.3.4 pins torch<2.6 and river<0.26 (it imports river.anomaly.base, gone in
# river 0.26); it runs with current torch when installed with --no-deps beside river 0.25
# (shared/benchmarks.md). Peers never enter the service's runtime dependencies.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${BENCH_VENV:-.venv-bench}
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
"$VENV/bin/pip" install -q --upgrade pip
"$VENV/bin/pip" install -q -e . "river>=0.25,<0.26" psutil pandas pytest sortedcontainers
"$VENV/bin/pip" install -q --no-deps "deep-river==0.3.4"
"$VENV/bin/python" -c "import deep_river.classification, river; print('bench env ready: river', river.__version__)"
