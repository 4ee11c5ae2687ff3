"""The original TensorFlow 1.x API, for TF1 graph code.

`tf.compat.v1.nn.dynamic_rnn`, `tf.compat.v1.Session`, `sess.run(cell.get_vd_update_op())`
and `tf.control_dependencies(...)` work as written with these classes:

    import os; os.environ["TF_USE_LEGACY_KERAS"] = "1"   # before TensorFlow is imported
    import tensorflow as tf
    from awd_lstm.legacy import VariationalDropout, WeightDropLSTMCell

On TensorFlow 2.16 and later, TensorFlow's TF1 RNN cells live in the `tf_keras` package
and are used only when `TF_USE_LEGACY_KERAS=1`; install them with
`pip install "awd-lstm[legacy]"`. A process runs either this module or Keras 3 code,
not both. New code should use `awd_lstm.layers` (see docs/migration.md).
"""

import os

_HOW_TO = (
    "awd_lstm.legacy needs the tf_keras package and the environment variable "
    "TF_USE_LEGACY_KERAS=1 set before TensorFlow is imported: "
    "pip install 'awd-lstm[legacy]' and run with TF_USE_LEGACY_KERAS=1"
)


def _check_legacy_keras():
    if os.environ.get("TF_USE_LEGACY_KERAS", "").lower() not in ("1", "true"):
        raise ImportError(f"{_HOW_TO} (TF_USE_LEGACY_KERAS is not set).")
    try:
        import tf_keras  # noqa: F401
    except ImportError:
        raise ImportError(f"{_HOW_TO} (tf_keras is not installed).") from None


_check_legacy_keras()

import tensorflow as tf  # noqa: E402

from awd_lstm._validation import check_keep_prob  # noqa: E402

_LSTMCell = tf.compat.v1.nn.rnn_cell.LSTMCell


def _kept_mask(shape, keep_prob, dtype, seed):
    """0 with probability 1 - keep_prob, else 1 / keep_prob."""
    uniform = tf.random.uniform(shape, dtype=tf.float32, seed=seed)
    return tf.cast(uniform < keep_prob, dtype) / tf.cast(keep_prob, dtype)


class WeightDropLSTMCell(_LSTMCell):
    """TF1 `LSTMCell` with DropConnect on its whole kernel `[W; U]`.

    Args:
        num_units: The number of LSTM units.
        weight_drop_kr: KEEP probability of the kernel weights, in (0, 1]; 1.0 (the
            default) makes the cell identical to `tf.compat.v1.nn.rnn_cell.LSTMCell`.
        use_vd: If true, the mask is kept in a non-trainable variable, the same at
            every step and every `sess.run` until the ops of `get_vd_update_op()`
            run. If false, a fresh mask at every time step.
        input_size: Number of input features; required with `use_vd=True`.
        seed: Op-level seed of the masks.
        **kwargs: Every argument of the TF1 `LSTMCell` (`forget_bias`,
            `activation`, `num_proj`, `cell_clip`, `use_peepholes`,
            `initializer`, ...).
    """

    def __init__(
        self, num_units, weight_drop_kr=1.0, use_vd=False, input_size=None, seed=None, **kwargs
    ):
        keep = check_keep_prob("weight_drop_kr", weight_drop_kr)
        if use_vd and input_size is None:
            raise ValueError(
                "`input_size` is required when use_vd=True (the kept mask's shape depends "
                "on it); Received: input_size=None"
            )
        super().__init__(num_units, **kwargs)
        self._weight_drop_kr = keep
        self._use_vd = bool(use_vd)
        self._input_size = input_size
        self._mask_seed = seed
        self._vd_mask = None
        self._vd_update_ops = None
        if self._use_vd and keep < 1.0:
            h_depth = kwargs.get("num_proj") or num_units
            shape = [input_size + h_depth, 4 * num_units]
            self._vd_mask = tf.Variable(
                _kept_mask(shape, keep, tf.float32, seed),
                trainable=False,
                name="weight_drop_mask",
            )

    @property
    def weight_drop_kr(self):
        return self._weight_drop_kr

    def get_vd_update_op(self):
        """The list of ops that draw a new kept mask; empty without one."""
        if self._vd_mask is None:
            return []
        if self._vd_update_ops is None or tf.executing_eagerly():
            # In a graph the op is built once and runs at every sess.run that asks
            # for it; eagerly each call is itself the update.
            new_mask = _kept_mask(
                self._vd_mask.shape, self._weight_drop_kr, self._vd_mask.dtype, self._mask_seed
            )
            self._vd_update_ops = [tf.compat.v1.assign(self._vd_mask, new_mask)]
        return self._vd_update_ops

    def build(self, inputs_shape):
        if self._input_size is not None and inputs_shape[-1] != self._input_size:
            raise ValueError(
                f"The cell was created with input_size={self._input_size} but receives "
                f"inputs with {inputs_shape[-1]} features"
            )
        super().build(inputs_shape)

    def call(self, inputs, state):
        if self._weight_drop_kr == 1.0:
            return super().call(inputs, state)
        kernel = self._kernel
        if self._vd_mask is not None:
            mask = tf.cast(self._vd_mask, kernel.dtype)
        else:
            # Inside dynamic_rnn's while loop this op runs at every step.
            mask = _kept_mask(tf.shape(kernel), self._weight_drop_kr, kernel.dtype, None)
        # LSTMCell.call reads self._kernel; point it at the dropped kernel for this
        # step (object.__setattr__ keeps the transient tensor out of tracking).
        object.__setattr__(self, "_kernel", kernel * mask)
        try:
            return super().call(inputs, state)
        finally:
            object.__setattr__(self, "_kernel", kernel)


class VariationalDropout:
    """A kept dropout mask of shape `input_shape`, redrawn by `get_update_mask_op()`.

    `vd(x)` returns `x * mask`, the mask being 0 with probability `1 - keep_prob`
    and `1 / keep_prob` otherwise, broadcast over the leading axes of `x`.
    """

    def __init__(self, input_shape, keep_prob, dtype=None, seed=None):
        self._keep_prob = check_keep_prob("keep_prob", keep_prob)
        self._shape = [int(d) for d in input_shape]
        self._dtype = tf.as_dtype(dtype or tf.float32)
        self._seed = seed
        self._mask = tf.Variable(self._draw(), trainable=False, name="variational_dropout_mask")
        self._update_ops = None

    def _draw(self):
        return _kept_mask(self._shape, self._keep_prob, self._dtype, self._seed)

    @property
    def mask(self):
        return self._mask

    def get_update_mask_op(self):
        """The list of ops that draw a new mask."""
        if self._update_ops is None or tf.executing_eagerly():
            self._update_ops = [tf.compat.v1.assign(self._mask, self._draw())]
        return self._update_ops

    def __call__(self, inputs):
        return inputs * tf.cast(self._mask, inputs.dtype)
