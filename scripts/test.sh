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

# XLA's backend optimisation off: the tests' models are tiny, so compiling them costs
# far more than running them, and -O0 compiles 2-3 times faster (the results agree to
# float rounding; benchmarks run with XLA's defaults).
export XLA_FLAGS="${XLA_FLAGS:-} --xla_backend_optimization_level=0"
logs=$(mktemp -d)
trap 'rm -rf "$logs"' EXIT
suite() {  # suite LABEL BACKEND [pytest args]: output to $logs/LABEL.log, status to .rc
  local label=$1 backend=$2
  shift 2
  # --durations: the slowest tests of each run, to keep the whole run in bounds.
  KERAS_BACKEND=$backend python -m pytest -q -p no:cacheprovider --durations=15 "$@" \
    >"$logs/$label.log" 2>&1
  echo $? >"$logs/$label.rc"
}
if [ "${TEST_JOBS:-2}" != 1 ]; then
  # Two runs side by side on two cores: one thread each. Thread pools that spin while
  # they wait for work (OpenMP, Eigen) slow the other run's steps several times over
  # when both want every core.
  export OMP_NUM_THREADS=1 TF_NUM_INTRAOP_THREADS=1 TF_NUM_INTEROP_THREADS=2
  XLA_FLAGS="$XLA_FLAGS --xla_cpu_multi_thread_eigen=false"
fi
if [ "${TEST_JOBS:-2}" = 1 ]; then
  for backend in tensorflow jax torch; do suite $backend $backend "$@"; done
else
  # The JAX run (XLA compiles every new shape) takes about as long as the other two.
  suite jax jax "$@" &
  { suite tensorflow tensorflow "$@"; suite torch torch "$@"; } &
  wait
fi
for label in tensorflow jax torch; do
  echo "== pytest, KERAS_BACKEND=$label"
  cat "$logs/$label.log"
  [ "$(cat "$logs/$label.rc" 2>/dev/null)" = 0 ] || status=1
done
echo "== pytest, TF1 graph mode (awd_lstm.legacy, TF_USE_LEGACY_KERAS=1)"
TF_USE_LEGACY_KERAS=1 python -m pytest -q -p no:cacheprovider tests_legacy src/awd_lstm/legacy.py "$@" \
  || status=1
exit $status
