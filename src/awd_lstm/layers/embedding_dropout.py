"""Embedding dropout: whole word types vanish for a segment.

Gal & Ghahramani (2016), used by AWD-LSTM (Merity et al. 2017, section 4.3): a
Bernoulli mask over the rows of the embedding matrix, drawn per call, so that every
occurrence of a dropped word in the segment is zeroed and the kept rows are scaled
by `1 / (1 - rate)`.
"""

import keras
from keras import ops

from awd_lstm._validation import check_rate


@keras.saving.register_keras_serializable(package="awd_lstm")
class EmbeddingDropout(keras.layers.Embedding):
    """`keras.layers.Embedding` that drops whole rows of its matrix per call.

    Equivalent to looking the tokens up in `embeddings * m / (1 - rate)` with
    `m ~ Bernoulli(1 - rate)` of shape `(input_dim, 1)`. The mask is gathered at
    the looked-up ids instead of multiplying the whole matrix, which gives the
    same values and gradients at a cost that does not grow with the vocabulary.
    `embeddings` stays the undropped matrix, ready to serve as a tied decoder.

    Args:
        input_dim: Size of the vocabulary.
        output_dim: Dimension of the embedding.
        embedding_dropout: Float in [0, 1). Fraction of word types dropped
            (paper: `dropoute`, 0.1 in the reference language model).
        seed: Integer seed of the layer's `SeedGenerator`.
        **kwargs: Every other argument of `keras.layers.Embedding`.

    Call arguments:
        inputs: Integer token ids of any shape.
        training: Python boolean; dropout is applied only when true.

    Example:

    >>> layer = EmbeddingDropout(10, 4, embedding_dropout=0.5, seed=0)
    >>> tuple(layer(np.array([[1, 2, 1]]), training=True).shape)
    (1, 3, 4)
    """

    def __init__(self, input_dim, output_dim, embedding_dropout=0.0, seed=None, **kwargs):
        embedding_dropout = check_rate("embedding_dropout", embedding_dropout)
        super().__init__(input_dim, output_dim, **kwargs)
        self.embedding_dropout = embedding_dropout
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, inputs, training=False):
        outputs = super().call(inputs)
        if not training or self.embedding_dropout == 0:
            return outputs
        keep = keras.random.dropout(
            ops.ones((self.input_dim, 1), dtype=self.compute_dtype),
            self.embedding_dropout,
            seed=self.seed_generator,
        )
        ids = ops.cast(inputs, "int32")
        return outputs * ops.take(keep, ids, axis=0)

    def compute_output_spec(self, inputs, training=False):
        return super().compute_output_spec(inputs)

    def get_config(self):
        config = super().get_config()
        config.update({"embedding_dropout": self.embedding_dropout, "seed": self.seed})
        return config
