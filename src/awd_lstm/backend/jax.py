"""JAX: weight masks from raw bits, stateless step masks inside traced loops, and
rematerialized steps."""

import math

import jax
import jax.numpy as jnp

from awd_lstm.backend._keras import in_stateless_scope


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


def rematerialized(function):
    return jax.checkpoint(function)
