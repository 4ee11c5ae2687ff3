"""JAX: weight masks from raw bits, stateless step masks inside traced loops,
rematerialized steps, the LSTM recurrence with its hand-written gradient, and the
padded segments (the LSTM and the tied decoder's cross-entropy over chunks of
`CHUNK_STEPS` steps up to a traced length)."""

import math
import os

import jax
import jax.numpy as jnp
from jax import lax

from awd_lstm.backend._keras import in_stateless_scope
from awd_lstm.backend._lstm_gradient import CHUNK_STEPS, backward_step, sequence_factors

# Widest column block of the recurrent product (`_recurrent_product`).
RECURRENT_COLUMNS = 2560


def keep_mask(shape, rate, seed):
    """Every entry from 16 random bits, kept when they are at least
    `round(rate * 2**16)` (a drop probability within 2**-17 of `rate`; exact for the
    paper's 0.5), two entries per 32-bit word: threefry draws a 32-bit word per number
    whatever its width (a float per entry cost 5% of the small model's step)."""
    size = math.prod(shape)
    threshold = round(rate * 2**16)
    key = seed if isinstance(seed, jax.Array) else seed.next()
    words = jax.random.bits(key, (-(-size // 2),), jnp.uint32)
    fields = [words & jnp.uint32(0xFFFF), words >> jnp.uint32(16)]
    return (jnp.concatenate(fields)[:size] >= jnp.uint32(threshold)).reshape(shape)


def step_seeds(sequence_seed, tensors, count=2):
    """`count` keys for one time step's masks, without advancing any state.

    Inside a traced loop (`lax.scan`, which `keras.layers.RNN` runs on JAX) a
    `SeedGenerator` cannot advance: its new state would leak out of the loop body,
    and a loop counter would have to be carried as one more RNN state, which
    `return_state` and stateful layers would expose. So the sequence's seed, drawn
    once before the loop, is folded with a hash of the step's own values (its input
    and the carried states): they differ from step to step, the hash mixes all of
    their bits, and the same seed and the same inputs give the same masks. Steps can
    only share masks if their inputs and states are bitwise equal; their masks then
    multiply the same numbers. Each key is used for one mask, as a fresh draw would be.
    """
    key = sequence_seed
    for tensor in tensors:
        value = jax.lax.stop_gradient(jnp.asarray(tensor, jnp.float32)).ravel()
        bits = jax.lax.bitcast_convert_type(value, jnp.uint32)
        bits = bits ^ (bits >> jnp.uint32(16))
        # Odd multipliers (distinct for every position) keep the sum sensitive to
        # every bit of every entry and to their order.
        weights = jnp.arange(1, 2 * bits.size, 2, dtype=jnp.uint32) * jnp.uint32(0x9E3779B1)
        key = jax.random.fold_in(key, jnp.sum(bits * weights, dtype=jnp.uint32))
    return [jax.random.fold_in(key, i) for i in range(count)]


def check_seed_generator_can_advance(inputs):
    """A step traced outside Keras' stateless scope (a loop of the user's own,
    `lax.scan` or `jit`) cannot advance the seed generator: the new state would leak
    out of the trace and every step would get the same mask."""
    if isinstance(inputs, jax.core.Tracer) and not in_stateless_scope():
        raise ValueError(
            "weight_dropout_mode='step' draws each step's masks from a seed of the "
            "sequence inside a traced JAX loop: call cell.prepare_sequence(training=True) "
            "before the loop and cell.reset_weight_masks() after it (keras.layers.RNN "
            "does this itself)"
        )


def runs_padded_segments():
    """Padded segments run where no cuDNN kernel would (JAX's CPU)."""
    return jax.default_backend() != "gpu"


def rematerialized(function):
    return jax.checkpoint(function)


def recurrence_with_gradient():
    """`f(zx, h0, c0, recurrent_kernel) -> (outputs, h_T, c_T)`, the LSTM recurrence
    with the hand-written gradient (`_lstm_gradient`): the backward pass forms the
    gates' factors as whole-sequence products before its loop."""

    def forward(zx, h0, c0, kernel):
        recurrent_product = _recurrent_product(kernel)

        def step(carry, z_x):
            h, c = carry
            h, c, gates = _cell(z_x + recurrent_product(h), c)
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
        factors, forget, cell_factor = sequence_factors(jnp, c0, cells, gates)

        def step(carry, xs):
            d_out, factor, forget_t, cell_t = xs
            dz, dc = backward_step(jnp, *carry, d_out, factor, cell_t)
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


def chunk_helpers():
    """`(piece, put, chunks)` for time-major JAX arrays in chunks of `CHUNK_STEPS`:
    `piece(array, j)` is chunk `j`, `put(array, j, value)` writes it, `chunks(length)`
    counts the chunks `length` steps touch."""
    k = CHUNK_STEPS

    def piece(array, j):
        return lax.dynamic_slice_in_dim(array, j * k, k, axis=0)

    def put(array, j, value):
        return lax.dynamic_update_slice_in_dim(array, value, j * k, axis=0)

    def chunks(length):
        return (length + k - 1) // k

    return piece, put, chunks


def padded_recurrence():
    """The LSTM over padded segments (see `awd_lstm.backend.padded_recurrence`)."""
    k = CHUNK_STEPS
    piece, put, chunks = chunk_helpers()

    def forward(inputs, kernel, bias, recurrent_kernel, h0, c0, length):
        steps, batch, width = inputs.shape
        if steps % k:
            raise ValueError(f"padded inputs need a multiple of {k} steps; got {steps}")
        units = h0.shape[-1]
        recurrent_product = _recurrent_product(recurrent_kernel)

        def chunk(j, carry):
            h, c, outputs, cells, gates = carry
            projected = piece(inputs, j).reshape(k * batch, width) @ kernel + bias
            projected = projected.reshape(k, batch, 4 * units)
            hs, cs, gs = [], [], []
            for i in range(k):
                h_new, c_new, g = _cell(projected[i] + recurrent_product(h), c)
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
            factors, forget, cell_factor = sequence_factors(
                jnp, before(j, c0, cells), piece(cells, j), piece(gates, j)
            )
            previous_h = jnp.concatenate([before(j, h0, outputs)[None], piece(outputs, j)[:-1]])
            d_out = piece(d_outputs, j)
            dzs = [None] * k
            for i in reversed(range(k)):
                valid = j * k + i < length
                dz, dc_t = backward_step(jnp, dh, dc, d_out[i], factors[i], cell_factor[i])
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


def padded_cross_entropy():
    """The tied decoder's cross-entropy over padded segments (see
    `awd_lstm.backend.padded_cross_entropy`)."""
    k = CHUNK_STEPS
    piece, put, chunks = chunk_helpers()

    def valid_steps(j, length):
        return (j * k + jnp.arange(k) < length)[:, None]

    def forward(hidden, table, bias, targets, length):
        steps, batch, width = hidden.shape
        vocabulary = table.shape[0]

        def chunk(j, carry):
            losses, probabilities = carry
            logits = piece(hidden, j).reshape(k * batch, width) @ table.T + bias
            normalizer = jax.nn.logsumexp(logits, axis=-1, keepdims=True)
            rows = piece(targets, j).reshape(k * batch, 1)
            picked = jnp.take_along_axis(logits, rows, axis=-1)
            loss = (normalizer - picked).reshape(k, batch)
            loss = jnp.where(valid_steps(j, length), loss, 0)
            softmax = jnp.exp(logits - normalizer).reshape(k, batch, vocabulary)
            return put(losses, j, loss), put(probabilities, j, softmax)

        buffers = (
            jnp.zeros((steps, batch), hidden.dtype),
            jnp.zeros((steps, batch, vocabulary), hidden.dtype),
        )
        return jax.lax.fori_loop(0, chunks(length), chunk, buffers)

    @jax.custom_vjp
    def cross_entropy(hidden, table, bias, targets, length):
        return forward(hidden, table, bias, targets, length)[0]

    def cross_entropy_fwd(hidden, table, bias, targets, length):
        losses, probabilities = forward(hidden, table, bias, targets, length)
        return losses, (hidden, table, targets, probabilities, length)

    def cross_entropy_bwd(saved, d_losses):
        hidden, table, targets, probabilities, length = saved
        _, batch, width = hidden.shape
        vocabulary = table.shape[0]
        rows = jnp.arange(k * batch)

        def chunk(j, carry):
            d_hidden, d_table, d_bias = carry
            d_loss = jnp.where(valid_steps(j, length), piece(d_losses, j), 0)
            d_loss = d_loss.reshape(k * batch)
            d_logits = piece(probabilities, j).reshape(k * batch, vocabulary) * d_loss[:, None]
            d_logits = d_logits.at[rows, piece(targets, j).reshape(k * batch)].add(-d_loss)
            inputs = piece(hidden, j).reshape(k * batch, width)
            d_hidden = put(d_hidden, j, (d_logits @ table).reshape(k, batch, width))
            return d_hidden, d_table + d_logits.T @ inputs, d_bias + d_logits.sum(axis=0)

        initial = (
            jnp.zeros_like(hidden),
            jnp.zeros_like(table),
            jnp.zeros((vocabulary,), table.dtype),
        )
        d_hidden, d_table, d_bias = jax.lax.fori_loop(0, chunks(length), chunk, initial)
        return d_hidden, d_table, d_bias, None, None

    cross_entropy.defvjp(cross_entropy_fwd, cross_entropy_bwd)
    return cross_entropy


def _recurrent_product(kernel):
    """`h -> h @ kernel`, in column blocks of at most `RECURRENT_COLUMNS`."""
    # XLA's CPU dot of a narrow left operand runs at about 60% of the rate of the
    # same product so split (benchmarks/RESULTS.md: (80, 1150) x (1150, 4600), 62 vs
    # 89 GFLOP/s over a 70-step scan).
    blocks = -(-kernel.shape[1] // RECURRENT_COLUMNS)
    if blocks == 1:
        return lambda h: h @ kernel
    kernels = jnp.array_split(kernel, blocks, axis=1)
    return lambda h: jnp.concatenate([h @ k for k in kernels], axis=-1)


def _cell(z, c):
    """One LSTM step from the pre-activations `z`: `(h, c, gates)`."""
    i, f, g, o = jnp.split(z, 4, axis=-1)
    i, f, g, o = jax.nn.sigmoid(i), jax.nn.sigmoid(f), jnp.tanh(g), jax.nn.sigmoid(o)
    c = f * c + i * g
    return o * jnp.tanh(c), c, jnp.concatenate([i, f, g, o], axis=-1)


def set_virtual_cpu_devices(n):
    """Has XLA split the CPU into `n` devices (before JAX's first computation)."""
    flags = [
        f
        for f in os.environ.get("XLA_FLAGS", "").split()
        if not f.startswith("--xla_force_host_platform_device_count")
    ]
    os.environ["XLA_FLAGS"] = " ".join([*flags, f"--xla_force_host_platform_device_count={n}"])
    return True


def data_parallel():
    """`(keras.distribution.DataParallel over every device, replicas)`."""
    import keras

    devices = jax.devices()
    return keras.distribution.DataParallel(devices=devices), len(devices)


def has_gpu():
    """Whether JAX computes on a GPU."""
    return jax.default_backend() == "gpu"


def device_memory():
    """The first device's allocator limit less what it holds (None where XLA's
    client keeps no statistics)."""
    stats = jax.local_devices()[0].memory_stats() or {}
    if "bytes_limit" not in stats:
        return None
    return stats["bytes_limit"] - stats.get("bytes_in_use", 0)


def is_out_of_memory(error):
    # XLA's status in the message: `JaxRuntimeError` (XlaRuntimeError before JAX
    # 0.4.36), both RuntimeErrors.
    return isinstance(error, RuntimeError) and "RESOURCE_EXHAUSTED" in str(error)
