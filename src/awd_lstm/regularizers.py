"""Activation regularization (AR) and temporal activation regularization (TAR).

Merity, McCann & Socher (2017), "Revisiting Activation Regularization for Language
RNNs"; AWD-LSTM section 4.6. AR penalizes large outputs of the last LSTM layer after
dropout; TAR penalizes changes of the raw (undropped) outputs between time steps:

    AR  = alpha * mean(d ** 2)               d: dropped last-layer output
    TAR = beta  * mean((h_t - h_{t-1}) ** 2)  h: raw last-layer output

Both are computed in float32 whatever the compute dtype, and only in training.
"""

import keras
from keras import ops

from awd_lstm._validation import check_non_negative


def activation_regularization(outputs, alpha=2.0, length=None):
    """AR penalty `alpha * mean(outputs ** 2)` over every element.

    Args:
        outputs: The dropped last-layer outputs, any shape.
        alpha: Non-negative scale (paper: `alpha`, 2 in the reference).
        length: Optional integer (a scalar tensor too): `outputs` are
            `(batch, time, features)` padded along time, and the mean is over the
            first `length` steps.

    Returns:
        A float32 scalar.

    Example:

    >>> penalty = activation_regularization(np.full((2, 3, 4), 2.0), alpha=0.5)
    >>> float(keras.ops.convert_to_numpy(penalty))
    2.0
    """
    alpha = check_non_negative("alpha", alpha)
    outputs = ops.cast(outputs, "float32")
    if length is None:
        return alpha * ops.mean(ops.square(outputs))
    _check_rank_3("activation_regularization", outputs)
    return alpha * _mean_of_first_steps(ops.square(outputs), length)


def temporal_activation_regularization(outputs, beta=1.0, length=None):
    """TAR penalty `beta * mean((h[:, t] - h[:, t-1]) ** 2)`.

    Args:
        outputs: The raw last-layer outputs `(batch, time, features)`.
        beta: Non-negative scale (paper: `beta`, 1 in the reference).
        length: Optional integer (a scalar tensor too): `outputs` are padded along
            time and only their first `length` steps count (`length - 1` changes).

    Returns:
        A float32 scalar; 0 for sequences of length 1.

    Example:

    >>> h = np.array([[[0.0], [1.0], [3.0]]])
    >>> float(keras.ops.convert_to_numpy(temporal_activation_regularization(h, beta=1.0)))
    2.5
    """
    beta = check_non_negative("beta", beta)
    _check_rank_3("temporal_activation_regularization", outputs)
    outputs = ops.cast(outputs, "float32")
    if outputs.shape[1] is not None and outputs.shape[1] < 2:
        return ops.zeros((), dtype="float32")
    changes = ops.square(outputs[:, 1:] - outputs[:, :-1])
    if length is None:
        return beta * ops.mean(changes)
    return beta * _mean_of_first_steps(changes, ops.convert_to_tensor(length) - 1)


def _check_rank_3(name, outputs):
    if len(outputs.shape) != 3:
        raise ValueError(
            f"{name} expects outputs of rank 3 (batch, time, features); "
            f"Received: outputs.shape={tuple(outputs.shape)}"
        )


def _mean_of_first_steps(values, steps):
    """Mean of `values[:, :steps]` (`(batch, time, features)`; `steps` may be a
    tensor); 0 when `steps` is 0."""
    shape = ops.shape(values)
    steps = ops.cast(steps, "float32")
    counted = ops.cast(ops.arange(shape[1]), "float32") < steps
    total = ops.sum(ops.where(counted[None, :, None], values, 0.0))
    return ops.divide_no_nan(total, steps * float(shape[0] * shape[2]))


class _PenaltyLayer(keras.layers.Layer):
    """Pass-through layer that adds `penalty(inputs)` to the model's losses in training."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.supports_masking = True
        self.built = True

    def penalty(self, inputs):
        raise NotImplementedError

    def call(self, inputs, training=False):
        if training:
            self.add_loss(self.penalty(inputs))
        return inputs

    def compute_output_shape(self, input_shape):
        return input_shape


@keras.saving.register_keras_serializable(package="awd_lstm")
class ActivationRegularization(_PenaltyLayer):
    """Pass-through layer that adds the AR penalty to the model's losses in training.

    Place it on the dropped last-layer output.

    Args:
        alpha: Non-negative scale of the penalty.
        **kwargs: Base `Layer` arguments.

    Example:

    >>> layer = ActivationRegularization(alpha=2.0)
    >>> _ = layer(np.ones((1, 2, 3)), training=True)
    >>> float(keras.ops.convert_to_numpy(layer.losses[0]))
    2.0
    """

    def __init__(self, alpha=2.0, **kwargs):
        alpha = check_non_negative("alpha", alpha)
        super().__init__(**kwargs)
        self.alpha = alpha

    def call(self, inputs, training=False):
        return super().call(inputs, training=training and self.alpha > 0)

    def penalty(self, inputs):
        return activation_regularization(inputs, self.alpha)

    def get_config(self):
        return {**super().get_config(), "alpha": self.alpha}


@keras.saving.register_keras_serializable(package="awd_lstm")
class TemporalActivationRegularization(_PenaltyLayer):
    """Pass-through layer that adds the TAR penalty to the model's losses in training.

    Place it on the raw (undropped) last-layer output `(batch, time, features)`.

    Args:
        beta: Non-negative scale of the penalty.
        **kwargs: Base `Layer` arguments.

    Example:

    >>> layer = TemporalActivationRegularization(beta=1.0)
    >>> _ = layer(np.array([[[0.0], [1.0], [3.0]]]), training=True)
    >>> float(keras.ops.convert_to_numpy(layer.losses[0]))
    2.5
    """

    def __init__(self, beta=1.0, **kwargs):
        beta = check_non_negative("beta", beta)
        super().__init__(**kwargs)
        self.beta = beta

    def call(self, inputs, training=False):
        return super().call(inputs, training=training and self.beta > 0)

    def penalty(self, inputs):
        return temporal_activation_regularization(inputs, self.beta)

    def get_config(self):
        return {**super().get_config(), "beta": self.beta}
