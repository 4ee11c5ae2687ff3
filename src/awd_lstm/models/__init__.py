"""Models built from the AWD-LSTM layers: the encoder backbone and the language model."""

from awd_lstm.models.encoder import AWDLSTMEncoder
from awd_lstm.models.language_model import AWDLSTMLanguageModel

__all__ = ["AWDLSTMEncoder", "AWDLSTMLanguageModel"]
