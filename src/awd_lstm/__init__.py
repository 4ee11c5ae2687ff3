"""AWD-LSTM for Keras 3: weight-dropped LSTM, AWD regularizers and their training parts.

Merity, Keskar & Socher (2017), "Regularizing and Optimizing LSTM Language Models".

Submodules load on first use, so that `awd-lstm --backend ...` can choose the Keras
backend before Keras is imported.

TensorFlow's oneDNN CPU kernels: TensorFlow turns them on by itself only on some CPUs
(those with AVX-512 VNNI or newer); with them this model's training steps take less
time on the other CPUs too (measured in benchmarks/RESULTS.md). Imported
before TensorFlow, this package sets `TF_ENABLE_ONEDNN_OPTS=1` unless the variable is
already set; set `TF_ENABLE_ONEDNN_OPTS=0` to keep TensorFlow's own choice. The two
give equal results up to float rounding.
"""

import importlib
import os
import sys

if "tensorflow" not in sys.modules:
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")

__version__ = "0.1.0"

_SUBMODULES = (
    "compat",
    "config",
    "data",
    "distribute",
    "layers",
    "models",
    "optimizers",
    "presets",
    "regularizers",
    "resources",
    "runs",
    "training",
    "transfer",
)

__all__ = [*_SUBMODULES, "__version__", "load_model", "load_run"]


def load_model(path):
    """The language model of a `.keras` file written by `awd-lstm export` (or of a run
    folder), with its vocabulary as `model.vocabulary`, in one call
    (`awd_lstm.export.load_model`)."""
    from awd_lstm.export import load_model as load

    return load(path)


def load_run(path):
    """Opens a run folder (`awd_lstm.runs.Run.open`): its settings, vocabulary,
    history, final results and models."""
    from awd_lstm.runs import Run

    return Run.open(path)


def __getattr__(name):
    if name in _SUBMODULES:
        return importlib.import_module(f"awd_lstm.{name}")
    raise AttributeError(f"module 'awd_lstm' has no attribute {name!r}")
