"""Data-parallel training on the frameworks' own engines.

- TensorFlow: `"mirrored"` (`tf.distribute.MirroredStrategy` over the visible devices
  of one machine) and `"multiworker"` (`tf.distribute.MultiWorkerMirroredStrategy`,
  the cluster read from the `TF_CONFIG` environment variable).
- JAX: `"data-parallel"` (`keras.distribution.DataParallel` over the available
  devices).

What is split is the batch of streams: with `R` replicas each one trains
`batch_size / R` of the contiguous streams and keeps their hidden states; the
gradients are summed over the replicas before the global-norm clipping, so a step is
the step one device would take on the whole batch (the same loss, clipping, learning
rate scaling and NT-ASGD average). Only the chief (`Distribution.is_chief`) writes
files.

For trying all of this on one CPU, `set_virtual_cpu_devices(n)` splits the CPU into
`n` logical devices; it has to run before the backend has set up its devices (the
command line's `--virtual-cpu-devices` does it first thing).
"""

import contextlib
import json
import os

STRATEGIES = {
    "mirrored": "tensorflow",
    "multiworker": "tensorflow",
    "data-parallel": "jax",
}


# Enough to try a strategy; each logical device is an object made before TensorFlow
# checks the number (a trillion of them filled the memory).
MAX_VIRTUAL_CPU_DEVICES = 1024


class DistributionError(ValueError):
    """A strategy this backend or machine cannot run; the message is one sentence."""


def check_even_split(batch_size, replicas, strategy=None):
    """Raises `DistributionError` unless `batch_size` streams split evenly over
    `replicas` (each replica trains its own share of the streams and keeps their
    states)."""
    if batch_size % replicas:
        named = f" ({strategy})" if strategy else ""
        raise DistributionError(
            f"the batch of {batch_size} streams does not split evenly over {replicas} "
            f"replicas{named}; choose a multiple of {replicas}"
        )


def _backend():
    from awd_lstm import backend  # imports Keras: not before the command picked one

    return backend.name()


def check_strategy(name, backend):
    """Raises `DistributionError` unless `backend` runs the strategy `name`."""
    if name not in STRATEGIES:
        allowed = ", ".join(STRATEGIES)
        raise DistributionError(f"unknown distribution strategy {name!r}; choose {allowed}")
    needed = STRATEGIES[name]
    if backend != needed:
        supported = [s for s, b in STRATEGIES.items() if b == backend]
        offer = (
            f"with {backend} use {' or '.join(supported)}"
            if supported
            else f"the {backend} backend has no distribution strategy here"
        )
        raise DistributionError(
            f"--distribute {name} needs the {needed} backend, not {backend}; {offer}"
        )


def set_virtual_cpu_devices(n, backend):
    """Splits the CPU into `n` logical devices for `backend` ("tensorflow" or "jax").

    Must run before the backend sets up its devices: for JAX before its first
    computation (it sets `XLA_FLAGS`), for TensorFlow before its first operation.
    """
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_VIRTUAL_CPU_DEVICES:
        raise DistributionError(
            f"--virtual-cpu-devices must be an integer in [1, {MAX_VIRTUAL_CPU_DEVICES}]; got {n!r}"
        )
    if backend not in ("tensorflow", "jax"):
        raise DistributionError(
            f"--virtual-cpu-devices needs the tensorflow or jax backend, not {backend}"
        )
    if not _backend_module(backend).set_virtual_cpu_devices(n):
        raise DistributionError(
            "--virtual-cpu-devices must be set before TensorFlow starts; run it in a fresh process"
        )


def _backend_module(backend):
    # The framework's own calls live with their backend (imported only here, once the
    # command has chosen it).
    if backend == "jax":
        from awd_lstm.backend import jax as module
    else:
        from awd_lstm.backend import tensorflow as module
    return module


def read_tf_config(environ=None):
    """`(cluster, task_type, task_id)` of the `TF_CONFIG` environment variable, checked;
    raises `DistributionError` with what is wrong."""
    environ = os.environ if environ is None else environ
    text = environ.get("TF_CONFIG")
    if not text:
        raise DistributionError(
            "--distribute multiworker reads the cluster from TF_CONFIG, which is not set "
            '(e.g. {"cluster": {"worker": ["host1:port", "host2:port"]}, '
            '"task": {"type": "worker", "index": 0}})'
        )
    example = '{"cluster": {"worker": ["host:port", ...]}, "task": {"type": "worker", "index": 0}}'
    try:
        spec = json.loads(text)
    except ValueError as e:
        raise DistributionError(f"TF_CONFIG is not a valid cluster description: {e}") from None
    cluster = spec.get("cluster") if isinstance(spec, dict) else None
    task = spec.get("task") if isinstance(spec, dict) else None
    if (
        not isinstance(cluster, dict)
        or not all(
            isinstance(addresses, list) and all(isinstance(a, str) for a in addresses)
            for addresses in cluster.values()
        )
        or not isinstance(task, dict)
        or not isinstance(task.get("type"), str)
        or isinstance(task.get("index"), bool)
        or not isinstance(task.get("index"), int)
    ):
        raise DistributionError(
            f"TF_CONFIG is not a valid cluster description such as {example}; got {text!r}"
        )
    task_type, task_id = task["type"], task["index"]
    workers = cluster.get("worker", []) + cluster.get("chief", [])
    if not workers:
        raise DistributionError("TF_CONFIG's cluster names no chief or worker")
    if task_type not in ("chief", "worker") or not 0 <= task_id < len(cluster.get(task_type, [])):
        raise DistributionError(
            f"TF_CONFIG's task {task_type}:{task_id} is not in its cluster "
            f"({', '.join(sorted(cluster))})"
        )
    return cluster, task_type, task_id


def _is_chief(cluster, task_type, task_id):
    if "chief" in cluster:
        return task_type == "chief"
    return task_type == "worker" and task_id == 0


class Distribution:
    """A data-parallel strategy: build the training model and run its steps inside
    `scope()`; `replicas` devices share each batch; `is_chief` says whether this
    process writes the run's files. `Distribution()` is one device.

    Create a strategy with `create`, before anything else runs on the backend.
    """

    def __init__(self, name=None, replicas=1, is_chief=True, strategy=None, distribution=None):
        self.name = name
        self.replicas = replicas
        self.is_chief = is_chief
        self.strategy = strategy
        self.distribution = distribution

    def scope(self):
        """The context in which the training model is built and trained."""
        if self.strategy is not None:
            return self.strategy.scope()
        if self.distribution is not None:
            return self.distribution.scope()
        return contextlib.nullcontext()

    def check_batch(self, batch_size):
        """Raises `DistributionError` unless `batch_size` streams split evenly."""
        check_even_split(batch_size, self.replicas, self.name)

    def describe(self):
        if self.name is None:
            return "one device"
        where = "" if self.is_chief else ", not the chief: writes no files"
        return f"{self.name} over {self.replicas} replicas{where}"


def create(name, backend=None):
    """The `Distribution` for strategy `name` on `backend` (default: Keras' backend),
    over all the devices the backend sees."""
    backend = backend or _backend()
    check_strategy(name, backend)
    module = _backend_module(backend)
    if name == "data-parallel":
        distribution, replicas = module.data_parallel()
        return Distribution(name, replicas, distribution=distribution)
    if name == "mirrored":
        strategy = module.mirrored_strategy()
        return Distribution(name, strategy.num_replicas_in_sync, strategy=strategy)
    cluster, task_type, task_id = read_tf_config()
    strategy = module.multiworker_strategy()
    return Distribution(
        name,
        strategy.num_replicas_in_sync,
        is_chief=_is_chief(cluster, task_type, task_id),
        strategy=strategy,
    )


def setup(name=None, virtual_cpu_devices=None, backend=None):
    """Checks and sets up a data-parallel run before the backend starts: splits the
    CPU into `virtual_cpu_devices` logical devices (if given), then creates strategy
    `name`. Returns its `Distribution`, or None without `name`."""
    backend = backend or os.environ.get("KERAS_BACKEND", "tensorflow")
    if name is not None:
        check_strategy(name, backend)
    if virtual_cpu_devices is not None:
        set_virtual_cpu_devices(virtual_cpu_devices, backend)
    return None if name is None else create(name, backend)


def first_replica_rows(data, replicas):
    """The first replica's rows of every array in `data` (see `split_per_replica`)."""
    return rows_of_replica(data, 0, replicas)


def rows_of_replica(data, i, replicas):
    """Replica `i`'s rows of every array in `data` (`None` stays `None`)."""
    from keras import tree

    def take(a):
        if a is None:
            return None
        per = a.shape[0] // replicas
        return a[i * per : (i + 1) * per]

    return tree.map_structure(take, data, none_is_leaf=True)


def replica_rows(value, replica, replicas):
    """Rows `replica * b` to `(replica + 1) * b` of `value` (`b = rows / replicas`)."""
    per = value.shape[0] // replicas
    return value[replica * per : (replica + 1) * per]


def with_replica_rows(value, rows, replica, replicas):
    """`value` with its rows of `replica` (see `replica_rows`) replaced by `rows`."""
    from keras import ops

    per = value.shape[0] // replicas
    start = replica * per
    return ops.concatenate([value[:start], rows, value[start + per :]], axis=0)
