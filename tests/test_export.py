"""Exported models reload with identical outputs."""

import keras
import numpy as np
import pytest

from awd_lstm.export import export_keras, export_savedmodel, inference_model
from awd_lstm.training import TrainingConfig
from tests.conftest import to_numpy

CONFIG = TrainingConfig(embedding_size=6, hidden_size=10, num_layers=2, seed=2)


@pytest.fixture(scope="module")
def model():
    return inference_model(CONFIG, 25, _weights_of(np.random.default_rng(0)))


def _weights_of(rng):
    from awd_lstm.models import AWDLSTMLanguageModel

    template = AWDLSTMLanguageModel(25, seed=9, **CONFIG.model_kwargs())
    template.build((None, None))
    return [rng.normal(0, 0.3, v.shape).astype("float32") for v in template.trainable_variables]


def test_keras_file_round_trip(model, tmp_path, rng):
    ids = rng.integers(0, 25, (3, 11)).astype("int32")
    path = tmp_path / "model.keras"
    export_keras(model, path)
    again = keras.saving.load_model(path)
    np.testing.assert_array_equal(to_numpy(again(ids)), to_numpy(model(ids)))
    assert [p.name for p in tmp_path.iterdir()] == ["model.keras"]
    with pytest.raises(ValueError, match="must end with .keras"):
        export_keras(model, tmp_path / "model.h5")


def test_savedmodel_serves_next_word_log_probabilities(model, tmp_path, rng):
    if keras.backend.backend() != "tensorflow":
        with pytest.raises(ValueError, match="a SavedModel is a TensorFlow graph"):
            export_savedmodel(model, tmp_path / "saved")
        return
    import tensorflow as tf

    ids = rng.integers(0, 25, (2, 9)).astype("int32")
    export_savedmodel(model, tmp_path / "saved")
    loaded = tf.saved_model.load(str(tmp_path / "saved"))  # kept: it owns the variables
    served = loaded.serve(tf.constant(ids))["log_probs"]
    logits = to_numpy(model(ids)).astype(np.float64)
    want = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    np.testing.assert_allclose(served.numpy(), want, atol=1e-5)
    np.testing.assert_allclose(np.exp(served.numpy()).sum(-1), 1.0, rtol=1e-5)
    with pytest.raises(ValueError, match="already exists"):
        export_savedmodel(model, tmp_path / "saved")
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp-")]


def test_a_run_exports_with_its_vocabulary_and_checks_first(run, tmp_path):
    from awd_lstm.data import Vocabulary
    from awd_lstm.export import export_run
    from awd_lstm.runs import Run

    opened = Run.open(run)
    for out, message in [
        (tmp_path / "m.h5", "`out` must end with .keras"),
        (tmp_path / "no" / "m.keras", "does not exist"),
    ]:
        with pytest.raises(ValueError, match=message):
            export_run(opened, out)
    with pytest.raises(ValueError, match="`format` must be"):
        export_run(opened, tmp_path / "m.keras", format="onnx")
    assert list(tmp_path.iterdir()) == []
    vocab_path = export_run(opened, tmp_path / "m.keras")
    assert vocab_path == str(tmp_path / "m.vocab.json")
    assert Vocabulary.load(vocab_path).fingerprint() == opened.vocabulary.fingerprint()
    ids = np.arange(8, dtype="int32").reshape(2, 4)
    again = keras.saving.load_model(tmp_path / "m.keras")
    want = opened.load_model(stateful=False)(ids)
    np.testing.assert_allclose(to_numpy(again(ids)), to_numpy(want), atol=1e-6)
