"""What is read from elsewhere (run folders, `.keras` files, weights, the environment)
runs no code and is checked for type as well as presence: each crafted file is
refused in one sentence, through the library and the command line."""

import json
import os
import shutil
import subprocess
import sys
import zipfile

import h5py
import keras
import numpy as np
import pytest

import awd_lstm
from awd_lstm import _environment
from awd_lstm._files import CheckpointError, ModelFileError
from awd_lstm.cli import main
from awd_lstm.config import TrainingConfig
from awd_lstm.runs import Run, RunError
from tests.conftest import TINY_FLAGS, one_error_line

ON_TENSORFLOW_ONLY = pytest.mark.skipif(
    keras.backend.backend() != "tensorflow", reason="reads files as data: the same on every backend"
)
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def one_sentence(error):
    text = str(error.value if hasattr(error, "value") else error)
    assert "\n" not in text and "Traceback" not in text, text
    return text


def command_error(capsys, argv, status=2):
    """The one line `awd-lstm ARGV` writes on stderr, failing with `status`."""
    assert main(argv) == status
    return one_error_line(capsys, f"^awd-lstm {argv[0]}: error: ")


@pytest.fixture
def copied(run, tmp_path):
    folder = tmp_path / "run"
    shutil.copytree(run, folder)
    return folder


def edit_json(path, change):
    data = json.loads(path.read_text())
    data = change(data) or data
    path.write_text(json.dumps(data))


# -- the Keras range and the environment ----------------------------------------------


@ON_TENSORFLOW_ONLY
def test_the_keras_range_is_pyprojects_dependency():
    tomllib = pytest.importorskip("tomllib")
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        dependencies = tomllib.load(f)["project"]["dependencies"]
    assert _environment.KERAS_REQUIREMENT in dependencies
    assert _environment.KERAS_MINIMUM <= (3, 15) < _environment.KERAS_BELOW  # the tested one


@ON_TENSORFLOW_ONLY
def test_a_keras_outside_the_range_is_refused_or_with_the_override_warned_about():
    check = _environment.check_keras
    check("3.15.1", "tensorflow", environ={})
    for version in ("3.16.0", "3.14.2", "4.0.0", "unknown"):
        with pytest.raises(_environment.UnsupportedKerasError) as caught:
            check(version, "jax", environ={})
        message = one_sentence(caught)
        assert f"tested with Keras >=3.15,<3.16 and this is Keras {version}" in message
        assert "AWD_LSTM_UNTESTED_KERAS=1" in message
    with pytest.warns(UserWarning, match="tested with Keras >=3.15,<3.16 and this is Keras 3.16"):
        check("3.16.0", "torch", environ={"AWD_LSTM_UNTESTED_KERAS": "1"})
    with pytest.raises(ImportError, match="AWD_LSTM_UNTESTED_KERAS must be 0 or 1; got 'yes'"):
        check("3.16.0", "torch", environ={"AWD_LSTM_UNTESTED_KERAS": "yes"})
    with pytest.raises(ImportError, match="not Keras' 'numpy' backend; set KERAS_BACKEND"):
        check("3.15.1", "numpy", environ={})


@ON_TENSORFLOW_ONLY
def test_importing_the_package_with_another_keras_says_so_in_one_sentence(tmp_path):
    # A fresh process that fakes a newer Keras: the library's import, the command,
    # then the override.
    script = """
import contextlib, importlib, io, json, os, warnings
import keras
keras.__version__ = "3.16.0"
result = {}
try:
    from awd_lstm.layers import WeightDropLSTM
except ImportError as e:
    result["import"] = [type(e).__name__, str(e)]
from awd_lstm.cli import main
err = io.StringIO()
with contextlib.redirect_stderr(err):
    result["status"] = main(["evaluate", "--run", "no-such-run"])
result["stderr"] = err.getvalue()
os.environ["AWD_LSTM_UNTESTED_KERAS"] = "1"
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    importlib.import_module("awd_lstm.backend")
result["warnings"] = [str(w.message) for w in caught if "Keras 3.16.0" in str(w.message)]
print(json.dumps(result))
"""
    env = {k: v for k, v in os.environ.items() if k != "AWD_LSTM_UNTESTED_KERAS"}
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    kind, message = result["import"]
    assert kind == "UnsupportedKerasError" and "\n" not in message
    assert message.startswith("awd_lstm is tested with Keras >=3.15,<3.16 and this is Keras 3.16.0")
    assert result["status"] == 1
    assert result["stderr"] == f"awd-lstm evaluate: error: {message}\n"
    assert len(result["warnings"]) == 1


@ON_TENSORFLOW_ONLY
def test_an_unknown_keras_backend_variable_is_named_in_one_sentence(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("KERAS_BACKEND", "foo")
    line = command_error(capsys, ["train", "--out", str(tmp_path / "r"), *TINY_FLAGS])
    assert "the environment variable KERAS_BACKEND is 'foo'; it must be one of " in line
    assert "tensorflow, jax, torch" in line
    assert not (tmp_path / "r").exists()
    assert _environment.backend_variable_problem({"KERAS_BACKEND": ""}) is None
    assert _environment.backend_variable_problem({"KERAS_BACKEND": "jax"}) is None


# -- run folders: config.json, vocab.json, metrics.jsonl, final.json -----------------


def _set_config(name, value):
    def change(info):
        info["config"][name] = value

    return change


def _set(name, value):
    def change(info):
        info[name] = value

    return change


@ON_TENSORFLOW_ONLY
@pytest.mark.parametrize(
    "change, message",
    [
        (_set_config("hidden_size", "400"), "hidden_size must be a positive integer; got '400'"),
        (_set_config("epochs", True), "epochs must be a positive integer; got True"),
        (
            _set_config("output_dropout", None),
            "output_dropout must be in [0, 1); got None",
        ),
        (_set_config("lr", True), "lr must be a finite number > 0; got True"),
        (_set_config("alpha", False), "alpha must be a finite number >= 0; got False"),
        (_set_config("tie_weights", 1), "tie_weights must be true or false; got 1"),
        (_set_config("cutoffs", "12"), "cutoffs must be strictly increasing"),
        (_set_config("depth", 3), "its 'config' has an unknown setting 'depth'"),
        (_set("config", [400, 1150]), "its 'config' must be an object; got [400, 1150]"),
        (lambda info: [info], "a JSON array where an object belongs"),
        (_set("max_minutes", "5"), "its 'max_minutes' must be a number or null; got '5'"),
        (_set("data", 5), "its 'data' must be a string or null; got 5"),
        (_set("data_paths", {"train": 3}), "its 'data_paths' must be an object of strings"),
        (_set("backend", "foo"), "its 'backend' must be one of tensorflow, jax, torch; got 'foo'"),
        (_set("stage", ["train"]), "its 'stage' must be a string; got ['train']"),
        (_set("level", "byte"), "its 'level' must be one of word, char; got 'byte'"),
        (_set("vocab_size", 3), "is not the vocabulary this run was trained with"),
    ],
)
def test_a_config_json_of_wrong_types_is_refused_in_one_sentence(copied, change, message):
    edit_json(copied / "config.json", change)
    with pytest.raises(RunError) as caught:
        Run.open(copied)
    assert message in one_sentence(caught)


@ON_TENSORFLOW_ONLY
def test_training_settings_are_checked_for_type_from_every_source():
    for name, value in [("hidden_size", True), ("num_layers", 2.0), ("seed", "1")]:
        with pytest.raises(ValueError, match=f"{name} must be"):
            TrainingConfig(**{name: value})
    for name in ("input_dropout", "lr", "clip", "beta", "weight_decay"):
        with pytest.raises(ValueError, match=f"{name} must be"):
            TrainingConfig(**{name: True})
    # An int passes as a float.
    assert TrainingConfig(lr=1, input_dropout=0, alpha=0).lr == 1


@ON_TENSORFLOW_ONLY
@pytest.mark.parametrize(
    "content, message",
    [
        ({"tokens": "abc"}, "its 'tokens' must be a list; got a JSON string"),
        ({"tokens": ["a", 2]}, "vocabulary tokens must be strings; got 2"),
        ({"tokens": ["a", "b"], "counts": ["1", 2]}, "counts must be integers >= 0; got '1'"),
        ({"tokens": ["a", "b"], "counts": [True, 2]}, "counts must be integers >= 0; got True"),
        ({"tokens": ["a"], "level": ["word"]}, "level must be one of"),
        ({"tokens": ["a"], "tokenization": "yes"}, "tokenization settings must be a dict"),
        ({"tokens": ["a"], "tokenization": {"lowercase": 1}}, "`lowercase` must be true or false"),
        (["a", "b"], "a JSON array where an object belongs"),
        ({"words": ["a"]}, "it has no 'tokens'"),
    ],
)
def test_a_vocab_json_of_wrong_types_is_refused_in_one_sentence(copied, content, message):
    (copied / "vocab.json").write_text(json.dumps(content))
    with pytest.raises(RunError) as caught:
        Run.open(copied)
    text = one_sentence(caught)
    assert "vocab.json is not a valid vocabulary" in text and message in text


@ON_TENSORFLOW_ONLY
def test_history_and_final_of_wrong_types_are_refused_in_one_sentence(copied):
    opened = Run.open(copied)
    records = (copied / "metrics.jsonl").read_text().splitlines()
    for bad, message in [
        ("[1, 2]", "its line 2 holds a JSON array where an object belongs"),
        ('{"epoch": "2", "val_ppl": 3.0}', "its line 2 has the epoch '2' where an integer >= 1"),
        ('{"epoch": 2, "val_ppl": "3.0"}', "its line 2 has 'val_ppl' '3.0' where a number"),
    ]:
        (copied / "metrics.jsonl").write_text(f"{records[0]}\n{bad}\n")
        with pytest.raises(RunError) as caught:
            _ = opened.history
        assert "metrics.jsonl cannot be read: " + message in one_sentence(caught)
    (copied / "final.json").write_text('{"test_ppl": {"value": 3}}')
    with pytest.raises(RunError, match=r"final.json cannot be read: it has 'test_ppl' \{"):
        _ = opened.final
    (copied / "final.json").write_text('{"test_ppl": Infinity}')  # a diverged run's
    assert opened.final == {"test_ppl": float("inf")}


@ON_TENSORFLOW_ONLY
def test_the_command_line_says_what_is_wrong_with_a_run_folder(copied, capsys):
    edit_json(copied / "config.json", _set_config("hidden_size", "400"))
    line = command_error(capsys, ["evaluate", "--run", str(copied)])
    assert line.endswith(
        "config.json is not a valid run configuration: hidden_size must be a "
        "positive integer; got '400'"
    )


# -- .keras files ------------------------------------------------------------------------


def _keras_file(path, model):
    model.save(path)
    return path


def _rewritten(path, change):
    """The `.keras` file `path` with its config.json changed by `change`."""
    with zipfile.ZipFile(path) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    config = json.loads(members["config.json"])
    change(config)
    members["config.json"] = json.dumps(config).encode()
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return path


def _dense_model():
    inputs = keras.Input((3,))
    return keras.Model(inputs, keras.layers.Dense(2, name="dense")(inputs))


def _layer_entry(config, name="dense"):
    return next(layer for layer in config["config"]["layers"] if layer["config"]["name"] == name)


@ON_TENSORFLOW_ONLY
def test_a_keras_file_with_a_lambda_layer_is_refused_before_it_runs(tmp_path, capsys):
    inputs = keras.Input((3,))
    lambda_model = keras.Model(inputs, keras.layers.Lambda(lambda x: x * 2)(inputs))
    path = _keras_file(str(tmp_path / "lambda.keras"), lambda_model)
    with pytest.raises(ModelFileError) as caught:
        awd_lstm.load_model(path)
    assert one_sentence(caught) == (
        f"{path} is refused: it contains a Lambda layer, which would run code when loaded"
    )
    line = command_error(capsys, ["generate", "--model", path, "--prompt", "a"])
    assert line.endswith(f"error: {caught.value}")

    def code_as_activation(config):  # a function stored as code, outside a Lambda
        _layer_entry(config)["config"]["activation"] = {
            "class_name": "__lambda__",
            "config": {"value": "print('hello')"},
        }

    path = _rewritten(_keras_file(str(tmp_path / "code.keras"), _dense_model()), code_as_activation)
    with pytest.raises(ModelFileError, match="a Python function stored as code, which would run"):
        awd_lstm.load_model(path)


@ON_TENSORFLOW_ONLY
@pytest.mark.parametrize(
    "entry, name",
    [
        ({"module": "foo", "class_name": "Bar", "registered_name": "foo>Bar"}, "foo>Bar"),
        ({"module": "keras.layers", "class_name": "Dense", "registered_name": "evil>Dense"}, None),
        (
            {"module": "awd_lstm.layers", "class_name": "Evil", "registered_name": "awd_lstm>Evil"},
            None,
        ),
        ({"module": "builtins", "class_name": "function", "config": "eval"}, "builtins.eval"),
        ({"module": "os", "class_name": "function", "config": "system"}, "os.system"),
    ],
)
def test_a_keras_file_naming_another_class_is_refused_in_one_sentence(tmp_path, entry, name):
    def change(config):
        layer = _layer_entry(config)
        if entry["class_name"] == "function":
            layer["config"]["activation"] = {**entry, "registered_name": None}
        else:
            layer.update(entry)

    path = _rewritten(_keras_file(str(tmp_path / "m.keras"), _dense_model()), change)
    with pytest.raises(ModelFileError) as caught:
        awd_lstm.load_model(path)
    message = one_sentence(caught)
    name = name or entry["registered_name"]
    assert message == (
        f"{path} is refused: it names a class or function that is neither Keras' nor "
        f"awd_lstm's: {name!r}"
    )


@ON_TENSORFLOW_ONLY
@pytest.mark.filterwarnings("ignore:Skipping nested container")  # Keras' own, on the way
def test_a_keras_file_that_is_not_one_is_named(tmp_path):
    junk = tmp_path / "junk.keras"
    junk.write_bytes(b"not a zip")
    with pytest.raises(ModelFileError, match="junk.keras is not a .keras file .not a zip"):
        awd_lstm.load_model(junk)
    path = _rewritten(_keras_file(str(tmp_path / "m.keras"), _dense_model()), lambda c: None)
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("config.json", "[1]")
    with pytest.raises(ModelFileError, match="a JSON array where an object belongs"):
        awd_lstm.load_model(path)

    def wider(config):
        _layer_entry(config)["config"]["units"] = 3

    path = _rewritten(_keras_file(str(tmp_path / "w.keras"), _dense_model()), wider)
    with pytest.raises(ModelFileError) as caught:  # Keras' pages, cut to their sentence
        awd_lstm.load_model(path)
    assert one_sentence(caught).startswith(f"{path} cannot be loaded: The shape of the target")


# -- weights files -----------------------------------------------------------------------


def _first_kernel(f):
    """The name of the first 2-D dataset of an open weights file."""
    names = []
    f.visititems(lambda name, obj: names.append(name) if getattr(obj, "ndim", 0) == 2 else None)
    return sorted(names)[0]


def _wrong_shape(f):
    name = _first_kernel(f)
    value = f[name][()]
    del f[name]
    f[name] = value[:-1]
    return name


def _wrong_dtype(f):
    name = _first_kernel(f)
    value = f[name][()]
    del f[name]
    f[name] = value.astype(np.float64)
    return name


def _extra(f):
    f["layers/intruder/vars/0"] = np.zeros(3, np.float32)
    return "layers/intruder/vars/0"


def _missing(f):
    name = _first_kernel(f)
    del f[name]
    return name


def _link(f):
    name = _first_kernel(f)
    del f[name]
    f[name] = h5py.ExternalLink("/etc/passwd", "/")
    return name


@pytest.mark.parametrize(
    "craft, message",
    [
        (_wrong_shape, "does not fit this model: its entry {name!r} has shape"),
        (_wrong_dtype, "its entry {name!r} holds float64 values, the model's variable float32"),
        (_extra, "it has an entry {name!r} that the model does not have"),
        (_missing, "it has no entry {name!r}"),
        (_link, "is refused: its entry {name!r} is a link"),
    ],
)
def test_a_weights_file_that_does_not_fit_is_refused_in_one_sentence(copied, craft, message):
    path = copied / "best.weights.h5"
    with h5py.File(path, "a") as f:
        name = craft(f)
    with pytest.raises(CheckpointError) as caught:
        Run.open(copied).load_model()
    text = one_sentence(caught)
    assert text.startswith(f"{path} ") and message.format(name=name) in text


def test_the_command_line_refuses_crafted_weights_and_checkpoints(copied, capsys):
    best = copied / "best.weights.h5"
    with h5py.File(best, "a") as f:
        name = _wrong_shape(f)
    line = command_error(capsys, ["evaluate", "--run", str(copied)])
    assert f"{best} does not fit this model: its entry {name!r} has shape" in line
    # An unfinished run whose checkpoint holds a damaged run state.
    (copied / "final.json").unlink()
    checkpoint = copied / "checkpoint.weights.h5"
    with h5py.File(checkpoint, "a") as f:
        state = json.loads(f["awd_lstm_resume"].attrs["state"])
        f["awd_lstm_resume"].attrs["state"] = json.dumps({**state, "epoch": "2"})
    before = sorted(os.listdir(copied))
    line = command_error(capsys, ["train", "--resume", str(copied)])
    assert line.endswith(
        f"{checkpoint} holds a damaged run state: its epoch must be an integer >= 0; got '2'"
    )
    assert sorted(os.listdir(copied)) == before


# -- a classifier run --------------------------------------------------------------------


@pytest.fixture
def classifier_folder(tmp_path):
    """A classifier run folder as `classify train` writes it before training."""
    from awd_lstm.classification import ClassifierConfig
    from awd_lstm.data import Vocabulary
    from awd_lstm.data.labelled import LabelVocabulary
    from awd_lstm.models import AWDLSTMEncoder

    folder = tmp_path / "classifier"
    folder.mkdir()
    vocabulary = Vocabulary(["<eos>", "<unk>", "good", "bad"])
    vocabulary.save(folder / "vocab.json")
    LabelVocabulary(["neg", "pos"]).save(folder / "labels.json")
    encoder = AWDLSTMEncoder(len(vocabulary), embedding_size=4, hidden_size=4, num_layers=1)
    info = {
        "stage": "classifier",
        "config": ClassifierConfig().to_json(),
        "data_options": {"label_column": "label", "text_column": "text"},
        "data": None,
        "encoder": encoder.get_config(),
        "backend": keras.backend.backend(),
    }
    (folder / "config.json").write_text(json.dumps(info))
    return folder


@ON_TENSORFLOW_ONLY
@pytest.mark.parametrize(
    "file, change, message",
    [
        ("labels.json", lambda d: {"labels": "np"}, "its 'labels' must be a list; got 'np'"),
        ("labels.json", lambda d: ["neg", "pos"], "a JSON array where an object belongs"),
        ("labels.json", lambda d: {"labels": ["neg", 1]}, "labels must be non-empty strings"),
        ("config.json", _set_config("head_sizes", "50"), "`head_sizes` must be a list"),
        ("config.json", _set_config("separation", "0.1"), "`separation` must be a number > 0"),
        ("config.json", _set_config("epochs", True), "`epochs` must be a positive integer"),
        ("config.json", _set("data_options", {"delimiter": ";"}), "unknown option 'delimiter'"),
        ("config.json", _set("task", {"seed": "1"}), "its 'seed' must be an integer; got '1'"),
        ("config.json", _set("encoder", None), "its 'encoder' must be an object; got None"),
        (
            "config.json",
            lambda d: d["encoder"].update(
                dtype={"module": "os", "class_name": "function", "config": "system"}
            ),
            "neither Keras' nor awd_lstm's: 'os.system'",
        ),
    ],
)
def test_a_classifier_run_of_wrong_types_is_refused_in_one_sentence(
    classifier_folder, capsys, file, change, message
):
    from awd_lstm.classification import ClassifierRun, ClassifierRunError

    ClassifierRun.open(classifier_folder)  # as written
    edit_json(classifier_folder / file, change)
    with pytest.raises(ClassifierRunError) as caught:
        ClassifierRun.open(classifier_folder)
    assert message in one_sentence(caught)
    line = command_error(capsys, ["classify", "evaluate", "--run", str(classifier_folder)])
    assert line.endswith(str(caught.value))
