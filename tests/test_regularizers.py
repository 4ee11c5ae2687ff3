"""AR and TAR against a NumPy computation, as functions and as layers."""

import keras
import numpy as np
import pytest

from awd_lstm.regularizers import (
    ActivationRegularization,
    TemporalActivationRegularization,
    activation_regularization,
    temporal_activation_regularization,
)
from tests.conftest import to_numpy


def test_ar_equals_numpy(rng):
    d = rng.standard_normal((3, 7, 5)).astype("float32")
    got = float(to_numpy(activation_regularization(d, alpha=2.0)))
    assert got == pytest.approx(2.0 * np.mean(d.astype(np.float64) ** 2), rel=1e-6)


def test_tar_equals_numpy(rng):
    h = rng.standard_normal((3, 7, 5)).astype("float32")
    want = 1.5 * np.mean((h[:, 1:].astype(np.float64) - h[:, :-1]) ** 2)
    got = float(to_numpy(temporal_activation_regularization(h, beta=1.5)))
    assert got == pytest.approx(want, rel=1e-6)


def test_tar_of_one_step_is_zero():
    assert float(to_numpy(temporal_activation_regularization(np.ones((2, 1, 3)), 1.0))) == 0.0


def test_tar_ignores_constant_sequences_ar_does_not():
    h = np.full((2, 5, 3), 0.7, "float32")
    assert float(to_numpy(temporal_activation_regularization(h, 1.0))) == 0.0
    assert float(to_numpy(activation_regularization(h, 1.0))) == pytest.approx(0.49)


def test_half_precision_inputs_give_float32_penalties(rng):
    h = rng.standard_normal((2, 4, 3)).astype("float16")
    assert keras.backend.standardize_dtype(activation_regularization(h).dtype) == "float32"
    assert keras.backend.standardize_dtype(temporal_activation_regularization(h).dtype) == "float32"


def test_layers_add_losses_only_in_training(rng):
    h = rng.standard_normal((2, 4, 3)).astype("float32")
    ar, tar = ActivationRegularization(alpha=2.0), TemporalActivationRegularization(beta=1.0)
    np.testing.assert_array_equal(to_numpy(ar(h, training=True)), h)
    np.testing.assert_array_equal(to_numpy(tar(h, training=True)), h)
    assert float(to_numpy(ar.losses[0])) == pytest.approx(2.0 * np.mean(h**2), rel=1e-6)
    assert float(to_numpy(tar.losses[0])) == pytest.approx(
        np.mean((h[:, 1:] - h[:, :-1]) ** 2), rel=1e-6
    )
    ar(h, training=False)
    tar(h, training=False)
    assert ar.losses == [] and tar.losses == []


def test_penalties_enter_the_training_loss(rng):
    """fit() minimizes task loss + AR: a model whose only loss weight is on a
    zero target is driven towards zero activations faster with AR on."""
    x = rng.standard_normal((16, 5, 3)).astype("float32")
    y = np.zeros((16, 5, 4), "float32")

    def model(alpha):
        inputs = keras.Input((5, 3))
        h = keras.layers.Dense(4, kernel_initializer=keras.initializers.Constant(0.5))(inputs)
        h = ActivationRegularization(alpha)(h)
        m = keras.Model(inputs, h)
        m.compile(keras.optimizers.SGD(0.01), "mse")
        return m

    plain, regularized = model(0.0), model(10.0)
    plain_loss = plain.evaluate(x, y, verbose=0)
    # evaluate() is inference: AR adds nothing.
    assert regularized.evaluate(x, y, verbose=0) == pytest.approx(plain_loss)
    plain.fit(x, y, epochs=3, verbose=0)
    regularized.fit(x, y, epochs=3, verbose=0)
    assert regularized.evaluate(x, y, verbose=0) < plain.evaluate(x, y, verbose=0)


@pytest.mark.parametrize("value", [-1.0, float("nan"), "2"])
def test_reject_bad_scales(value):
    with pytest.raises(ValueError, match=r"`alpha` must be a finite number >= 0"):
        ActivationRegularization(alpha=value)
    with pytest.raises(ValueError, match=r"`beta` must be a finite number >= 0"):
        temporal_activation_regularization(np.ones((1, 2, 1)), beta=value)


def test_tar_rejects_wrong_rank():
    with pytest.raises(ValueError, match=r"rank 3 \(batch, time, features\)"):
        temporal_activation_regularization(np.ones((2, 3)), 1.0)


@pytest.mark.parametrize("length", [1, 2, 5, 7])
def test_penalties_of_padded_outputs_equal_those_of_their_first_steps(rng, length):
    """With `length`, only the first `length` steps count, whatever the padded steps
    hold (as a Python integer and as a tensor)."""
    h = rng.standard_normal((3, 7, 5)).astype("float32")
    padded = h.copy()
    padded[:, length:] = 100.0 * rng.standard_normal((3, 7 - length, 5))
    for given in (length, keras.ops.convert_to_tensor(np.int32(length))):
        ar = activation_regularization(padded, alpha=2.0, length=given)
        tar = temporal_activation_regularization(padded, beta=1.5, length=given)
        want_ar = 2.0 * np.mean(h[:, :length].astype(np.float64) ** 2)
        want_tar = float(to_numpy(temporal_activation_regularization(h[:, :length], beta=1.5)))
        assert float(to_numpy(ar)) == pytest.approx(want_ar, rel=1e-6)
        assert float(to_numpy(tar)) == pytest.approx(want_tar, rel=1e-6, abs=1e-9)
    with pytest.raises(ValueError, match="rank 3"):
        activation_regularization(h[0], length=2)
