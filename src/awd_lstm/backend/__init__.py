"""The one place that knows which Keras backend runs, and Keras' internals.

`name()` is the package's only reading of `keras.config.backend()`. Code above this
package calls the neutral functions here; each dispatches to the module of the
backend that runs (`jax.py`, `torch.py`, `tensorflow.py`), imported on first use so
that no backend is imported before it is needed. Every use of private Keras code is
a function of `_keras.py`, listed at its top with the reason no public API serves.

The recurrences with hand-written gradients (`awd_lstm.layers._recurrence`), the JAX
padded segments (`awd_lstm.models._padded`), TensorFlow's per-shape step functions
and the distribution strategies (`awd_lstm.distribute`) still live with their layers;
they ask `name()` which backend runs.
"""

import importlib

import keras
from keras import ops

from awd_lstm.backend._keras import (  # noqa: F401 (re-exported)
    backend_rnn,
    flatten_metrics,
    fused_lstm,
    in_stateless_scope,
    track_variable,
    training_of_current_call,
    untrack,
)

BACKENDS = ("tensorflow", "jax", "torch")


def name():
    """The Keras backend of this process: `"tensorflow"`, `"jax"` or `"torch"`."""
    return keras.config.backend()


def _module():
    return importlib.import_module(f"awd_lstm.backend.{name()}")


def keep_mask(shape, rate, seed):
    """A boolean DropConnect keep mask (True with probability `1 - rate`): from 16
    random bits per entry, several entries per random word, on JAX and PyTorch (see
    their modules); a uniform draw and a comparison on TensorFlow. `seed` is a
    `keras.random.SeedGenerator` (advanced by the draw) or, on JAX, a key from
    `step_seeds`."""
    if name() == "tensorflow":
        return keras.random.uniform(shape, seed=seed) >= rate
    return _module().keep_mask(shape, rate, seed)


def step_seeds(sequence_seed, tensors, count=2):
    """JAX only: `count` keys for one time step's masks, drawn without advancing any
    state (see `awd_lstm.backend.jax.step_seeds`)."""
    return _module().step_seeds(sequence_seed, tensors, count)


def check_seed_generator_can_advance(inputs):
    """Raises where a step's draw from a seed generator would leak out of a trace
    (JAX: a loop of the user's own inside `lax.scan` or `jit`)."""
    if name() == "jax":
        _module().check_seed_generator_can_advance(inputs)


def rematerialized(function):
    """`function`, recomputed in the backward pass instead of keeping its
    intermediates (`jax.checkpoint`); JAX only."""
    return _module().rematerialized(function)


def matmul_transposed(inputs, table):
    """`inputs @ table^T` over the last axis of `inputs` (the tied decoder); on
    TensorFlow one `MatMul(transpose_b=True)` on the flattened inputs, whose two
    gradients are then products without a transposed copy of the table."""
    if name() == "tensorflow":
        return _module().matmul_transposed(inputs, table)
    return ops.matmul(inputs, ops.transpose(table))


def target_cross_entropy(logits, targets):
    """The cross-entropy of every token, `-log softmax(logits)[target]`, by each
    backend's cheapest exact route (see their modules)."""
    targets = ops.cast(targets, "int32")
    if name() == "tensorflow":
        return ops.sparse_categorical_crossentropy(targets, logits, from_logits=True)
    if name() == "torch":
        return _module().target_cross_entropy(logits, targets)
    log_probs = ops.log_softmax(logits, axis=-1)
    return -ops.take_along_axis(log_probs, ops.expand_dims(targets, -1), axis=-1)[..., 0]


def native_lstm(sequences, h0, c0, kernel, recurrent_kernel, bias, go_backwards, return_sequences):
    """PyTorch only: `torch.nn.LSTM`'s own fused kernel with the given kernels, as
    `(last_output, outputs, [h, c])`, or None where it does not run."""
    if name() != "torch":
        return None
    return _module().native_lstm(
        sequences, h0, c0, kernel, recurrent_kernel, bias, go_backwards, return_sequences
    )


def activation_modules():
    """Modules whose `tanh` and `sigmoid` count as the standard LSTM activations
    besides Keras' (PyTorch's own on the PyTorch backend)."""
    return _module().activation_modules() if name() == "torch" else ()
