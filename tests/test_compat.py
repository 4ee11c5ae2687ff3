"""The TF1 cell's API on Keras 3 (awd_lstm.compat), on every backend.

Every number is checked against `numpy_tf1_lstm`, TensorFlow 1.x's LSTMCell in NumPy
(in TF1's layout: `[W; U]`, gates i, j, f, o; tests_legacy checks it against TF1's
own cell), run with the masks that the call used.
"""

import os
import subprocess
import sys

import keras
import numpy as np
import pytest

from awd_lstm.compat import LSTMStateTuple, VariationalDropout, WeightDropLSTMCell, dynamic_rnn
from tests.conftest import to_numpy
from tests.reference import numpy_lstm, numpy_tf1_lstm

BACKEND = keras.backend.backend()
CELL_NUM, INPUT_SIZE, BATCH, STEPS = 6, 4, 3, 5


def _inputs(rng, steps=STEPS, batch=BATCH):
    return rng.standard_normal((batch, steps, INPUT_SIZE)).astype("float32")


def _state(rng, cell, batch=BATCH):
    """A non-zero `(c, h)`."""
    c = rng.standard_normal((batch, cell.num_units)).astype("float32")
    h = np.tanh(rng.standard_normal((batch, cell.output_size))).astype("float32")
    return c, h


def _tf1_blocks(array):
    """Keras' gate blocks i, f, c, o (last axis) in TF1's order i, j, f, o."""
    i, f, c, o = np.split(np.asarray(array, np.float64), 4, axis=-1)
    return np.concatenate([i, c, f, o], axis=-1)


def _tf1_mask(kernel_mask, recurrent_mask):
    return _tf1_blocks(np.concatenate([to_numpy(kernel_mask), to_numpy(recurrent_mask)]))


def _kept_mask(cell):
    return _tf1_mask(cell.kernel_mask, cell.recurrent_kernel_mask)


def tf1_reference(cell, x, c0, h0, masks=None):
    """`numpy_tf1_lstm` with the compat cell's weights moved to TF1's layout (its
    forget_bias taken out of the bias and added back at every step, as TF1 does)."""
    units = cell.num_units
    kernel = _tf1_blocks(np.concatenate([to_numpy(cell.kernel), to_numpy(cell.recurrent_kernel)]))
    bias = _tf1_blocks(to_numpy(cell.bias))
    bias[2 * units : 3 * units] -= cell.forget_bias
    extras = {}
    if cell.num_proj is not None:
        extras["projection"] = to_numpy(cell.projection_kernel).astype(np.float64)
    if cell.use_peepholes:
        extras["peepholes"] = [to_numpy(w) for w in (cell.w_i_diag, cell.w_f_diag, cell.w_o_diag)]
    return numpy_tf1_lstm(
        x,
        kernel,
        bias,
        c0,
        h0,
        masks=masks,
        forget_bias=cell.forget_bias,
        cell_clip=cell.cell_clip,
        proj_clip=cell.proj_clip,
        **extras,
    )


def _recorded_step_masks(drawn, steps):
    """The TF1-layout mask of each of the last `steps` steps (two draws a step:
    the input kernel's, then the recurrent kernel's)."""
    if BACKEND == "jax":
        import jax

        jax.effects_barrier()  # the masks recorded inside lax.scan, all delivered
    drawn = drawn[-2 * steps :]
    return [_tf1_mask(k, r) for k, r in zip(drawn[::2], drawn[1::2])]


# TF1 LSTMCell options: the plain cell; projection with both clips and peepholes.
CONFIGS = {
    "plain": {},
    "proj-clip-peep": {"num_proj": 3, "proj_clip": 0.3, "cell_clip": 0.5, "use_peepholes": True},
}


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
    zeros = np.zeros((BATCH, CELL_NUM))
    first = to_numpy(step(x))
    after_first = to_numpy(cell.recurrent_kernel_mask)
    # The update ran before the loop: the outputs are those of the new mask.
    want, _, _ = tf1_reference(cell, x, zeros, zeros, _kept_mask(cell))
    np.testing.assert_allclose(first, want, atol=1e-5)
    second = to_numpy(step(x))
    want, _, _ = tf1_reference(cell, x, zeros, zeros, _kept_mask(cell))
    np.testing.assert_allclose(second, want, atol=1e-5)
    assert not np.array_equal(before, after_first)
    assert not np.array_equal(after_first, to_numpy(cell.recurrent_kernel_mask))
    assert not np.allclose(first, second)


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


@pytest.mark.parametrize("config", CONFIGS.values(), ids=CONFIGS.keys())
def test_without_vd_a_fresh_mask_every_step_equal_to_tf1(rng, recorded_masks, config):
    """use_vd=False in dynamic_rnn on every backend (on JAX inside lax.scan), from a
    non-zero LSTMStateTuple: each step's numbers are TF1's with that step's masks."""
    x = _inputs(rng)
    cell = WeightDropLSTMCell(num_units=CELL_NUM, weight_drop_kr=0.6, seed=2, **config)
    c0, h0 = _state(rng, cell)
    outputs, state = dynamic_rnn(cell, x, initial_state=LSTMStateTuple(c=c0, h=h0))
    # Two masks (input and recurrent kernel) per step, plus one probe step on
    # TensorFlow and PyTorch.
    assert len(recorded_masks) in (2 * STEPS, 2 * STEPS + 2)
    masks = _recorded_step_masks(recorded_masks, STEPS)
    for a, b in zip(masks, masks[1:]):
        assert not np.array_equal(a, b)
    want, c, h = tf1_reference(cell, x, c0, h0, masks)
    np.testing.assert_allclose(to_numpy(outputs), want, atol=1e-5)
    np.testing.assert_allclose(to_numpy(state.c), c, atol=1e-5)
    np.testing.assert_allclose(to_numpy(state.h), h, atol=1e-5)


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


@pytest.mark.parametrize("state_is_tuple", [True, False])
def test_config_round_trip(state_is_tuple):
    cell = WeightDropLSTMCell(
        num_units=5,
        weight_drop_kr=0.8,
        use_vd=True,
        input_size=3,
        forget_bias=0.5,
        seed=4,
        num_proj=2,
        proj_clip=1.5,
        cell_clip=3.0,
        use_peepholes=True,
        state_is_tuple=state_is_tuple,
    )
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(cell))
    assert isinstance(restored, WeightDropLSTMCell)
    assert restored.get_config() == cell.get_config()
    assert restored.state_size == cell.state_size and restored.output_size == 2
    np.testing.assert_array_equal(to_numpy(restored.bias)[5:10], 0.5)
    assert [tuple(w.shape) for w in restored.weights] == [tuple(w.shape) for w in cell.weights]
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
    assert cell.built  # built at construction (its kept mask), checked at every call
    with pytest.raises(ValueError, match="input_size=7 but receives inputs with 4 features"):
        cell(_inputs(rng)[:, 0], cell.zero_state(BATCH))
    with pytest.raises(ValueError, match="input_size=7 but receives inputs with 4 features"):
        dynamic_rnn(cell, _inputs(rng))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"num_proj": 0}, r"`num_proj` must be a positive integer; Received: num_proj=0"),
        ({"cell_clip": -1.0}, r"`cell_clip` must be a positive number or None"),
        ({"proj_clip": 1.0}, r"`proj_clip` clips the projection and needs `num_proj`"),
        ({"dropout": 0.2}, r"`dropout` is an option of Keras' LSTMCell that the TF1 cell"),
        ({"recurrent_dropout": 0.2}, r"`recurrent_dropout` is an option of Keras' LSTMCell"),
    ],
)
def test_rejects_bad_tf1_options(kwargs, message):
    with pytest.raises(ValueError, match=message):
        WeightDropLSTMCell(num_units=4, **kwargs)


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


# -- the TF1 cell called as TF1 code calls it ---------------------------------------


@pytest.mark.parametrize("config", CONFIGS.values(), ids=CONFIGS.keys())
def test_direct_call_takes_and_gives_tf1_state(rng, config):
    """`x_out, state = cell(x, LSTMStateTuple(c, h))` with a non-zero state, as TF1:
    the state read as (c, h), returned as LSTMStateTuple(c, h), the kept mask on."""
    cell = WeightDropLSTMCell(
        num_units=CELL_NUM, weight_drop_kr=0.6, use_vd=True, input_size=INPUT_SIZE, **config
    )
    x = _inputs(rng, steps=1)
    c0, h0 = _state(rng, cell)
    output, state = cell(x[:, 0], LSTMStateTuple(c=c0, h=h0))
    assert type(state) is LSTMStateTuple
    want, c, h = tf1_reference(cell, x, c0, h0, _kept_mask(cell))
    np.testing.assert_allclose(to_numpy(output), h, atol=1e-5)
    np.testing.assert_allclose(to_numpy(state.c), c, atol=1e-5)
    np.testing.assert_allclose(to_numpy(state.h), h, atol=1e-5)
    # A plain (c, h) pair is read the same way.
    output_pair, state_pair = cell(x[:, 0], (c0, h0))
    assert type(state_pair) is LSTMStateTuple
    np.testing.assert_allclose(to_numpy(output_pair), h, atol=1e-5)
    if cell.num_proj is None:
        # The test tells the orders apart: (h, c) read as (c, h) gives other numbers.
        swapped, _ = cell(x[:, 0], (h0, c0))
        assert np.abs(to_numpy(swapped) - h).max() > 1e-2


@pytest.mark.parametrize("config", CONFIGS.values(), ids=CONFIGS.keys())
def test_state_is_tuple_false_takes_and_gives_one_tensor(rng, config):
    cell = WeightDropLSTMCell(
        num_units=CELL_NUM, weight_drop_kr=0.6, use_vd=True, input_size=INPUT_SIZE,
        state_is_tuple=False, **config,
    )  # fmt: skip
    assert cell.state_size == CELL_NUM + cell.output_size
    assert tuple(cell.zero_state(2).shape) == (2, cell.state_size)
    x = _inputs(rng)
    c0, h0 = _state(rng, cell)
    output, state = cell(x[:, 0], np.concatenate([c0, h0], axis=1))
    _, c, h = tf1_reference(cell, x[:, :1], c0, h0, _kept_mask(cell))
    np.testing.assert_allclose(to_numpy(state), np.concatenate([c, h], axis=1), atol=1e-5)
    np.testing.assert_allclose(to_numpy(output), h, atol=1e-5)
    outputs, state = dynamic_rnn(cell, x, initial_state=np.concatenate([c0, h0], axis=1))
    want, c, h = tf1_reference(cell, x, c0, h0, _kept_mask(cell))
    np.testing.assert_allclose(to_numpy(outputs), want, atol=1e-5)
    np.testing.assert_allclose(to_numpy(state), np.concatenate([c, h], axis=1), atol=1e-5)


def test_direct_call_applies_the_mask_unless_training_false(rng):
    """The TF1 cell had no training switch: the mask applies in every call."""
    cell = WeightDropLSTMCell(
        num_units=CELL_NUM, weight_drop_kr=0.5, use_vd=True, input_size=INPUT_SIZE, seed=1
    )
    x = _inputs(rng, steps=1)
    c0, h0 = _state(rng, cell)
    masked, _ = cell(x[:, 0], LSTMStateTuple(c0, h0))
    _, _, want = tf1_reference(cell, x, c0, h0, _kept_mask(cell))
    np.testing.assert_allclose(to_numpy(masked), want, atol=1e-5)
    full, _ = cell(x[:, 0], LSTMStateTuple(c0, h0), training=False)
    _, _, want_full = tf1_reference(cell, x, c0, h0)
    np.testing.assert_allclose(to_numpy(full), want_full, atol=1e-5)
    assert np.abs(want - want_full).max() > 1e-2
    outputs, _ = dynamic_rnn(cell, x, initial_state=(c0, h0), training=False)
    np.testing.assert_allclose(to_numpy(outputs)[:, 0], want_full, atol=1e-5)


def test_seed_example_direct_call_kept_mask_redrawn_every_five_runs(rng):
    """The seed's first example: one step called directly, the kept mask redrawn
    every 5 runs; equal outputs within a block of 5, new ones after each update."""
    cell = WeightDropLSTMCell(5, weight_drop_kr=0.9, use_vd=True, input_size=10, seed=7)
    init = cell.zero_state(1, "float32")
    x = rng.standard_normal((1, 1, 10)).astype("float32")
    zeros = np.zeros((1, 5))
    printed = []
    for i in range(10):
        if i % 5 == 0:
            cell.get_vd_update_op()
        x_out, _ = cell(x[:, 0], init)
        _, _, want = tf1_reference(cell, x, zeros, zeros, _kept_mask(cell))
        np.testing.assert_allclose(to_numpy(x_out), want, atol=1e-5)
        printed.append(to_numpy(x_out))
    for block in (printed[:5], printed[5:]):
        for value in block[1:]:
            np.testing.assert_array_equal(value, block[0])
    assert not np.allclose(printed[0], printed[5])


@pytest.mark.parametrize("config", CONFIGS.values(), ids=CONFIGS.keys())
def test_seed_example_dynamic_rnn_mask_kept_until_the_update(rng, config):
    """dynamic_rnn from a non-zero state: the kept mask serves every run until
    get_vd_update_op() (called before the run, where TF1 code had a control
    dependency), then the new one."""
    cell = WeightDropLSTMCell(
        num_units=CELL_NUM, weight_drop_kr=0.7, use_vd=True, input_size=INPUT_SIZE, seed=5,
        **config,
    )  # fmt: skip
    x = _inputs(rng)
    c0, h0 = _state(rng, cell)
    runs = []
    for update in (False, False, True):
        if update:
            cell.get_vd_update_op()
        outputs, state = dynamic_rnn(cell, x, initial_state=LSTMStateTuple(c=c0, h=h0))
        want, c, h = tf1_reference(cell, x, c0, h0, _kept_mask(cell))
        np.testing.assert_allclose(to_numpy(outputs), want, atol=1e-5)
        np.testing.assert_allclose(to_numpy(state.c), c, atol=1e-5)
        np.testing.assert_allclose(to_numpy(state.h), h, atol=1e-5)
        runs.append(to_numpy(outputs))
    np.testing.assert_array_equal(runs[0], runs[1])
    assert np.abs(runs[2] - runs[0]).max() > 1e-3


def test_keras_rnn_takes_and_returns_the_state_in_tf1_order(rng):
    cell = WeightDropLSTMCell(
        num_units=CELL_NUM, weight_drop_kr=0.7, use_vd=True, input_size=INPUT_SIZE, num_proj=3
    )
    x = _inputs(rng)
    c0, h0 = _state(rng, cell)
    rnn = keras.layers.RNN(cell, return_sequences=True, return_state=True)
    outputs, c, h = rnn(x, initial_state=[c0, h0], training=True)
    want, want_c, want_h = tf1_reference(cell, x, c0, h0, _kept_mask(cell))
    np.testing.assert_allclose(to_numpy(outputs), want, atol=1e-5)
    np.testing.assert_allclose(to_numpy(c), want_c, atol=1e-5)
    np.testing.assert_allclose(to_numpy(h), want_h, atol=1e-5)
    # Zero initial state from the cell, in the same order.
    outputs, c, h = rnn(x, training=True)
    zeros = np.zeros((BATCH, CELL_NUM)), np.zeros((BATCH, 3))
    want, want_c, _ = tf1_reference(cell, x, *zeros, _kept_mask(cell))
    np.testing.assert_allclose(to_numpy(outputs), want, atol=1e-5)
    np.testing.assert_allclose(to_numpy(c), want_c, atol=1e-5)


def test_dynamic_rnn_sequence_length_and_time_major(rng):
    """As TF1: zero outputs past each row's length, the state of its last step."""
    cell = WeightDropLSTMCell(
        num_units=CELL_NUM, weight_drop_kr=0.7, use_vd=True, input_size=INPUT_SIZE
    )
    x = _inputs(rng)
    c0, h0 = _state(rng, cell)
    lengths = np.array([5, 2, 3], "int32")
    outputs, state = dynamic_rnn(
        cell, np.transpose(x, (1, 0, 2)), lengths, (c0, h0), time_major=True
    )
    outputs = np.transpose(to_numpy(outputs), (1, 0, 2))
    for row, length in enumerate(lengths):
        rows = slice(row, row + 1)
        want, c, h = tf1_reference(cell, x[rows, :length], c0[rows], h0[rows], _kept_mask(cell))
        np.testing.assert_allclose(outputs[row, :length], want[0], atol=1e-5)
        np.testing.assert_array_equal(outputs[row, length:], 0.0)
        np.testing.assert_allclose(to_numpy(state.c)[row], c[0], atol=1e-5)
        np.testing.assert_allclose(to_numpy(state.h)[row], h[0], atol=1e-5)


@pytest.mark.parametrize(
    "state, message",
    [
        ("tensor", r"state is LSTMStateTuple\(c, h\) or a \(c, h\) pair"),
        ("triple", r"state is LSTMStateTuple\(c, h\) or a \(c, h\) pair"),
        ("keras-order", r"in TF1's order, with c of 6 and h of 3 features"),
    ],
)
def test_rejects_states_of_another_form(rng, state, message):
    cell = WeightDropLSTMCell(num_units=CELL_NUM, weight_drop_kr=0.7, num_proj=3)
    c0, h0 = _state(rng, cell)
    x = _inputs(rng)[:, 0]
    states = {"tensor": c0, "triple": (c0, h0, h0), "keras-order": [h0, c0]}[state]
    with pytest.raises(ValueError, match=message):
        cell(x, states)
    flat = WeightDropLSTMCell(num_units=CELL_NUM, state_is_tuple=False)
    with pytest.raises(ValueError, match=r"state_is_tuple=False the cell's state is one tensor"):
        flat(x, LSTMStateTuple(c0, c0))
    with pytest.raises(ValueError, match=r"one tensor \[c, h\] of 12 features"):
        flat(x, c0)


def test_variational_dropout_in_a_loop(rng):
    """The seed's second example: the kept mask inside a loop (tf.while_loop there,
    keras.ops.while_loop here), the same at every iteration until updated."""
    vd = VariationalDropout(input_shape=[5], keep_prob=0.5, seed=3)
    x = rng.standard_normal((5, 2, 5)).astype("float32")

    def run():
        def body(step, total):
            return step + 1, total + vd(keras.ops.take(x, step, axis=0))

        _, total = keras.ops.while_loop(
            lambda step, _: step < 5, body, (0, keras.ops.zeros((2, 5)))
        )
        return to_numpy(total)

    for _ in range(2):
        mask = to_numpy(vd.mask)
        assert set(np.unique(mask)) == {0.0, 2.0}
        np.testing.assert_allclose(run(), x.sum(axis=0) * mask, atol=1e-5)
        np.testing.assert_allclose(run(), x.sum(axis=0) * mask, atol=1e-5)
        vd.get_update_mask_op()
        assert not np.array_equal(to_numpy(vd.mask), mask)


def test_step_masks_fraction_and_reproducibility(rng, recorded_masks):
    """use_vd=False: the fraction dropped is 1 - weight_drop_kr, masks differ between
    steps and between calls, and the same seed draws the same masks."""
    x = _inputs(rng, steps=8)

    def masks_of_two_calls(seed):
        # Seeded weights too: on JAX each step's masks come from the sequence's seed
        # and the step's values (see step_seeds).
        init = keras.initializers.GlorotUniform(seed=0)
        cell = WeightDropLSTMCell(
            num_units=CELL_NUM, weight_drop_kr=0.7, seed=seed, initializer=init
        )
        runs = []
        for _ in range(2):
            recorded_masks.clear()
            dynamic_rnn(cell, x)
            runs.append(np.stack(_recorded_step_masks(recorded_masks, 8)))
        return runs

    first, second = masks_of_two_calls(seed=11)
    again, _ = masks_of_two_calls(seed=11)
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, second)
    for step_a in range(8):
        for step_b in range(step_a + 1, 8):
            assert not np.array_equal(first[step_a], first[step_b])
    dropped = np.mean(np.concatenate([first.ravel(), second.ravel()]) == 0)
    # 2 calls x 8 steps x 240 entries: the standard error is 0.006.
    assert abs(dropped - 0.3) < 0.025
    assert set(np.unique(first)) == {0.0, np.float32(1 / 0.7)}


def test_stacked_cells_as_multi_rnn_cell(rng):
    """TF1's MultiRNNCell is keras.layers.StackedRNNCells: dynamic_rnn takes and gives
    a tuple with one LSTMStateTuple per cell, each layer as TF1 computes it."""
    first = WeightDropLSTMCell(CELL_NUM, weight_drop_kr=0.7, use_vd=True, input_size=INPUT_SIZE)
    second = WeightDropLSTMCell(3, weight_drop_kr=0.7, use_vd=True, input_size=CELL_NUM)
    stacked = keras.layers.StackedRNNCells([first, second])
    x = _inputs(rng)
    states = [_state(rng, first), _state(rng, second)]
    initial = tuple(LSTMStateTuple(c, h) for c, h in states)
    outputs, final = dynamic_rnn(stacked, x, initial_state=initial)
    assert type(final) is tuple and all(type(s) is LSTMStateTuple for s in final)
    hidden, c1, h1 = tf1_reference(first, x, *states[0], _kept_mask(first))
    want, c2, h2 = tf1_reference(second, hidden, *states[1], _kept_mask(second))
    np.testing.assert_allclose(to_numpy(outputs), want, atol=1e-5)
    for got, value in zip((final[0].c, final[0].h, final[1].c, final[1].h), (c1, h1, c2, h2)):
        np.testing.assert_allclose(to_numpy(got), value, atol=1e-5)


def test_inference_calls_and_false_flags_use_the_full_weights(rng):
    """`training` given as any false value (NumPy's too), or Keras' inference
    (`predict`) around dynamic_rnn, uses the full weights."""
    cell = WeightDropLSTMCell(
        num_units=CELL_NUM, weight_drop_kr=0.5, use_vd=True, input_size=INPUT_SIZE, seed=2
    )
    x = _inputs(rng)
    zeros = np.zeros((BATCH, CELL_NUM))
    full, _, _ = tf1_reference(cell, x, zeros, zeros)
    masked, _, _ = tf1_reference(cell, x, zeros, zeros, _kept_mask(cell))
    out, _ = cell(x[:, 0], cell.zero_state(BATCH), training=np.bool_(False))
    np.testing.assert_allclose(to_numpy(out), full[:, 0], atol=1e-5)

    class TF1Program(keras.layers.Layer):
        def call(self, inputs):
            return dynamic_rnn(cell, inputs)[0]

    model = keras.Sequential([keras.Input((STEPS, INPUT_SIZE)), TF1Program()])
    np.testing.assert_allclose(model.predict(x, verbose=0), full, atol=1e-5)
    np.testing.assert_allclose(to_numpy(model(x)), masked, atol=1e-5)


def test_dynamic_rnn_in_a_functional_model_with_lengths(rng):
    cell = WeightDropLSTMCell(
        num_units=CELL_NUM, weight_drop_kr=0.7, use_vd=True, input_size=INPUT_SIZE
    )
    inputs = keras.Input((None, INPUT_SIZE))
    lengths = keras.Input((), dtype="int32")
    outputs, state = dynamic_rnn(cell, inputs, sequence_length=lengths)
    model = keras.Model([inputs, lengths], [outputs, state.h])
    x = _inputs(rng)
    got, h = model([x, np.array([5, 2, 4], "int32")], training=True)
    zeros = np.zeros((1, CELL_NUM))
    want, _, want_h = tf1_reference(cell, x[1:2, :2], zeros, zeros, _kept_mask(cell))
    np.testing.assert_allclose(to_numpy(got)[1, :2], want[0], atol=1e-5)
    np.testing.assert_array_equal(to_numpy(got)[1, 2:], 0.0)
    np.testing.assert_allclose(to_numpy(h)[1], want_h[0], atol=1e-5)


def test_forget_bias_goes_into_every_bias_initializer():
    cell = WeightDropLSTMCell(num_units=3, forget_bias=2.0, bias_initializer="ones")
    cell.build((None, 2))
    np.testing.assert_array_equal(to_numpy(cell.bias), [1, 1, 1, 3, 3, 3, 1, 1, 1, 1, 1, 1])
    restored = WeightDropLSTMCell.from_config(cell.get_config())
    restored.build((None, 2))
    np.testing.assert_array_equal(to_numpy(restored.bias), to_numpy(cell.bias))
    with pytest.raises(ValueError, match="TF1's LSTMCell always has a bias"):
        WeightDropLSTMCell(num_units=3, use_bias=False)


def test_mixed_precision_step(rng):
    cell = WeightDropLSTMCell(
        num_units=CELL_NUM, weight_drop_kr=0.6, input_size=INPUT_SIZE, dtype="mixed_bfloat16",
        **CONFIGS["proj-clip-peep"],
    )  # fmt: skip
    x = _inputs(rng)
    c0, h0 = _state(rng, cell)
    out, state = cell(x[:, 0], LSTMStateTuple(c0, h0), training=False)
    assert keras.backend.standardize_dtype(out.dtype) == "bfloat16"
    _, c, h = tf1_reference(cell, x[:, :1], c0, h0)
    np.testing.assert_allclose(to_numpy(out).astype("float32"), h, atol=0.03)
    np.testing.assert_allclose(to_numpy(state.c).astype("float32"), c, atol=0.03)
