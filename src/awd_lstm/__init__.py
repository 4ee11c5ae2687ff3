"""AWD-LSTM for Keras 3: weight-dropped LSTM, AWD regularizers and their training parts.

Merity, Keskar & Socher (2017), "Regularizing and Optimizing LSTM Language Models".
"""

from awd_lstm import layers, regularizers

__version__ = "0.1.0"

__all__ = ["layers", "regularizers", "__version__"]
