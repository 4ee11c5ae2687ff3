"""Exporting a trained language model: a `.keras` file (every backend) or a TensorFlow
SavedModel that serves next-word log-probabilities (TensorFlow backend only: the
SavedModel is a TensorFlow graph). Both carry the model's vocabulary: the `.keras`
file as a Keras asset (`load_model(path).vocabulary`), the SavedModel folder as
`vocab.json`."""

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
    """Saves `model` as a `.keras` file, atomically, its vocabulary (`model.vocabulary`,
    if set) inside; `load_model(path)` gives it back with identical outputs."""
    path = os.fspath(path)
    if not path.endswith(".keras"):
        raise ValueError(f"a Keras model file must end with .keras; got {path!r}")
    with atomic_path(path, suffix=".keras") as tmp, backend.tensorflow_unimported():
        model.save(tmp)


def load_model(path):
    """The language model of a `.keras` file (as `export_keras` or `awd-lstm export`
    write it) or of a run folder (its best weights), with its vocabulary as
    `.vocabulary`: a model for any batch, from a zero state at every call
    (`model.as_stateful(batch_size)` gives a stateful one). Keras' safe mode is on:
    a file that would run code is refused."""
    import keras

    from awd_lstm import models  # noqa: F401 (registers the package's classes)

    path = os.fspath(path)
    if os.path.isdir(path):
        from awd_lstm.runs import Run

        return Run.open(path).load_model(stateful=False)
    if not path.endswith(".keras"):
        raise ValueError(f"expected a .keras file or a run folder; got {path!r}")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path} does not exist")
    with backend.tensorflow_unimported():
        model = keras.saving.load_model(path, safe_mode=True)
    if getattr(model, "vocabulary", None) is None:
        # Files of earlier versions had the vocabulary beside them.
        from awd_lstm.data import Vocabulary

        beside = path[: -len(".keras")] + ".vocab.json"
        if os.path.exists(beside):
            model.vocabulary = Vocabulary.load(beside)
    return model


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
        if getattr(model, "vocabulary", None) is not None:
            model.vocabulary.save(os.path.join(tmp, "vocab.json"))
        # mkdtemp's folder is private (0700); the SavedModel gets what a folder made
        # with os.mkdir would: the umask's permissions.
        os.chmod(tmp, 0o777 & ~_umask())
        os.replace(tmp, path)  # a folder appears whole or not at all
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _umask():
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


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
    """Exports the best weights of `run` (an `awd_lstm.runs.Run`) with its vocabulary
    as a `.keras` file (`format="keras"`, `out` ending in `.keras`) or a TensorFlow
    SavedModel (a new folder `out`; TensorFlow backend). Everything is checked before
    a file is written."""
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
    model = run.load_model(stateful=False)  # with the run's vocabulary
    if format == "keras":
        export_keras(model, out)
    else:
        export_savedmodel(model, out)
