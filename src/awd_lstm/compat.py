"""The API of the original TensorFlow 1.x weight-drop cell, on Keras 3.

Code written for the TensorFlow 1.x cell keeps its calls, and their meaning:

    cell = WeightDropLSTMCell(num_units=128, weight_drop_kr=0.5, use_vd=True, input_size=64)
    cell.get_vd_update_op()                  # draws a new kept mask
    x_out, state = cell(x_t, cell.zero_state(batch, "float32"))   # state: LSTMStateTuple(c, h)
    outputs, state = dynamic_rnn(cell, x, initial_state=state)

    vd = VariationalDropout(input_shape=[5], keep_prob=0.5)
    vd.get_update_mask_op()

The cell reads and returns states in TF1's forms (`LSTMStateTuple(c, h)`, or `[c, h]`
concatenated with `state_is_tuple=False`) wherever it runs, and applies its mask in
every call unless told `training=False`, as the TF1 cell did. It is built on the core
`awd_lstm.layers.WeightDropLSTMCell` ("manual" mode for `use_vd=True`, "step" mode
otherwise, on every backend). For TF1 graph code (`tf.compat.v1.Session`,
`tf.compat.v1.nn.dynamic_rnn`) use `awd_lstm.legacy`. `docs/migration.md` maps every
call to its Keras 3 equivalent.
"""

import collections
import numbers

import keras
from keras import ops

from awd_lstm import layers
from awd_lstm._validation import check_keep_prob, check_positive_int
from awd_lstm.layers.weight_drop import draw_weight_mask, training_flag

LSTMStateTuple = collections.namedtuple("LSTMStateTuple", ["c", "h"])
LSTMStateTuple.__doc__ = "The TF1 LSTM state: `c` (the cell) first, then `h` (the output)."


def _check_clip(name, value):
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not value > 0:
        raise ValueError(f"`{name}` must be a positive number or None; Received: {name}={value!r}")
    return float(value)


# Keras LSTMCell options that the TF1 cell does not have, and that its TF1 step
# below does not compute; the TF1 code applied dropout with wrappers around the cell.
_KERAS_ONLY = {"dropout": 0.0, "recurrent_dropout": 0.0, "unit_forget_bias": False}


@keras.saving.register_keras_serializable(package="awd_lstm.compat")
class WeightDropLSTMCell(layers.WeightDropLSTMCell):
    """The TF1 `WeightDropLSTMCell` API over the Keras 3 weight-dropped cell.

    The cell behaves as TensorFlow 1.x's `tf.nn.rnn_cell.LSTMCell` with DropConnect
    on its kernel, in every way it is called: directly, in `keras.layers.RNN` and in
    `dynamic_rnn` below.

    - **State in TF1's forms.** A state is `LSTMStateTuple(c, h)` (or a plain
      `(c, h)` tuple), the cell first; with `state_is_tuple=False`, one tensor
      `[c, h]` concatenated on the last axis. A direct call returns
      `(output, LSTMStateTuple(c, h))` (the concatenated tensor with
      `state_is_tuple=False`); given a list, as `keras.layers.RNN` passes its
      states, it returns a list in the same order. So `keras.layers.RNN(cell,
      return_state=True)` returns `output, c, h`, and takes
      `initial_state=[c, h]`. With `num_proj`, `h` (and the output) is the
      projected output, of `num_proj` features.
    - **The mask in every call.** The TF1 cell had no training switch: its mask
      applied whenever it ran. So does this one, unless the call says
      `training=False` (`cell(x, state, training=False)`, `dynamic_rnn(...,
      training=False)`, or Keras' inference in `predict` and `evaluate`): that is
      how to evaluate without dropout. In `keras.layers.RNN` the cell gets the
      RNN layer's `training` flag, which is false unless `training=True` is passed
      or `fit` runs; `dynamic_rnn` applies the mask by default.
    - **Masks in `keras.layers.RNN` on JAX.** There Keras' loop outputs the first
      state (`c` in TF1's order) at masked steps; give sequences of several lengths
      to `dynamic_rnn(..., sequence_length=)` instead.

    Args:
        num_units: Positive integer, the number of LSTM units.
        weight_drop_kr: KEEP probability of the kernel weights, in (0, 1]; 1.0 makes
            the cell a plain LSTM cell. DropConnect applies to the whole kernel, input
            and recurrent parts alike (`input_weight_dropout = weight_dropout =
            1 - weight_drop_kr`); the projection and peephole weights are not dropped.
        use_vd: If true, the mask is kept in non-trainable variables and changes only
            when `get_vd_update_op()` is called ("manual" mode); otherwise a fresh mask
            is drawn at every time step ("step" mode, on every backend: on JAX each
            step's mask is drawn statelessly inside the loop; a `lax.scan` of your
            own over the cell calls `prepare_sequence(True)` first, as
            `keras.layers.RNN` does).
        input_size: Size of the input features; required with `use_vd=True` (the
            kept mask's shape depends on it).
        use_peepholes: Diagonal peephole connections from the cell state to the
            input, forget and output gates (weights `w_i_diag`, `w_f_diag`,
            `w_o_diag`), as in TF1.
        cell_clip: If set, the cell state is clipped to `[-cell_clip, cell_clip]`
            after each step.
        num_proj: If set, the output (and the `h` state) is projected to this size
            by a `projection_kernel` `(num_units, num_proj)`, and the recurrent
            kernel reads the projected `h`.
        proj_clip: If set (with `num_proj`), the projected output is clipped to
            `[-proj_clip, proj_clip]`.
        forget_bias: Added to the forget gate's bias, as in TF1 (here added to the
            forget block of the initial bias: the same function, and the same
            gradients; moving a TF1 checkpoint's bias here, add it to that block).
        state_is_tuple: If true (TF1's default) states are `LSTMStateTuple(c, h)`;
            if false, one tensor `[c, h]` concatenated.
        activation: Activation of the cell state; default `tanh`.
        initializer: Initializer of the kernels (and projection and peephole
            weights); default Keras' (`glorot_uniform`, `orthogonal`).
        seed: Integer seed of the masks.
        **kwargs: Other `keras.layers.LSTMCell` arguments (`name`, `dtype`,
            regularizers, constraints, ...); not `dropout` or `recurrent_dropout`,
            which the TF1 cell did not have.

    Weights are kept in Keras' layout: `kernel` `(input_size, 4 * num_units)` and
    `recurrent_kernel` `(h_size, 4 * num_units)`, gates `i, f, c, o`. TF1's `[W; U]`
    kernel is their concatenation along rows, its gates ordered `i, j, f, o`.

    Example:

    >>> cell = WeightDropLSTMCell(num_units=4, weight_drop_kr=0.5, use_vd=True, input_size=3)
    >>> len(cell.get_vd_update_op())
    2
    >>> output, state = cell(np.ones((2, 3), "float32"), cell.zero_state(2, "float32"))
    >>> type(state).__name__, tuple(state.c.shape), tuple(output.shape)
    ('LSTMStateTuple', (2, 4), (2, 4))
    >>> outputs, state = dynamic_rnn(cell, np.ones((2, 5, 3), "float32"))
    >>> tuple(outputs.shape), tuple(state.h.shape)
    ((2, 5, 4), (2, 4))
    """

    def __init__(
        self,
        num_units,
        weight_drop_kr=1.0,
        use_vd=False,
        input_size=None,
        use_peepholes=False,
        cell_clip=None,
        num_proj=None,
        proj_clip=None,
        forget_bias=1.0,
        state_is_tuple=True,
        activation=None,
        initializer=None,
        seed=None,
        **kwargs,
    ):
        num_units = check_positive_int("num_units", num_units)
        keep = check_keep_prob("weight_drop_kr", weight_drop_kr)
        if use_vd and input_size is None:
            raise ValueError(
                "`input_size` is required when use_vd=True (the kept mask's shape depends "
                "on it); Received: input_size=None"
            )
        if input_size is not None:
            input_size = check_positive_int("input_size", input_size)
        if num_proj is not None:
            num_proj = check_positive_int("num_proj", num_proj)
        cell_clip = _check_clip("cell_clip", cell_clip)
        proj_clip = _check_clip("proj_clip", proj_clip)
        if proj_clip is not None and num_proj is None:
            raise ValueError(
                f"`proj_clip` clips the projection and needs `num_proj`; "
                f"Received: proj_clip={proj_clip!r}, num_proj=None"
            )
        for name, default in _KERAS_ONLY.items():
            value = kwargs.pop(name, default)
            if value != default:
                raise ValueError(
                    f"`{name}` is an option of Keras' LSTMCell that the TF1 cell does not "
                    f"have; apply dropout to the inputs or outputs around the cell (for "
                    f"example with VariationalDropout); Received: {name}={value!r}"
                )
        kwargs.pop("implementation", None)  # Keras' LSTMCell option; one TF1 step here
        if initializer is not None:
            kwargs.setdefault("kernel_initializer", initializer)
            kwargs.setdefault("recurrent_initializer", initializer)
        forget_bias = float(forget_bias)
        if not kwargs.get("use_bias", True):
            raise ValueError(
                "TF1's LSTMCell always has a bias (forget_bias is added to it); "
                "Received: use_bias=False"
            )
        given_bias_initializer = kwargs.pop("bias_initializer", None)
        base_bias_initializer = keras.initializers.get(given_bias_initializer or "zeros")

        def bias_initializer(shape, dtype=None):
            # TF1 adds forget_bias at every step; adding it to the forget block of the
            # bias is the same function, with the same gradients.
            gates = list(ops.split(base_bias_initializer(shape, dtype=dtype), 4))  # i, f, c, o
            gates[1] = gates[1] + forget_bias
            return ops.concatenate(gates)

        super().__init__(
            num_units,
            weight_dropout=1.0 - keep,
            input_weight_dropout=1.0 - keep,
            weight_dropout_mode="manual" if use_vd else "step",
            seed=seed,
            activation=activation or "tanh",
            unit_forget_bias=False,
            bias_initializer=bias_initializer,
            **kwargs,
        )
        self.given_bias_initializer = given_bias_initializer
        self.num_units = num_units
        self.weight_drop_kr = keep
        self.use_vd = bool(use_vd)
        self.input_size = input_size
        self.use_peepholes = bool(use_peepholes)
        self.cell_clip = cell_clip
        self.num_proj = num_proj
        self.proj_clip = proj_clip
        self.forget_bias = forget_bias
        self.state_is_tuple = bool(state_is_tuple)
        h_size = num_proj or num_units
        self.output_size = h_size
        if self.state_is_tuple:
            self.state_size = LSTMStateTuple(c=num_units, h=h_size)
        else:
            self.state_size = num_units + h_size
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
        units, h_size = self.num_units, self.output_size
        # Keras' LSTMCell.build, but for a recurrent kernel that reads an `h` of
        # `num_proj` features, and TF1's projection and peepholes.
        self.kernel = self.add_weight(
            shape=(input_shape[-1], 4 * units),
            name="kernel",
            initializer=self.kernel_initializer,
            regularizer=self.kernel_regularizer,
            constraint=self.kernel_constraint,
        )
        self.recurrent_kernel = self.add_weight(
            shape=(h_size, 4 * units),
            name="recurrent_kernel",
            initializer=self.recurrent_initializer,
            regularizer=self.recurrent_regularizer,
            constraint=self.recurrent_constraint,
        )
        self.bias = None
        if self.use_bias:
            self.bias = self.add_weight(
                shape=(4 * units,),
                name="bias",
                initializer=self.bias_initializer,
                regularizer=self.bias_regularizer,
                constraint=self.bias_constraint,
            )
        self.projection_kernel = None
        if self.num_proj is not None:
            self.projection_kernel = self.add_weight(
                shape=(units, self.num_proj),
                name="projection_kernel",
                initializer=self.kernel_initializer,
            )
        self.w_i_diag = self.w_f_diag = self.w_o_diag = None
        if self.use_peepholes:
            self.w_i_diag, self.w_f_diag, self.w_o_diag = (
                self.add_weight(shape=(units,), name=name, initializer=self.kernel_initializer)
                for name in ("w_i_diag", "w_f_diag", "w_o_diag")
            )
        self.build_weight_masks()
        self.built = True

    def call(self, inputs, states, training=None):
        c_prev, h_prev, form = self._read_state(states)
        if self.input_size is not None and inputs.shape[-1] != self.input_size:
            raise ValueError(
                f"The cell was created with input_size={self.input_size} but receives "
                f"inputs with {inputs.shape[-1]} features"
            )
        self._stepped = True
        if self.drops_weights and training_flag(training):
            c, h = self.masked_step(self._tf1_step, inputs, [c_prev, h_prev])
        else:
            c, h = self._tf1_step(inputs, [c_prev, h_prev], self.kernel, self.recurrent_kernel)
        return h, self._write_state(c, h, form)

    def _tf1_step(self, inputs, states, kernel, recurrent_kernel):
        """TF1's LSTMCell step (gates in Keras' order i, f, c, o; forget_bias is in
        the bias); returns the new `(c, h)`."""
        c_prev, h_prev = states
        z = ops.matmul(inputs, kernel) + ops.matmul(h_prev, recurrent_kernel)
        if self.use_bias:
            z = z + self.bias
        z_i, z_f, z_c, z_o = ops.split(z, 4, axis=-1)
        if self.use_peepholes:
            z_i = z_i + self.w_i_diag * c_prev
            z_f = z_f + self.w_f_diag * c_prev
        gate = self.recurrent_activation
        c = gate(z_f) * c_prev + gate(z_i) * self.activation(z_c)
        if self.cell_clip is not None:
            c = ops.clip(c, -self.cell_clip, self.cell_clip)
        if self.use_peepholes:
            z_o = z_o + self.w_o_diag * c
        h = gate(z_o) * self.activation(c)
        if self.num_proj is not None:
            h = ops.matmul(h, self.projection_kernel)
            if self.proj_clip is not None:
                h = ops.clip(h, -self.proj_clip, self.proj_clip)
        return c, h

    def _read_state(self, states):
        """`(c, h, form)` from a state in one of TF1's forms; `form` says how to
        return the new state: as a list (what `keras.layers.RNN` passes), an
        `LSTMStateTuple`, or one concatenated tensor."""
        units, h_size = self.num_units, self.output_size
        if self.state_is_tuple:
            if not (isinstance(states, (list, tuple)) and len(states) == 2):
                raise ValueError(
                    "The cell's state is LSTMStateTuple(c, h) or a (c, h) pair (with "
                    "state_is_tuple=False, one tensor [c, h]); Received: "
                    f"{type(states).__name__} {_shapes(states)}"
                )
            c, h = states
            form = list if type(states) is list else LSTMStateTuple
        else:
            form = None
            if isinstance(states, (list, tuple)):
                if len(states) != 1:
                    raise ValueError(
                        "With state_is_tuple=False the cell's state is one tensor [c, h] "
                        f"of {units + h_size} features; Received: {type(states).__name__} "
                        f"{_shapes(states)}"
                    )
                form = list
                states = states[0]
            if states.shape[-1] != units + h_size:
                raise ValueError(
                    f"With state_is_tuple=False the cell's state is one tensor [c, h] of "
                    f"{units + h_size} features; Received: shape {tuple(states.shape)}"
                )
            c, h = states[:, :units], states[:, units:]
        if c.shape[-1] != units or h.shape[-1] != h_size:
            raise ValueError(
                f"The state is (c, h) in TF1's order, with c of {units} and h of "
                f"{h_size} features; Received: shapes {_shapes([c, h])}"
            )
        return c, h, form

    def _write_state(self, c, h, form):
        if self.state_is_tuple:
            return [c, h] if form is list else LSTMStateTuple(c=c, h=h)
        state = ops.concatenate([c, h], axis=-1)
        return [state] if form is list else state

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
        """An all-zero state: `LSTMStateTuple(c, h)`, or one tensor `[c, h]` with
        `state_is_tuple=False`."""
        c = ops.zeros((batch_size, self.num_units), dtype=dtype)
        h = ops.zeros((batch_size, self.output_size), dtype=dtype)
        return self._write_state(c, h, LSTMStateTuple)

    def get_initial_state(self, batch_size=None):
        # keras.layers.RNN's zero state: a list, in TF1's order.
        zeros = self.zero_state(batch_size, self.compute_dtype)
        return list(zeros) if self.state_is_tuple else [zeros]

    def get_config(self):
        config = super().get_config()
        for key in (
            "units",
            "weight_dropout",
            "input_weight_dropout",
            "weight_dropout_mode",
            "unit_forget_bias",
            "bias_initializer",
            "dropout",
            "recurrent_dropout",
        ):
            config.pop(key, None)
        config.update(
            num_units=self.num_units,
            weight_drop_kr=self.weight_drop_kr,
            use_vd=self.use_vd,
            input_size=self.input_size,
            use_peepholes=self.use_peepholes,
            cell_clip=self.cell_clip,
            num_proj=self.num_proj,
            proj_clip=self.proj_clip,
            forget_bias=self.forget_bias,
            state_is_tuple=self.state_is_tuple,
        )
        if self.given_bias_initializer is not None:
            config["bias_initializer"] = keras.initializers.serialize(
                keras.initializers.get(self.given_bias_initializer)
            )
        return config


def _shapes(states):
    if isinstance(states, (list, tuple)):
        return [tuple(getattr(s, "shape", ())) for s in states]
    return tuple(getattr(states, "shape", ()))


def dynamic_rnn(
    cell,
    inputs,
    sequence_length=None,
    initial_state=None,
    dtype=None,
    parallel_iterations=None,
    swap_memory=False,
    time_major=False,
    scope=None,
    training=None,
):
    """Runs `cell` over `inputs` like `tf.compat.v1.nn.dynamic_rnn`.

    Args:
        cell: A Keras RNN cell: `WeightDropLSTMCell` above (states in TF1's forms);
            `keras.layers.StackedRNNCells` of cells, as TF1's `MultiRNNCell` (a
            tuple with one state per cell); or any Keras cell (states in its own
            order; a Keras LSTM cell's state is given and returned as
            `LSTMStateTuple(c, h)`).
        inputs: `(batch, time, features)`, or `(time, batch, features)` with
            `time_major=True`.
        sequence_length: Optional `(batch,)` integer lengths: as in TF1, the outputs
            past a row's length are zeros and its final state is the one after its
            last step.
        initial_state: The cell's initial state (for `WeightDropLSTMCell`,
            `LSTMStateTuple(c, h)`, a `(c, h)` pair or, with
            `state_is_tuple=False`, the tensor `[c, h]`), or None for zeros.
        dtype: Accepted for compatibility; the cell's dtype is used.
        parallel_iterations, swap_memory, scope: Accepted for compatibility; Keras'
            loop has no such settings.
        time_major: Whether the inputs and outputs are time-major.
        training: Whether the masks apply. By default they do, as the TF1 cell
            applied them at every run, except inside a Keras inference call
            (`predict`, `evaluate`).

    Returns:
        `(outputs, state)`: the state in the cell's form (`LSTMStateTuple(c, h)`
        for `WeightDropLSTMCell`).
    """
    del dtype, parallel_iterations, swap_memory, scope
    if time_major:
        inputs = ops.transpose(inputs, (1, 0, 2))
    if initial_state is not None:
        initial_state = _to_keras_state(cell, initial_state)
    mask = None
    if sequence_length is not None:
        # Step numbers from the inputs themselves: a time axis of unknown length too.
        steps = ops.cumsum(ops.ones_like(inputs[..., 0], dtype="int32"), axis=1) - 1
        mask = ops.less(steps, ops.expand_dims(ops.cast(sequence_length, "int32"), 1))
    rnn = keras.layers.RNN(
        cell, return_sequences=True, return_state=True, zero_output_for_mask=True
    )
    training = training_flag(training)
    outputs, *states = rnn(inputs, initial_state=initial_state, mask=mask, training=training)
    if time_major:
        outputs = ops.transpose(outputs, (1, 0, 2))
    return outputs, _from_keras_state(cell, states)


def _to_keras_state(cell, state):
    """A state as `dynamic_rnn` takes it, as the list `keras.layers.RNN` takes."""
    if isinstance(cell, WeightDropLSTMCell):
        c, h, _ = cell._read_state(state)
        return cell._write_state(c, h, list)
    if isinstance(cell, keras.layers.StackedRNNCells):  # TF1's MultiRNNCell: one per cell
        return [_to_keras_state(c, s) for c, s in zip(cell.cells, state)]
    if isinstance(cell, keras.layers.LSTMCell) and hasattr(state, "c") and hasattr(state, "h"):
        return [state.h, state.c]  # an LSTMStateTuple (this module's or TensorFlow's)
    return list(state) if isinstance(state, (list, tuple)) else [state]


def _from_keras_state(cell, states):
    """The list of states `keras.layers.RNN` returns, as `dynamic_rnn` returns it."""
    if isinstance(cell, WeightDropLSTMCell):
        return LSTMStateTuple(*states) if cell.state_is_tuple else states[0]
    if isinstance(cell, keras.layers.StackedRNNCells):
        return tuple(
            _from_keras_state(c, s if isinstance(s, (list, tuple)) else [s])
            for c, s in zip(cell.cells, states)
        )
    if isinstance(cell, keras.layers.LSTMCell):
        return LSTMStateTuple(c=states[1], h=states[0])
    return states[0] if len(states) == 1 else states


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
            shape = [check_positive_int("input_shape", int(d)) for d in input_shape]
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
        if not training_flag(training):
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
