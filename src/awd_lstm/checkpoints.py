"""A run's weight files: the best weights and the resumable checkpoint.

Both are Keras `.weights.h5` files, written atomically. The checkpoint adds, in a
group of its own, what Keras' weights file leaves out: the state of every seed
generator and carried state (each keyed by where it sits in the model, such as
`encoder.lstms.0.cell.seed_generator`, so adding a variable shifts no other) and
the run's JSON state (epoch, learning rate, the callbacks' states).
"""

import errno
import json
import os
import shutil
import tempfile

import h5py
import keras
import numpy as np

from awd_lstm._files import CheckpointError, WriteError, atomic_path
from awd_lstm._validation import json_type
from awd_lstm.recipe import build_model, evaluation_weights

_RESUME_GROUP = "awd_lstm_resume"
_VARIABLES = "variables"
# Keras' group of the optimizer's state in a weights file.
_OPTIMIZER = "optimizer"


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
    """`model.load_weights(path)`, after checking that the file holds exactly the
    entries the model's own weights file would (names, shapes, dtypes), read as data;
    one sentence if it does not."""
    check_weights_file(model, path)
    try:
        model.load_weights(path)
    except (OSError, ValueError, KeyError) as e:
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(
            f"{path} does not fit this model (another vocabulary or model size?) "
            f"or is damaged: {reason}"
        ) from None


def check_weights_file(model, path):
    """Raises `CheckpointError`, naming the entry, unless the `.weights.h5` file `path`
    holds the datasets that `model.save_weights` writes, each of the model's shape
    and dtype (a float64 array where the model keeps float32 is refused, not
    converted), and nothing else: no other dataset, link or external storage. The
    resumable checkpoint's own group is checked by `load_checkpoint`. A weights file
    written by a model with an optimizer may carry the optimizer's state where `model`
    has none; Keras does not read it."""
    expected = _layout_of(model)
    found = _weights_file_entries(path)
    for name, (shape, dtype) in expected.items():
        if name not in found:
            raise CheckpointError(
                f"{path} does not fit this model: it has no entry {name!r} "
                "(another model size or architecture?)"
            )
        file_shape, file_dtype = found[name]
        if file_shape != shape:
            raise CheckpointError(
                f"{path} does not fit this model: its entry {name!r} has shape "
                f"{file_shape}, the model's variable {shape} (another vocabulary or model "
                "size?)"
            )
        if file_dtype != dtype:
            raise CheckpointError(
                f"{path} does not fit this model: its entry {name!r} holds {file_dtype} "
                f"values, the model's variable {dtype} (the file is refused, not converted)"
            )
    has_optimizer = any(name.startswith(_OPTIMIZER + "/") for name in expected)
    for name in found:
        if name in expected or (not has_optimizer and name.startswith(_OPTIMIZER + "/")):
            continue
        raise CheckpointError(
            f"{path} does not fit this model: it has an entry {name!r} that the model does not have"
        )


def _layout_of(model):
    """`{entry: (shape, dtype)}` of the weights file `model.save_weights` writes (Keras
    names the entries after the model's structure; no public function lists them)."""
    with tempfile.TemporaryDirectory(prefix="awd-lstm-layout-") as folder:
        path = os.path.join(folder, "layout.weights.h5")
        model.save_weights(path)
        return _weights_file_entries(path)


def _weights_file_entries(path):
    """`{entry: (shape, dtype name)}` of every dataset in the HDF5 file `path` outside
    the checkpoint's resume group, read as data; `CheckpointError` for a file that is
    not HDF5 or holds what a weights file never does (links, external or virtual
    datasets)."""
    entries = {}

    def visit(group, prefix):
        for key in group:
            name = prefix + key
            if not isinstance(group.get(key, getlink=True), h5py.HardLink):
                raise CheckpointError(
                    f"{path} is refused: its entry {name!r} is a link, which a weights "
                    "file never holds"
                )
            item = group[key]
            if isinstance(item, h5py.Group):
                if name != _RESUME_GROUP:
                    visit(item, name + "/")
            elif isinstance(item, h5py.Dataset) and not item.external and not item.is_virtual:
                entries[name] = (item.shape, item.dtype.name)
            else:
                raise CheckpointError(
                    f"{path} is refused: its entry {name!r} is not an array stored in the file"
                )

    if not os.path.isfile(path):
        raise CheckpointError(f"{path} does not exist")
    try:
        with h5py.File(path, "r") as f:
            visit(f, "")
    except CheckpointError:
        raise
    except (OSError, KeyError, ValueError) as e:
        raise CheckpointError(f"{path} is not a weights file (HDF5): {e}") from None
    return entries


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
    returns the run's state (a dict). Everything is checked, read as data, before the
    model changes: the weights as `load_weights` checks them, the states' names and
    shapes (their integer or float kind too: the seed's integer type differs between
    backends), and the run's state as a JSON object."""
    model.optimizer.build(model.trainable_variables)
    keys = state_keys(model)
    try:
        with h5py.File(path, "r") as f:
            if _RESUME_GROUP not in f:
                raise CheckpointError(
                    f"{path} is not a resumable checkpoint (it has no {_RESUME_GROUP} group)"
                )
            group = f[_RESUME_GROUP]
            state = _run_state(group.attrs.get("state"), path)
            if _VARIABLES in group:
                stored = _checked_group(group, _VARIABLES, path)
            else:
                # Checkpoints of earlier versions keyed the states by position.
                stored = group
                keys = {str(i): v for i, v in enumerate(model.non_trainable_variables)}
            if set(stored) != set(keys):
                differ = sorted(set(keys) ^ set(stored))[0]
                raise CheckpointError(
                    f"{path} holds the states of another model (they differ at {differ!r})"
                )
            values = {}
            for key, variable in keys.items():
                dataset = _checked_dataset(stored, key, path)
                if dataset.shape != tuple(variable.shape) or _kind(dataset.dtype.name) != _kind(
                    variable.dtype
                ):
                    raise CheckpointError(
                        f"{path} does not fit this model: its state {key!r} is "
                        f"{dataset.dtype.name} of shape {dataset.shape}, the model's "
                        f"{variable.dtype} of shape {tuple(variable.shape)}"
                    )
                values[key] = dataset[()]
    except CheckpointError:
        raise
    except (OSError, KeyError, ValueError) as e:
        raise CheckpointError(f"{path} is not a resumable checkpoint: {e}") from None
    load_weights(model, path)
    for key, variable in keys.items():
        variable.assign(values[key])
    if getattr(model, "cutoffs", None) and "tail_capacity" in state:
        model.tail_capacity = state.pop("tail_capacity")
    return state


def _run_state(text, path):
    """The run's state, a checkpoint attribute of JSON text, checked to be an object
    whose `epoch` is a count of epochs."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", errors="replace")
    if not isinstance(text, str):
        raise CheckpointError(f"{path} is not a resumable checkpoint (its run state is not text)")
    try:
        state = json.loads(text)
    except ValueError as e:
        raise CheckpointError(f"{path} holds a damaged run state: {e}") from None
    if not isinstance(state, dict):
        raise CheckpointError(
            f"{path} holds a damaged run state: a JSON {json_type(state)} where an object belongs"
        )
    epoch = state.get("epoch")
    if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0:
        raise CheckpointError(
            f"{path} holds a damaged run state: its epoch must be an integer >= 0; got {epoch!r}"
        )
    return state


def _checked_group(parent, key, path):
    if not isinstance(parent.get(key, getlink=True), h5py.HardLink) or not isinstance(
        parent[key], h5py.Group
    ):
        raise CheckpointError(f"{path} is not a resumable checkpoint ({key!r} is not a group)")
    return parent[key]


def _checked_dataset(parent, key, path):
    """`parent[key]`, checked to be an array stored in the file itself."""
    item = parent[key] if isinstance(parent.get(key, getlink=True), h5py.HardLink) else None
    if not isinstance(item, h5py.Dataset) or item.external or item.is_virtual:
        raise CheckpointError(
            f"{path} is refused: its state {key!r} is not an array stored in the file"
        )
    return item


def _kind(dtype):
    """`"integer"`, `"float"` or the name itself, of a dtype name."""
    name = str(dtype)
    if name.startswith(("int", "uint")):
        return "integer"
    if name.startswith(("float", "bfloat")):
        return "float"
    return name


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
