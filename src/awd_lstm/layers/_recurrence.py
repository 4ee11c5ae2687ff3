"""The LSTM recurrence with a hand-written gradient, for TensorFlow and JAX on CPU.

Where no fused LSTM kernel runs (TensorFlow and JAX without cuDNN), `WeightDropLSTM`
projects the inputs of every time step with one matrix product and loops over
`z_t = zx_t + h_{t-1} @ U` only. Automatic differentiation of that loop adds, at every
step of the backward loop, a `(units, 4 units)` product `h_{t-1}^T dz_t` and its
accumulation into `dU`. The gradient here keeps only what the recurrence needs in the
loop, `dh_{t-1} = dz_t @ U^T`, and computes

    dU = sum_t h_{t-1}^T dz_t

after it as one product over all `time x batch` rows (and the gates' derivatives as
whole-sequence element-wise products before it). The numbers are those of the
automatic gradient up to float rounding.

Gate order and activations are Keras' LSTM's: `i, f, c, o`; sigmoid gates, tanh cell.
Every tensor here is time-major: `zx` is `(time, batch, 4 units)`.
"""

import keras

_CACHE = {}
_JAX_COLUMNS = 2560


def recurrence_with_gradient():
    """`f(zx, h0, c0, recurrent_kernel) -> (outputs, h_T, c_T)` for the present
    backend, differentiable with the hand-written gradient, or None where the backend
    has none here (PyTorch runs its own fused kernel)."""
    backend = keras.backend.backend()
    if backend not in _CACHE:
        builder = {"tensorflow": _tensorflow, "jax": _jax}.get(backend)
        _CACHE[backend] = builder() if builder else None
    return _CACHE[backend]


def _tensorflow():
    import tensorflow as tf

    def arrays(steps, dtype, *values):
        """One TensorArray of `steps` entries per value (each unstacked along time),
        or a single empty one without values."""
        if not values:
            return tf.TensorArray(dtype, size=steps)
        return [tf.TensorArray(dtype, size=steps).unstack(v) for v in values]

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
        return hs.stack(), h, c, cs.stack(), gates.stack()

    @tf.custom_gradient
    def recurrence(zx, h0, c0, kernel):
        outputs, h, c, cells, gates = forward(zx, h0, c0, kernel)

        def grad(d_outputs, d_h, d_c):
            d_outputs = _zeros_if_none(tf, d_outputs, outputs)
            d_h = _zeros_if_none(tf, d_h, h)
            d_c = _zeros_if_none(tf, d_c, c)
            factors, forget, cell_factor = _backward_factors(tf, h0, c0, cells, gates)
            steps = tf.shape(zx)[0]
            d_outs, factor_ta, forget_ta, cell_ta = arrays(
                steps, zx.dtype, d_outputs, factors, forget, cell_factor
            )
            # Transposed once: TensorFlow's CPU matmul with transpose_b=True runs at
            # half the rate of a plain one at these shapes.
            kernel_t = tf.transpose(kernel)

            def body(t, dh, dc, dzs):
                dh = dh + d_outs.read(t)
                dc = dc + dh * cell_ta.read(t)
                dz = tf.concat([dc, dc, dc, dh], axis=-1) * factor_ta.read(t)
                return (
                    t - 1,
                    tf.matmul(dz, kernel_t),
                    dc * forget_ta.read(t),
                    dzs.write(t, dz),
                )

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
        # XLA's CPU dot of a narrow left operand runs at about 60% of the rate of the
        # same product split into column blocks of at most _JAX_COLUMNS (measured at
        # (80, 1150) x (1150, 4600): 62 vs 89 GFLOP/s over a 70-step scan).
        blocks = -(-kernel.shape[1] // _JAX_COLUMNS)
        kernels = jnp.array_split(kernel, blocks, axis=1) if blocks > 1 else [kernel]

        def step(carry, z_x):
            h, c = carry
            z = z_x + jnp.concatenate([h @ k for k in kernels], axis=-1)
            i, f, g, o = jnp.split(z, 4, axis=-1)
            i, f, g, o = jax.nn.sigmoid(i), jax.nn.sigmoid(f), jnp.tanh(g), jax.nn.sigmoid(o)
            c = f * c + i * g
            h = o * jnp.tanh(c)
            return (h, c), (h, c, jnp.concatenate([i, f, g, o], axis=-1))

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
        factors, forget, cell_factor = _backward_factors(jnp, h0, c0, cells, gates)

        def step(carry, xs):
            dh, dc = carry
            d_out, factor, forget_t, cell_t = xs
            dh = dh + d_out
            dc = dc + dh * cell_t
            dz = jnp.concatenate([dc, dc, dc, dh], axis=-1) * factor
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


def _zeros_if_none(tf, gradient, like):
    return tf.zeros_like(like) if gradient is None else gradient


def _backward_factors(xp, h0, c0, cells, gates):
    """Whole-sequence element-wise factors of the backward loop.

    With `dh_t` (all paths into `h_t`) and `dc_t = dc_{t+1} f_{t+1} + dh_t * o_t
    (1 - tanh(c_t)^2)`, the pre-activation gradient is
    `dz_t = [dc_t, dc_t, dc_t, dh_t] * factors_t`, where `factors_t` holds
    `g i (1 - i)`, `c_{t-1} f (1 - f)`, `i (1 - g^2)` and `tanh(c_t) o (1 - o)`.
    Returns `(factors, f, o (1 - tanh(c)^2))`, all time-major.
    """
    i, f, g, o = xp.split(gates, 4, axis=-1)
    tanh_c = xp.tanh(cells)
    previous_cells = xp.concat([c0[None], cells[:-1]], axis=0)
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
