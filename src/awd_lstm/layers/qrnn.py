"""Quasi-recurrent layer (Bradbury, Merity, Xiong & Socher 2017) with weight drop.

A QRNN layer computes its gates for every time step at once, with one matrix product
over the inputs of a window of `window` steps (the step's input `x_t`, and with
`window=2` also the previous one, `x_{t-1}`):

    [Z, F, O] = [x_t, x_{t-1}] W + b          (window 2; window 1: x_t W + b)
    z = tanh(Z),  f = sigmoid(F),  o = sigmoid(O)

and then "fo-pooling", the only recurrence, element-wise:

    c_t = f_t * c_{t-1} + (1 - f_t) * z_t
    h_t = o_t * c_t                           (h_t = c_t without the output gate)

AWD-QRNN (Merity et al. 2017's reference code, `--model QRNN`) regularizes it with
DropConnect on the gate weights `W`, one mask per call, as `WeightDropLSTM` does on
its recurrent kernel. Zoneout (Krueger et al. 2017, the QRNN paper's section 2.1)
sets each forget gate to 1 with probability `zoneout` in training, so that the cell
keeps its value there; at inference it is the identity.

The pooling is the linear recurrence `c_t = a_t c_{t-1} + b_t`, which
`linear_recurrence` computes either step by step (a loop of element-wise
operations) or with an associative scan (`keras.ops.associative_scan`, `log2(T)`
levels of element-wise operations over the whole sequence). Its gradient is the
same recurrence run backward in time, written once for both.
"""

import keras
from keras import ops

from awd_lstm import backend
from awd_lstm._validation import check_choice, check_positive_int, check_rate
from awd_lstm.layers import weight_drop
from awd_lstm.layers.weight_drop import training_flag

POOLINGS = ("auto", "sequential", "parallel")


def _sequential_scan(a, b, c0):
    """`c_t = a_t c_{t-1} + b_t` over the time-major `a`, `b` (`(time, batch, n)`) from
    `c0`: every `c_t`, `(time, batch, n)`, one step at a time."""
    n = a.shape[-1]

    def step(inputs, states):
        c = inputs[..., :n] * states[0] + inputs[..., n:]
        return c, [c]

    # One input tensor: Keras' TensorFlow loop reads the number of steps from it when
    # the time axis is not static.
    _, cells, _ = backend.backend_rnn(
        step, ops.concatenate([a, b], axis=-1), [c0], time_major=True, input_length=a.shape[0]
    )
    return cells


def _parallel_scan(a, b, c0):
    """What `_sequential_scan` computes, with an associative scan over time: the pairs
    `(a, b)` compose as `(a1, b1) then (a2, b2) = (a1 a2, a2 b1 + b2)`, and `c0`
    enters through the first step's `b`."""
    first = b[:1] + a[:1] * c0[None]
    b = ops.concatenate([first, b[1:]], axis=0)

    def compose(earlier, later):
        (a1, b1), (a2, b2) = earlier, later
        return a1 * a2, a2 * b1 + b2

    _, cells = backend.associative_scan(compose, (a, b), axis=0)
    return cells


def linear_recurrence(a, b, c0, parallel=False):
    """`c_t = a_t * c_{t-1} + b_t` for `t = 1..T`, element-wise, from `c0`.

    Args:
        a, b: Time-major tensors `(time, batch, n)`.
        c0: The state before the first step, `(batch, n)`.
        parallel: Compute it with an associative scan (True; where the number of
            steps is known when it is traced, else step by step) or step by step.

    Returns:
        Every `c_t`, `(time, batch, n)`.

    The gradient is hand-written, once for both ways: with `g_t` the gradient at
    `c_t` (the upstream gradient plus `a_{t+1} g_{t+1}`, the same recurrence run
    backward in time, computed the same way as the forward pass), `da_t = g_t
    c_{t-1}`, `db_t = g_t` and `dc0 = a_1 g_1`.
    """
    # Keras' associative scan unrolls its levels from the static number of steps: a
    # trace whose time axis is unknown (TensorFlow's shape-generic training steps)
    # runs the loop instead.
    scan = _parallel_scan if parallel and a.shape[0] is not None else _sequential_scan

    @ops.custom_gradient
    def recurrence(a, b, c0):
        cells = scan(a, b, c0)

        def grad(*args, upstream=None):
            # TensorFlow and JAX pass the upstream gradient alone, PyTorch after the
            # inputs (see keras.ops.custom_gradient).
            if upstream is None:
                (upstream,) = args
            a_next = ops.concatenate([a[1:], ops.zeros_like(a[:1])], axis=0)
            reversed_grads = scan(
                ops.flip(a_next, axis=0), ops.flip(upstream, axis=0), ops.zeros_like(c0)
            )
            g = ops.flip(reversed_grads, axis=0)
            c_prev = ops.concatenate([c0[None], cells[:-1]], axis=0)
            return g * c_prev, g, a[0] * g[0]

        return cells, grad

    return recurrence(a, b, c0)


@keras.saving.register_keras_serializable(package="awd_lstm")
class QRNN(keras.layers.Layer):
    """Quasi-recurrent layer with fo-pooling, weight drop and zoneout (AWD-QRNN).

    The weights are `kernel`, `(window * D, gates * units)` (rows: the step's input,
    then with `window=2` the previous step's, as the reference's layer concatenates
    `[x_t, x_{t-1}]`; columns: `Z`, `F`, then `O` with the output gate) and `bias`
    `(gates * units,)`, `gates` 3 with the output gate and 2 without. (The
    reference's layer, salesforce/pytorch-qrnn, writes the pooling `c_t = F_t z_t +
    (1 - F_t) c_{t-1}`: its `F` is `1 - f`, so its weights convert with the `F`
    columns negated. Its zoneout scales `F` by `1 - zoneout` at inference; here
    zoneout is the identity there, as in the QRNN paper.)

    The state carried from one call to the next is `[x_last, c]`: the last input
    step (what the next call's first step sees as `x_{t-1}`; carried with
    `window=1` too, where nothing reads it) and the cell. It is what
    `return_state` returns after the output, what `initial_state` sets (zeros by
    default), and what `stateful=True` keeps in the layer between calls.

    Args:
        units: Positive integer, dimensionality of the output space.
        window: 1 or 2, the input steps each gate sees.
        output_gate: Whether `h = o * c` (True, "fo-pooling") or `h = c` ("f-pooling").
        weight_dropout: Float in [0, 1). DropConnect rate of `kernel` (the
            reference's `wdrop` on its QRNN layers).
        weight_dropout_mode: `"call"` (one mask per call, shared by every step and
            row) or `"manual"` (the mask lives in the non-trainable variable
            `kernel_mask` and changes only on `resample_weight_masks()`).
        zoneout: Float in [0, 1). In training, each forget gate is set to 1 with
            this probability (per step, row and unit); the identity at inference.
        pooling: `"sequential"` (a step loop), `"parallel"` (an associative scan) or
            `"auto"` (the faster on this backend and device,
            `backend.parallel_pooling()`). Both compute the same numbers up to float
            rounding.
        seed: Integer seed of the weight masks and zoneout.
        return_sequences: Whether to return the output of every step (else the last).
        return_state: Whether to return the final `[x_last, c]` after the output.
        stateful: Whether the final state of a call is the initial state of the next
            (a fixed batch size); `reset_state()` zeroes it.
        kernel_initializer, bias_initializer: Initializers of the weights.
        kernel_regularizer, bias_regularizer: Their regularizers.
        **kwargs: Base layer arguments (`name`, `dtype`, ...).

    Call arguments:
        sequences: A 3D tensor `(batch, timesteps, features)`.
        initial_state: Optional list `[x_last, c]`, `(batch, features)` and
            `(batch, units)`.
        training: Python boolean; weight drop and zoneout apply only when true.

    Example:

    >>> layer = QRNN(8, window=2, weight_dropout=0.5, return_sequences=True,
    ...              return_state=True, seed=1)
    >>> outputs, x_last, c = layer(np.ones((2, 5, 3)), training=True)
    >>> tuple(outputs.shape), tuple(x_last.shape), tuple(c.shape)
    ((2, 5, 8), (2, 3), (2, 8))
    """

    def __init__(
        self,
        units,
        window=1,
        output_gate=True,
        weight_dropout=0.0,
        weight_dropout_mode="call",
        zoneout=0.0,
        pooling="auto",
        seed=None,
        return_sequences=False,
        return_state=False,
        stateful=False,
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
        kernel_regularizer=None,
        bias_regularizer=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.units = check_positive_int("units", units)
        if isinstance(window, bool) or window not in (1, 2):
            raise ValueError(f"`window` must be 1 or 2; Received: window={window!r}")
        self.window = window
        if not isinstance(output_gate, bool):
            raise ValueError(f"`output_gate` must be True or False; Received: {output_gate!r}")
        self.output_gate = output_gate
        self.weight_dropout = check_rate("weight_dropout", weight_dropout)
        check_choice("weight_dropout_mode", weight_dropout_mode, ("call", "manual"))
        self.weight_dropout_mode = weight_dropout_mode
        self.zoneout = check_rate("zoneout", zoneout)
        check_choice("pooling", pooling, POOLINGS)
        self.pooling = pooling
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise ValueError(f"`seed` must be an integer or None; Received: seed={seed!r}")
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.return_sequences = bool(return_sequences)
        self.return_state = bool(return_state)
        self.stateful = bool(stateful)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)
        self.bias_regularizer = keras.regularizers.get(bias_regularizer)
        self.gates = 3 if output_gate else 2
        self.kernel_mask = None
        self.states = None
        self.input_spec = keras.InputSpec(ndim=3)

    def build(self, input_shape):
        if self.built:
            # As Keras' RNN and Embedding layers: a deserialized model builds the
            # layers that its config already built (an encoder inside a classifier).
            return
        batch, _, features = input_shape
        if features is None:
            raise ValueError("QRNN needs the feature dimension of its inputs to be known")
        self.kernel = self.add_weight(
            shape=(self.window * features, self.gates * self.units),
            initializer=self.kernel_initializer,
            regularizer=self.kernel_regularizer,
            name="kernel",
        )
        self.bias = self.add_weight(
            shape=(self.gates * self.units,),
            initializer=self.bias_initializer,
            regularizer=self.bias_regularizer,
            name="bias",
        )
        if self.weight_dropout_mode == "manual" and self.weight_dropout > 0:

            def initializer(shape, dtype=None):
                return weight_drop.draw_weight_mask(
                    shape, self.weight_dropout, self.seed_generator, dtype
                )

            self.kernel_mask = self.add_weight(
                shape=self.kernel.shape,
                initializer=initializer,
                trainable=False,
                name="kernel_mask",
            )
        if self.stateful:
            if batch is None:
                raise ValueError(
                    "a stateful QRNN needs a fixed batch size: give the inputs' batch "
                    "dimension (keras.Input(batch_size=...))"
                )
            self.states = [
                self.add_weight(shape=shape, initializer="zeros", trainable=False, name=name)
                for shape, name in (((batch, features), "x_last"), ((batch, self.units), "c"))
            ]

    # -- weight drop -----------------------------------------------------------------

    def resample_weight_masks(self):
        """Draws a new kernel mask ("manual" mode); returns it in a list."""
        weight_drop.check_can_resample(self, "layer")
        if self.kernel_mask is None:
            return []
        mask = weight_drop.draw_weight_mask(
            self.kernel_mask.shape, self.weight_dropout, self.seed_generator, self.kernel_mask.dtype
        )
        self.kernel_mask.assign(mask)
        return [self.kernel_mask]

    def call_kernel(self, training):
        """The kernel of one call: weight-dropped in training (a new mask per call in
        "call" mode, the mask variable in "manual" mode)."""
        kernel = ops.cast(self.kernel, self.compute_dtype)
        if not training or self.weight_dropout == 0:
            return kernel
        if self.kernel_mask is not None:
            mask = self.kernel_mask
        else:
            mask = weight_drop.draw_weight_mask(
                self.kernel.shape, self.weight_dropout, self.seed_generator, self.compute_dtype
            )
        return kernel * ops.cast(mask, self.compute_dtype)

    # -- the layer -----------------------------------------------------------------

    def reset_state(self):
        """Zeroes the carried state of a stateful layer."""
        for variable in self.states or []:
            variable.assign(ops.zeros(variable.shape, dtype=variable.dtype))

    def uses_parallel_pooling(self):
        """Whether calls pool with the associative scan (`pooling`, "auto": the
        backend's faster way)."""
        if self.pooling == "auto":
            return backend.parallel_pooling()
        return self.pooling == "parallel"

    def pads_segments(self):
        """Whether calls take padded sequences with a `length` (see
        `WeightDropLSTM.pads_segments`): on JAX without cuDNN, returning all outputs.
        The steps after `length` keep the cell (their forget gates set to 1), their
        outputs are zero and `x_last` is step `length`'s input."""
        return backend.runs_padded_segments() and self.return_sequences

    def call(self, sequences, initial_state=None, mask=None, training=False, length=None):
        if mask is not None:
            raise ValueError(
                "QRNN does not support masks: pad the sequences after their ends and "
                "read each one's outputs up to its length"
            )
        if length is not None and not self.pads_segments():
            raise ValueError(
                "`length` (padded sequences) needs the JAX backend on a device without "
                "cuDNN and return_sequences=True (see `pads_segments`)"
            )
        training = training_flag(training)
        dtype = self.compute_dtype
        sequences = ops.cast(sequences, dtype)
        batch = ops.shape(sequences)[0]
        if initial_state is not None:
            x_last, c0 = (ops.cast(s, dtype) for s in initial_state)
        elif self.stateful:
            # Copies: the variables are assigned after the call.
            x_last, c0 = (ops.cast(ops.copy(s), dtype) for s in self.states)
        else:
            x_last = ops.zeros((batch, sequences.shape[-1]), dtype=dtype)
            c0 = ops.zeros((batch, self.units), dtype=dtype)
        inputs = ops.transpose(sequences, (1, 0, 2))  # time-major
        if self.window == 2:  # [x_t, x_{t-1}], the reference layer's order
            previous = ops.concatenate([x_last[None], inputs[:-1]], axis=0)
            inputs = ops.concatenate([inputs, previous], axis=-1)
        gates = ops.matmul(inputs, self.call_kernel(training)) + ops.cast(self.bias, dtype)
        z = ops.tanh(gates[..., : self.units])
        f = ops.sigmoid(gates[..., self.units : 2 * self.units])
        if training and self.zoneout > 0:
            keep = backend.keep_mask(ops.shape(f), self.zoneout, self.seed_generator)
            f = 1.0 - ops.cast(keep, dtype) * (1.0 - f)
        candidates = (1.0 - f) * z
        if length is not None:  # padded steps keep the cell
            valid = ops.reshape(ops.arange(inputs.shape[0]) < length, (-1, 1, 1))
            f = ops.where(valid, f, ops.ones_like(f))
            candidates = ops.where(valid, candidates, ops.zeros_like(candidates))
        cells = linear_recurrence(f, candidates, c0, parallel=self.uses_parallel_pooling())
        outputs = cells
        if self.output_gate:
            outputs = ops.sigmoid(gates[..., 2 * self.units :]) * cells
        if length is None:
            new_state = [sequences[:, -1], cells[-1]]
        else:
            outputs = ops.where(valid, outputs, ops.zeros_like(outputs))
            new_state = [ops.take(sequences, length - 1, axis=1), cells[-1]]
        if self.stateful:
            for variable, value in zip(self.states, new_state):
                variable.assign(ops.cast(ops.stop_gradient(value), variable.dtype))
        if self.return_sequences:
            outputs = ops.transpose(outputs, (1, 0, 2))
        else:
            outputs = outputs[-1]
        if self.return_state:
            return outputs, *new_state
        return outputs

    def compute_output_shape(self, input_shape):
        batch, steps, features = input_shape
        output = (batch, steps, self.units) if self.return_sequences else (batch, self.units)
        if self.return_state:
            return output, (batch, features), (batch, self.units)
        return output

    def get_config(self):
        return {
            **super().get_config(),
            "units": self.units,
            "window": self.window,
            "output_gate": self.output_gate,
            "weight_dropout": self.weight_dropout,
            "weight_dropout_mode": self.weight_dropout_mode,
            "zoneout": self.zoneout,
            "pooling": self.pooling,
            "seed": self.seed,
            "return_sequences": self.return_sequences,
            "return_state": self.return_state,
            "stateful": self.stateful,
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
            "bias_initializer": keras.initializers.serialize(self.bias_initializer),
            "kernel_regularizer": _serialized(self.kernel_regularizer),
            "bias_regularizer": _serialized(self.bias_regularizer),
        }


def _serialized(regularizer):
    return None if regularizer is None else keras.regularizers.serialize(regularizer)
