"""LockedDropout and EmbeddingDropout: properties of their masks."""

import keras
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from awd_lstm.layers import EmbeddingDropout, LockedDropout
from tests.conftest import to_numpy

# -- LockedDropout -----------------------------------------------------------------


@settings(max_examples=10, deadline=None)
@given(
    rate=st.floats(0.05, 0.9),
    batch=st.integers(1, 4),
    steps=st.integers(1, 6),
    features=st.integers(1, 8),
    seed=st.integers(0, 2**16),
)
def test_locked_mask_constant_over_time(rate, batch, steps, features, seed):
    x = np.random.default_rng(seed).uniform(0.5, 1.5, (batch, steps, features)).astype("float32")
    y = to_numpy(LockedDropout(rate, seed=seed)(x, training=True))
    ratio = y / x  # the mask itself: 0 or 1/(1-rate)
    np.testing.assert_allclose(ratio, np.broadcast_to(ratio[:, :1], ratio.shape), rtol=1e-6)
    kept = ratio[ratio != 0]
    np.testing.assert_allclose(kept, 1.0 / (1.0 - rate), rtol=1e-5)


def test_locked_mask_differs_across_batch_rows_and_calls():
    x = np.ones((64, 3, 32), "float32")
    layer = LockedDropout(0.5, seed=1)
    first = to_numpy(layer(x, training=True))
    second = to_numpy(layer(x, training=True))
    assert not np.array_equal(first[0], first[1])
    assert not np.array_equal(first, second)


@pytest.mark.parametrize("rate", [0.1, 0.4, 0.65])
def test_locked_fraction_and_mean(rate):
    x = np.ones((200, 5, 100), "float32")
    y = to_numpy(LockedDropout(rate, seed=3)(x, training=True))
    assert abs(np.mean(y[:, 0] == 0) - rate) < 0.02  # sd <= 0.0035 over 20000 draws
    assert abs(y.mean() - 1.0) < 0.05  # the 1/(1-p) scaling keeps the mean


def test_locked_identity_when_not_training():
    x = np.random.default_rng(0).standard_normal((2, 3, 4)).astype("float32")
    layer = LockedDropout(0.5, seed=0)
    np.testing.assert_array_equal(to_numpy(layer(x)), x)
    np.testing.assert_array_equal(to_numpy(layer(x, training=False)), x)
    np.testing.assert_array_equal(to_numpy(LockedDropout(0.0)(x, training=True)), x)


def test_locked_same_seed_same_mask():
    x = np.ones((4, 3, 8), "float32")
    a = to_numpy(LockedDropout(0.5, seed=9)(x, training=True))
    b = to_numpy(LockedDropout(0.5, seed=9)(x, training=True))
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("value", [1.0, -0.5, 2, float("inf"), None, "0.1"])
def test_locked_rejects_bad_rate(value):
    with pytest.raises(ValueError, match=r"`rate` must be a number in \[0, 1\); Received: rate="):
        LockedDropout(value)


@pytest.mark.parametrize("shape", [(2, 3), (2, 3, 4, 5)])
def test_locked_rejects_wrong_rank(shape):
    with pytest.raises(ValueError, match=r"rank 3 \(batch, time, features\); Received: inputs"):
        LockedDropout(0.5)(np.ones(shape, "float32"), training=True)


# -- EmbeddingDropout ----------------------------------------------------------------


def _embedding(rate, vocab=20, dim=6, seed=0):
    layer = EmbeddingDropout(
        vocab,
        dim,
        embedding_dropout=rate,
        seed=seed,
        embeddings_initializer=keras.initializers.RandomUniform(0.5, 1.5, seed=seed),
    )
    layer.build((None,))
    return layer


@settings(max_examples=10, deadline=None)
@given(rate=st.floats(0.1, 0.9), seed=st.integers(0, 2**16))
def test_embedding_rows_zeroed_whole_and_scaled(rate, seed):
    layer = _embedding(rate, seed=seed)
    ids = np.random.default_rng(seed).integers(0, 20, size=(4, 30))
    out = to_numpy(layer(ids, training=True))
    table = to_numpy(layer.embeddings)
    ratio = out / table[ids]  # (4, 30, 6): the mask of each token's row
    # One factor per token, the same for every feature...
    np.testing.assert_allclose(ratio, np.broadcast_to(ratio[..., :1], ratio.shape), rtol=1e-5)
    # ...and the same for every occurrence of a word type.
    for word in np.unique(ids):
        factors = ratio[ids == word][:, 0]
        np.testing.assert_allclose(factors, factors[0], rtol=1e-6)
        assert factors[0] == 0 or abs(factors[0] - 1 / (1 - rate)) < 1e-5


def test_embedding_fraction_of_types_dropped():
    rate = 0.3
    layer = _embedding(rate, vocab=5000, dim=2)
    ids = np.arange(5000)[None, :]
    out = to_numpy(layer(ids, training=True))
    dropped = np.mean(np.all(out[0] == 0, axis=-1))
    assert abs(dropped - rate) < 0.03  # sd 0.0065 over 5000 types
    assert abs(out.mean() / to_numpy(layer.embeddings).mean() - 1.0) < 0.05


def test_embedding_equals_dropped_matrix_lookup(monkeypatch):
    """Gathering the row mask equals looking up in embeddings * mask, values and
    gradients alike (checked on values here; the gradient of a product of a lookup
    and a constant is the same lookup of the same constant)."""
    layer = _embedding(0.5, vocab=12, dim=3, seed=4)
    ids = np.array([[0, 3, 3, 7, 11, 0]])
    drawn = []
    original = keras.random.dropout

    def recording(inputs, rate, noise_shape=None, seed=None):
        out = original(inputs, rate, noise_shape=noise_shape, seed=seed)
        drawn.append(to_numpy(out))
        return out

    monkeypatch.setattr(keras.random, "dropout", recording)
    out = to_numpy(layer(ids, training=True))
    (mask,) = drawn
    assert mask.shape == (12, 1)
    np.testing.assert_allclose(out, (to_numpy(layer.embeddings) * mask)[ids], rtol=1e-6)


def test_embedding_identity_when_not_training():
    layer = _embedding(0.5)
    plain = keras.layers.Embedding(20, 6)
    plain.build((None,))
    plain.set_weights(layer.get_weights())
    ids = np.array([[1, 2, 3], [4, 5, 19]])
    np.testing.assert_array_equal(to_numpy(layer(ids)), to_numpy(plain(ids)))
    np.testing.assert_array_equal(
        to_numpy(_embedding(0.0)(ids, training=True)), to_numpy(_embedding(0.0)(ids))
    )


def test_embedding_new_mask_each_call_same_seed_same_mask():
    ids = np.arange(20)[None, :]
    a, b = _embedding(0.5, seed=1), _embedding(0.5, seed=1)
    a1, a2 = to_numpy(a(ids, training=True)), to_numpy(a(ids, training=True))
    assert not np.array_equal(a1 == 0, a2 == 0)
    np.testing.assert_array_equal(a1, to_numpy(b(ids, training=True)))


@pytest.mark.parametrize("value", [1.0, -0.1, 7])
def test_embedding_rejects_bad_rate(value):
    with pytest.raises(ValueError, match=r"`embedding_dropout` must be a number in \[0, 1\)"):
        EmbeddingDropout(10, 4, embedding_dropout=value)


def test_embedding_serves_as_tied_decoder():
    layer = _embedding(0.5)
    hidden = np.ones((2, 3, 6), "float32")
    logits = keras.ops.matmul(hidden, keras.ops.transpose(layer.embeddings))
    assert tuple(logits.shape) == (2, 3, 20)
