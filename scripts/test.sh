#!/usr/bin/env bash
# Installs everything (scripts/setup.sh), lints, and runs the whole test suite once
# per Keras backend, each in its own process (Keras fixes its backend at import).
set -uo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh || exit 1
if [ -z "${VIRTUAL_ENV:-}" ]; then . .venv/bin/activate; fi
export TF_CPP_MIN_LOG_LEVEL=2 PYTHONHASHSEED=0
status=0
echo "== ruff"
ruff check . || status=1
ruff format --check . || status=1
for backend in tensorflow jax torch; do
  echo "== pytest, KERAS_BACKEND=$backend"
  KERAS_BACKEND=$backend python -m pytest -q -p no:cacheprovider "$@" || status=1
done
echo "== pytest, TF1 graph mode (awd_lstm.legacy, TF_USE_LEGACY_KERAS=1)"
TF_USE_LEGACY_KERAS=1 python -m pytest -q -p no:cacheprovider tests_legacy src/awd_lstm/legacy.py "$@" \
  || status=1
exit $status
