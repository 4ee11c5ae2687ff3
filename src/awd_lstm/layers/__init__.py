"""Keras layers of AWD-LSTM: weight drop, locked dropout, embedding dropout."""

from awd_lstm.layers.embedding_dropout import EmbeddingDropout
from awd_lstm.layers.locked_dropout import LockedDropout
from awd_lstm.layers.weight_drop import WeightDropLSTM, WeightDropLSTMCell

__all__ = ["EmbeddingDropout", "LockedDropout", "WeightDropLSTM", "WeightDropLSTMCell"]
