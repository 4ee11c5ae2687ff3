"""Training on padded segments (JAX): one compiled step for every segment length.

XLA compiles a training step for each input shape it meets, about 3 s for the small
model on CPU, so the variable segment lengths of AWD-LSTM's BPTT would each cost a
compilation. On JAX, `AWDLSTMLanguageModel.train_on_batch` therefore pads a segment to
a fixed number of steps (`segment_capacity`, a multiple of `CHUNK_STEPS`) and passes
its true length along; the LSTMs (`_recurrence.padded_recurrence`) and the tied
decoder's cross-entropy here loop over chunks of `CHUNK_STEPS` steps up to that
length only, so the padding costs no matrix products.
"""

import math

from awd_lstm.layers._recurrence import CHUNK_STEPS, jax_chunks

_CACHE = {}


def padded_steps(steps):
    """`steps` rounded up to a multiple of `CHUNK_STEPS`."""
    return CHUNK_STEPS * math.ceil(steps / CHUNK_STEPS)


def padded_cross_entropy():
    """JAX: `f(hidden, table, bias, targets, length) -> losses`: the cross-entropy of
    `softmax(hidden @ table^T + bias)` at the targets, time-major (`hidden`
    `(time, batch, features)`, `targets` and `losses` `(time, batch)`), computed for
    the first `length` steps (a traced integer) in chunks of `CHUNK_STEPS` steps;
    `losses` are zero past `length`. The forward keeps each chunk's softmax for the
    backward (`(softmax - one_hot) * d_loss`), which forms the gradients of `hidden`,
    the table and the bias chunk by chunk."""
    if "jax" not in _CACHE:
        _CACHE["jax"] = _jax()
    return _CACHE["jax"]


def _jax():
    import jax
    import jax.numpy as jnp

    k = CHUNK_STEPS
    piece, put, chunks = jax_chunks()

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
