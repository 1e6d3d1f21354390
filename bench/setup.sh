#!/usr/bin/env bash
# Builds the benchmarks' own environments; peers never enter the service's dependencies.
#   .venv-bench    streamlearn, river 0.25, deep-river 0.3.4, Vowpal Wabbit (pyvw)
#   .venv-capymoa  CapyMOA (MOA on this machine's JVM), numpy only: it pins numpy/scikit-learn
#                  versions of its own, so it gets an environment of its own
# deep-river 0.3.4 pins torch<2.6 and river<0.26 (it imports river.anomaly.base, gone in
# river 0.26); it runs with current torch when installed with --no-deps beside river 0.25.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${BENCH_VENV:-.venv-bench}
CAPY=${CAPYMOA_VENV:-.venv-capymoa}
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
"$VENV/bin/pip" install -q --upgrade pip
"$VENV/bin/pip" install -q -e . "river>=0.25,<0.26" psutil pandas pytest sortedcontainers \
  "vowpalwabbit>=9.10,<10"
"$VENV/bin/pip" install -q --no-deps "deep-river==0.3.4"
"$VENV/bin/python" -c "import deep_river.classification, river, vowpalwabbit; print('bench env ready: river', river.__version__)"
if [ "${SKIP_CAPYMOA:-0}" != 1 ]; then
  [ -x "$CAPY/bin/python" ] || python3 -m venv "$CAPY"
  "$CAPY/bin/pip" install -q --upgrade pip
  "$CAPY/bin/pip" install -q "capymoa==0.15.1"
  "$CAPY/bin/python" -c "import capymoa; print('capymoa env ready:', capymoa.__version__)"
fi
