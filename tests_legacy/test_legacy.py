"""awd_lstm.legacy in TF1 graph mode. Run in a process of its own with
TF_USE_LEGACY_KERAS=1 (scripts/test.sh does)."""

import os

import numpy as np
import pytest

if os.environ.get("TF_USE_LEGACY_KERAS") != "1":
    pytest.skip("needs TF_USE_LEGACY_KERAS=1 in its own process", allow_module_level=True)

import tensorflow as tf  # noqa: E402

from awd_lstm.legacy import VariationalDropout, WeightDropLSTMCell  # noqa: E402

CELL_NUM, INPUT_SIZE, BATCH, STEPS = 6, 4, 3, 5


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
