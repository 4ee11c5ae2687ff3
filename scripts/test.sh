#!/usr/bin/env bash
# Installs everything (scripts/setup.sh), lints, and runs the whole test suite once
# per Keras backend, each in its own process (Keras fixes its backend at import).
# The JAX run (the longest: XLA compiles every new shape) goes beside the TensorFlow
# then PyTorch runs, so a 2-core machine is busy throughout; each run's output is
# printed whole when it ends. TEST_JOBS=1 runs them one after another.
set -uo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh || exit 1
if [ -z "${VIRTUAL_ENV:-}" ]; then . .venv/bin/activate; fi
export TF_CPP_MIN_LOG_LEVEL=2 PYTHONHASHSEED=0
status=0
echo "== ruff"
ruff check . || status=1
ruff format --check . || status=1

logs=$(mktemp -d)
trap 'rm -rf "$logs"' EXIT
suite() {  # suite BACKEND [pytest args]: output to $logs/BACKEND.log, status to .rc
  local backend=$1
  shift
  KERAS_BACKEND=$backend python -m pytest -q -p no:cacheprovider "$@" >"$logs/$backend.log" 2>&1
  echo $? >"$logs/$backend.rc"
}
if [ "${TEST_JOBS:-2}" = 1 ]; then
  for backend in tensorflow jax torch; do suite $backend "$@"; done
else
  suite jax "$@" &
  { suite tensorflow "$@"; suite torch "$@"; } &
  wait
fi
for backend in tensorflow jax torch; do
  echo "== pytest, KERAS_BACKEND=$backend"
  cat "$logs/$backend.log"
  [ "$(cat "$logs/$backend.rc" 2>/dev/null)" = 0 ] || status=1
done
echo "== pytest, TF1 graph mode (awd_lstm.legacy, TF_USE_LEGACY_KERAS=1)"
TF_USE_LEGACY_KERAS=1 python -m pytest -q -p no:cacheprovider tests_legacy src/awd_lstm/legacy.py "$@" \
  || status=1
exit $status
