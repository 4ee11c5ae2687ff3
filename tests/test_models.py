"""Every layer inside real models: fit, serialization, mixed precision."""

import keras
import numpy as np
import pytest

from awd_lstm.layers import EmbeddingDropout, LockedDropout, WeightDropLSTM, WeightDropLSTMCell
from awd_lstm.regularizers import ActivationRegularization, TemporalActivationRegularization
from tests.conftest import to_numpy

VOCAB, STEPS = 30, 8


def _data(rng, n=32):
    ids = rng.integers(0, VOCAB, size=(n, STEPS + 1))
    return ids[:, :-1], ids[:, 1:]


def _functional_lm(dtype=None, manual=False):
    """A small AWD-LSTM language model holding every layer of the package."""
    ids = keras.Input((STEPS,), dtype="int32")
    embedding = EmbeddingDropout(VOCAB, 8, embedding_dropout=0.1, seed=1, dtype=dtype)
    x = embedding(ids)
    x = LockedDropout(0.3, seed=2, dtype=dtype)(x)
    x = WeightDropLSTM(
        12,
        weight_dropout=0.5,
        return_sequences=True,
        seed=3,
        dtype=dtype,
        weight_dropout_mode="manual" if manual else "call",
    )(x)
    x = LockedDropout(0.2, seed=4, dtype=dtype)(x)
    x = keras.layers.RNN(
        WeightDropLSTMCell(8, weight_dropout=0.5, seed=5, dtype=dtype),
        return_sequences=True,
        dtype=dtype,
    )(x)
    x = TemporalActivationRegularization(1.0, dtype=dtype)(x)
    x = LockedDropout(0.4, seed=6, dtype=dtype)(x)
    x = ActivationRegularization(2.0, dtype=dtype)(x)
    logits = keras.layers.Dense(VOCAB, dtype=dtype)(x)
    return keras.Model(ids, logits)


def _compile(model, lr=0.5):
    model.compile(
        keras.optimizers.SGD(lr, clipnorm=0.25),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    return model


def test_functional_model_fits_and_learns(rng):
    x, y = _data(rng)
    model = _compile(_functional_lm())
    before = model.evaluate(x, y, verbose=0)
    model.fit(x, y, epochs=8, batch_size=8, verbose=0)
    assert model.evaluate(x, y, verbose=0) < before


def test_sequential_model_fits(rng):
    x, y = _data(rng)
    model = keras.Sequential(
        [
            keras.Input((STEPS,), dtype="int32"),
            EmbeddingDropout(VOCAB, 8, embedding_dropout=0.1, seed=1),
            LockedDropout(0.2, seed=2),
            WeightDropLSTM(12, weight_dropout=0.5, return_sequences=True, seed=3),
            keras.layers.Dense(VOCAB),
        ]
    )
    _compile(model)
    before = model.evaluate(x, y, verbose=0)
    model.fit(x, y, epochs=8, batch_size=8, verbose=0)
    assert model.evaluate(x, y, verbose=0) < before


class TiedLanguageModel(keras.Model):
    """A subclassed model with a decoder tied to the embedding matrix."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.embedding = EmbeddingDropout(VOCAB, 8, embedding_dropout=0.1, seed=1)
        self.dropout = LockedDropout(0.2, seed=2)
        self.lstm = WeightDropLSTM(8, weight_dropout=0.5, return_sequences=True, seed=3)
        self.ar = ActivationRegularization(2.0)

    def build(self, input_shape):
        self.embedding.build(input_shape)
        self.lstm.build((*input_shape, 8))
        self.bias = self.add_weight(shape=(VOCAB,), initializer="zeros", name="bias")

    def call(self, ids, training=False):
        x = self.dropout(self.embedding(ids, training=training), training=training)
        x = self.ar(self.lstm(x, training=training), training=training)
        return keras.ops.matmul(x, keras.ops.transpose(self.embedding.embeddings)) + self.bias


def test_subclassed_tied_model_fits(rng):
    x, y = _data(rng)
    model = _compile(TiedLanguageModel())
    before = model.evaluate(x, y, verbose=0)
    model.fit(x, y, epochs=8, batch_size=8, verbose=0)
    assert model.evaluate(x, y, verbose=0) < before


def _without_names(config):
    """A layer config without the auto-numbered names of nested layers, with
    tuples as lists (as JSON stores them)."""
    if isinstance(config, dict):
        return {k: _without_names(v) for k, v in config.items() if k != "name"}
    if isinstance(config, (list, tuple)):
        return [_without_names(v) for v in config]
    return config


@pytest.mark.parametrize("manual", [False, True])
def test_keras_file_round_trip(rng, tmp_path, manual):
    x, y = _data(rng, n=8)
    model = _compile(_functional_lm(manual=manual))
    model.fit(x, y, epochs=1, batch_size=8, verbose=0)
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_array_equal(to_numpy(loaded(x)), to_numpy(model(x)))
    kinds = {type(layer).__name__ for layer in loaded.layers}
    assert {
        "EmbeddingDropout",
        "LockedDropout",
        "WeightDropLSTM",
        "RNN",
        "ActivationRegularization",
        "TemporalActivationRegularization",
    } <= kinds
    for original, restored in zip(model.layers, loaded.layers):
        assert _without_names(original.get_config()) == _without_names(restored.get_config())
    if manual:
        # The kept masks are weights: training outputs match too.
        lstm = next(layer for layer in loaded.layers if isinstance(layer, WeightDropLSTM))
        assert lstm.weight_dropout_mode == "manual"
        np.testing.assert_array_equal(
            to_numpy(lstm.cell.recurrent_kernel_mask),
            to_numpy(
                next(
                    layer for layer in model.layers if isinstance(layer, WeightDropLSTM)
                ).cell.recurrent_kernel_mask
            ),
        )


@pytest.mark.parametrize(
    "layer",
    [
        WeightDropLSTM(
            4,
            weight_dropout=0.3,
            input_weight_dropout=0.2,
            weight_dropout_mode="manual",
            go_backwards=True,
            seed=3,
        ),
        WeightDropLSTMCell(4, weight_dropout=0.3, weight_dropout_mode="step", seed=1),
        LockedDropout(0.25, seed=2),
        EmbeddingDropout(10, 3, embedding_dropout=0.1, seed=4, mask_zero=True),
        ActivationRegularization(1.5),
        TemporalActivationRegularization(0.5),
    ],
    ids=lambda layer: type(layer).__name__,
)
def test_config_round_trip_through_registry(layer):
    config = keras.saving.serialize_keras_object(layer)
    assert config["registered_name"].startswith("awd_lstm>")
    restored = keras.saving.deserialize_keras_object(config)
    assert type(restored) is type(layer)
    assert restored.get_config() == layer.get_config()


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_mixed_precision(rng, policy):
    x, y = _data(rng, n=16)
    reference = _functional_lm()
    mixed = _functional_lm(dtype=policy)
    mixed.set_weights(reference.get_weights())
    compute = keras.dtype_policies.get(policy).compute_dtype
    for layer in mixed.layers:
        for variable in layer.weights:
            assert keras.backend.standardize_dtype(variable.dtype) == "float32"
    for training in (False, True):
        out = mixed(x, training=training)
        assert keras.backend.standardize_dtype(out.dtype) == compute
    np.testing.assert_allclose(
        to_numpy(mixed(x)).astype("float32"), to_numpy(reference(x)), atol=0.05
    )
    _compile(mixed)
    before = mixed.evaluate(x, y, verbose=0)
    mixed.fit(x, y, epochs=5, batch_size=8, verbose=0)
    after = mixed.evaluate(x, y, verbose=0)
    assert np.isfinite(after) and after < before
