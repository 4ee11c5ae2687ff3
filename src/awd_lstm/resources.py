"""Memory: what training a model takes, what this machine has, and runs out of memory.

`training_memory` estimates, from a `TrainingConfig` and the vocabulary size alone
(nothing is built), the memory a training run takes: the weights of the training and
evaluation models, the optimizer's state, and one training step's gradients and
activations. `check_training_memory` refuses, before anything is built or written, a
run whose estimate is above what `available_memory` reports (by more than `TOLERANCE`,
the largest overestimate measured), in one sentence with both numbers;
`classifier_memory` and `check_classifier_memory` do the same for a text classifier.
Set the environment variable `AWD_LSTM_SKIP_MEMORY_CHECK=1` to train anyway where the
estimate is wrong.

A run that runs out of memory all the same stops with one sentence
(`out_of_memory_stops`) instead of the backend's traceback: Python's `MemoryError`,
TensorFlow's `ResourceExhaustedError`, XLA's `RESOURCE_EXHAUSTED`, PyTorch's
`OutOfMemoryError` or its CPU allocator's "can't allocate memory".

The estimate and the measurements it was checked against (benchmarks/memory_estimate.py)
are in docs/RELIABILITY.md, "Resources". No Keras import here: the backend is asked
only where the device's memory is needed.
"""

import contextlib
import dataclasses
import math
import os

from awd_lstm.data.batching import max_segment_length

SKIP_VARIABLE = "AWD_LSTM_SKIP_MEMORY_CHECK"
GIB = 2**30
# Weights, gradients, optimizer state and activations counted as float32 (mixed
# precision keeps float32 weights; its bfloat16/float16 activations make the
# estimate an upper bound).
BYTES = 4
# Per parameter, the optimizer's state: NT-ASGD one average (Keras' EMA slots, made
# with the optimizer), SGD none, Adam and its RMSProp variant two moments.
OPTIMIZER_SLOTS = {"ntasgd": 1, "sgd": 0, "adam": 2, "rmsprop": 2}


@dataclasses.dataclass(frozen=True)
class Copies:
    """How many copies of what it counts a training step holds: per parameter beyond
    the weights and the optimizer's state (`gradients`: the gradient, its clipped
    copy, the update's temporaries; plus one per optimizer slot for that slot's
    update), per number `_encoder_numbers` counts (`activations`: what autodiff keeps
    of the encoder), per output score (`scores`: logits, softmax, their gradient)
    and, with an adaptive softmax, per number of the output table and cluster
    (`sliced_table`: the gradient of each cluster's slice of the table is a
    table-sized array before they are summed, unless the compiler fuses them)."""

    gradients: float
    activations: float
    scores: float
    sliced_table: float


# Fitted per backend to the peaks benchmarks/memory_estimate.py measured on CPU
# (docs/RELIABILITY.md, "Resources": the estimate within 0.76 to 1.13 of the peak):
# TensorFlow's training step keeps about one copy of the output scores, JAX's two,
# PyTorch's three; XLA fuses the adaptive softmax's table gradients.
COPIES = {
    "tensorflow": Copies(gradients=2, activations=1.7, scores=1.1, sliced_table=1),
    "jax": Copies(gradients=3, activations=2.2, scores=1.8, sliced_table=0),
    "torch": Copies(gradients=2, activations=1.6, scores=3.1, sliced_table=1),
}


# A run is refused where its estimate is above the memory available by more than the
# largest overestimate measured (docs/RELIABILITY.md): what is refused would not fit.
TOLERANCE = 1.15


class ResourceError(ValueError):
    """A model or batch too large for this machine's memory; the message is one
    sentence with the estimate and the memory available."""


class RanOutOfMemory(MemoryError):
    """A run that ran out of memory and stopped; the message is one sentence that
    says what was kept."""


@dataclasses.dataclass(frozen=True)
class MemoryEstimate:
    """The memory a training run takes, in bytes: `model` (the weights of every model
    the run keeps and the optimizer's state) and `step` (one training step's gradients
    and activations); `what` names what was estimated, for a message."""

    parameters: int
    model: int
    step: int
    what: str

    @property
    def total(self):
        return self.model + self.step


# -- parameters ---------------------------------------------------------------------


def _recurrent_parameters(cell, layer, features, units, rounds=0, rank=None):
    """Trainable numbers of recurrent layer `layer` (`features` in, `units` out)."""
    if cell == "qrnn":
        window = 2 if layer == 0 else 1  # the reference's AWD-QRNN (AWDLSTMEncoder)
        return (window * features + 1) * 3 * units
    count = 4 * units * (features + units + 1)  # kernel, recurrent kernel, bias
    if cell == "mogrifier":
        # Each round one matrix between the input and the state (odd rounds h -> x,
        # even rounds x -> h), full or as two factors of rank `rank`.
        count += rounds * (features * units if rank is None else rank * (features + units))
    return count


def _layer_sizes(embedding_size, hidden_size, num_layers, last_units):
    """`(features, units)` of each recurrent layer."""
    sizes, features = [], embedding_size
    for layer in range(num_layers):
        units = last_units if layer == num_layers - 1 else hidden_size
        sizes.append((features, units))
        features = units
    return sizes


def _last_units(config):
    return config.last_hidden_size or (
        config.embedding_size if config.tie_weights else config.hidden_size
    )


def _encoder_parameters(vocab_size, embedding_size, sizes, cell, rounds, rank):
    count = vocab_size * embedding_size
    for layer, (features, units) in enumerate(sizes):
        count += _recurrent_parameters(cell, layer, features, units, rounds, rank)
    return count


def count_parameters(config, vocab_size):
    """The trainable numbers of the language model `config` describes for
    `vocab_size` words (what `recipe.build_model(config, vocab_size, ...)` builds),
    computed without building it."""
    last = _last_units(config)
    sizes = _layer_sizes(config.embedding_size, config.hidden_size, config.num_layers, last)
    count = _encoder_parameters(
        vocab_size,
        config.embedding_size,
        sizes,
        config.cell,
        config.mogrifier_rounds,
        config.mogrifier_rank or None,
    )
    count += vocab_size  # the decoder's bias
    if not config.tie_weights:
        count += last * vocab_size
    if config.cutoffs:
        count += (last + 1) * len(config.cutoffs)  # the cluster logits
    if config.mixture_components:
        components = config.mixture_components
        count += last * components + (last + 1) * components * config.embedding_size
    return count


# -- activations --------------------------------------------------------------------


def _encoder_numbers(embedding_size, sizes, cell, rounds):
    """Numbers per position a training step of the encoder keeps for its backward
    pass, before `Copies.activations`: the embedding and its dropped copy; each layer's
    input, gates, cell and output (the Mogrifier's gated input or state of every
    round; a QRNN's windowed input); the last output's dropped copy and AR/TAR."""
    count = 2 * embedding_size
    for layer, (features, units) in enumerate(sizes):
        if cell == "qrnn":
            count += (2 if layer == 0 else 1) * features + 5 * units
        else:
            count += features + 7 * units
            if cell == "mogrifier":
                count += rounds * (features + units)
    return count + 3 * sizes[-1][1]


def _zipf_share(start, end, vocab_size):
    """The share of tokens whose frequency rank is in `[start, end)` under Zipf's law
    (p(rank) proportional to 1/rank): what an adaptive softmax's tail cluster scores."""

    def harmonic(n):
        return math.log(n) + 0.5772 if n else 0.0

    return (harmonic(end) - harmonic(start)) / harmonic(vocab_size)


def _score_numbers(config, vocab_size):
    """Output scores per position: the full softmax's `vocab_size` logits, an adaptive
    softmax's head plus each tail cluster for its share of the positions, or the
    mixture's `mixture_components * vocab_size`."""
    if config.mixture_components:
        return config.mixture_components * vocab_size
    if not config.cutoffs:
        return vocab_size
    edges = (*config.cutoffs, vocab_size)
    count = config.cutoffs[0] + len(config.cutoffs)
    for start, end in zip(edges[:-1], edges[1:]):
        count += _zipf_share(start, end, vocab_size) * (end - start)
    return math.ceil(count)


def _copies(backend_name):
    if backend_name is None:
        from awd_lstm import backend

        backend_name = backend.name()
    return COPIES[backend_name]


def training_memory(config, vocab_size, replicas=1, on_gpu=False, backend_name=None):
    """The `MemoryEstimate` of training the language model `config` describes for
    `vocab_size` words, as `awd_lstm.training.train` does: the training model, its
    optimizer's state and an evaluation model; then one training step of the longest
    segment (`max_segment_length`), or an evaluation step where that takes more; with
    the `COPIES` of `backend_name` (default: the backend that runs).

    With `replicas` (data parallel): `on_gpu`, per device (each holds the weights and
    its share of the batch); else on the one host that holds every replica's weights.
    """
    parameters = count_parameters(config, vocab_size)
    copies = 1 if on_gpu else replicas
    slots = OPTIMIZER_SLOTS[config.optimizer]
    kept = _copies(backend_name)
    model = BYTES * parameters * ((1 + slots) * copies + 1)
    last = _last_units(config)
    sizes = _layer_sizes(config.embedding_size, config.hidden_size, config.num_layers, last)
    numbers = _encoder_numbers(config.embedding_size, sizes, config.cell, config.mogrifier_rounds)
    if config.mixture_components:
        # The prior and the latent vectors, with their dropped copies.
        numbers += config.mixture_components * (2 * config.embedding_size + 1)
    scores = _score_numbers(config, vocab_size)
    batch = config.batch_size // replicas if on_gpu else config.batch_size
    steps = max_segment_length(config.bptt, config.length_quantum)
    positions = batch * steps
    train_step = BYTES * (
        (kept.gradients + slots) * parameters * copies
        + positions * (kept.activations * numbers + kept.scores * scores)
    )
    if config.cutoffs:
        train_step += BYTES * kept.sliced_table * (len(config.cutoffs) + 1) * vocab_size * last
    # Evaluation keeps no activations, only the scores and their softmax.
    eval_step = BYTES * config.eval_batch_size * config.bptt * (numbers + 2 * scores)
    what = (
        f"training {parameters / 1e6:,.1f}M parameters with {config.optimizer} on "
        f"{config.batch_size} x {steps} tokens a step"
    )
    return MemoryEstimate(parameters, model, max(train_step, eval_step), what)


def classifier_memory(config, encoder, num_classes, backend_name=None):
    """The `MemoryEstimate` of training a text classifier: `config` its
    `ClassifierConfig`, `encoder` its encoder's config (`AWDLSTMEncoder.get_config()`)
    with `num_classes` classes. Every document is taken as `max_len` tokens long (the
    gradient's reach; the longest batch's documents are that long or shorter), rounded
    up to whole `bptt` segments; Adam's two moments; the `COPIES` of `backend_name`
    (default: the backend that runs)."""
    kept = _copies(backend_name)
    last = encoder.get("output_size") or encoder["embedding_size"]
    sizes = _layer_sizes(
        encoder["embedding_size"], encoder["hidden_size"], encoder["num_layers"], last
    )
    cell, rounds = encoder.get("cell", "lstm"), encoder.get("mogrifier_rounds", 0)
    parameters = _encoder_parameters(
        encoder["vocab_size"],
        encoder["embedding_size"],
        sizes,
        cell,
        rounds,
        encoder.get("mogrifier_rank"),
    )
    width = 3 * last  # the concat pooling
    for size in (*config.head_sizes, num_classes):
        parameters += 4 * width + (width + 1) * size  # batch normalization, dense
        width = size
    model = BYTES * parameters * 3
    steps = config.bptt * math.ceil(config.max_len / config.bptt)
    numbers = _encoder_numbers(encoder["embedding_size"], sizes, cell, rounds)
    step = BYTES * (
        (kept.gradients + 2) * parameters + config.batch_size * steps * kept.activations * numbers
    )
    what = (
        f"training {parameters / 1e6:,.1f}M parameters on {config.batch_size} documents "
        f"of up to {steps} tokens a step"
    )
    return MemoryEstimate(parameters, model, step, what)


# -- what the machine has ---------------------------------------------------------


def _read_number(path):
    try:
        with open(path) as f:
            text = f.read().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def _inactive_file(stat_path, key):
    """The reclaimable page cache a cgroup's `memory.stat` counts (`key`)."""
    try:
        with open(stat_path) as f:
            for line in f:
                name, _, value = line.partition(" ")
                if name == key:
                    return int(value)
    except (OSError, ValueError):
        pass
    return 0


# Where Linux shows the process's cgroups and memory (tests point these elsewhere).
PROC = "/proc"
CGROUP_MOUNT = "/sys/fs/cgroup"


# The CPU features that compute bfloat16 products in hardware, as Linux's
# /proc/cpuinfo names them: x86's AVX-512 BF16 and AMX, Arm's BF16 extension.
BFLOAT16_FLAGS = ("avx512_bf16", "amx_bf16", "bf16")


def cpu_info():
    """`(model, flags)` of the first CPU in Linux's /proc/cpuinfo: its model name
    ("unknown" where none is given) and its feature flags (x86 `flags`, Arm
    `Features`); `(None, set())` where there is no such file."""
    try:
        with open(os.path.join(PROC, "cpuinfo"), encoding="utf-8", errors="replace") as f:
            lines = f.read().splitlines()
    except OSError:
        return None, set()
    model, flags = "unknown", set()
    for line in lines:
        key, _, value = line.partition(":")
        key = key.strip()
        if key in ("model name", "Model name") and model == "unknown":
            model = value.strip()
        elif key in ("flags", "Features") and not flags:
            flags = set(value.split())
    return model, flags


def cpu_has_bfloat16():
    """Whether the CPU computes bfloat16 products in hardware (`BFLOAT16_FLAGS`); None
    where it is not known (no /proc/cpuinfo: not Linux)."""
    model, flags = cpu_info()
    if model is None or not flags:
        return None
    return any(flag in flags for flag in BFLOAT16_FLAGS)


def _cgroup_headroom():
    """Bytes this process's cgroup, and each cgroup above it, still lets it take (its
    limit less what it uses, the reclaimable page cache not counted); None without a
    limit. cgroup v2 (`memory.max`) and v1 (`memory.limit_in_bytes`)."""
    try:
        with open(os.path.join(PROC, "self", "cgroup")) as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    layouts = {
        # hierarchy's controllers: (mount, limit, usage, memory.stat's cache key)
        "": (CGROUP_MOUNT, "memory.max", "memory.current", "inactive_file"),
        "memory": (
            os.path.join(CGROUP_MOUNT, "memory"),
            "memory.limit_in_bytes",
            "memory.usage_in_bytes",
            "total_inactive_file",
        ),
    }
    headroom = None
    for line in lines:
        if line.count(":") < 2:
            continue
        _, controllers, path = line.split(":", 2)
        layout = layouts.get(controllers) or (
            layouts["memory"] if "memory" in controllers.split(",") else None
        )
        if layout is None:
            continue
        mount, limit_file, usage_file, cache_key = layout
        folder = os.path.join(mount, path.lstrip("/"))
        if not os.path.isdir(folder):  # a namespaced view: the mount is the process's own
            folder = mount
        while True:
            limit = _read_number(os.path.join(folder, limit_file))
            usage = _read_number(os.path.join(folder, usage_file))
            if limit is not None and usage is not None and limit < 2**60:  # else no limit
                used = usage - _inactive_file(os.path.join(folder, "memory.stat"), cache_key)
                left = max(0, limit - max(used, 0))
                headroom = left if headroom is None else min(headroom, left)
            if os.path.normpath(folder) == os.path.normpath(mount):
                break
            folder = os.path.dirname(folder)
    return headroom


def _mem_available():
    """Linux's estimate of the memory available to new allocations (`MemAvailable`
    of /proc/meminfo), or None."""
    try:
        with open(os.path.join(PROC, "meminfo")) as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def host_memory():
    """`(bytes, source)`: the memory this process can still take on its machine, the
    lower of its cgroup's headroom and Linux's `MemAvailable`; elsewhere the free (or,
    failing that, the physical) pages `os.sysconf` reports; `(None, reason)` where
    nothing tells it."""
    found = [
        (value, source)
        for value, source in (
            (_cgroup_headroom(), "under the cgroup's memory limit"),
            (_mem_available(), "available (MemAvailable)"),
        )
        if value is not None
    ]
    if found:
        return min(found)
    for pages, source in (("SC_AVPHYS_PAGES", "free"), ("SC_PHYS_PAGES", "of physical memory")):
        try:
            return os.sysconf(pages) * os.sysconf("SC_PAGE_SIZE"), source
        except (AttributeError, ValueError, OSError):
            continue
    return None, "this system does not report its memory"


def available_memory():
    """`(bytes, source)`: the memory a training run in this process can take, where
    its weights and activations live: the GPU's free memory where the backend computes
    on one and tells it (JAX, PyTorch), else the machine's (`host_memory`); `(None,
    reason)` where it is not known (TensorFlow on a GPU). The one place the check
    reads the machine: tests replace it."""
    from awd_lstm import backend

    if backend.has_gpu():
        free = backend.device_memory()
        if free is None:
            return None, f"{backend.name()} does not report its GPU's memory"
        return free, "free on the GPU"
    return host_memory()


def _on_gpu():
    from awd_lstm import backend

    return backend.has_gpu()


def _skipped():
    return os.environ.get(SKIP_VARIABLE, "") not in ("", "0")


def describe_bytes(count):
    """`count` bytes in GiB (one decimal), or below 1 GiB in MiB."""
    if count >= GIB:
        return f"{count / GIB:,.1f} GiB"
    return f"{count / 2**20:,.0f} MiB"


def _check(estimate, available, source):
    if available is None or estimate.total <= available * TOLERANCE:
        return
    raise ResourceError(
        f"estimated {describe_bytes(estimate.total)} for {estimate.what} (weights and "
        f"optimizer state {describe_bytes(estimate.model)}, one step "
        f"{describe_bytes(estimate.step)}); {describe_bytes(available)} {source}: lower "
        f"the batch, bptt or the model's sizes, or set {SKIP_VARIABLE}=1 if the estimate "
        "is wrong"
    )


def check_training_memory(config, vocab_size, replicas=1):
    """Raises `ResourceError` where `training_memory` is above `available_memory`
    (by more than `TOLERANCE`): before anything is built or written. Nothing is
    checked where the memory is not known or `AWD_LSTM_SKIP_MEMORY_CHECK` is set (to
    anything but 0)."""
    if _skipped():
        return
    available, source = available_memory()
    if available is not None:
        _check(training_memory(config, vocab_size, replicas, _on_gpu()), available, source)


def check_classifier_memory(config, encoder, num_classes):
    """`check_training_memory` for a text classifier (`classifier_memory`)."""
    if _skipped():
        return
    available, source = available_memory()
    _check(classifier_memory(config, encoder, num_classes), available, source)


# -- running out of memory anyway ---------------------------------------------------


def out_of_memory_reason(error):
    """The first line of `error`'s message where it says the machine or device ran
    out of memory (for a bare `MemoryError`, "out of memory"); None for other errors."""
    if not isinstance(error, MemoryError):
        import sys

        if "keras" not in sys.modules:
            return None
        from awd_lstm import backend

        if not backend.is_out_of_memory(error):
            return None
    lines = str(error).strip().splitlines()
    reason = lines[0].strip() if lines else ""
    if len(reason) > 200:
        reason = reason[:197] + "..."
    return f"out of memory ({reason})" if reason else "out of memory"


@contextlib.contextmanager
def out_of_memory_stops(what_is_kept):
    """Turns running out of memory inside the block into `RanOutOfMemory`, one
    sentence: "training stopped: out of memory (the backend's first line); ", then
    `what_is_kept()` (the files that survive), then what to lower."""
    try:
        yield
    except RanOutOfMemory:
        raise
    except Exception as e:
        reason = out_of_memory_reason(e)
        if reason is None:
            raise
        raise RanOutOfMemory(
            f"training stopped: {reason}; {what_is_kept()} (a smaller batch, bptt or "
            "model needs less)"
        ) from None
