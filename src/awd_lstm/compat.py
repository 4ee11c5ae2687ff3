"""The API of the original TensorFlow 1.x weight-drop cell, on Keras 3.

Code written for the TensorFlow 1.x cell keeps its calls:

    cell = WeightDropLSTMCell(num_units=128, weight_drop_kr=0.5, use_vd=True, input_size=64)
    cell.get_vd_update_op()                  # draws a new kept mask
    outputs, state = dynamic_rnn(cell, x, initial_state=cell.zero_state(batch, "float32"))

    vd = VariationalDropout(input_shape=[5], keep_prob=0.5)
    vd.get_update_mask_op()

These are thin shims over the core layers (`awd_lstm.layers.WeightDropLSTMCell` in
"manual" or "step" mode). For TF1 graph code (`tf.compat.v1.Session`,
`tf.compat.v1.nn.dynamic_rnn`) use `awd_lstm.legacy`. `docs/migration.md` maps every
call to its Keras 3 equivalent.
"""

import collections
import numbers

import keras
from keras import ops

from awd_lstm import layers
from awd_lstm._validation import check_keep_prob
from awd_lstm.layers.weight_drop import draw_weight_mask

LSTMStateTuple = collections.namedtuple("LSTMStateTuple", ["c", "h"])
LSTMStateTuple.__doc__ = "The TF1 LSTM state: `c` (the cell) first, then `h` (the output)."


def _check_positive_int(name, value):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"`{name}` must be a positive integer; Received: {name}={value!r}")
    return int(value)


_TF1_ONLY = {"use_peepholes": False, "cell_clip": None, "num_proj": None, "proj_clip": None}


@keras.saving.register_keras_serializable(package="awd_lstm.compat")
class WeightDropLSTMCell(layers.WeightDropLSTMCell):
    """The TF1 `WeightDropLSTMCell` API over the Keras 3 weight-dropped cell.

    Args:
        num_units: Positive integer, the number of LSTM units.
        weight_drop_kr: KEEP probability of the kernel weights, in (0, 1]; 1.0 makes
            the cell a plain LSTM cell. DropConnect applies to the whole kernel, input
            and recurrent parts alike (`input_weight_dropout = weight_dropout =
            1 - weight_drop_kr`).
        use_vd: If true, the mask is kept in non-trainable variables and changes only
            when `get_vd_update_op()` is called ("manual" mode); otherwise a fresh mask
            is drawn at every time step ("step" mode).
        input_size: Size of the input features; required with `use_vd=True` (the
            kept mask's shape depends on it).
        forget_bias: Added to the forget gate's bias, as in TF1 (here through the
            bias initializer: the same function, and the same gradients).
        activation: Activation of the cell state; default `tanh`.
        initializer: Initializer of the kernels; default Keras' (`glorot_uniform`,
            `orthogonal`).
        seed: Integer seed of the masks.
        **kwargs: Other `keras.layers.LSTMCell` arguments (`name`, `dtype`, ...).
            The TF1-only options `use_peepholes`, `cell_clip`, `num_proj` and
            `proj_clip` exist only in `awd_lstm.legacy`.

    In `keras.layers.RNN` the mask is applied when `training=True`, as for every
    Keras layer; `dynamic_rnn` below applies it always, like the TF1 cell.

    Example:

    >>> cell = WeightDropLSTMCell(num_units=4, weight_drop_kr=0.5, use_vd=True, input_size=3)
    >>> len(cell.get_vd_update_op())
    2
    >>> outputs, state = dynamic_rnn(cell, np.ones((2, 5, 3), "float32"))
    >>> tuple(outputs.shape), tuple(state.c.shape)
    ((2, 5, 4), (2, 4))
    """

    def __init__(
        self,
        num_units,
        weight_drop_kr=1.0,
        use_vd=False,
        input_size=None,
        forget_bias=1.0,
        activation=None,
        initializer=None,
        seed=None,
        **kwargs,
    ):
        num_units = _check_positive_int("num_units", num_units)
        keep = check_keep_prob("weight_drop_kr", weight_drop_kr)
        for name, default in _TF1_ONLY.items():
            value = kwargs.pop(name, default)
            if value != default:
                raise ValueError(
                    f"`{name}` exists only in TF1 graph mode (awd_lstm.legacy); Keras 3's "
                    f"LSTM cell has no such option; Received: {name}={value!r}"
                )
        if use_vd and input_size is None:
            raise ValueError(
                "`input_size` is required when use_vd=True (the kept mask's shape depends "
                "on it); Received: input_size=None"
            )
        if input_size is not None:
            input_size = _check_positive_int("input_size", input_size)
        if initializer is not None:
            kwargs.setdefault("kernel_initializer", initializer)
            kwargs.setdefault("recurrent_initializer", initializer)
        forget_bias = float(forget_bias)

        def bias_initializer(shape, dtype=None):
            gates = [ops.zeros((num_units,), dtype=dtype)] * 4
            gates[1] = ops.full((num_units,), forget_bias, dtype=dtype)  # i, f, c, o
            return ops.concatenate(gates)

        kwargs.setdefault("bias_initializer", bias_initializer)
        super().__init__(
            num_units,
            weight_dropout=1.0 - keep,
            input_weight_dropout=1.0 - keep,
            weight_dropout_mode="manual" if use_vd else "step",
            seed=seed,
            activation=activation or "tanh",
            unit_forget_bias=False,
            **kwargs,
        )
        self.num_units = num_units
        self.weight_drop_kr = keep
        self.use_vd = bool(use_vd)
        self.input_size = input_size
        self.forget_bias = forget_bias
        if self.use_vd:
            # The TF1 cell owns its kept mask from construction on, so that
            # get_vd_update_op() can run before the first step.
            self.build((None, input_size))

    def build(self, input_shape):
        if self.input_size is not None and input_shape[-1] != self.input_size:
            raise ValueError(
                f"The cell was created with input_size={self.input_size} but receives "
                f"inputs with {input_shape[-1]} features"
            )
        super().build(input_shape)

    def get_vd_update_op(self):
        """Draws a new kept mask; returns the list of new mask values (empty when
        `use_vd` is false or `weight_drop_kr` is 1).

        Eagerly the mask changes at once; inside a `tf.function` the assignments are
        ordered before later reads of the mask, as TF2 orders stateful operations.
        """
        if not (self.use_vd and self.drops_weights):
            return []
        return self.resample_weight_masks()

    def zero_state(self, batch_size, dtype="float32"):
        """An all-zero `LSTMStateTuple(c, h)`."""
        zeros = ops.zeros((batch_size, self.num_units), dtype=dtype)
        return LSTMStateTuple(c=zeros, h=zeros)

    def get_config(self):
        config = super().get_config()
        for key in (
            "units",
            "weight_dropout",
            "input_weight_dropout",
            "weight_dropout_mode",
            "unit_forget_bias",
            "bias_initializer",
        ):
            config.pop(key, None)
        config.update(
            num_units=self.num_units,
            weight_drop_kr=self.weight_drop_kr,
            use_vd=self.use_vd,
            input_size=self.input_size,
            forget_bias=self.forget_bias,
        )
        return config


def dynamic_rnn(cell, inputs, initial_state=None, dtype=None, time_major=False, training=True):
    """Runs `cell` over `inputs` like `tf.compat.v1.nn.dynamic_rnn`.

    Args:
        cell: A Keras RNN cell, for example `WeightDropLSTMCell`.
        inputs: `(batch, time, features)`, or `(time, batch, features)` with
            `time_major=True`.
        initial_state: An `LSTMStateTuple(c, h)` (TF1 order) or None for zeros.
        dtype: Accepted for compatibility; the cell's dtype is used.
        time_major: Whether the inputs and outputs are time-major.
        training: Whether the masks apply; true by default, like the TF1 cell,
            which applied them at every run.

    Returns:
        `(outputs, LSTMStateTuple(c, h))`.
    """
    del dtype
    if time_major:
        inputs = ops.transpose(inputs, (1, 0, 2))
    rnn = keras.layers.RNN(cell, return_sequences=True, return_state=True)
    keras_state = None
    if initial_state is not None:
        c, h = initial_state
        keras_state = [h, c]
    outputs, h, c = rnn(inputs, initial_state=keras_state, training=training)
    if time_major:
        outputs = ops.transpose(outputs, (1, 0, 2))
    return outputs, LSTMStateTuple(c=c, h=h)


@keras.saving.register_keras_serializable(package="awd_lstm.compat")
class VariationalDropout(keras.layers.Layer):
    """The TF1 `VariationalDropout` API: a kept mask, redrawn only on request.

    Multiplies its input by a mask of shape `input_shape` (broadcast over leading
    axes) whose entries are 0 with probability `1 - keep_prob` and `1 / keep_prob`
    otherwise. The mask lives in a non-trainable variable and changes only when
    `get_update_mask_op()` runs. Like the TF1 class it applies the mask whenever
    called, except in calls with `training=False` (inference in `fit`/`predict`).
    For per-sequence masks in Keras models prefer `awd_lstm.layers.LockedDropout`.

    Args:
        input_shape: Shape of the mask, the trailing axes of the inputs.
        keep_prob: Keep probability in (0, 1].
        dtype: Dtype (policy) of the layer.
        seed: Integer seed of the masks.

    Example:

    >>> vd = VariationalDropout(input_shape=[5], keep_prob=0.5, seed=0)
    >>> _ = vd.get_update_mask_op()
    >>> y = keras.ops.convert_to_numpy(vd(np.ones((2, 5), "float32")))
    >>> bool(np.all(y[0] == y[1])) and set(np.unique(y)) <= {0.0, 2.0}
    True
    """

    def __init__(self, input_shape, keep_prob, dtype=None, seed=None, **kwargs):
        keep = check_keep_prob("keep_prob", keep_prob)
        try:
            shape = [_check_positive_int("input_shape", int(d)) for d in input_shape]
        except (TypeError, ValueError):
            raise ValueError(
                "`input_shape` must be a list of positive integers; "
                f"Received: input_shape={input_shape!r}"
            ) from None
        super().__init__(dtype=dtype, **kwargs)
        self.mask_shape = shape
        self.keep_prob = keep
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.mask = self.add_weight(
            shape=shape, initializer=self._draw, trainable=False, name="mask"
        )
        self.built = True

    def _draw(self, shape=None, dtype=None):
        shape = self.mask_shape if shape is None else shape
        if self.keep_prob == 1.0:
            return ops.ones(shape, dtype=dtype)
        return draw_weight_mask(shape, 1.0 - self.keep_prob, self.seed_generator, dtype)

    def get_update_mask_op(self):
        """Draws a new mask; returns the list with the new mask value."""
        return [self.mask.assign(self._draw(dtype=self.mask.dtype))]

    def call(self, inputs, training=None):
        if training is False:
            return inputs
        return inputs * ops.cast(self.mask, inputs.dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(
            {"input_shape": self.mask_shape, "keep_prob": self.keep_prob, "seed": self.seed}
        )
        return config
