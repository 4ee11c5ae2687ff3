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
    # The umask's permissions, as a folder made with os.mkdir gets (mkdtemp's are 0700).
    import os

    umask = os.umask(0o022)
    os.umask(umask)
    assert (tmp_path / "saved").stat().st_mode & 0o777 == 0o777 & ~umask


def test_a_run_exports_with_its_vocabulary_and_checks_first(run, tmp_path):
    import zipfile

    import awd_lstm
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
    export_run(opened, tmp_path / "m.keras")
    assert [p.name for p in tmp_path.iterdir()] == ["m.keras"]  # the vocabulary inside
    assert "assets/vocab.json" in zipfile.ZipFile(tmp_path / "m.keras").namelist()
    ids = np.arange(8, dtype="int32").reshape(2, 4)
    want = opened.load_model(stateful=False)(ids)
    for again in (
        awd_lstm.load_model(tmp_path / "m.keras"),
        keras.saving.load_model(tmp_path / "m.keras"),
    ):
        np.testing.assert_allclose(to_numpy(again(ids)), to_numpy(want), atol=1e-6)
        assert again.vocabulary.fingerprint() == opened.vocabulary.fingerprint()
        assert again.vocabulary.tokens == opened.vocabulary.tokens
    from_folder = awd_lstm.load_model(run)  # a run folder: its best weights
    np.testing.assert_allclose(to_numpy(from_folder(ids)), to_numpy(want), atol=1e-6)
    assert from_folder.vocabulary.tokens == opened.vocabulary.tokens


def test_load_model_refuses_what_it_cannot_load_and_reads_an_older_export(model, tmp_path):
    import awd_lstm
    from awd_lstm.data import Vocabulary

    with pytest.raises(ValueError, match="expected a .keras file or a run folder"):
        awd_lstm.load_model(tmp_path / "model.h5")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        awd_lstm.load_model(tmp_path / "missing.keras")
    # Earlier versions wrote the vocabulary beside the file.
    export_keras(model, tmp_path / "old.keras")  # `model` has no vocabulary
    assert awd_lstm.load_model(tmp_path / "old.keras").vocabulary is None
    words = Vocabulary([f"w{i}" for i in range(25)])
    words.save(tmp_path / "old.vocab.json")
    assert awd_lstm.load_model(tmp_path / "old.keras").vocabulary.tokens == words.tokens


def test_a_vocabulary_of_another_size_is_refused_on_load(model, tmp_path):
    from awd_lstm.data import Vocabulary

    model.vocabulary = Vocabulary([f"w{i}" for i in range(24)])  # the model has 25
    try:
        export_keras(model, tmp_path / "m.keras")
    finally:
        model.vocabulary = None
    with pytest.raises(ValueError, match="has 24 tokens, the model 25"):  # in Keras' report
        keras.saving.load_model(tmp_path / "m.keras")


def test_stateful_and_stateless_copies_share_the_weights_of_the_moment(model, rng):
    ids = rng.integers(0, 25, (1, 9)).astype("int32")
    assert model.as_stateless() is model
    stateful = model.as_stateful(1)
    assert stateful.stateful and stateful.batch_size == 1
    np.testing.assert_allclose(to_numpy(stateful(ids)), to_numpy(model(ids)), atol=1e-6)
    # Carried state: the second half after the first equals the whole sequence's end.
    stateful.reset_state()
    stateful(ids[:, :4])
    np.testing.assert_allclose(
        to_numpy(stateful(ids[:, 4:])), to_numpy(model(ids))[:, 4:], atol=1e-5
    )
    assert stateful.as_stateful(1) is stateful
    stateless = stateful.as_stateless()
    np.testing.assert_allclose(to_numpy(stateless(ids)), to_numpy(model(ids)), atol=1e-6)
    # One copy, given the present weights each time.
    bias = model.decoder_bias
    before = to_numpy(bias)
    try:
        bias.assign(before + 1.0)
        again = model.as_stateful(1)
        assert again is stateful
        np.testing.assert_allclose(to_numpy(again.decoder_bias), before + 1.0)
    finally:
        bias.assign(before)
    with pytest.raises(ValueError, match="`batch_size` must be a positive integer"):
        model.as_stateful(None)
