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
python -m pip install -q --upgrade pip
# The CPU build of PyTorch first: an unpinned `torch` would pull a multi-GB CUDA build.
python -m pip install -q "torch==2.13.0"
python -m pip install -q -e ".[tensorflow-cpu,jax,torch,test]"
