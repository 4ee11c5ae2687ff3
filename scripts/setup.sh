#!/usr/bin/env bash
# Creates .venv (unless a virtual environment is already active) and installs the
# package with all three Keras backends (CPU builds) and the test tools.
# Users with a GPU: install `tensorflow` instead of `tensorflow-cpu` and the torch
# build for their CUDA version (see README).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${VIRTUAL_ENV:-}" ]; then
  [ -x .venv/bin/python ] || python3 -m venv .venv
  # shellcheck disable=SC1091
  . .venv/bin/activate
fi
# The CPU build of PyTorch first: an unpinned `torch` would pull a multi-GB CUDA build.
python -m pip install -q "torch==2.13.0"
python -m pip install -q -e ".[tensorflow-cpu,jax,torch,test]"
# TF1 graph mode (awd_lstm.legacy) needs tf_keras of the same minor version as
# TensorFlow; its declared dependency is the full `tensorflow`, which would land on top
# of tensorflow-cpu, hence --no-deps.
tf_minor=$(python -c "import importlib.metadata as m; print('.'.join(m.version('tensorflow-cpu').split('.')[:2]))")
python -m pip install -q --no-deps "tf_keras==${tf_minor}.*"
