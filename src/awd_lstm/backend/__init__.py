"""The one place that knows which Keras backend runs, and Keras' internals.

`name()` is the package's only reading of `keras.config.backend()`. Code above this
package calls the neutral functions here; each dispatches to the module of the
backend that runs (`jax.py`, `torch.py`, `tensorflow.py`), imported on first use so
that no backend is imported before it is needed. Every use of private Keras code is
a function of `_keras.py`, listed at its top with the reason no public API serves.

The LSTM recurrences with hand-written gradients live with their backends
(`tensorflow.py`, `jax.py`; the math they share in `_lstm_gradient.py`), as do JAX's
padded segments and what runs under a TensorFlow strategy (the replica's place, the
gradients summed over replicas, the language model's own per-shape step functions).
`awd_lstm.distribute` makes the strategies (`tf.distribute`, `keras.distribution`)
and asks `name()` which backend runs.

Padded segments (JAX): XLA compiles a training step for each input shape it meets,
about 3 s for the small model on CPU, so the variable segment lengths of AWD-LSTM's
BPTT would each cost a compilation. On JAX, `AWDLSTMLanguageModel.train_on_batch`
therefore pads a segment to a fixed number of steps (`segment_capacity`, a multiple
of `CHUNK_STEPS`) and passes its true length along; the LSTMs (`padded_recurrence`)
and the tied decoder's cross-entropy (`padded_cross_entropy`) loop over chunks of
`CHUNK_STEPS` steps up to that length only, so the padding costs no matrix products.
"""

import importlib
import math
import random

import keras
import numpy as np
from keras import ops

from awd_lstm._environment import check_keras
from awd_lstm.backend._keras import (  # noqa: F401 (re-exported)
    AverageUpdateHook,
    SumOverReplicasFirst,
    backend_rnn,
    flatten_metrics,
    fused_lstm,
    in_stateless_scope,
    optimizer_targets,
    set_keras_seed,
    symbolic_build,
    tensorflow_unimported,
    track_variable,
    training_of_current_call,
)
from awd_lstm.backend._lstm_gradient import CHUNK_STEPS  # noqa: F401 (re-exported)

# Before any of the package's Keras code runs: a Keras outside the tested range would
# fail later, deep inside, with an AttributeError.
check_keras(keras.__version__, keras.config.backend())
_BUILT = {}


def name():
    """The Keras backend of this process: `"tensorflow"`, `"jax"` or `"torch"`."""
    return keras.config.backend()


def _module():
    return importlib.import_module(f"awd_lstm.backend.{name()}")


def set_random_seed(seed):
    """Seeds Python's, NumPy's, Keras' and the backend's global random generators, as
    `keras.utils.set_random_seed` does, without importing TensorFlow on JAX and
    PyTorch (Keras' function imports it whenever it is installed)."""
    if name() == "tensorflow":
        keras.utils.set_random_seed(seed)
        return
    if not isinstance(seed, int):
        raise ValueError(f"`seed` must be an integer; Received: seed={seed!r}")
    random.seed(seed)
    np.random.seed(seed)  # noqa: NPY002 (the legacy global generator, as Keras seeds it)
    set_keras_seed(seed)
    if name() == "torch":
        import torch

        torch.manual_seed(seed)


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


def decoder_logits(inputs, table, bias):
    """The tied decoder's float32 logits, `inputs @ table^T + bias` over the last axis
    of `inputs`. On PyTorch in float32 one `torch.nn.functional.linear`: the product
    and the bias in one `addmm`, as `nn.Linear` computes them (added apart, the bias
    reads and writes the whole `(tokens, vocabulary)` array once more forward and
    once backward: 3% of a `small` step). Elsewhere, and under a mixed policy,
    `matmul_transposed` in the compute dtype, then the bias in float32."""
    if name() != "jax" and keras.backend.standardize_dtype(inputs.dtype) == "float32":
        return _module().decoder_logits(inputs, table, bias)
    logits = matmul_transposed(inputs, table)
    return ops.cast(logits, "float32") + ops.cast(bias, "float32")


def move_averages(averages, variables, weight):
    """`average += (variable - average) * weight` for every pair (`weight`: a scalar
    tensor). On PyTorch one fused update of them all (Keras' eager ops take three
    passes over each variable and a Python dispatch per op: 3% of a `small` step,
    spent before NT-ASGD's switch keeping the averages equal to the weights)."""
    if name() == "torch" and not in_stateless_scope():
        # (In a stateless scope the values are the caller's: updated by `assign`.)
        return _module().move_averages(averages, variables, weight)
    for variable, average in zip(variables, averages):
        average.assign(average + (variable - average) * ops.cast(weight, variable.dtype))


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


def replica():
    """`(replicas, replica_id)` inside a replica function of a TensorFlow strategy with
    more than one replica (the id a Python int or a scalar tensor), else `(1, 0)`."""
    return _module().replica() if name() == "tensorflow" else (1, 0)


def in_strategy():
    """Whether a TensorFlow strategy's scope is active (never on other backends)."""
    return name() == "tensorflow" and _module().in_strategy()


def strategy_replicas():
    """Replicas of the TensorFlow strategy whose scope is active (1 outside one)."""
    return _module().strategy_replicas() if name() == "tensorflow" else 1


def sum_over_replicas(grads):
    """The gradients summed over a TensorFlow strategy's replicas (inside a replica
    function of several); elsewhere `grads` as they are."""
    return _module().sum_over_replicas(grads) if name() == "tensorflow" else grads


def step_masks_from_sequence_seed():
    """Whether a cell's per-step masks come from a seed drawn once per sequence (JAX,
    whose traced loops cannot advance a seed generator; see `step_seeds`)."""
    return name() == "jax"


def runs_padded_segments():
    """Whether padded segments run here (JAX on a device without cuDNN)."""
    return name() == "jax" and _module().runs_padded_segments()


def has_gpu():
    """Whether the backend computes on a GPU."""
    return _module().has_gpu()


def associative_scan(f, elems, axis=0):
    """`keras.ops.associative_scan(f, elems, axis=axis)` for an `f` whose results have
    the shapes of its arguments, the results with the static shapes of `elems` on
    every backend (TensorFlow's loses them)."""
    if name() == "tensorflow":
        return _module().associative_scan(f, elems, axis)
    return ops.associative_scan(f, elems, axis=axis)


def device_memory():
    """Free bytes of the GPU the backend computes on, where the backend tells it
    (JAX: its allocator's limit less what it holds; PyTorch: CUDA's free memory and
    its own cache); None on TensorFlow, whose public API reports what a GPU's memory
    holds but not its size."""
    return _module().device_memory()


def is_out_of_memory(error):
    """Whether `error` says the machine or the device ran out of memory: Python's
    `MemoryError`, TensorFlow's `ResourceExhaustedError`, XLA's RESOURCE_EXHAUSTED,
    PyTorch's `OutOfMemoryError` and its CPU allocator's "can't allocate memory"."""
    return isinstance(error, MemoryError) or _module().is_out_of_memory(error)


def parallel_pooling():
    """Whether `awd_lstm.layers.QRNN(pooling="auto")` pools with the associative scan
    rather than the step loop: where benchmarks/qrnn_throughput.py measured it
    faster (JAX, whose loop is one compiled `lax.scan` either way, and every GPU,
    where the scan's few wide operations beat a long chain of small ones)."""
    return name() == "jax" or has_gpu()


def fused_lstm_blocks_jit():
    """Whether a layer that ran Keras' fused LSTM cannot be XLA-compiled (TensorFlow's
    cuDNN kernel, on a GPU), as `keras.layers.LSTM` marks itself."""
    return name() == "tensorflow" and _module().has_gpu()


def _built(function):
    """The function the running backend's module builds with `function()`, built once."""
    key = (name(), function)
    if key not in _BUILT:
        _BUILT[key] = getattr(_module(), function)()
    return _BUILT[key]


def recurrence_with_gradient():
    """`f(zx, h0, c0, recurrent_kernel) -> (outputs, h_T, c_T)`, the LSTM recurrence over
    time-major projected inputs, differentiable with the hand-written gradient
    (`_lstm_gradient`), on TensorFlow and JAX; None on PyTorch (which runs its own
    fused kernel)."""
    if name() == "torch":
        return None
    return _built("recurrence_with_gradient")


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
    if name() != "jax":
        return None
    return _built("padded_recurrence")


def padded_cross_entropy():
    """JAX: `f(hidden, table, bias, targets, length) -> losses`: the cross-entropy of
    `softmax(hidden @ table^T + bias)` at the targets, time-major (`hidden`
    `(time, batch, features)`, `targets` and `losses` `(time, batch)`), computed for
    the first `length` steps (a traced integer) in chunks of `CHUNK_STEPS` steps;
    `losses` are zero past `length`. The forward keeps each chunk's softmax for the
    backward (`(softmax - one_hot) * d_loss`), which forms the gradients of `hidden`,
    the table and the bias chunk by chunk."""
    return _built("padded_cross_entropy")


def padded_steps(steps):
    """`steps` rounded up to a multiple of `CHUNK_STEPS`."""
    return CHUNK_STEPS * math.ceil(steps / CHUNK_STEPS)
