"""Weight-dropped LSTM: DropConnect on the recurrent (and optionally input) kernel.

Merity, Keskar & Socher (2017), "Regularizing and Optimizing LSTM Language Models",
section 2: dropping weights of the hidden-to-hidden matrix instead of activations
regularizes the recurrence without touching the LSTM kernel itself, so the fused
(cuDNN-class) implementation stays usable. The mask is applied to the weights once,
then the unmodified fused kernel runs over the whole sequence.
"""

import contextlib

import keras
from keras import ops

from awd_lstm import backend
from awd_lstm._validation import check_choice, check_rate

WEIGHT_DROPOUT_MODES = ("call", "manual", "step")


def draw_weight_mask(shape, rate, seed, dtype):
    """Draws a DropConnect mask: entries are 0 with probability `rate`, else 1/(1-rate).

    `seed` is a `keras.random.SeedGenerator` (advanced by the draw) or, on JAX, a
    key from `backend.step_seeds` (a stateless draw inside a traced loop).
    """
    # Bits and a comparison rather than keras.random.dropout: a kernel-sized mask is
    # the whole overhead of weight drop, and on PyTorch's CPU generator dropout
    # (torch.bernoulli) costs twice as much (awd_lstm.backend draws the bits).
    keep = backend.keep_mask(shape, rate, seed)
    return ops.cast(keep, dtype) * ops.cast(1.0 / (1.0 - rate), dtype)


@keras.saving.register_keras_serializable(package="awd_lstm")
class WeightDropLSTMCell(keras.layers.LSTMCell):
    """LSTM cell with DropConnect on its kernels (weight drop).

    Each kernel `K` of rate `p > 0` is replaced by `K * M / (1 - p)` with
    `M ~ Bernoulli(1 - p)` drawn element-wise, in training only.

    Args:
        units: Positive integer, dimensionality of the output space.
        weight_dropout: Float in [0, 1). DropConnect rate of the recurrent kernel
            `U` (paper: `wdrop`).
        input_weight_dropout: Float in [0, 1). DropConnect rate of the input kernel
            `W`.
        weight_dropout_mode: When new masks are drawn.
            `"call"`: one mask per sequence, shared by every time step and batch
            row; `keras.layers.RNN` draws it before its loop and clears it after,
            a hand-written loop calls `reset_weight_masks()` between sequences.
            `"manual"`: the masks live in non-trainable variables (`kernel_mask`,
            `recurrent_kernel_mask`) and change only when
            `resample_weight_masks()` is called.
            `"step"`: a fresh mask at every call of the cell, that is at every time
            step, in `keras.layers.RNN` and in a Python loop on every backend (on
            JAX inside `lax.scan` and `jit` too: see `prepare_sequence`).
        seed: Integer seed of the cell's `SeedGenerator` (weight masks and the
            `dropout`/`recurrent_dropout` masks of `keras.layers.LSTMCell`).
        **kwargs: Every other argument of `keras.layers.LSTMCell`.

    Call arguments:
        inputs: A 2D tensor `(batch, features)`.
        states: `[h, c]`, each `(batch, units)`.
        training: Python boolean; weight drop is applied only when true.

    Example:

    >>> cell = WeightDropLSTMCell(8, weight_dropout=0.5, seed=1)
    >>> rnn = keras.layers.RNN(cell, return_sequences=True)
    >>> tuple(rnn(np.ones((2, 5, 3)), training=True).shape)
    (2, 5, 8)
    """

    def __init__(
        self,
        units,
        weight_dropout=0.0,
        input_weight_dropout=0.0,
        weight_dropout_mode="call",
        seed=None,
        **kwargs,
    ):
        weight_dropout = check_rate("weight_dropout", weight_dropout)
        input_weight_dropout = check_rate("input_weight_dropout", input_weight_dropout)
        check_choice("weight_dropout_mode", weight_dropout_mode, WEIGHT_DROPOUT_MODES)
        super().__init__(units, seed=seed, **kwargs)
        self.weight_dropout = weight_dropout
        self.input_weight_dropout = input_weight_dropout
        self.weight_dropout_mode = weight_dropout_mode
        self.kernel_mask = None
        self.recurrent_kernel_mask = None
        self._stepped = False
        self.reset_weight_masks()

    @property
    def drops_weights(self):
        """Whether any kernel is weight-dropped."""
        return self.weight_dropout > 0 or self.input_weight_dropout > 0

    def build(self, input_shape):
        super().build(input_shape)
        self.build_weight_masks()

    def build_weight_masks(self):
        """Creates the mask variables of "manual" mode, once the kernels exist."""
        if self.weight_dropout_mode != "manual":
            return
        if self.input_weight_dropout > 0:
            self.kernel_mask = self._add_mask_weight(
                "kernel_mask", self.kernel.shape, self.input_weight_dropout
            )
        if self.weight_dropout > 0:
            self.recurrent_kernel_mask = self._add_mask_weight(
                "recurrent_kernel_mask", self.recurrent_kernel.shape, self.weight_dropout
            )

    def _add_mask_weight(self, name, shape, rate):
        def initializer(shape, dtype=None):
            return draw_weight_mask(shape, rate, self.seed_generator, dtype)

        return self.add_weight(shape=shape, name=name, initializer=initializer, trainable=False)

    # -- masks -------------------------------------------------------------------

    def _draw_masks(self, seeds=None):
        """New masks from the cell's seed generator, or from `seeds` (one for the
        input kernel's mask, one for the recurrent kernel's)."""
        dtype = self.compute_dtype
        kernel_seed, recurrent_seed = seeds or (self.seed_generator,) * 2
        kernel_mask = recurrent_mask = None
        if self.input_weight_dropout > 0:
            kernel_mask = draw_weight_mask(
                self.kernel.shape, self.input_weight_dropout, kernel_seed, dtype
            )
        if self.weight_dropout > 0:
            recurrent_mask = draw_weight_mask(
                self.recurrent_kernel.shape, self.weight_dropout, recurrent_seed, dtype
            )
        return kernel_mask, recurrent_mask

    def _current_masks(self, inputs=None, states=None):
        """The masks of the present step under the cell's mode (`inputs` and
        `states`, the step's, seed "step" mode's masks inside a traced JAX loop)."""
        if self.weight_dropout_mode == "manual":
            return self.kernel_mask, self.recurrent_kernel_mask
        if self.weight_dropout_mode == "step":
            if self._sequence_seed is not None and inputs is not None:
                seeds = backend.step_seeds(self._sequence_seed, [inputs, *states])
                return self._draw_masks(seeds)
            backend.check_seed_generator_can_advance(inputs)
            return self._draw_masks()
        if self._call_masks is None:
            self._call_masks = self._draw_masks()
        return self._call_masks

    def step_kernels(self, inputs, states):
        """`(kernel, recurrent_kernel)` with the masks of one training step applied:
        those fixed for the sequence by `prepare_sequence`, else the present masks
        under the cell's mode."""
        if self._sequence_kernels is not None:
            return self._sequence_kernels
        return self.dropped_kernels(self._current_masks(inputs, states))

    def dropped_kernels(self, masks=None):
        """Returns `(kernel, recurrent_kernel)` with the weight masks applied.

        Args:
            masks: `(kernel_mask, recurrent_kernel_mask)`, either may be `None`
                (that kernel is used unchanged). Defaults to the masks of the
                present call under the cell's mode.
        """
        if masks is None:
            masks = self._current_masks()
        kernel_mask, recurrent_mask = masks
        return (
            _apply_mask(self.kernel, kernel_mask, self.compute_dtype),
            _apply_mask(self.recurrent_kernel, recurrent_mask, self.compute_dtype),
        )

    def reset_weight_masks(self):
        """Forgets the weight masks of the present sequence ("call" mode).

        The next training call draws new ones. `keras.layers.RNN` and
        `WeightDropLSTM` do this after every call; a hand-written loop over the
        cell calls it between sequences, as `reset_dropout_mask()`.
        """
        self._call_masks = None
        self._sequence_kernels = None
        self._sequence_seed = None
        self._sequence_prepared = False

    def resample_weight_masks(self):
        """Draws new masks into the mask variables ("manual" mode).

        Returns:
            The list of the new mask values, input kernel's first.
        """
        check_can_resample(self, "cell")
        new_masks = []
        for variable, rate in (
            (self.kernel_mask, self.input_weight_dropout),
            (self.recurrent_kernel_mask, self.weight_dropout),
        ):
            if variable is not None:
                mask = draw_weight_mask(variable.shape, rate, self.seed_generator, variable.dtype)
                new_masks.append(variable.assign(mask))
        return new_masks

    def prepare_sequence(self, training):
        """Fixes the kernels of one sequence before a loop over its steps.

        Draws the "call"-mode masks (or reads the "manual" ones) and applies them
        once, so that the loop body neither draws random numbers nor repeats the
        element-wise product at every step. In "step" mode on JAX it draws the
        sequence's seed, from which every step's masks are drawn statelessly (see
        `awd_lstm.backend.jax.step_seeds`), so that the loop can run inside
        `lax.scan` or `jit`; call it before a loop of your own over the cell there,
        and `reset_weight_masks()` after. Nothing to fix when not training.
        """
        self.reset_weight_masks()
        self._sequence_prepared = True
        if not (training and self.drops_weights):
            return
        if self.weight_dropout_mode != "step":
            self._sequence_kernels = self.dropped_kernels()
        elif backend.step_masks_from_sequence_seed():
            self._sequence_seed = self.seed_generator.next()

    # `keras.layers.RNN` calls these two hooks of `DropoutRNNCell` right before and
    # after its loop (to keep the loop body stateless, which JAX's scan requires).
    # They are the one place where a cell inside a plain `keras.layers.RNN` can fix
    # its weight masks for the whole sequence.
    def get_recurrent_dropout_mask(self, step_input):
        if not self._sequence_prepared:
            self.prepare_sequence(training=backend.training_of_current_call())
        return super().get_recurrent_dropout_mask(step_input)

    def reset_recurrent_dropout_mask(self):
        super().reset_recurrent_dropout_mask()
        self.reset_weight_masks()

    @contextlib.contextmanager
    def kernels_replaced(self, kernel, recurrent_kernel):
        """Within the block, `self.kernel` and `self.recurrent_kernel` are the given
        tensors, so that `LSTMCell.call` and the fused backend LSTM, which read
        those attributes, run on the dropped weights."""
        saved = (self.kernel, self.recurrent_kernel)
        # object.__setattr__ bypasses Keras' variable tracking: these tensors are
        # transient views of the tracked variables, not new weights.
        object.__setattr__(self, "kernel", kernel)
        object.__setattr__(self, "recurrent_kernel", recurrent_kernel)
        try:
            yield
        finally:
            object.__setattr__(self, "kernel", saved[0])
            object.__setattr__(self, "recurrent_kernel", saved[1])

    def masked_step(self, step, inputs, states):
        """Returns `step(inputs, states, kernel, recurrent_kernel)` computed with this
        training step's dropped kernels.

        In "step" mode inside a traced JAX loop (see `prepare_sequence`) the masks
        are drawn inside `jax.checkpoint`: the backward pass draws them again from
        their key instead of keeping every step's masked kernels, so training
        memory does not grow with one kernel per time step.
        """
        if self._sequence_seed is None:
            return step(inputs, states, *self.step_kernels(inputs, states))

        def drawn_step(inputs, states):
            return step(inputs, states, *self.step_kernels(inputs, states))

        return backend.rematerialized(drawn_step)(inputs, states)

    def call(self, inputs, states, training=False):
        self._stepped = True
        if not (training and self.drops_weights):
            return super().call(inputs, states, training=training)

        def lstm_step(inputs, states, kernel, recurrent_kernel):
            with self.kernels_replaced(kernel, recurrent_kernel):
                return keras.layers.LSTMCell.call(self, inputs, states, training=training)

        return self.masked_step(lstm_step, inputs, states)

    def get_config(self):
        return {**super().get_config(), **_weight_drop_config(self)}


def _weight_drop_config(layer):
    return {
        "weight_dropout": layer.weight_dropout,
        "input_weight_dropout": layer.input_weight_dropout,
        "weight_dropout_mode": layer.weight_dropout_mode,
    }


def check_can_resample(layer, kind):
    """Raises unless `layer.resample_weight_masks()` can run: "manual" mode and built
    (`kind`: "cell" or "layer", for the message)."""
    if layer.weight_dropout_mode != "manual":
        raise ValueError(
            "resample_weight_masks() needs weight_dropout_mode='manual'; "
            f"Received: weight_dropout_mode={layer.weight_dropout_mode!r}"
        )
    if not layer.built:
        raise ValueError(
            f"resample_weight_masks() needs a built {kind}: call it once on "
            "inputs first, so that the mask variables exist."
        )


def training_flag(training):
    """`training` as a bool: an explicit value as given (NumPy and backend booleans
    too), None as the `training` flag of the Keras layer call under way (inference
    inside `predict` and `evaluate`, training inside `fit`), True outside any call."""
    if training is None:
        return backend.training_of_current_call()
    return bool(training)


def is_activation(function, name, *modules):
    """Whether `function` is the activation `name` of Keras (or of one of `modules`)."""
    return any(function is getattr(m, name) for m in (keras.activations, keras.ops, *modules))


def _apply_mask(kernel, mask, dtype):
    if mask is None:
        return kernel
    return ops.multiply(ops.cast(kernel, dtype), ops.cast(mask, dtype))


# The arguments of `keras.layers.LSTM` that configure its cell.
CELL_ARGUMENTS = (
    "activation",
    "recurrent_activation",
    "use_bias",
    "kernel_initializer",
    "recurrent_initializer",
    "bias_initializer",
    "unit_forget_bias",
    "kernel_regularizer",
    "recurrent_regularizer",
    "bias_regularizer",
    "kernel_constraint",
    "recurrent_constraint",
    "bias_constraint",
    "dropout",
    "recurrent_dropout",
)


@keras.saving.register_keras_serializable(package="awd_lstm")
class WeightDropLSTM(keras.layers.LSTM):
    """LSTM layer with weight drop that keeps the fused backend kernel.

    The masked kernels are computed once per call and handed to Keras' fused
    backend LSTM (the function
    `keras.layers.LSTM` uses: cuDNN on GPU for TensorFlow, JAX and PyTorch), so
    weight drop costs one element-wise product per call. Where no fused kernel runs
    (TensorFlow and JAX on CPU), the layer's own loop projects the inputs of all time
    steps with one matrix product before the recurrence, so each step multiplies only
    the hidden state (`"projected"`). With a mask or `recurrent_dropout`, Keras' step
    loop runs with the same dropped kernels (`"step"`). After a call,
    `last_call_implementation` says which ran: `"fused"`, `"projected"`, `"padded"`
    (see `length` below) or `"step"`.

    With both rates 0 the layer computes what `keras.layers.LSTM` does (to float
    rounding: the projected loop adds the bias before the recurrent product).

    Args:
        units: Positive integer, dimensionality of the output space.
        weight_dropout: Float in [0, 1). DropConnect rate of the recurrent kernel
            (paper: `wdrop`, 0.5 in the reference language model).
        input_weight_dropout: Float in [0, 1). DropConnect rate of the input kernel.
        weight_dropout_mode: `"call"` (default): one mask per call, shared by every
            time step and batch row, as in the paper. `"manual"`: the masks live in
            non-trainable variables and change only on `resample_weight_masks()`.
            (A fresh mask per time step needs the cell: `keras.layers.RNN(
            WeightDropLSTMCell(..., weight_dropout_mode="step"))`.)
        seed: Integer seed for the layer's random masks.
        **kwargs: Every argument of `keras.layers.LSTM` (`return_sequences`,
            `return_state`, `stateful`, `go_backwards`, `dropout`, `use_cudnn`,
            initializers, ...).

    Call arguments:
        sequences: A 3D tensor `(batch, timesteps, features)`.
        initial_state: Optional list `[h, c]`.
        mask: Optional boolean tensor `(batch, timesteps)`.
        training: Python boolean; weight drop is applied only when true.
        length: JAX only (where `pads_segments()`): an integer scalar; the sequences
            are padded along time to a multiple of `CHUNK_STEPS` (5) and only their
            first `length` steps count: the outputs are zero after them, the states
            those after step `length`. One compiled function then serves every length
            (`"padded"` implementation). The language model's `train_on_batch` uses it.

    Example:

    >>> layer = WeightDropLSTM(8, weight_dropout=0.5, return_sequences=True, seed=1)
    >>> tuple(layer(np.ones((2, 5, 3)), training=True).shape)
    (2, 5, 8)
    >>> layer.last_call_implementation in ("fused", "projected", "step")
    True
    """

    def __init__(
        self,
        units,
        weight_dropout=0.0,
        input_weight_dropout=0.0,
        weight_dropout_mode="call",
        seed=None,
        use_cudnn="auto",
        **kwargs,
    ):
        check_choice("weight_dropout_mode", weight_dropout_mode, ("call", "manual"))
        check_choice("use_cudnn", use_cudnn, ("auto", True, False))
        # Built as Keras builds its LSTM, GRU and ConvLSTM layers: the cell first, then
        # `keras.layers.RNN.__init__` with it (`LSTM.__init__` would make a plain
        # `LSTMCell`); the rest of `LSTM.__init__` follows.
        cell_kwargs = {name: kwargs.pop(name) for name in CELL_ARGUMENTS if name in kwargs}
        cell = WeightDropLSTMCell(
            units,
            weight_dropout=weight_dropout,
            input_weight_dropout=input_weight_dropout,
            weight_dropout_mode=weight_dropout_mode,
            seed=seed,
            dtype=kwargs.get("dtype"),
            trainable=kwargs.get("trainable", True),
            name="lstm_cell",
            implementation=kwargs.pop("implementation", 2),
            **cell_kwargs,
        )
        keras.layers.RNN.__init__(self, cell, **kwargs)
        self.input_spec = keras.InputSpec(ndim=3)
        self.use_cudnn = use_cudnn
        if (
            use_cudnn in ("auto", True)
            and self._standard()
            and not self.unroll
            and cell.use_bias
            and backend.fused_lstm_blocks_jit()
        ):
            self.supports_jit = False  # as keras.layers.LSTM: cuDNN is not XLA
        self.last_call_implementation = None

    @property
    def weight_dropout(self):
        return self.cell.weight_dropout

    @property
    def input_weight_dropout(self):
        return self.cell.input_weight_dropout

    @property
    def weight_dropout_mode(self):
        return self.cell.weight_dropout_mode

    def resample_weight_masks(self):
        """Draws new weight masks ("manual" mode); see `WeightDropLSTMCell`."""
        return self.cell.resample_weight_masks()

    def call(self, sequences, initial_state=None, mask=None, training=False, length=None):
        if length is not None and not self.pads_segments():
            raise ValueError(
                "`length` (padded sequences) needs the JAX backend on a device without "
                "cuDNN and a layer that can take them (see `pads_segments`)"
            )
        if length is not None and mask is not None:
            raise ValueError("pass either `length` or `mask`, not both")
        self.cell.prepare_sequence(bool(training))
        self._padded_length = length
        try:
            return super().call(
                sequences, initial_state=initial_state, mask=mask, training=training
            )
        finally:
            self._padded_length = None
            self.cell.reset_weight_masks()

    def pads_segments(self):
        """Whether calls can take padded sequences with a `length` (JAX on a device
        without cuDNN; the standard activations, a bias, all outputs, forwards, no
        recurrent dropout and not `unroll`)."""
        return (
            backend.runs_padded_segments()
            and self._can_hoist(None)
            and self._standard()
            and self.cell.use_bias
            and self.return_sequences
            and not self.go_backwards
            and not self.unroll
        )

    def inner_loop(self, sequences, initial_state, mask, training=False):
        kernels = self.cell._sequence_kernels
        replaced = self.cell.kernels_replaced(*kernels) if kernels else contextlib.nullcontext()
        # The step loop calls the cell; the fused backend LSTM does not.
        self.cell._stepped = False
        implementation = None
        with replaced:
            if self._can_hoist(mask):
                result, implementation = self._fused_or_hoisted(sequences, initial_state, training)
            else:
                result = super().inner_loop(sequences, initial_state, mask, training=training)
        if implementation is None:
            implementation = "step" if self.cell._stepped else "fused"
        self.last_call_implementation = implementation
        return result

    def _standard(self, *modules):
        """Whether the cell has the activations of the standard LSTM (tanh, sigmoid:
        Keras', or those of `modules`)."""
        cell = self.cell
        return is_activation(cell.activation, "tanh", *modules) and is_activation(
            cell.recurrent_activation, "sigmoid", *modules
        )

    def _can_hoist(self, mask):
        # What the projected loop below computes: no mask, no recurrent dropout, a
        # cell that is an LSTMCell (a subclass may change its step).
        return (
            mask is None
            and not self.cell.recurrent_dropout
            and self.use_cudnn in ("auto", False)
            and type(self.cell).call is WeightDropLSTMCell.call
        )

    def _fused_or_hoisted(self, sequences, initial_state, training):
        """The backend's fused LSTM where it runs (cuDNN; PyTorch's CPU kernel), else a
        loop that computes the input projection of every time step as one matrix
        product before the recurrence, leaving only `h @ recurrent_kernel` per step."""
        cell = self.cell
        if training and cell.dropout:
            # Keras' input dropout, as its fused path applies it: one mask per call.
            dp_mask = ops.expand_dims(cell.get_dropout_mask(sequences[:, 0, :]), axis=1)
            sequences = sequences * ops.broadcast_to(dp_mask, ops.shape(sequences))
        h0, c0 = initial_state
        length = getattr(self, "_padded_length", None)
        if length is not None:
            outputs, h, c = backend.padded_recurrence()(
                ops.transpose(sequences, (1, 0, 2)),
                ops.cast(cell.kernel, sequences.dtype),
                ops.cast(cell.bias, sequences.dtype),
                ops.cast(cell.recurrent_kernel, sequences.dtype),
                h0,
                c0,
                length,
            )
            return (h, ops.transpose(outputs, (1, 0, 2)), [h, c]), "padded"
        if (
            self.use_cudnn == "auto"
            and self._standard(*backend.activation_modules())
            and not self.unroll
            and cell.use_bias
        ):
            native = backend.native_lstm(
                sequences,
                h0,
                c0,
                cell.kernel,
                cell.recurrent_kernel,
                cell.bias,
                self.go_backwards,
                self.return_sequences,
            )
            if native is not None:
                return native, "fused"
        if self.use_cudnn == "auto":
            try:
                fused = backend.fused_lstm(
                    sequences,
                    h0,
                    c0,
                    None,
                    kernel=cell.kernel,
                    recurrent_kernel=cell.recurrent_kernel,
                    bias=cell.bias,
                    activation=cell.activation,
                    recurrent_activation=cell.recurrent_activation,
                    return_sequences=self.return_sequences,
                    go_backwards=self.go_backwards,
                    unroll=self.unroll,
                )
                if backend.fused_lstm_blocks_jit():
                    self.supports_jit = False  # as keras.layers.LSTM: cuDNN is not XLA
                return fused, "fused"
            except NotImplementedError:
                pass
        recurrence = backend.recurrence_with_gradient() if training and self._standard() else None
        if recurrence is not None and not self.unroll:
            # Time-major (the inputs, narrower than their projection, are transposed),
            # with the hand-written gradient (`backend.recurrence_with_gradient`): one
            # `dU` product after the backward loop instead of one per step.
            sequences = ops.transpose(sequences, (1, 0, 2))
            if self.go_backwards:
                sequences = ops.flip(sequences, axis=0)
            outputs, h, c = recurrence(
                self._project(sequences), h0, c0, ops.cast(cell.recurrent_kernel, sequences.dtype)
            )
            outputs = ops.transpose(outputs, (1, 0, 2))
            if not self.return_sequences:
                outputs = ops.expand_dims(h, 1)
            return (h, outputs, [h, c]), "projected"
        projected = self._project(sequences)
        recurrent_kernel = ops.cast(cell.recurrent_kernel, sequences.dtype)
        activation, recurrent_activation = cell.activation, cell.recurrent_activation

        def step(z_x, states):
            h, c = states
            z = z_x + ops.matmul(h, recurrent_kernel)
            z_i, z_f, z_c, z_o = ops.split(z, 4, axis=-1)
            c = recurrent_activation(z_f) * c + recurrent_activation(z_i) * activation(z_c)
            h = recurrent_activation(z_o) * activation(c)
            return h, [h, c]

        result = backend.backend_rnn(
            step,
            projected,
            [h0, c0],
            go_backwards=self.go_backwards,
            unroll=self.unroll,
            input_length=sequences.shape[1],
            zero_output_for_mask=self.zero_output_for_mask,
            return_all_outputs=self.return_sequences,
        )
        return result, "projected"

    def _project(self, sequences):
        """`sequences @ kernel + bias` at every time step, one matrix product."""
        cell = self.cell
        projected = ops.matmul(sequences, ops.cast(cell.kernel, sequences.dtype))
        if cell.use_bias:
            projected = projected + ops.cast(cell.bias, sequences.dtype)
        return projected

    def get_config(self):
        return {**super().get_config(), **_weight_drop_config(self)}
