"""Exporting a trained language model: a `.keras` file (every backend) or a TensorFlow
SavedModel that serves next-word log-probabilities (TensorFlow backend only: the
SavedModel is a TensorFlow graph). Both carry the model's vocabulary: the `.keras`
file as a Keras asset (`load_model(path).vocabulary`), the SavedModel folder as
`vocab.json`."""

import json
import os
import shutil
import tempfile
import zipfile
import zlib

from awd_lstm import backend
from awd_lstm._files import ModelFileError, atomic_path
from awd_lstm._validation import json_type
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
    (`model.as_stateful(batch_size)` gives a stateful one).

    A file from elsewhere runs no code: its `config.json` is read as data first and
    refused (`ModelFileError`, one sentence) if any object in it is not one of Keras'
    own or the package's registered classes (a `Lambda` layer, a function stored as
    code, another package's class); Keras then loads it in its safe mode."""
    import keras

    path = os.fspath(path)
    if os.path.isdir(path):
        from awd_lstm.runs import Run

        return Run.open(path).load_model(stateful=False)
    if not path.endswith(".keras"):
        raise ValueError(f"expected a .keras file or a run folder; got {path!r}")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path} does not exist")
    check_saved_objects(_keras_file_config(path), f"{path} is refused")
    try:
        with backend.tensorflow_unimported():
            model = keras.saving.load_model(path, safe_mode=True)
    except (ValueError, TypeError, KeyError, zipfile.BadZipFile) as e:
        raise ModelFileError(f"{path} cannot be loaded: {_reason(e)}") from None
    if getattr(model, "vocabulary", None) is None:
        # Files of earlier versions had the vocabulary beside them.
        from awd_lstm.data import Vocabulary

        beside = path[: -len(".keras")] + ".vocab.json"
        if os.path.exists(beside):
            model.vocabulary = Vocabulary.load(beside)
    return model


# Keras' markers of plain values in a saved configuration (arrays, tensors, bytes,
# slices), which name no class and run no code.
_VALUE_MARKERS = ("__numpy__", "__tensor__", "__keras_tensor__", "__bytes__", "__slice__")
_VALUE_MARKERS += ("__ellipsis__",)
# Keras' layers that carry code: a Python function's bytecode, a pickled torch module.
_CODE_LAYERS = ("Lambda", "TorchModuleWrapper")
# The largest `config.json` read from a `.keras` file (a model's is a few kilobytes).
_MAX_CONFIG_BYTES = 16 << 20


def check_saved_objects(config, refused):
    """Raises `ModelFileError` ("`refused`: it contains ...") unless every object a Keras
    configuration (`config`, plain JSON data) would make is one of Keras' own classes
    or functions, or one the package registered; a `Lambda` layer, a function stored
    as code and any other class are refused before Keras reads the configuration."""
    own = _package_names()

    def visit(value):
        if isinstance(value, list):
            for item in value:
                visit(item)
            return
        if not isinstance(value, dict):
            return
        if "class_name" in value:
            _check_object(value, own, refused)
        for item in value.values():
            visit(item)

    visit(config)


def _check_object(entry, own, refused):
    class_name, module = entry.get("class_name"), entry.get("module")
    registered, inner = entry.get("registered_name"), entry.get("config")
    if class_name == "__lambda__":
        raise ModelFileError(
            f"{refused}: it contains a Python function stored as code, which would run when loaded"
        )
    if module is None and class_name in _VALUE_MARKERS:
        return
    # The names Keras looks up among registered objects (a function by its config).
    names = [class_name, registered, inner if class_name == "function" else None]
    names = [name for name in names if name is not None]
    ours = isinstance(module, str) and (module == "awd_lstm" or module.startswith("awd_lstm."))
    keras_own = isinstance(module, str) and (module == "keras" or module.startswith("keras."))
    if keras_own and class_name in _CODE_LAYERS:
        raise ModelFileError(
            f"{refused}: it contains a {class_name} layer, which would run code when loaded"
        )
    if not all(isinstance(name, str) for name in names):
        keras_own = ours = False
    elif keras_own:
        # A Keras class, unless a registered name (another package's) takes precedence.
        plain = registered in (None, class_name) or (
            class_name == "function" and registered == inner
        )
        keras_own = plain and not any(">" in n for n in names)
    elif ours:
        ours = registered in own and all(">" not in n or n in own for n in names)
    if not (keras_own or ours):
        if isinstance(registered, str) and ">" in registered:
            name = registered
        elif class_name == "function":
            name = f"{module}.{inner}"
        else:
            name = f"{module}.{class_name}"
        raise ModelFileError(
            f"{refused}: it names a class or function that is neither Keras' nor awd_lstm's: "
            f"{name!r}"
        )


def _package_names():
    """The registered names of the package's own classes and functions."""
    import keras

    # They register the package's classes with Keras.
    from awd_lstm import compat, dynamic_eval, models, optimizers, regularizers, transfer  # noqa: F401

    return {
        name
        for name, obj in keras.saving.get_custom_objects().items()
        if getattr(obj, "__module__", "").startswith("awd_lstm.")
    }


def _keras_file_config(path):
    """The `config.json` of the `.keras` file `path`, read as data (JSON)."""
    try:
        with zipfile.ZipFile(path) as archive:
            info = archive.getinfo("config.json")
            text = archive.read(info) if info.file_size <= _MAX_CONFIG_BYTES else None
    except zipfile.BadZipFile:
        raise ModelFileError(f"{path} is not a .keras file (not a zip archive)") from None
    except KeyError:
        raise ModelFileError(f"{path} is not a .keras file (it has no config.json)") from None
    except (EOFError, NotImplementedError, zlib.error) as e:
        raise ModelFileError(f"{path} is damaged: {_reason(e)}") from None
    if text is None:
        raise ModelFileError(
            f"{path} is refused: its config.json has {info.file_size:,} bytes, more than a "
            f"model's configuration ever needs ({_MAX_CONFIG_BYTES:,})"
        )
    try:
        config = json.loads(text.decode("utf-8"))
    except (ValueError, RecursionError) as e:
        raise ModelFileError(f"{path} holds a damaged config.json: {_reason(e)}") from None
    if not isinstance(config, dict):
        raise ModelFileError(
            f"{path} holds a damaged config.json: a JSON {json_type(config)} where an object "
            "belongs"
        )
    return config


def _reason(error):
    """The informative line of an error from Keras (whose messages run to pages), cut
    to a sentence's length."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    if len(lines) > 1 and lines[0].startswith("A total of"):
        lines = lines[1:]  # "A total of N objects could not be loaded. Example ...:"
    reason = lines[0] if lines else type(error).__name__
    return reason if len(reason) <= 300 else reason[:297] + "..."


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
