"""Keras layers of AWD-LSTM: weight drop, locked dropout, embedding dropout, and the
tied adaptive softmax for large vocabularies."""

from awd_lstm.layers.adaptive_softmax import AdaptiveSoftmax
from awd_lstm.layers.embedding_dropout import EmbeddingDropout
from awd_lstm.layers.locked_dropout import LockedDropout
from awd_lstm.layers.weight_drop import WeightDropLSTM, WeightDropLSTMCell

__all__ = [
    "AdaptiveSoftmax",
    "EmbeddingDropout",
    "LockedDropout",
    "WeightDropLSTM",
    "WeightDropLSTMCell",
]
