"""The LSTM recurrence with a hand-written gradient, for TensorFlow and JAX on CPU.

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

from awd_lstm import backend

_CACHE = {}
_JAX_COLUMNS = 2560
# Steps per chunk of `padded_recurrence` (the training pipeline's segment lengths are
# multiples of its default `length_quantum`, 5, so no chunk but a user's odd one has
# padded steps).
CHUNK_STEPS = 5


def recurrence_with_gradient():
    """`f(zx, h0, c0, recurrent_kernel) -> (outputs, h_T, c_T)` for the present
    backend, differentiable with the hand-written gradient, or None where the backend
    has none here (PyTorch runs its own fused kernel)."""
    name = backend.name()
    if name not in _CACHE:
        builder = {"tensorflow": _tensorflow, "jax": _jax}.get(name)
        _CACHE[name] = builder() if builder else None
    return _CACHE[name]


def _tensorflow():
    import tensorflow as tf

    def arrays(steps, dtype, *values):
        """One TensorArray of `steps` entries per value (each unstacked along time),
        or a single empty one without values. Entries may be read more than once (the
        backward loop reads every cell state twice)."""
        if not values:
            return tf.TensorArray(dtype, size=steps, clear_after_read=False)
        return [arrays(steps, dtype).unstack(v) for v in values]

    def forward(zx, h0, c0, kernel):
        steps = tf.shape(zx)[0]
        (inputs,) = arrays(steps, zx.dtype, zx)

        def body(t, h, c, hs, cs, gates):
            z = inputs.read(t) + tf.matmul(h, kernel)
            i, f, g, o = tf.split(z, 4, axis=-1)
            i, f, g, o = tf.sigmoid(i), tf.sigmoid(f), tf.tanh(g), tf.sigmoid(o)
            c = f * c + i * g
            h = o * tf.tanh(c)
            gates = gates.write(t, tf.concat([i, f, g, o], axis=-1))
            return t + 1, h, c, hs.write(t, h), cs.write(t, c), gates

        empty = [arrays(steps, zx.dtype) for _ in range(3)]
        _, h, c, hs, cs, gates = tf.while_loop(
            lambda t, *_: t < steps, body, (tf.constant(0), h0, c0, *empty)
        )
        # The cells and gates stay TensorArrays: the backward loop reads them step by
        # step (no whole-sequence copies).
        return hs.stack(), h, c, cs, gates

    @tf.custom_gradient
    def recurrence(zx, h0, c0, kernel):
        outputs, h, c, cells, gates = forward(zx, h0, c0, kernel)

        def grad(d_outputs, d_h, d_c):
            d_outputs = _zeros_if_none(tf, d_outputs, outputs)
            d_h = _zeros_if_none(tf, d_h, h)
            d_c = _zeros_if_none(tf, d_c, c)
            steps = tf.shape(zx)[0]
            (d_outs,) = arrays(steps, zx.dtype, d_outputs)
            # Transposed once: TensorFlow's CPU matmul with transpose_b=True runs at
            # half the rate of a plain one at these shapes.
            kernel_t = tf.transpose(kernel)

            def body(t, dh, dc, dzs):
                # The factors of one step, from its cached gates and cells: small
                # arrays that stay in cache (whole-sequence factors cost more).
                c_prev = tf.where(t > 0, cells.read(tf.maximum(t - 1, 0)), c0)
                factor, forget, cell_factor = _backward_factors(
                    tf, c_prev, cells.read(t), gates.read(t)
                )
                dz, dc = _backward_step(tf, dh, dc, d_outs.read(t), factor, cell_factor)
                return t - 1, tf.matmul(dz, kernel_t), dc * forget, dzs.write(t, dz)

            _, dh0, dc0, dzs = tf.while_loop(
                lambda t, *_: t >= 0,
                body,
                (steps - 1, d_h, d_c, arrays(steps, zx.dtype)),
            )
            dz = dzs.stack()
            previous = tf.concat([h0[None], outputs[:-1]], axis=0)
            units = tf.shape(h0)[-1]
            d_kernel = tf.matmul(
                tf.reshape(previous, [-1, units]),
                tf.reshape(dz, [-1, 4 * units]),
                transpose_a=True,
            )
            return dz, dh0, dc0, d_kernel

        return (outputs, h, c), grad

    return recurrence


def _jax():
    import jax
    import jax.numpy as jnp

    def forward(zx, h0, c0, kernel):
        recurrent_product = _jax_recurrent_product(kernel)

        def step(carry, z_x):
            h, c = carry
            h, c, gates = _jax_cell(jax, z_x + recurrent_product(h), c)
            return (h, c), (h, c, gates)

        (h, c), (outputs, cells, gates) = jax.lax.scan(step, (h0, c0), zx)
        return outputs, h, c, cells, gates

    @jax.custom_vjp
    def recurrence(zx, h0, c0, kernel):
        outputs, h, c, _, _ = forward(zx, h0, c0, kernel)
        return outputs, h, c

    def recurrence_fwd(zx, h0, c0, kernel):
        outputs, h, c, cells, gates = forward(zx, h0, c0, kernel)
        return (outputs, h, c), (h0, c0, kernel, outputs, cells, gates)

    def recurrence_bwd(saved, cotangents):
        h0, c0, kernel, outputs, cells, gates = saved
        d_outputs, d_h, d_c = cotangents
        factors, forget, cell_factor = _sequence_factors(jnp, c0, cells, gates)

        def step(carry, xs):
            d_out, factor, forget_t, cell_t = xs
            dz, dc = _backward_step(jnp, *carry, d_out, factor, cell_t)
            return (dz @ kernel.T, dc * forget_t), dz

        (dh0, dc0), dz = jax.lax.scan(
            step, (d_h, d_c), (d_outputs, factors, forget, cell_factor), reverse=True
        )
        previous = jnp.concatenate([h0[None], outputs[:-1]], axis=0)
        units = h0.shape[-1]
        d_kernel = previous.reshape(-1, units).T @ dz.reshape(-1, 4 * units)
        return dz, dh0, dc0, d_kernel

    recurrence.defvjp(recurrence_fwd, recurrence_bwd)
    return recurrence


def padded_recurrence():
    """JAX: `f(inputs, kernel, bias, recurrent_kernel, h0, c0, length) -> (outputs,
    h, c)`, the LSTM over time-major `inputs` padded to a multiple of `CHUNK_STEPS`
    steps of which the first `length` (a traced integer) count; None on the other
    backends.

    One compiled step then serves every segment length up to the padded one: the
    loop runs `ceil(length / CHUNK_STEPS)` chunks, each one input projection of
    `CHUNK_STEPS x batch` rows and that many recurrent steps (steps past `length`, in
    the last chunk only, leave the state as it is). `outputs` are zero past `length`,
    `(h, c)` the state after step `length`. The backward loop, chunk by chunk in
    reverse, forms the gradients of the inputs, both kernels and the bias from each
    chunk's `dz` (the hand-written gradient of `recurrence_with_gradient`), so no
    work is spent on padded steps beyond the last chunk's.
    """
    if backend.name() != "jax":
        return None
    if "jax-padded" not in _CACHE:
        _CACHE["jax-padded"] = _jax_padded()
    return _CACHE["jax-padded"]


def jax_chunks():
    """`(piece, put, chunks)` for time-major JAX arrays in chunks of `CHUNK_STEPS`:
    `piece(array, j)` is chunk `j`, `put(array, j, value)` writes it, `chunks(length)`
    counts the chunks `length` steps touch."""
    from jax import lax

    k = CHUNK_STEPS

    def piece(array, j):
        return lax.dynamic_slice_in_dim(array, j * k, k, axis=0)

    def put(array, j, value):
        return lax.dynamic_update_slice_in_dim(array, value, j * k, axis=0)

    def chunks(length):
        return (length + k - 1) // k

    return piece, put, chunks


def _jax_padded():
    import jax
    import jax.numpy as jnp
    from jax import lax

    k = CHUNK_STEPS
    piece, put, chunks = jax_chunks()

    def forward(inputs, kernel, bias, recurrent_kernel, h0, c0, length):
        steps, batch, width = inputs.shape
        if steps % k:
            raise ValueError(f"padded inputs need a multiple of {k} steps; got {steps}")
        units = h0.shape[-1]
        recurrent_product = _jax_recurrent_product(recurrent_kernel)

        def chunk(j, carry):
            h, c, outputs, cells, gates = carry
            projected = piece(inputs, j).reshape(k * batch, width) @ kernel + bias
            projected = projected.reshape(k, batch, 4 * units)
            hs, cs, gs = [], [], []
            for i in range(k):
                h_new, c_new, g = _jax_cell(jax, projected[i] + recurrent_product(h), c)
                valid = j * k + i < length
                h = jnp.where(valid, h_new, h)
                c = jnp.where(valid, c_new, c)
                hs.append(jnp.where(valid, h_new, 0))
                cs.append(c)
                gs.append(g)
            return (
                h,
                c,
                put(outputs, j, jnp.stack(hs)),
                put(cells, j, jnp.stack(cs)),
                put(gates, j, jnp.stack(gs)),
            )

        buffers = (
            jnp.zeros((steps, batch, units), inputs.dtype),
            jnp.zeros((steps, batch, units), inputs.dtype),
            jnp.zeros((steps, batch, 4 * units), inputs.dtype),
        )
        return lax.fori_loop(0, chunks(length), chunk, (h0, c0, *buffers))

    @jax.custom_vjp
    def recurrence(inputs, kernel, bias, recurrent_kernel, h0, c0, length):
        h, c, outputs, _, _ = forward(inputs, kernel, bias, recurrent_kernel, h0, c0, length)
        return outputs, h, c

    def recurrence_fwd(inputs, kernel, bias, recurrent_kernel, h0, c0, length):
        h, c, outputs, cells, gates = forward(
            inputs, kernel, bias, recurrent_kernel, h0, c0, length
        )
        saved = (inputs, kernel, recurrent_kernel, h0, c0, outputs, cells, gates, length)
        return (outputs, h, c), saved

    def recurrence_bwd(saved, cotangents):
        inputs, kernel, recurrent_kernel, h0, c0, outputs, cells, gates, length = saved
        d_outputs, d_h, d_c = cotangents
        _, batch, width = inputs.shape
        units = h0.shape[-1]
        count = chunks(length)

        def before(j, first, array):
            # The entry of `array` before chunk `j` (`first` before chunk 0).
            entry = lax.dynamic_index_in_dim(array, jnp.maximum(j * k - 1, 0), keepdims=False)
            return jnp.where(j == 0, first, entry)

        def chunk(r, carry):
            dh, dc, d_inputs, d_kernel, d_bias, d_recurrent = carry
            j = count - 1 - r
            factors, forget, cell_factor = _sequence_factors(
                jnp, before(j, c0, cells), piece(cells, j), piece(gates, j)
            )
            previous_h = jnp.concatenate([before(j, h0, outputs)[None], piece(outputs, j)[:-1]])
            d_out = piece(d_outputs, j)
            dzs = [None] * k
            for i in reversed(range(k)):
                valid = j * k + i < length
                dz, dc_t = _backward_step(jnp, dh, dc, d_out[i], factors[i], cell_factor[i])
                dzs[i] = dz = jnp.where(valid, dz, 0)
                dh = jnp.where(valid, dz @ recurrent_kernel.T, dh)
                dc = jnp.where(valid, dc_t * forget[i], dc)
            dz = jnp.stack(dzs).reshape(k * batch, 4 * units)
            d_inputs = put(d_inputs, j, (dz @ kernel.T).reshape(k, batch, width))
            d_kernel = d_kernel + piece(inputs, j).reshape(k * batch, width).T @ dz
            d_recurrent = d_recurrent + previous_h.reshape(k * batch, units).T @ dz
            return dh, dc, d_inputs, d_kernel, d_bias + dz.sum(axis=0), d_recurrent

        initial = (
            d_h,
            d_c,
            jnp.zeros_like(inputs),
            jnp.zeros_like(kernel),
            jnp.zeros((4 * units,), kernel.dtype),
            jnp.zeros_like(recurrent_kernel),
        )
        dh0, dc0, d_inputs, d_kernel, d_bias, d_recurrent = lax.fori_loop(0, count, chunk, initial)
        return d_inputs, d_kernel, d_bias, d_recurrent, dh0, dc0, None

    recurrence.defvjp(recurrence_fwd, recurrence_bwd)
    return recurrence


def _jax_recurrent_product(kernel):
    """`h -> h @ kernel`, in column blocks of at most `_JAX_COLUMNS`."""
    # XLA's CPU dot of a narrow left operand runs at about 60% of the rate of the
    # same product so split (benchmarks/RESULTS.md: (80, 1150) x (1150, 4600), 62 vs
    # 89 GFLOP/s over a 70-step scan).
    import jax.numpy as jnp

    blocks = -(-kernel.shape[1] // _JAX_COLUMNS)
    if blocks == 1:
        return lambda h: h @ kernel
    kernels = jnp.array_split(kernel, blocks, axis=1)
    return lambda h: jnp.concatenate([h @ k for k in kernels], axis=-1)


def _jax_cell(jax, z, c):
    """One LSTM step from the pre-activations `z`: `(h, c, gates)`."""
    jnp = jax.numpy
    i, f, g, o = jnp.split(z, 4, axis=-1)
    i, f, g, o = jax.nn.sigmoid(i), jax.nn.sigmoid(f), jnp.tanh(g), jax.nn.sigmoid(o)
    c = f * c + i * g
    return o * jnp.tanh(c), c, jnp.concatenate([i, f, g, o], axis=-1)


def _backward_step(xp, dh, dc, d_out, factor, cell_factor):
    """One step of the backward loop: `(dz_t, dc_t)` from the gradients flowing into
    `h_t` and `c_t` from later steps (`dh`, `dc`) and from the outputs (`d_out`);
    the caller forms `dh_{t-1} = dz_t @ U^T` and `dc_{t-1} = dc_t * f_t`."""
    dh = dh + d_out
    dc = dc + dh * cell_factor
    return xp.concat([dc, dc, dc, dh], axis=-1) * factor, dc


def _zeros_if_none(tf, gradient, like):
    return tf.zeros_like(like) if gradient is None else gradient


def _sequence_factors(xp, c0, cells, gates):
    """`_backward_factors` of a run of time-major steps (a whole sequence, or a chunk
    of one), `c0` the cell state before its first step."""
    return _backward_factors(xp, xp.concat([c0[None], cells[:-1]], axis=0), cells, gates)


def _backward_factors(xp, previous_cells, cells, gates):
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
