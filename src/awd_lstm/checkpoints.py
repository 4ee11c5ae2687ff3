"""A run's weight files: the best weights and the resumable checkpoint.

Both are Keras `.weights.h5` files, written atomically. The checkpoint adds, in a
group of its own, what Keras' weights file leaves out: the state of every seed
generator and carried state (each keyed by where it sits in the model, such as
`encoder.lstms.0.cell.seed_generator`, so adding a variable shifts no other) and
the run's JSON state (epoch, learning rate, the callbacks' states).
"""

import errno
import json
import shutil

import h5py
import keras
import numpy as np

from awd_lstm._files import CheckpointError, WriteError, atomic_path
from awd_lstm.recipe import build_model, evaluation_weights

_RESUME_GROUP = "awd_lstm_resume"
_VARIABLES = "variables"


def state_keys(model):
    """`{key: variable}` for the model's non-trainable variables (carried states, seed
    generators' states): the key is the attribute path that reaches it from the model
    (`state_variables.0.1`, `encoder.embedding.seed_generator`), the same for every
    model of one configuration, whatever Keras numbered its variables."""
    found = {}
    seen = set()

    def children(obj):
        names = {n: v for n, v in vars(obj).items() if not n.startswith("_")}
        # On PyTorch a Keras layer is a `torch.nn.Module`, which keeps its sublayers
        # apart from its attributes; `named_children` is torch's public reader.
        if hasattr(obj, "named_children"):
            names.update((n, v) for n, v in obj.named_children() if not n.startswith("_"))
        return sorted(names.items())

    def visit(obj, key):
        if id(obj) in seen:
            return
        if isinstance(obj, keras.random.SeedGenerator):
            obj = obj.state
        if isinstance(obj, keras.Variable):
            seen.add(id(obj))
            found.setdefault(id(obj), key)
        elif isinstance(obj, (list, tuple)):
            for i, item in enumerate(obj):
                visit(item, f"{key}.{i}")
        elif isinstance(obj, keras.layers.Layer):
            seen.add(id(obj))
            for name, child in children(obj):
                visit(child, f"{key}.{name}")

    visit(model, "")
    # The weights of frozen layers are non-trainable too; the weights file has them.
    weights = {id(v) for v in model.weights}
    keys = {}
    for variable in model.non_trainable_variables:
        if id(variable) not in found:
            if id(variable) in weights:
                continue
            raise CheckpointError(f"no attribute path reaches the variable {variable.path}")
        keys[found[id(variable)].lstrip(".")] = variable
    return keys


def load_weights(model, path):
    """`model.load_weights(path)`, with one sentence if the file does not fit."""
    try:
        model.load_weights(path)
    except (OSError, ValueError, KeyError) as e:
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(
            f"{path} does not fit this model (another vocabulary or model size?) "
            f"or is damaged: {reason}"
        ) from None


def save_weights(model, path):
    """`model.save_weights(path)`, atomically."""
    with atomic_path(path, suffix=".weights.h5") as tmp:
        model.save_weights(tmp, overwrite=True)


def save_checkpoint(model, state, path):
    """Writes the model's weights and optimizer state (Keras' `.weights.h5` format)
    plus the random-generator and carried states and the JSON `state` of the run,
    atomically."""
    with atomic_path(path, suffix=".weights.h5") as tmp:
        model.save_weights(tmp, overwrite=True)
        # Keras' weights file leaves out the seed generators' states: without them a
        # resumed run would draw other dropout masks than an uninterrupted one.
        if getattr(model, "cutoffs", None):
            # The row budgets grown so far: static shapes, kept so a resumed run
            # computes with the same ones as an uninterrupted run.
            state = {**state, "tail_capacity": list(model.tail_capacity)}
        with h5py.File(tmp, "a") as f:
            group = f.create_group(_RESUME_GROUP)
            group.attrs["state"] = json.dumps(state)
            variables = group.create_group(_VARIABLES)
            for key, variable in state_keys(model).items():
                variables.create_dataset(key, data=keras.ops.convert_to_numpy(variable))


def load_checkpoint(model, path):
    """Restores what `save_checkpoint` wrote into `model` (compiled, built) and
    returns the run's state."""
    model.optimizer.build(model.trainable_variables)
    load_weights(model, path)
    try:
        with h5py.File(path, "r") as f:
            group = f[_RESUME_GROUP]
            state = json.loads(group.attrs["state"])
            if _VARIABLES in group:
                stored = group[_VARIABLES]
                values = {key: stored[key][()] for key in stored}
                keys = state_keys(model)
                if set(values) != set(keys):
                    missing = sorted(set(keys) - set(values)) or sorted(set(values) - set(keys))
                    raise CheckpointError(
                        f"{path} holds the states of another model (they differ at {missing[0]!r})"
                    )
                for key, variable in keys.items():
                    variable.assign(values[key])
            else:
                # Checkpoints of earlier versions keyed the states by position.
                for i, variable in enumerate(model.non_trainable_variables):
                    variable.assign(group[str(i)][()])
    except CheckpointError:
        raise
    except (OSError, KeyError, ValueError) as e:
        raise CheckpointError(f"{path} is not a resumable checkpoint: {e}") from None
    if getattr(model, "cutoffs", None) and "tail_capacity" in state:
        model.tail_capacity = state.pop("tail_capacity")
    return state


def saved_epoch(path):
    """The last completed epoch the checkpoint in `path` holds; 0 where there is no
    readable checkpoint."""
    try:
        with h5py.File(path, "r") as f:
            return int(json.loads(f[_RESUME_GROUP].attrs["state"])["epoch"])
    except (OSError, KeyError, TypeError, ValueError):
        return 0


def load_trained_weights(config, vocab_size, path):
    """The trainable weights stored in `path` (a run's `best.weights.h5`), checked
    against the model `config` and `vocab_size` describe."""
    model = build_model(config, vocab_size, config.eval_batch_size)
    load_weights(model, path)
    return [keras.ops.convert_to_numpy(v) for v in model.trainable_variables]


def load_checkpoint_weights(config, vocab_size, path):
    """The weights a run's checkpoint evaluates with (the averages once NT-ASGD
    averages), as `load_trained_weights` gives them."""
    model = build_model(config, vocab_size, config.batch_size)
    load_checkpoint(model, path)
    return [keras.ops.convert_to_numpy(v) for v in evaluation_weights(model)]


def checkpoint_bytes(model):
    """About the bytes a run's files take at most: the checkpoint (weights, optimizer
    state) and the best weights, each with its temporary copy while it is replaced."""

    def size(variables):
        return sum(int(np.prod(v.shape)) * np.dtype(v.dtype).itemsize for v in variables)

    checkpoint = size(model.variables) + size(model.optimizer.variables)
    best = size(model.trainable_variables)
    return 2 * (checkpoint + best) + (1 << 20)


def check_free_space(folder, model):
    """Raises `WriteError` before training if `folder`'s disk cannot hold the run's
    checkpoints."""
    needed = checkpoint_bytes(model)
    free = shutil.disk_usage(folder).free
    if free < needed:
        raise WriteError(
            errno.ENOSPC,
            f"{folder} has {free / 2**20:,.0f} MiB free; this model's checkpoints need "
            f"about {needed / 2**20:,.0f} MiB",
        )
