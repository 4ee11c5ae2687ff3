"""Keras layers of AWD-LSTM: weight drop, locked dropout, embedding dropout, the
tied adaptive softmax for large vocabularies, and the Mogrifier LSTM (Melis et al.
2020), an LSTM whose input and state gate each other before each step, with the same
weight drop; the mixture of softmaxes (Yang et al. 2018), a high-rank output layer
over the tied table; and the quasi-recurrent layer (Bradbury et al. 2017), whose only
recurrence is element-wise, with AWD-QRNN's weight drop."""

from awd_lstm.layers.adaptive_softmax import AdaptiveSoftmax
from awd_lstm.layers.embedding_dropout import EmbeddingDropout
from awd_lstm.layers.locked_dropout import LockedDropout
from awd_lstm.layers.mixture_of_softmaxes import MixtureOfSoftmaxes
from awd_lstm.layers.mogrifier import MogrifierLSTM
from awd_lstm.layers.qrnn import QRNN
from awd_lstm.layers.weight_drop import WeightDropLSTM, WeightDropLSTMCell

__all__ = [
    "AdaptiveSoftmax",
    "EmbeddingDropout",
    "LockedDropout",
    "MixtureOfSoftmaxes",
    "MogrifierLSTM",
    "QRNN",
    "WeightDropLSTM",
    "WeightDropLSTMCell",
]
