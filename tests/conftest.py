# isort: off
# First, as in a user's program: the package's TensorFlow settings (oneDNN).
import awd_lstm  # noqa: F401

# isort: on
import re

import keras
import numpy as np
import pytest


def pytest_report_header(config):
    return f"keras {keras.__version__}, backend: {keras.backend.backend()}"


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


def to_numpy(x):
    return keras.ops.convert_to_numpy(x)


ERROR_LINE = re.compile(r"awd-lstm( [\w-]+)*: error: \S")


def check_error_line(err, pattern=None):
    """`err`, what an `awd-lstm` command wrote on stderr, is one error line and nothing
    else: `awd-lstm[ COMMAND]: error: ...`, no traceback, one newline at its end; and
    `pattern` (a regular expression) is found in it. Returns the line."""
    assert err.count("\n") == 1 and err.endswith("\n"), err
    assert ERROR_LINE.match(err) and "Traceback" not in err, err
    if pattern is not None:
        assert re.search(pattern, err), err
    return err.strip()


def one_error_line(capsys, pattern=None):
    """`check_error_line` of what the command just run wrote on stderr."""
    return check_error_line(capsys.readouterr().err, pattern)


@pytest.fixture
def recorded_masks(monkeypatch):
    """Records every weight mask drawn by the weight-drop layers, as NumPy arrays, in
    draw order (on JAX also those drawn inside `lax.scan`, as each step runs)."""
    from awd_lstm.layers import weight_drop

    masks = []
    draw = weight_drop.draw_weight_mask

    def recording_draw(shape, rate, seed, dtype):
        mask = draw(shape, rate, seed, dtype)
        if keras.backend.backend() == "jax":
            import jax

            if isinstance(mask, jax.core.Tracer):  # drawn inside a traced loop
                jax.debug.callback(lambda m: masks.append(np.asarray(m)), mask, ordered=True)
                return mask
        masks.append(to_numpy(mask))
        return mask

    monkeypatch.setattr(weight_drop, "draw_weight_mask", recording_draw)
    return masks


def check_savedmodel_serves_the_runs_model(run, out):
    """TensorFlow: `awd-lstm export --format savedmodel` of `run` serves the
    log-softmax of the run's model (a trace of any batch and length)."""
    if keras.backend.backend() != "tensorflow":
        return
    import tensorflow as tf

    from awd_lstm import load_run
    from awd_lstm.cli import main

    assert main(["export", "--run", str(run), "--format", "savedmodel", "--out", str(out)]) == 0
    ids = np.array([[1, 2, 3, 4, 5, 6, 7], [8, 9, 10, 11, 12, 2, 3]], "int32")
    loaded = tf.saved_model.load(str(out))  # kept: it owns the variables
    served = loaded.serve(tf.constant(ids))["log_probs"].numpy()
    logits = to_numpy(load_run(run).load_model(stateful=False)(ids)).astype(np.float64)
    want = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    np.testing.assert_allclose(served, want, atol=1e-5)
    assert np.abs(served[0] - served[0, 0]).max() > 1e-3  # the positions differ


# Command-line flags of a small, fast training run of the built-in corpus.
TINY_FLAGS = [
    "--epochs",
    "2",
    "--embedding-size",
    "8",
    "--hidden-size",
    "16",
    "--num-layers",
    "2",
    "--batch-size",
    "4",
    "--eval-batch-size",
    "2",
    "--bptt",
    "10",
    "--length-quantum",
    "10",
    "--no-progress",
    "--synthetic-tokens",
    "3000",
]


@pytest.fixture(scope="session")
def run(tmp_path_factory):
    """A finished run of the built-in corpus (TINY_FLAGS), shared by the tests that
    only read it."""
    from awd_lstm.cli import main

    out = tmp_path_factory.mktemp("run") / "synthetic"
    code = main(["train", "--out", str(out), *TINY_FLAGS])
    assert code == 0
    return out


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """A small corpus of a 4-state hidden Markov source over 30 words (3,000 training
    tokens), for the training loop's tests."""
    from awd_lstm.data import HiddenMarkovSource, Vocabulary, load_corpus

    folder = tmp_path_factory.mktemp("hmm")
    source = HiddenMarkovSource(num_states=4, vocab_size=30, seed=0)
    source.write_corpus(folder, 3000, 400, 400)
    return load_corpus(folder, vocab=Vocabulary(source.words()))


@pytest.fixture(scope="session")
def qrnn_run(tmp_path_factory):
    """A finished run of QRNN layers (TINY_FLAGS and `--cell qrnn`), shared by the
    tests that only read it."""
    from awd_lstm.cli import main

    out = tmp_path_factory.mktemp("run") / "qrnn"
    assert main(["train", "--out", str(out), *TINY_FLAGS, "--cell", "qrnn"]) == 0
    return out
