"""awd_lstm.legacy in TF1 graph mode. Run in a process of its own with
TF_USE_LEGACY_KERAS=1 (scripts/test.sh does)."""

import os

import numpy as np
import pytest

if os.environ.get("TF_USE_LEGACY_KERAS") != "1":
    pytest.skip("needs TF_USE_LEGACY_KERAS=1 in its own process", allow_module_level=True)

import tensorflow as tf  # noqa: E402

from awd_lstm import legacy  # noqa: E402
from awd_lstm.legacy import VariationalDropout, WeightDropLSTMCell  # noqa: E402
from tests.reference import numpy_tf1_lstm  # noqa: E402

CELL_NUM, INPUT_SIZE, BATCH, STEPS = 6, 4, 3, 5
LSTMStateTuple = tf.compat.v1.nn.rnn_cell.LSTMStateTuple


def _reference(sess, cell, x, c0, h0, masks):
    """`numpy_tf1_lstm` with the legacy cell's own variables (TF1's layout)."""
    extras = {}
    if cell._num_proj:
        extras["projection"] = sess.run(cell._proj_kernel)
    if cell._use_peepholes:
        extras["peepholes"] = sess.run([cell._w_i_diag, cell._w_f_diag, cell._w_o_diag])
    kernel, bias = sess.run([cell._kernel, cell._bias])
    return numpy_tf1_lstm(
        x,
        kernel,
        bias,
        c0,
        h0,
        masks=masks,
        forget_bias=cell._forget_bias,
        cell_clip=cell._cell_clip,
        proj_clip=cell._proj_clip,
        **extras,
    )


def _state(h_size=CELL_NUM):
    rng = np.random.default_rng(1)
    c = rng.standard_normal((BATCH, CELL_NUM)).astype("float32")
    return c, np.tanh(rng.standard_normal((BATCH, h_size))).astype("float32")


@pytest.fixture
def recorded_masks(monkeypatch):
    """Every mask the step mode draws, fetched as each step runs (also inside
    dynamic_rnn's while loop), in order."""
    drawn = []
    draw = legacy._kept_mask

    def recording(shape, keep_prob, dtype, seed):
        mask = draw(shape, keep_prob, dtype, seed)

        def record(value):
            drawn.append(value.copy())
            return value

        recorded = tf.numpy_function(record, [mask], mask.dtype)
        recorded.set_shape(mask.shape)
        return recorded

    monkeypatch.setattr(legacy, "_kept_mask", recording)
    return drawn


TF1_OPTIONS = {
    "plain": {},
    "proj-clip-peep": {"num_proj": 3, "proj_clip": 0.3, "cell_clip": 0.5, "use_peepholes": True},
}


@pytest.fixture
def graph():
    with tf.Graph().as_default() as g:
        tf.compat.v1.set_random_seed(0)
        yield g


def _x():
    return np.random.default_rng(0).standard_normal((BATCH, STEPS, INPUT_SIZE)).astype("float32")


def test_seed_snippet_as_written(graph):
    WEIGHT_DP_KR = 0.5
    x = tf.compat.v1.placeholder(tf.float32, [None, STEPS, INPUT_SIZE])
    lstm_cell = WeightDropLSTMCell(
        num_units=CELL_NUM, weight_drop_kr=WEIGHT_DP_KR, use_vd=True, input_size=INPUT_SIZE
    )
    init_states = lstm_cell.zero_state(BATCH, tf.float32)
    with tf.control_dependencies(lstm_cell.get_vd_update_op()):
        outputs, _ = tf.compat.v1.nn.dynamic_rnn(lstm_cell, x, initial_state=init_states)
    vd = VariationalDropout(input_shape=[5], keep_prob=0.5)
    dropped = vd(tf.ones([2, 5]))
    with tf.compat.v1.Session() as sess:
        sess.run(tf.compat.v1.global_variables_initializer())
        sess.run(lstm_cell.get_vd_update_op())  # draw a new kept mask
        first = sess.run(outputs, {x: _x()})
        second = sess.run(outputs, {x: _x()})  # the control dependency redraws
        sess.run(vd.get_update_mask_op())
        values = sess.run(dropped)
    assert first.shape == (BATCH, STEPS, CELL_NUM)
    assert not np.allclose(first, second)
    assert set(np.unique(values)) <= {0.0, 2.0}
    np.testing.assert_array_equal(values[0], values[1])


def test_keep_rate_one_equals_plain_cell(graph):
    x = tf.constant(_x())
    with tf.compat.v1.variable_scope("ours"):
        ours = WeightDropLSTMCell(num_units=CELL_NUM, forget_bias=0.7)
        out_ours, _ = tf.compat.v1.nn.dynamic_rnn(ours, x, dtype=tf.float32)
    with tf.compat.v1.variable_scope("plain"):
        plain = tf.compat.v1.nn.rnn_cell.LSTMCell(CELL_NUM, forget_bias=0.7)
        out_plain, _ = tf.compat.v1.nn.dynamic_rnn(plain, x, dtype=tf.float32)
    copy = [tf.compat.v1.assign(p, o) for p, o in zip(plain.weights, ours.weights)]
    assert ours.get_vd_update_op() == []
    with tf.compat.v1.Session() as sess:
        sess.run(tf.compat.v1.global_variables_initializer())
        sess.run(copy)
        a, b = sess.run([out_ours, out_plain])
    np.testing.assert_array_equal(a, b)


def test_use_vd_mask_kept_across_runs_until_updated_covers_whole_kernel(graph):
    x = tf.constant(_x())
    cell = WeightDropLSTMCell(
        num_units=CELL_NUM, weight_drop_kr=0.5, use_vd=True, input_size=INPUT_SIZE
    )
    outputs, _ = tf.compat.v1.nn.dynamic_rnn(cell, x, dtype=tf.float32)
    update = cell.get_vd_update_op()
    assert cell.get_vd_update_op() is update  # one op, run on demand
    with tf.compat.v1.Session() as sess:
        sess.run(tf.compat.v1.global_variables_initializer())
        mask = sess.run(cell._vd_mask)
        first = sess.run(outputs)
        np.testing.assert_array_equal(sess.run(outputs), first)
        sess.run(update)
        assert not np.array_equal(sess.run(cell._vd_mask), mask)
        assert not np.allclose(sess.run(outputs), first)
    # The mask spans [W; U]: input rows and recurrent rows both hold zeros.
    assert mask.shape == (INPUT_SIZE + CELL_NUM, 4 * CELL_NUM)
    assert np.any(mask[:INPUT_SIZE] == 0) and np.any(mask[INPUT_SIZE:] == 0)
    assert set(np.unique(mask)) == {0.0, 2.0}


def test_without_vd_every_step_draws_a_new_mask(graph):
    x = tf.constant(_x()[:, 0])
    state = tf.compat.v1.nn.rnn_cell.LSTMStateTuple(
        tf.zeros([BATCH, CELL_NUM]), tf.ones([BATCH, CELL_NUM])
    )
    fresh = WeightDropLSTMCell(num_units=CELL_NUM, weight_drop_kr=0.5, name="fresh")
    kept = WeightDropLSTMCell(
        num_units=CELL_NUM, weight_drop_kr=0.5, use_vd=True, input_size=INPUT_SIZE, name="kept"
    )
    # Two steps from the same input and state: equal only if the mask is shared.
    fresh_steps = [fresh(x, state)[0] for _ in range(2)]
    kept_steps = [kept(x, state)[0] for _ in range(2)]
    with tf.compat.v1.Session() as sess:
        sess.run(tf.compat.v1.global_variables_initializer())
        f1, f2, k1, k2 = sess.run(fresh_steps + kept_steps)
    assert not np.allclose(f1, f2)
    np.testing.assert_array_equal(k1, k2)


def test_bad_arguments():
    with pytest.raises(ValueError, match=r"`weight_drop_kr` is a keep probability"):
        WeightDropLSTMCell(num_units=4, weight_drop_kr=0.0)
    with pytest.raises(ValueError, match="`input_size` is required when use_vd=True"):
        WeightDropLSTMCell(num_units=4, weight_drop_kr=0.5, use_vd=True)
    with pytest.raises(ValueError, match=r"`keep_prob` is a keep probability"):
        VariationalDropout(input_shape=[3], keep_prob=1.5)


# -- the seed's usages, numbers against TF1's LSTMCell in NumPy -----------------------


@pytest.mark.parametrize("options", TF1_OPTIONS.values(), ids=TF1_OPTIONS.keys())
def test_direct_call_with_a_state_tuple_equals_numpy(graph, options):
    """`x_out, state = cell(x, LSTMStateTuple(c, h))` from a non-zero state, kept
    mask; and a plain LSTMCell (weight_drop_kr=1) as the check of the reference."""
    h_size = options.get("num_proj") or CELL_NUM
    c0, h0 = _state(h_size)
    x = _x()[:, :1]
    kept = WeightDropLSTMCell(
        CELL_NUM, weight_drop_kr=0.6, use_vd=True, input_size=INPUT_SIZE, name="kept", **options
    )
    plain = WeightDropLSTMCell(CELL_NUM, forget_bias=0.7, name="plain", **options)
    kept_out = kept(tf.constant(x[:, 0]), LSTMStateTuple(c0, h0))
    plain_out = plain(tf.constant(x[:, 0]), LSTMStateTuple(c0, h0))
    with tf.compat.v1.Session() as sess:
        sess.run(tf.compat.v1.global_variables_initializer())
        (out, state), (plain_h, plain_state) = sess.run([kept_out, plain_out])
        _, c, h = _reference(sess, kept, x, c0, h0, sess.run(kept._vd_mask))
        _, plain_c, want_plain_h = _reference(sess, plain, x, c0, h0, None)
    np.testing.assert_allclose(out, h, atol=1e-5)
    np.testing.assert_allclose(state.c, c, atol=1e-5)
    np.testing.assert_allclose(state.h, h, atol=1e-5)
    np.testing.assert_allclose(plain_h, want_plain_h, atol=1e-5)
    np.testing.assert_allclose(plain_state.c, plain_c, atol=1e-5)


def test_seed_example_direct_call_mask_redrawn_every_five_runs(graph):
    cell = WeightDropLSTMCell(5, weight_drop_kr=0.9, use_vd=True, input_size=10)
    x = tf.compat.v1.placeholder(tf.float32, [1, 10])
    init = cell.zero_state(1, dtype=tf.float32)
    x_out, _ = cell(x, init)
    value = np.random.default_rng(2).standard_normal((1, 1, 10)).astype("float32")
    zeros = np.zeros((1, 5))
    printed = []
    with tf.compat.v1.Session() as sess:
        sess.run(tf.compat.v1.global_variables_initializer())
        for i in range(10):
            if i % 5 == 0:
                sess.run(cell.get_vd_update_op())
            printed.append(sess.run(x_out, {x: value[:, 0]}))
            _, _, want = _reference(sess, cell, value, zeros, zeros, sess.run(cell._vd_mask))
            np.testing.assert_allclose(printed[-1], want, atol=1e-5)
    for block in (printed[:5], printed[5:]):
        for out in block[1:]:
            np.testing.assert_array_equal(out, block[0])
    assert not np.allclose(printed[0], printed[5])


def test_seed_example_dynamic_rnn_kept_until_update_and_under_control_dependencies(graph):
    c0, h0 = _state()
    x = tf.constant(_x())
    cell = WeightDropLSTMCell(CELL_NUM, weight_drop_kr=0.7, use_vd=True, input_size=INPUT_SIZE)
    init = LSTMStateTuple(tf.constant(c0), tf.constant(h0))
    kept_outputs, kept_state = tf.compat.v1.nn.dynamic_rnn(cell, x, initial_state=init)
    with tf.control_dependencies(cell.get_vd_update_op()):
        redrawn, _ = tf.compat.v1.nn.dynamic_rnn(cell, x, initial_state=init)
    with tf.compat.v1.Session() as sess:
        sess.run(tf.compat.v1.global_variables_initializer())
        runs = []
        for fetch in (kept_outputs, kept_outputs, redrawn, redrawn):
            runs.append(sess.run(fetch))
            # The mask of that run: kept until the next update.
            want, _, _ = _reference(sess, cell, _x(), c0, h0, sess.run(cell._vd_mask))
            np.testing.assert_allclose(runs[-1], want, atol=1e-5)
        state = sess.run(kept_state)
        _, c, h = _reference(sess, cell, _x(), c0, h0, sess.run(cell._vd_mask))
    np.testing.assert_array_equal(runs[0], runs[1])
    assert not np.allclose(runs[1], runs[2])
    assert not np.allclose(runs[2], runs[3])  # every run of the dependent op redraws
    np.testing.assert_allclose(state.c, c, atol=1e-5)
    np.testing.assert_allclose(state.h, h, atol=1e-5)


def test_seed_example_variational_dropout_in_a_while_loop(graph):
    vd = VariationalDropout(input_shape=[5], keep_prob=0.5)
    x = tf.constant(np.random.default_rng(3).standard_normal((5, 2, 5)).astype("float32"))

    def main_loop(step, results_array):
        return step + 1, results_array.write(step, vd(x[step]))

    results = tf.TensorArray(tf.float32, size=5)
    with tf.control_dependencies(vd.get_update_mask_op()):
        step = tf.constant(0)
    _, results_array = tf.while_loop(
        cond=lambda step, _: step < 5, body=main_loop, loop_vars=(step, results)
    )
    stacked = results_array.stack()
    with tf.compat.v1.Session() as sess:
        sess.run(tf.compat.v1.global_variables_initializer())
        first = sess.run(stacked)
        mask = sess.run(vd.mask)
        second = sess.run(stacked)
        second_mask = sess.run(vd.mask)
        inputs = sess.run(x)
    np.testing.assert_allclose(first, inputs * mask, atol=1e-6)
    np.testing.assert_allclose(second, inputs * second_mask, atol=1e-6)
    assert not np.array_equal(mask, second_mask)
    assert set(np.unique(mask)) == {0.0, 2.0}


@pytest.mark.parametrize("options", TF1_OPTIONS.values(), ids=TF1_OPTIONS.keys())
def test_use_vd_false_dynamic_rnn_equals_numpy_with_each_steps_mask(graph, recorded_masks, options):
    h_size = options.get("num_proj") or CELL_NUM
    c0, h0 = _state(h_size)
    cell = WeightDropLSTMCell(CELL_NUM, weight_drop_kr=0.6, **options)
    init = LSTMStateTuple(tf.constant(c0), tf.constant(h0))
    # One iteration at a time, so that the masks are recorded in step order (the
    # draws do not depend on the state, so the loop could run them ahead).
    outputs, state = tf.compat.v1.nn.dynamic_rnn(
        cell, tf.constant(_x()), initial_state=init, parallel_iterations=1
    )
    with tf.compat.v1.Session() as sess:
        sess.run(tf.compat.v1.global_variables_initializer())
        got, got_state = sess.run([outputs, state])
        assert len(recorded_masks) == STEPS
        for a, b in zip(recorded_masks, recorded_masks[1:]):
            assert not np.array_equal(a, b)
        want, c, h = _reference(sess, cell, _x(), c0, h0, list(recorded_masks))
    np.testing.assert_allclose(got, want, atol=1e-5)
    np.testing.assert_allclose(got_state.c, c, atol=1e-5)
    np.testing.assert_allclose(got_state.h, h, atol=1e-5)
