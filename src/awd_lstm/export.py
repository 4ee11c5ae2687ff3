"""Exporting a trained language model: a `.keras` file (every backend) or a TensorFlow
SavedModel that serves next-word log-probabilities (TensorFlow backend only: the
SavedModel is a TensorFlow graph)."""

import os
import shutil
import tempfile

from awd_lstm import backend
from awd_lstm._files import atomic_path
from awd_lstm.recipe import copy_weights, dtype_policy


def inference_model(config, vocab_size, weights):
    """A non-stateful `AWDLSTMLanguageModel` (any batch, zero initial state) holding
    `weights` (one array per trainable variable, as `load_trained_weights` gives)."""
    from awd_lstm.models import AWDLSTMLanguageModel

    with dtype_policy(config.dtype_policy):
        model = AWDLSTMLanguageModel(vocab_size, seed=config.seed, **config.model_kwargs())
    model.build((None, None))
    copy_weights(weights, model)
    return model


def export_keras(model, path):
    """Saves `model` as a `.keras` file, atomically; `keras.saving.load_model(path)`
    gives it back with identical outputs."""
    path = os.fspath(path)
    if not path.endswith(".keras"):
        raise ValueError(f"a Keras model file must end with .keras; got {path!r}")
    with atomic_path(path, suffix=".keras") as tmp:
        model.save(tmp)


def export_savedmodel(model, path):
    """Writes a TensorFlow SavedModel to the folder `path` (which must not exist) with
    one endpoint, `serve(ids)`: int32 token ids `(batch, time)` in,
    `{"log_probs": (batch, time, vocab)}` out, the log-probabilities of the next token
    after each position (from a zero state; dropout off)."""
    path = _check_savedmodel_folder(path)
    from awd_lstm.backend import tensorflow as tf_backend

    archive = tf_backend.serving_archive(model)
    parent = os.path.dirname(os.path.abspath(path))
    tmp = tempfile.mkdtemp(prefix=".tmp-", dir=parent)
    try:
        archive.write_out(tmp, verbose=False)
        os.replace(tmp, path)  # a folder appears whole or not at all
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _check_savedmodel_folder(path):
    path = os.fspath(path)
    if os.path.exists(path):
        raise ValueError(f"{path} already exists; a SavedModel needs a new folder")
    if backend.name() != "tensorflow":
        raise ValueError(
            "a SavedModel is a TensorFlow graph: export it with the TensorFlow backend "
            f"(this process runs {backend.name()})"
        )
    return path


def export_run(run, out, format="keras"):
    """Exports the best weights of `run` (an `awd_lstm.runs.Run`) as a `.keras` file
    (`format="keras"`, `out` ending in `.keras`) or a TensorFlow SavedModel (a new
    folder `out`; TensorFlow backend), with the vocabulary beside it (`NAME.vocab.json`)
    or inside it (`vocab.json`). Everything is checked before a file is written.
    Returns the vocabulary's path."""
    out = os.fspath(out)
    if format not in ("keras", "savedmodel"):
        raise ValueError(f"`format` must be 'keras' or 'savedmodel'; Received: format={format!r}")
    if format == "keras" and not out.endswith(".keras"):
        raise ValueError(f"`out` must end with .keras for format='keras'; Received: out={out}")
    if format == "savedmodel":
        _check_savedmodel_folder(out)
    parent = os.path.dirname(os.path.abspath(out))
    if not os.path.isdir(parent):
        raise ValueError(f"the folder of `out`, {parent}, does not exist")
    if not os.access(parent, os.W_OK):
        raise ValueError(f"the folder of `out`, {parent}, is not writable")
    run.weights_path("best")  # the run has trained weights
    model = run.load_model(stateful=False)
    if format == "keras":
        export_keras(model, out)
        vocab_path = out[: -len(".keras")] + ".vocab.json"
    else:
        export_savedmodel(model, out)
        vocab_path = os.path.join(out, "vocab.json")
    run.vocabulary.save(vocab_path)
    return vocab_path
