"""The LSTM recurrence's hand-written gradient: the math TensorFlow's and JAX's share.

Where no fused LSTM kernel runs (TensorFlow and JAX without cuDNN), `WeightDropLSTM`
projects the inputs of every time step with one matrix product and loops over
`z_t = zx_t + h_{t-1} @ U` only. Automatic differentiation of that loop adds, at every
step of the backward loop, a `(units, 4 units)` product `h_{t-1}^T dz_t` and its
accumulation into `dU`. The gradient here keeps only what the recurrence needs in the
loop, `dh_{t-1} = dz_t @ U^T`, and computes

    dU = sum_t h_{t-1}^T dz_t

after it as one product over all `time x batch` rows. The gates' derivatives come
from the gates and cells the forward loop cached (on TensorFlow read back step by step
inside the backward loop, where the arrays are small; on JAX as whole-sequence
products before it). The numbers are those of the automatic gradient up to float
rounding.

Gate order and activations are Keras' LSTM's: `i, f, c, o`; sigmoid gates, tanh cell.
Every tensor here is time-major: `zx` is `(time, batch, 4 units)`.
"""

# Steps per chunk of the padded recurrence (JAX; the training pipeline's segment
# lengths are multiples of its default `length_quantum`, 5, so no chunk but a user's
# odd one has padded steps).
CHUNK_STEPS = 5


def backward_step(xp, dh, dc, d_out, factor, cell_factor):
    """One step of the backward loop: `(dz_t, dc_t)` from the gradients flowing into
    `h_t` and `c_t` from later steps (`dh`, `dc`) and from the outputs (`d_out`);
    the caller forms `dh_{t-1} = dz_t @ U^T` and `dc_{t-1} = dc_t * f_t`."""
    dh = dh + d_out
    dc = dc + dh * cell_factor
    return xp.concat([dc, dc, dc, dh], axis=-1) * factor, dc


def sequence_factors(xp, c0, cells, gates):
    """`backward_factors` of a run of time-major steps (a whole sequence, or a chunk
    of one), `c0` the cell state before its first step."""
    return backward_factors(xp, xp.concat([c0[None], cells[:-1]], axis=0), cells, gates)


def backward_factors(xp, previous_cells, cells, gates):
    """Element-wise factors of the backward loop at one step or at several (then
    time-major, all arrays alike); `previous_cells` are the cell states before them.

    With `dh_t` (all paths into `h_t`) and `dc_t = dc_{t+1} f_{t+1} + dh_t * o_t
    (1 - tanh(c_t)^2)`, the pre-activation gradient is
    `dz_t = [dc_t, dc_t, dc_t, dh_t] * factors_t`, where `factors_t` holds
    `g i (1 - i)`, `c_{t-1} f (1 - f)`, `i (1 - g^2)` and `tanh(c_t) o (1 - o)`.
    Returns `(factors, f, o (1 - tanh(c)^2))`, shaped like `cells` (the factors four
    times as wide).
    """
    i, f, g, o = xp.split(gates, 4, axis=-1)
    tanh_c = xp.tanh(cells)
    factors = xp.concat(
        [
            g * i * (1 - i),
            previous_cells * f * (1 - f),
            i * (1 - g * g),
            tanh_c * o * (1 - o),
        ],
        axis=-1,
    )
    return factors, f, o * (1 - tanh_c * tanh_c)
