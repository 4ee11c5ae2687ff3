"""Locked (variational) dropout on sequences of activations.

Gal & Ghahramani (2016), "A Theoretically Grounded Application of Dropout in
Recurrent Neural Networks"; used by AWD-LSTM on the embedding output, between LSTM
layers and on the last LSTM output (Merity et al. 2017, section 4.2): one mask per
sequence, the same at every time step.
"""

import keras
from keras import ops

from awd_lstm import backend
from awd_lstm._validation import check_rate


@keras.saving.register_keras_serializable(package="awd_lstm")
class LockedDropout(keras.layers.Layer):
    """Dropout whose mask is shared by all time steps of a sequence.

    For inputs of shape `(batch, time, features)` a mask of shape
    `(batch, 1, features)` is drawn per call, scaled by `1 / (1 - rate)` and
    broadcast over time. The identity when not training.

    Args:
        rate: Float in [0, 1). Fraction of the features to drop (paper:
            `dropouti`, `dropouth`, `dropout`).
        seed: Integer seed of the layer's `SeedGenerator`.
        **kwargs: Base `Layer` arguments (`name`, `dtype`, ...).

    Call arguments:
        inputs: A 3D tensor `(batch, time, features)`.
        training: Python boolean; dropout is applied only when true.

    Example:

    >>> layer = LockedDropout(0.5, seed=0)
    >>> y = keras.ops.convert_to_numpy(layer(np.ones((2, 4, 3)), training=True))
    >>> bool(np.all(y[:, 0] == y[:, 3]))
    True
    """

    def __init__(self, rate, seed=None, **kwargs):
        rate = check_rate("rate", rate)
        super().__init__(**kwargs)
        self.rate = rate
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.supports_masking = True
        self.built = True

    def call(self, inputs, training=False):
        if len(inputs.shape) != 3:
            raise ValueError(
                f"{self.__class__.__name__} expects inputs of rank 3 "
                f"(batch, time, features); Received: inputs.shape={tuple(inputs.shape)}"
            )
        if not training or self.rate == 0:
            return inputs
        shape = ops.shape(inputs)
        replicas, replica = backend.replica()
        if replicas > 1:
            # Under a TensorFlow strategy each replica holds `batch / replicas` of the
            # streams: it draws the whole batch's masks, as one device would, and
            # keeps its own rows (the replicas' seed generators stay in step).
            mask = keras.random.dropout(
                ops.ones((shape[0] * replicas, 1, shape[2]), inputs.dtype),
                self.rate,
                seed=self.seed_generator,
            )
            mask = ops.slice(mask, (replica * shape[0], 0, 0), (shape[0], 1, shape[2]))
            return inputs * mask
        return keras.random.dropout(
            inputs,
            self.rate,
            noise_shape=(shape[0], 1, shape[2]),
            seed=self.seed_generator,
        )

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update({"rate": self.rate, "seed": self.seed})
        return config
