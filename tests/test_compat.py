"""The TF1 cell's API on Keras 3 (awd_lstm.compat), on every backend."""

import os
import subprocess
import sys

import keras
import numpy as np
import pytest

from awd_lstm.compat import LSTMStateTuple, VariationalDropout, WeightDropLSTMCell, dynamic_rnn
from tests.conftest import to_numpy
from tests.reference import numpy_lstm

BACKEND = keras.backend.backend()
CELL_NUM, INPUT_SIZE, BATCH, STEPS = 6, 4, 3, 5


def _inputs(rng):
    return rng.standard_normal((BATCH, STEPS, INPUT_SIZE)).astype("float32")


def test_seed_snippet_runs(rng):
    """The seed's usage, with dynamic_rnn from awd_lstm.compat and without sessions."""
    x = _inputs(rng)
    lstm_cell = WeightDropLSTMCell(
        num_units=CELL_NUM, weight_drop_kr=0.5, use_vd=True, input_size=INPUT_SIZE
    )
    lstm_cell.get_vd_update_op()  # draw a new kept mask
    init_states = lstm_cell.zero_state(BATCH, "float32")
    outputs, state = dynamic_rnn(lstm_cell, x, initial_state=init_states)
    assert tuple(outputs.shape) == (BATCH, STEPS, CELL_NUM)
    assert isinstance(state, LSTMStateTuple)
    np.testing.assert_allclose(to_numpy(state.h), to_numpy(outputs[:, -1]), atol=1e-6)

    vd = VariationalDropout(input_shape=[5], keep_prob=0.5)
    vd.get_update_mask_op()
    assert tuple(vd(np.ones((2, 5), "float32")).shape) == (2, 5)


@pytest.mark.skipif(BACKEND != "tensorflow", reason="tf.control_dependencies is TensorFlow's")
def test_seed_snippet_with_control_dependencies_in_tf_function(rng):
    import tensorflow as tf

    x = _inputs(rng)
    cell = WeightDropLSTMCell(
        num_units=CELL_NUM, weight_drop_kr=0.5, use_vd=True, input_size=INPUT_SIZE, seed=1
    )
    dynamic_rnn(cell, x)  # builds the RNN's pieces outside the function

    @tf.function
    def step(x):
        with tf.control_dependencies(cell.get_vd_update_op()):
            outputs, _ = dynamic_rnn(cell, x)
        return outputs

    before = to_numpy(cell.recurrent_kernel_mask)
    first = step(x)
    after_first = to_numpy(cell.recurrent_kernel_mask)
    second = step(x)
    assert not np.array_equal(before, after_first)
    assert not np.array_equal(after_first, to_numpy(cell.recurrent_kernel_mask))
    assert not np.allclose(to_numpy(first), to_numpy(second))


def test_keep_rate_one_is_the_plain_cell(rng):
    """weight_drop_kr=1.0 equals a NumPy LSTM with TF1's forget_bias added."""
    x = _inputs(rng)
    cell = WeightDropLSTMCell(num_units=CELL_NUM, forget_bias=1.0)
    outputs, state = dynamic_rnn(cell, x)
    kernel, recurrent, bias = (
        to_numpy(v).astype(np.float64) for v in (cell.kernel, cell.recurrent_kernel, cell.bias)
    )
    np.testing.assert_array_equal(bias[CELL_NUM : 2 * CELL_NUM], 1.0)
    np.testing.assert_array_equal(np.delete(bias, np.s_[CELL_NUM : 2 * CELL_NUM]), 0.0)
    want, h, c = numpy_lstm(x, kernel, recurrent, bias)
    np.testing.assert_allclose(to_numpy(outputs), want, atol=1e-5)
    np.testing.assert_allclose(to_numpy(state.c), c, atol=1e-5)
    assert cell.get_vd_update_op() == []


def test_use_vd_mask_fixed_until_updated_and_covers_both_kernels(rng):
    x = _inputs(rng)
    cell = WeightDropLSTMCell(
        num_units=CELL_NUM, weight_drop_kr=0.5, use_vd=True, input_size=INPUT_SIZE, seed=3
    )
    kernel_mask = to_numpy(cell.kernel_mask)
    recurrent_mask = to_numpy(cell.recurrent_kernel_mask)
    for mask in (kernel_mask, recurrent_mask):
        assert 0.3 < np.mean(mask == 0) < 0.7
    first = to_numpy(dynamic_rnn(cell, x)[0])
    np.testing.assert_array_equal(to_numpy(dynamic_rnn(cell, x)[0]), first)
    kernel, recurrent, bias = (
        to_numpy(v).astype(np.float64) for v in (cell.kernel, cell.recurrent_kernel, cell.bias)
    )
    want, _, _ = numpy_lstm(x, kernel * kernel_mask, recurrent * recurrent_mask, bias)
    np.testing.assert_allclose(first, want, atol=1e-5)
    new_masks = cell.get_vd_update_op()
    assert len(new_masks) == 2
    assert not np.array_equal(to_numpy(cell.kernel_mask), kernel_mask)
    assert not np.array_equal(to_numpy(cell.recurrent_kernel_mask), recurrent_mask)
    assert np.abs(to_numpy(dynamic_rnn(cell, x)[0]) - first).max() > 1e-3


def test_without_vd_a_fresh_mask_every_step(rng, recorded_masks):
    drawn = recorded_masks
    x = _inputs(rng)
    cell = WeightDropLSTMCell(num_units=CELL_NUM, weight_drop_kr=0.6, seed=2)
    if BACKEND == "jax":  # lax.scan cannot draw per step: a Python loop over the cell
        state = [np.zeros((BATCH, CELL_NUM), "float32")] * 2
        for t in range(STEPS):
            _, state = cell(x[:, t], state, training=True)
    else:
        dynamic_rnn(cell, x)
    # Two masks (input and recurrent kernel) per step, plus one probe step on
    # TensorFlow and PyTorch.
    assert len(drawn) in (2 * STEPS, 2 * STEPS + 2)
    recurrent = drawn[1::2]
    for a, b in zip(recurrent, recurrent[1:]):
        assert not np.array_equal(a, b)


def test_works_in_keras_rnn_and_fit(rng):
    x = _inputs(rng)
    y = rng.standard_normal((BATCH, STEPS, 1)).astype("float32")
    cell = WeightDropLSTMCell(
        num_units=CELL_NUM, weight_drop_kr=0.7, use_vd=True, input_size=INPUT_SIZE, seed=0
    )
    model = keras.Sequential(
        [
            keras.Input((STEPS, INPUT_SIZE)),
            keras.layers.RNN(cell, return_sequences=True),
            keras.layers.Dense(1),
        ]
    )
    model.compile(keras.optimizers.Adam(0.05), "mse")
    history = model.fit(x, y, epochs=8, verbose=0)
    assert history.history["loss"][-1] < history.history["loss"][0]


def test_config_round_trip():
    cell = WeightDropLSTMCell(
        num_units=5, weight_drop_kr=0.8, use_vd=True, input_size=3, forget_bias=0.5, seed=4
    )
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(cell))
    assert isinstance(restored, WeightDropLSTMCell)
    assert restored.get_config() == cell.get_config()
    np.testing.assert_array_equal(to_numpy(restored.bias)[5:10], 0.5)
    vd = VariationalDropout([4], 0.7, seed=1)
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(vd))
    assert restored.get_config() == vd.get_config()


@pytest.mark.parametrize("value", [0.0, 1.5, -0.2, float("nan"), "0.5"])
def test_rejects_bad_keep_rate(value):
    with pytest.raises(
        ValueError,
        match=r"`weight_drop_kr` is a keep probability and must be "
        r"in \(0, 1\]; Received: weight_drop_kr=",
    ):
        WeightDropLSTMCell(num_units=4, weight_drop_kr=value)
    with pytest.raises(ValueError, match=r"`keep_prob` is a keep probability"):
        VariationalDropout(input_shape=[3], keep_prob=value)


def test_use_vd_needs_input_size():
    with pytest.raises(ValueError, match="`input_size` is required when use_vd=True"):
        WeightDropLSTMCell(num_units=4, weight_drop_kr=0.5, use_vd=True)


def test_input_size_must_match_inputs(rng):
    cell = WeightDropLSTMCell(num_units=4, weight_drop_kr=0.5, use_vd=True, input_size=7)
    with pytest.raises(ValueError, match="input_size=7 but receives inputs with 4 features"):
        dynamic_rnn(WeightDropLSTMCell(num_units=4, input_size=7), _inputs(rng))
    assert cell.built


def test_tf1_only_options_point_to_legacy():
    with pytest.raises(ValueError, match=r"`num_proj` exists only in TF1 graph mode"):
        WeightDropLSTMCell(num_units=4, num_proj=2)


def test_variational_dropout_mask_kept_until_update():
    vd = VariationalDropout(input_shape=[64], keep_prob=0.5, seed=5)
    x = np.ones((3, 64), "float32")
    first = to_numpy(vd(x))
    np.testing.assert_array_equal(first[0], first[1])  # one mask for every row
    np.testing.assert_array_equal(to_numpy(vd(x)), first)
    assert set(np.unique(first)) == {0.0, 2.0}
    vd.get_update_mask_op()
    assert not np.array_equal(to_numpy(vd(x)), first)
    np.testing.assert_array_equal(to_numpy(vd(x, training=False)), x)


def test_legacy_without_tf_keras_says_what_to_do():
    env = {k: v for k, v in os.environ.items() if k != "TF_USE_LEGACY_KERAS"}
    done = subprocess.run(
        [sys.executable, "-c", "import awd_lstm.legacy"], env=env, capture_output=True, text=True
    )
    assert done.returncode != 0
    assert "pip install 'awd-lstm[legacy]'" in done.stderr
    assert "TF_USE_LEGACY_KERAS=1" in done.stderr


def test_compat_and_core_cells_keep_their_own_registrations():
    from awd_lstm import layers

    core = layers.WeightDropLSTMCell(4, weight_dropout=0.5)
    legacy_api = WeightDropLSTMCell(num_units=4, weight_drop_kr=0.5)
    for cell in (core, legacy_api):
        restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(cell))
        assert type(restored) is type(cell)
