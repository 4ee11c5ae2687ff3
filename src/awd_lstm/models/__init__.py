"""Models built from the AWD-LSTM layers: the encoder backbone, the language model and
the ULMFiT text classifier."""

from awd_lstm.models.classifier import AWDLSTMClassifier
from awd_lstm.models.encoder import AWDLSTMEncoder
from awd_lstm.models.language_model import AWDLSTMLanguageModel

__all__ = ["AWDLSTMClassifier", "AWDLSTMEncoder", "AWDLSTMLanguageModel"]
