"""AWD-LSTM for Keras 3: weight-dropped LSTM, AWD regularizers and their training parts.

Merity, Keskar & Socher (2017), "Regularizing and Optimizing LSTM Language Models".

Submodules load on first use, so that `awd-lstm --backend ...` can choose the Keras
backend before Keras is imported.
"""

import importlib

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
    "training",
)

__all__ = [*_SUBMODULES, "__version__"]


def __getattr__(name):
    if name in _SUBMODULES:
        return importlib.import_module(f"awd_lstm.{name}")
    raise AttributeError(f"module 'awd_lstm' has no attribute {name!r}")
