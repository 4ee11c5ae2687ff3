"""Mogrifier LSTM: the input and the previous state gate each other before each step.

Melis, Kočiský & Blunsom (2020), "Mogrifier LSTM" (ICLR), equations 1-2. Before the
LSTM step at time t, the input `x` (dimension `D`) and the previous output `h`
(dimension `units`) modulate each other for `rounds` rounds `i = 1, ..., r`:

    odd i:   x <- 2 sigmoid(Q^i h) * x      (Q^i maps h-space to x-space)
    even i:  h <- 2 sigmoid(R^i x) * h      (R^i maps x-space to h-space)

(`ceil(r / 2)` matrices `Q`, `floor(r / 2)` matrices `R`), then a standard LSTM step
runs on the "mogrified" `(x, h)`. With `rounds=0` it is the LSTM. The paper's tuned
models factorize every `Q^i` and `R^i` as a product of two rank-`k` matrices (the
PTB word model of its 24M-parameter experiments: 5 rounds, rank 84, in the saved
configuration of DeepMind's `lamb` repository).

DropConnect (weight drop) on the LSTM's recurrent kernel works as in
`WeightDropLSTM`, whose mask machinery the cell inherits.
"""

import keras
from keras import ops

from awd_lstm import backend
from awd_lstm._seeds import derived_seed
from awd_lstm._validation import (
    check_choice,
    check_non_negative_int,
    check_positive_int,
)
from awd_lstm.layers.weight_drop import CELL_ARGUMENTS, WeightDropLSTMCell, is_activation


def _mogrifier_factor_initializer(fan_in, rank, seed=None):
    """Default initializer of the mogrifier matrices: full rank, variance `1/fan_in`
    (LeCun normal); rank `k`, each of the two factors truncated normal with
    `stddev = (1 / (fan_in * k)) ** (1/4)`, so that their product's entries have a
    variance near `1/fan_in` (as `lamb`'s `low_rank_factorization`)."""
    if rank is None:
        return keras.initializers.LecunNormal(seed=seed)
    return keras.initializers.TruncatedNormal(stddev=(1.0 / (fan_in * rank)) ** 0.25, seed=seed)


@keras.saving.register_keras_serializable(package="awd_lstm")
class MogrifierLSTMCell(WeightDropLSTMCell):
    """One step of the Mogrifier LSTM, with weight drop on the recurrent kernel.

    The LSTM weights (`kernel` `(D, 4 units)`, `recurrent_kernel` `(units, 4 units)`,
    `bias` `(4 units,)`, gates `i, f, c, o`) are those of `keras.layers.LSTMCell`;
    the mogrifier matrices are `mogrifier_weights`, one tuple per round: `(Q^i,)` of
    shape `(units, D)` for odd rounds, `(R^i,)` of shape `(D, units)` for even ones,
    or with `rank=k` the two factors `(Q^i_l, Q^i_r)` of shapes `(units, k)` and
    `(k, D)` (and `(D, k)`, `(k, units)` for `R^i`), applied to row vectors as
    `h @ Q^i_l @ Q^i_r`. As in the paper's equations the mogrifier products have no
    bias (DeepMind's `lamb` code adds one, initialized to zero).

    `keras.layers.RNN(MogrifierLSTMCell(...))` computes what `MogrifierLSTM`
    does, step by step; the layer is the one to train with (it prepares the step's
    weights once per call).

    Args:
        units: Positive integer, dimensionality of the output space.
        rounds: Integer >= 0, the mogrifier rounds `r` (paper: 5 or 6 tuned;
            0 is the plain LSTM).
        rank: None (full matrices) or a positive integer, the rank of the two
            factors of every mogrifier matrix.
        weight_dropout: Float in [0, 1). DropConnect rate of the recurrent kernel.
        weight_dropout_mode: `"call"` (one mask per sequence, as
            `WeightDropLSTMCell`) or `"manual"` (the mask lives in the
            non-trainable variable `recurrent_kernel_mask` and changes only on
            `resample_weight_masks()`).
        seed: Integer seed of the cell's `SeedGenerator` (the weight masks) and, by
            derived seeds, of the mogrifier matrices' default initializers.
        mogrifier_initializer: Initializer of the mogrifier matrices (of each
            factor with `rank`). None (default): full matrices LeCun normal
            (variance `1/fan_in`); with `rank=k` each factor truncated normal with
            `stddev = (fan_in * k) ** (-1/4)`, as `lamb`'s `low_rank_factorization`,
            so that the product's entries have a variance near `1/fan_in`.
        **kwargs: The other arguments of `keras.layers.LSTMCell` (activations,
            `use_bias`, `unit_forget_bias`, the kernels' initializers,
            regularizers and constraints); `dropout` and `recurrent_dropout` are
            not supported (use `LockedDropout` around the layer).

    Call arguments:
        inputs: A 2D tensor `(batch, D)`.
        states: `[h, c]`, each `(batch, units)`.
        training: Python boolean; weight drop is applied only when true.

    Example:

    >>> cell = MogrifierLSTMCell(8, rounds=3, rank=2, seed=1)
    >>> rnn = keras.layers.RNN(cell, return_sequences=True)
    >>> tuple(rnn(np.ones((2, 5, 3))).shape)
    (2, 5, 8)
    >>> [[tuple(f.shape) for f in factors] for factors in cell.mogrifier_weights]
    [[(8, 2), (2, 3)], [(3, 2), (2, 8)], [(8, 2), (2, 3)]]
    """

    def __init__(
        self,
        units,
        rounds=5,
        rank=None,
        weight_dropout=0.0,
        weight_dropout_mode="call",
        seed=None,
        mogrifier_initializer=None,
        **kwargs,
    ):
        units = check_positive_int("units", units)
        rounds = check_non_negative_int("rounds", rounds)
        if rank is not None:
            rank = check_positive_int("rank", rank)
        check_choice("weight_dropout_mode", weight_dropout_mode, ("call", "manual"))
        for name in ("dropout", "recurrent_dropout", "input_weight_dropout"):
            value = kwargs.pop(name, 0.0)
            if value != 0:
                raise ValueError(
                    f"`{name}` is not supported by MogrifierLSTM (regularize its inputs "
                    f"and outputs with LockedDropout); Received: {name}={value!r}"
                )
        super().__init__(
            units,
            weight_dropout=weight_dropout,
            weight_dropout_mode=weight_dropout_mode,
            seed=seed,
            **kwargs,
        )
        self.rounds = rounds
        self.rank = rank
        self.mogrifier_initializer = (
            None if mogrifier_initializer is None else keras.initializers.get(mogrifier_initializer)
        )
        self.mogrifier_weights = []

    def build(self, input_shape):
        super().build(input_shape)
        features = input_shape[-1]
        weights = []
        for i in range(1, self.rounds + 1):
            # Odd rounds gate x by a map of h (Q^i), even rounds h by a map of x (R^i).
            name, fan_in, fan_out = (
                ("q", self.units, features) if i % 2 else ("r", features, self.units)
            )
            if self.rank is None:
                shapes = {f"{name}_{i}": (fan_in, fan_out)}
            else:
                shapes = {
                    f"{name}_{i}_left": (fan_in, self.rank),
                    f"{name}_{i}_right": (self.rank, fan_out),
                }
            weights.append(
                tuple(
                    self.add_weight(
                        shape=shape,
                        name=weight_name,
                        initializer=self.mogrifier_initializer
                        or _mogrifier_factor_initializer(
                            fan_in, self.rank, derived_seed(self.seed, "mogrifier", weight_name)
                        ),
                    )
                    for weight_name, shape in shapes.items()
                )
            )
        self.mogrifier_weights = weights

    # -- the step --------------------------------------------------------------------

    def step_weights(self, kernel, recurrent_kernel, dtype):
        """The weights of `mogrified_step`, computed once per sequence outside the
        step loop: `(mogrifier, kernels, bias)`, `kernels` the stacked
        `[[a W], [b U]]` (one product `[x, h] @ kernels` per step).

        The factor 2 of every round is folded into the weights: the step keeps
        `x / a` and `h / b`, with `a` and `b` the powers of 2 the rounds so far
        have contributed to `x` and `h`, and the matrices that multiply them are
        scaled by `a` or `b` here. Scaling by powers of 2 is exact in floating point,
        so each round costs its products, a sigmoid and a multiplication, and the
        results are those of the unscaled equations.
        """

        def cast(weight):
            return ops.cast(weight, dtype)

        x_scale = h_scale = 1.0
        mogrifier = []
        for i, factors in enumerate(self.mogrifier_weights, start=1):
            first, *rest = (cast(f) for f in factors)
            scale = h_scale if i % 2 else x_scale
            mogrifier.append((first * scale if scale != 1.0 else first, *rest))
            if i % 2:
                x_scale *= 2.0
            else:
                h_scale *= 2.0
        kernel, recurrent_kernel = cast(kernel), cast(recurrent_kernel)
        if x_scale != 1.0:
            kernel = kernel * x_scale
        if h_scale != 1.0:
            recurrent_kernel = recurrent_kernel * h_scale
        kernels = ops.concatenate([kernel, recurrent_kernel], axis=0)
        bias = cast(self.bias) if self.use_bias else None
        return tuple(mogrifier), kernels, bias

    def mogrified_step(self, inputs, states, weights):
        """One Mogrifier LSTM step with the weights of `step_weights`; returns
        `(h, [h, c])`."""
        mogrifier, kernels, bias = weights
        h_prev, c_prev = states
        x, h = _mogrify(inputs, h_prev, mogrifier)
        z = ops.matmul(ops.concatenate([x, h], axis=-1), kernels)
        if bias is not None:
            z = z + bias
        z_i, z_f, z_c, z_o = ops.split(z, 4, axis=-1)
        gate = self.recurrent_activation
        c = gate(z_f) * c_prev + gate(z_i) * self.activation(z_c)
        h = gate(z_o) * self.activation(c)
        return h, [h, c]

    def call(self, inputs, states, training=False):
        if training and self.drops_weights:
            kernel, recurrent_kernel = self.step_kernels(inputs, states)
        else:
            kernel, recurrent_kernel = self.kernel, self.recurrent_kernel
        weights = self.step_weights(kernel, recurrent_kernel, inputs.dtype)
        return self.mogrified_step(inputs, states, weights)

    def get_config(self):
        config = super().get_config()
        for name in ("dropout", "recurrent_dropout", "input_weight_dropout"):
            config.pop(name, None)
        initializer = self.mogrifier_initializer
        return {
            **config,
            "rounds": self.rounds,
            "rank": self.rank,
            "mogrifier_initializer": (
                None if initializer is None else keras.initializers.serialize(initializer)
            ),
        }


def _chain(inputs, factors):
    """`inputs @ factors[0] @ factors[1] ...`."""
    for factor in factors:
        inputs = ops.matmul(inputs, factor)
    return inputs


def _mogrify(x, h, mogrifier):
    """The rounds of `mogrifier` (`step_weights`' scaled factors) on `(x, h)`."""
    for i, factors in enumerate(mogrifier, start=1):
        if i % 2:
            x = x * ops.sigmoid(_chain(h, factors))
        else:
            h = h * ops.sigmoid(_chain(x, factors))
    return x, h


def _record_layout(round_sizes, features, units, rank):
    """Where the forward loop of `_trained_recurrence` keeps each round's values in
    a step's record (after `h, c` and the four gates): per round, the intermediate
    product `p` (with `rank`), the gate `s` and the gated value after the round.
    Returns `(layout, width)`, `layout[i] = (p, s, value)` as `(start, stop)` pairs
    (`p` None without `rank`)."""
    layout, start = [], 0
    for i, size in enumerate(round_sizes, start=1):
        width = features if i % 2 else units
        p = None
        if size == 2:
            p, start = (start, start + rank), start + rank
        layout.append((p, (start, start + width), (start + width, start + 2 * width)))
        start += 2 * width
    return layout, start


def _trained_recurrence(round_sizes, features, units, rank):
    """`f(inputs, h0, c0, kernels, bias, *factors) -> packed`: the Mogrifier LSTM
    (sigmoid gates, tanh cell) over time-major `inputs` with a hand-written
    gradient; `packed` holds the outputs of every step and then the final cell
    state, `(time + 1, batch, units)`. `round_sizes` is the number of factors of
    each round's matrix (1, or 2 with `rank`); `factors` are those of
    `step_weights`, round after round.

    Automatic differentiation of the step loop adds, at every step of the backward
    loop, the `(D + units, 4 units)` product `[x, h]^T dz_t` to the kernels'
    gradient (a rank-`batch` update of the largest matrix, as costly as the step's
    own product), and likewise for every mogrifier factor. Here the forward loop
    keeps each step's gates, cell state and mogrifier values; the backward loop
    computes only what the recurrence needs, `d[x, h] = dz_t [[W], [U]]^T` and the
    mogrifier's input gradients (two small products per round); after it, the
    gradient of every matrix is one product over all `time x batch` rows
    (`d[[W], [U]] = sum_t [x, h]_t^T dz_t`), as `awd_lstm.backend.
    recurrence_with_gradient` does for the plain LSTM. All of it is `keras.ops`
    and Keras' backend loop (`backend.backend_rnn`), one definition for the three
    backends (`keras.ops.custom_gradient`); the gradients are those of automatic
    differentiation up to float rounding (the tests compare them).
    """
    layout, _ = _record_layout(round_sizes, features, units, rank)

    def split(factors):
        rounds, start = [], 0
        for size in round_sizes:
            rounds.append(tuple(factors[start : start + size]))
            start += size
        return tuple(rounds)

    def part(tensor, where):
        return tensor[..., where[0] : where[1]]

    @ops.custom_gradient
    def recurrence(inputs, h0, c0, kernels, bias, *factors):
        mogrifier = split(factors)

        def step(x, states):
            h_prev, c_prev = states
            values, record = [x, h_prev], []  # values: the latest x and h
            for r, round_ in enumerate(mogrifier, start=1):
                gated = 0 if r % 2 else 1
                pre = values[1 - gated]
                for k, factor in enumerate(round_):
                    pre = ops.matmul(pre, factor)
                    if k + 1 < len(round_):
                        record.append(pre)
                gate = ops.sigmoid(pre)
                values[gated] = values[gated] * gate
                record += [gate, values[gated]]
            z = ops.matmul(ops.concatenate(values, axis=-1), kernels) + bias
            z_i, z_f, z_c, z_o = ops.split(z, 4, axis=-1)
            i, f, o = ops.sigmoid(z_i), ops.sigmoid(z_f), ops.sigmoid(z_o)
            g = ops.tanh(z_c)
            c = f * c_prev + i * g
            h = o * ops.tanh(c)
            return ops.concatenate([h, c, i, f, g, o, *record], axis=-1), [h, c]

        _, kept, (_, c_last) = backend.backend_rnn(
            step, inputs, [h0, c0], time_major=True, input_length=inputs.shape[0]
        )
        outputs = kept[..., :units]
        packed = ops.concatenate([outputs, c_last[None]], axis=0)

        def grad(*args, upstream=None):
            # TensorFlow and JAX pass the upstream gradient alone, PyTorch after the
            # inputs (see keras.ops.custom_gradient).
            if upstream is None:
                (upstream,) = args
            cells = kept[..., units : 2 * units]
            records = kept[..., 6 * units :]
            h_prev = ops.concatenate([h0[None], outputs[:-1]], axis=0)
            c_prev = ops.concatenate([c0[None], cells[:-1]], axis=0)
            # Transposed once, outside the loop (TensorFlow's CPU product with a
            # transposed operand runs at about half the rate of a plain one).
            kernels_t = ops.transpose(kernels)
            transposed = tuple(tuple(ops.transpose(f) for f in round_) for round_ in mogrifier)

            # The loop's inputs as one tensor: Keras' TensorFlow loop needs the
            # number of steps from a single input when the time axis is not static
            # (a shape-generic trace), which a tuple of inputs does not give it.
            widths = [features, units, units, kept.shape[-1], units]
            edges = [sum(widths[:k]) for k in range(len(widths) + 1)]

            def back_step(step_inputs, states):
                x, h_before, c_before, kept_t, d_out = (
                    step_inputs[:, a:b] for a, b in zip(edges[:-1], edges[1:])
                )
                dh, dc = states
                c = kept_t[:, units : 2 * units]
                i, f, g, o = ops.split(kept_t[:, 2 * units : 6 * units], 4, axis=-1)
                record = kept_t[:, 6 * units :]
                dh = dh + d_out
                tanh_c = ops.tanh(c)
                dc = dc + dh * o * (1.0 - tanh_c * tanh_c)
                dz = ops.concatenate(
                    [
                        dc * g * i * (1.0 - i),
                        dc * c_before * f * (1.0 - f),
                        dc * i * (1.0 - g * g),
                        dh * tanh_c * o * (1.0 - o),
                    ],
                    axis=-1,
                )
                du = ops.matmul(dz, kernels_t)
                grads = [du[:, :features], du[:, features:]]  # of the latest x and h
                # The gated value before each round: the step's input, or the value
                # an earlier round left.
                before, values = [], [x, h_before]
                for r, (_, _, value) in enumerate(layout, start=1):
                    gated = 0 if r % 2 else 1
                    before.append(values[gated])
                    values[gated] = part(record, value)
                kept_grads = []
                for r in range(len(layout), 0, -1):
                    gated = 0 if r % 2 else 1
                    gate = part(record, layout[r - 1][1])
                    d_pre = grads[gated] * before[r - 1] * gate * (1.0 - gate)
                    grads[gated] = grads[gated] * gate
                    # The gradient at each factor's output, last factor first.
                    for factor_t in transposed[r - 1][::-1]:
                        kept_grads.append(d_pre)
                        d_pre = ops.matmul(d_pre, factor_t)
                    grads[1 - gated] = grads[1 - gated] + d_pre
                return ops.concatenate([dz, grads[0], *kept_grads], axis=-1), [grads[1], dc * f]

            _, kept_back, (dh0, dc0) = backend.backend_rnn(
                back_step,
                ops.concatenate([inputs, h_prev, c_prev, kept, upstream[:-1]], axis=-1),
                [ops.zeros_like(h0), upstream[-1]],
                go_backwards=True,
                time_major=True,
                input_length=inputs.shape[0],
            )
            kept_back = ops.flip(kept_back, axis=0)  # in the order of time again

            def rows(tensor):  # (time, batch, n) -> (time * batch, n)
                return ops.reshape(tensor, (-1, tensor.shape[-1]))

            def product(inputs_, grads_):  # sum over time and batch of inputs^T grads
                return ops.matmul(ops.transpose(rows(inputs_)), rows(grads_))

            dz = kept_back[..., : 4 * units]
            d_inputs = kept_back[..., 4 * units : 4 * units + features]
            # The mogrifier factors: the inputs of each factor's product (the driver,
            # then the intermediate product with `rank`) against the gradients at
            # its output (kept last round first, last factor first).
            d_factors, start = [], 4 * units + features
            values = [inputs, h_prev]
            round_grads = []
            for r in range(len(layout), 0, -1):
                p, (gate_start, gate_stop), _ = layout[r - 1]
                widths = [gate_stop - gate_start]
                if p is not None:
                    widths.append(rank)
                grads_i = []
                for width in widths:
                    grads_i.append(kept_back[..., start : start + width])
                    start += width
                round_grads.append(grads_i[::-1])  # first factor first
            round_grads = round_grads[::-1]  # first round first
            for r, (p, _, value) in enumerate(layout, start=1):
                gated = 0 if r % 2 else 1
                factor_inputs = [values[1 - gated]]
                if p is not None:
                    factor_inputs.append(part(records, p))
                d_factors += [product(a, b) for a, b in zip(factor_inputs, round_grads[r - 1])]
                values[gated] = part(records, value)
            d_kernels = product(ops.concatenate(values, axis=-1), dz)
            d_bias = ops.sum(rows(dz), axis=0)
            return (d_inputs, dh0, dc0, d_kernels, d_bias, *d_factors)

        return packed, grad

    return recurrence


# The arguments of `MogrifierLSTM` that configure its cell (besides its own).
_CELL_ARGUMENTS = (*CELL_ARGUMENTS, "mogrifier_initializer")


@keras.saving.register_keras_serializable(package="awd_lstm")
class MogrifierLSTM(keras.layers.RNN):
    """Mogrifier LSTM layer (Melis et al. 2020) with weight drop on the recurrent
    kernel.

    Before every LSTM step the input `x_t` and the previous output `h` gate each
    other for `rounds` rounds (odd rounds `x <- 2 sigmoid(Q^i h) * x`, even rounds
    `h <- 2 sigmoid(R^i x) * h`, without bias, as in the paper's equations 1-2); a
    standard LSTM step (Keras' layout and gate order `i, f, c, o`) then runs on the
    mogrified pair. With `rounds=0` the layer computes what `WeightDropLSTM` does
    with the same weights and seed (the same weight masks too). The weights are
    those of `MogrifierLSTMCell`: `cell.kernel`, `cell.recurrent_kernel`,
    `cell.bias` and `cell.mogrifier_weights`.

    Since `x_t` changes at every step before its product with the input kernel, the
    input projection cannot be computed for all steps at once as in
    `WeightDropLSTM`; each step multiplies `[x, h]` by the stacked kernel
    `[[W], [U]]` (built once per call, with the weight mask applied) in one product.
    Training calls (`uses_hand_written_gradient`) run a loop with a hand-written
    gradient that forms the gradients of the kernels and of the mogrifier matrices
    after the backward loop, each as one product over all time steps, instead of
    one update per step (`_trained_recurrence`); other calls, and those with a
    `mask`, `unroll` or other activations, run Keras' step loop over the same step.

    Args:
        units: Positive integer, dimensionality of the output space.
        rounds: Integer >= 0, the mogrifier rounds (paper: 5 or 6 in its tuned
            models; 0 is the LSTM).
        rank: None for full mogrifier matrices, or a positive integer `k`: every
            `Q^i` and `R^i` is the product of two factors of rank `k` (paper's
            tuned PTB model: `k = 84`).
        weight_dropout: Float in [0, 1). DropConnect rate of the recurrent kernel
            (AWD-LSTM's `wdrop`).
        weight_dropout_mode: `"call"` (default): one mask per call, shared by every
            time step and batch row. `"manual"`: the mask lives in a non-trainable
            variable and changes only on `resample_weight_masks()`.
        seed: Integer seed for the layer's weight masks.
        return_sequences: Whether to return the output of every step (else the
            last).
        return_state: Whether to return the final `h` and `c` after the output.
        stateful: Whether the final state of a call is the initial state of the
            next (a fixed batch size); `reset_state()` zeroes it.
        **kwargs: `mogrifier_initializer` (see `MogrifierLSTMCell`), the cell
            arguments of `keras.layers.LSTM` but dropout (activations, `use_bias`,
            `unit_forget_bias`, initializers, regularizers, constraints) and those
            of `keras.layers.RNN` (`go_backwards`, `unroll`, `zero_output_for_mask`,
            `name`, `dtype`, ...).

    Call arguments:
        sequences: A 3D tensor `(batch, timesteps, features)`.
        initial_state: Optional list `[h, c]`, each `(batch, units)`.
        mask: Optional boolean tensor `(batch, timesteps)`.
        training: Python boolean; weight drop is applied only when true.

    Example:

    >>> layer = MogrifierLSTM(8, rounds=5, rank=2, weight_dropout=0.5,
    ...                       return_sequences=True, return_state=True, seed=1)
    >>> outputs, h, c = layer(np.ones((2, 5, 3)), training=True)
    >>> tuple(outputs.shape), tuple(h.shape), tuple(c.shape)
    ((2, 5, 8), (2, 8), (2, 8))
    >>> len(layer.cell.mogrifier_weights)  # Q^1, R^2, Q^3, R^4, Q^5
    5
    """

    # Whether training calls run the loop with the hand-written gradient where it
    # applies (`_trained_recurrence`); False runs automatic differentiation of the
    # step loop (benchmarks/mogrifier_throughput.py, variant `mogrifier_autodiff`).
    _hand_written_gradient = True

    def __init__(
        self,
        units,
        rounds=5,
        rank=None,
        weight_dropout=0.0,
        weight_dropout_mode="call",
        seed=None,
        return_sequences=False,
        return_state=False,
        stateful=False,
        **kwargs,
    ):
        cell_kwargs = {name: kwargs.pop(name) for name in _CELL_ARGUMENTS if name in kwargs}
        cell = MogrifierLSTMCell(
            units,
            rounds=rounds,
            rank=rank,
            weight_dropout=weight_dropout,
            weight_dropout_mode=weight_dropout_mode,
            seed=seed,
            dtype=kwargs.get("dtype"),
            trainable=kwargs.get("trainable", True),
            name="mogrifier_lstm_cell",
            **cell_kwargs,
        )
        super().__init__(
            cell,
            return_sequences=return_sequences,
            return_state=return_state,
            stateful=stateful,
            **kwargs,
        )
        self.input_spec = keras.InputSpec(ndim=3)

    @property
    def units(self):
        return self.cell.units

    @property
    def rounds(self):
        return self.cell.rounds

    @property
    def rank(self):
        return self.cell.rank

    @property
    def weight_dropout(self):
        return self.cell.weight_dropout

    @property
    def weight_dropout_mode(self):
        return self.cell.weight_dropout_mode

    def resample_weight_masks(self):
        """Draws a new recurrent-kernel mask ("manual" mode); see
        `WeightDropLSTMCell.resample_weight_masks`."""
        return self.cell.resample_weight_masks()

    def call(self, sequences, initial_state=None, mask=None, training=False):
        self.cell.prepare_sequence(bool(training))
        try:
            return super().call(
                sequences, initial_state=initial_state, mask=mask, training=training
            )
        finally:
            self.cell.reset_weight_masks()

    def pads_segments(self):
        """Whether calls take padded sequences with a `length` (see
        `WeightDropLSTM.pads_segments`): never."""
        return False

    def uses_hand_written_gradient(self, mask=None, training=True):
        """Whether a call runs `_trained_recurrence`: in training, without `mask`
        or `unroll`, with a bias and the standard activations (sigmoid gates, tanh
        cell)."""
        cell = self.cell
        modules = backend.activation_modules()
        return bool(
            self._hand_written_gradient
            and training
            and mask is None
            and not self.unroll
            and cell.use_bias
            and is_activation(cell.activation, "tanh", *modules)
            and is_activation(cell.recurrent_activation, "sigmoid", *modules)
        )

    def inner_loop(self, sequences, initial_state, mask, training=False):
        if isinstance(mask, (list, tuple)):
            mask = mask[0]
        cell = self.cell
        # The dropped kernels of this call (`prepare_sequence`), else the kernels.
        kernels = cell._sequence_kernels or (cell.kernel, cell.recurrent_kernel)
        weights = cell.step_weights(*kernels, sequences.dtype)
        h0, c0 = initial_state
        if self.stateful:
            # Copies of the state variables' values, which the layer assigns after the
            # loop (PyTorch's autograd must not see the values it keeps change).
            h0, c0 = ops.copy(h0), ops.copy(c0)
        if self.uses_hand_written_gradient(mask, training):
            return self._trained_loop(sequences, h0, c0, weights)

        def step(inputs, states):
            return cell.mogrified_step(inputs, states, weights)

        return backend.backend_rnn(
            step,
            sequences,
            [h0, c0],
            go_backwards=self.go_backwards,
            mask=mask,
            unroll=self.unroll,
            input_length=sequences.shape[1],
            zero_output_for_mask=self.zero_output_for_mask,
            return_all_outputs=self.return_sequences,
        )

    def _trained_loop(self, sequences, h0, c0, weights):
        """`inner_loop`'s result from `_trained_recurrence` (time-major inside)."""
        mogrifier, kernels, bias = weights
        inputs = ops.transpose(sequences, (1, 0, 2))
        if self.go_backwards:
            inputs = ops.flip(inputs, axis=0)
        cell = self.cell
        recurrence = _trained_recurrence(
            tuple(len(factors) for factors in mogrifier),
            sequences.shape[-1],
            cell.units,
            cell.rank,
        )
        factors = [factor for round_ in mogrifier for factor in round_]
        packed = recurrence(inputs, h0, c0, kernels, bias, *factors)
        outputs, h, c = packed[:-1], packed[-2], packed[-1]
        if self.return_sequences:
            outputs = ops.transpose(outputs, (1, 0, 2))
        else:
            outputs = ops.expand_dims(h, 1)
        return h, outputs, [h, c]

    def get_config(self):
        config = super().get_config()
        del config["cell"]
        cell_config = self.cell.get_config()
        own = ("units", "rounds", "rank", "weight_dropout", "weight_dropout_mode", "seed")
        return {
            **config,
            **{name: cell_config[name] for name in own},
            **{name: cell_config[name] for name in _CELL_ARGUMENTS if name in cell_config},
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)
