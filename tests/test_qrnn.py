"""QRNN: the equations against NumPy, carried state, the two poolings, gradients,
weight drop and zoneout, saving and argument checks."""

import keras
import numpy as np
import pytest
from keras import ops

from awd_lstm.layers import QRNN
from awd_lstm.layers import qrnn as qrnn_module
from tests.backend_grad import layer_grads, layer_state_grads
from tests.conftest import check_savedmodel_serves_the_runs_model, to_numpy


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def numpy_qrnn(x, kernel, bias, window, output_gate, x_last=None, c0=None, forget_mask=None):
    """The QRNN in float64 NumPy, step by step from the paper's equations: gates from
    `[x_t, x_{t-1}]` (window 2, the reference layer's order) or `x_t`, then
    fo-pooling. `forget_mask` (optional, `(batch, steps, units)` booleans): where true
    the forget gate is 1 (zoneout).
    Returns `(outputs, x_last, c)`."""
    x = np.asarray(x, np.float64)
    batch, steps, features = x.shape
    units = bias.shape[0] // (3 if output_gate else 2)
    prev = np.zeros((batch, features)) if x_last is None else np.asarray(x_last, np.float64)
    c = np.zeros((batch, units)) if c0 is None else np.asarray(c0, np.float64)
    outputs = []
    for t in range(steps):
        window_inputs = np.concatenate([x[:, t], prev], axis=-1) if window == 2 else x[:, t]
        gates = window_inputs @ kernel + bias
        z = np.tanh(gates[:, :units])
        f = _sigmoid(gates[:, units : 2 * units])
        if forget_mask is not None:
            f = np.where(forget_mask[:, t], 1.0, f)
        c = f * c + (1.0 - f) * z
        outputs.append(_sigmoid(gates[:, 2 * units :]) * c if output_gate else c)
        prev = x[:, t]
    return np.stack(outputs, axis=1), prev, c


def _layer(units=5, features=4, rng=None, **kwargs):
    kwargs.setdefault("seed", 3)
    layer = QRNN(units, return_sequences=True, return_state=True, **kwargs)
    layer.build((3, 6, features))
    if rng is not None:  # biases too, large enough to matter
        for variable in layer.trainable_variables:
            variable.assign(0.5 * rng.standard_normal(variable.shape).astype("float32"))
    return layer


def _weights(layer):
    return (to_numpy(layer.kernel).astype(np.float64), to_numpy(layer.bias).astype(np.float64))


CONFIGS = [(1, True), (1, False), (2, True), (2, False)]


@pytest.mark.parametrize("pooling", ["sequential", "parallel"])
@pytest.mark.parametrize("window,output_gate", CONFIGS)
def test_equals_numpy_equations_with_initial_state(rng, window, output_gate, pooling):
    layer = _layer(window=window, output_gate=output_gate, pooling=pooling, rng=rng)
    x = rng.standard_normal((3, 6, 4)).astype("float32")
    x_last = rng.standard_normal((3, 4)).astype("float32")
    c0 = rng.standard_normal((3, 5)).astype("float32")
    results = layer(x, initial_state=[x_last, c0])
    expected = numpy_qrnn(x, *_weights(layer), window, output_gate, x_last, c0)
    for got, want in zip(results, expected):
        np.testing.assert_allclose(to_numpy(got), want, rtol=1e-5, atol=1e-5)
    assert layer.kernel.shape == (window * 4, (3 if output_gate else 2) * 5)


@pytest.mark.parametrize("window", [1, 2])
def test_two_calls_carrying_the_state_equal_one_call(rng, window):
    layer = _layer(window=window, rng=rng)
    x = rng.standard_normal((3, 6, 4)).astype("float32")
    whole, _, c_whole = layer(x)
    first, x_last, c = layer(x[:, :2])
    second, _, c_end = layer(x[:, 2:], initial_state=[x_last, c])
    together = np.concatenate([to_numpy(first), to_numpy(second)], axis=1)
    np.testing.assert_allclose(together, to_numpy(whole), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(to_numpy(c_end), to_numpy(c_whole), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(to_numpy(x_last), x[:, 1])


def test_stateful_layer_carries_its_state_and_resets(rng):
    layer = QRNN(5, window=2, stateful=True, return_sequences=True, seed=1)
    layer.build((3, 6, 4))
    x = rng.standard_normal((3, 6, 4)).astype("float32")
    whole = to_numpy(layer(x))
    layer.reset_state()
    parts = np.concatenate([to_numpy(layer(x[:, :4])), to_numpy(layer(x[:, 4:]))], axis=1)
    np.testing.assert_allclose(parts, whole, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(to_numpy(layer.states[0]), x[:, -1])
    layer.reset_state()
    np.testing.assert_allclose(to_numpy(layer(x)), whole, rtol=1e-6)
    with pytest.raises(ValueError, match="a stateful QRNN needs a fixed batch size"):
        QRNN(5, stateful=True).build((None, 6, 4))


def test_last_output_only_and_shapes():
    layer = QRNN(5, window=2, seed=1)
    x = np.ones((3, 6, 4), "float32")
    assert tuple(layer(x).shape) == (3, 5)
    assert layer.compute_output_shape((3, 6, 4)) == (3, 5)
    full = QRNN(5, window=2, seed=1, return_sequences=True, return_state=True)
    assert full.compute_output_shape((3, 6, 4)) == ((3, 6, 5), (3, 4), (3, 5))


# -- the pooling -----------------------------------------------------------------------


class _Pool(keras.layers.Layer):
    """`linear_recurrence` as a layer of one input `(time + 1, batch, 2 n)`: row 0's
    first half is `c0`, the other rows hold the pre-sigmoid `a` and `b`."""

    def __init__(self, parallel, direct=False):
        super().__init__()
        self.parallel = parallel
        self.direct = direct
        self.built = True  # no weights

    def call(self, x, training=False):
        n = x.shape[-1] // 2
        a, b, c0 = ops.sigmoid(x[1:, :, :n]), x[1:, :, n:], x[0, :, :n]
        if self.direct:
            return _direct_recurrence(a, b, c0)
        return qrnn_module.linear_recurrence(a, b, c0, parallel=self.parallel)


def _direct_recurrence(a, b, c0, parallel=False):
    """The recurrence as a plain loop of `keras.ops`: the backend's automatic
    differentiation gives its gradient."""
    c, cells = c0, []
    for t in range(a.shape[0]):
        c = a[t] * c + b[t]
        cells.append(c)
    return ops.stack(cells, axis=0)


@pytest.mark.parametrize("steps", [1, 2, 7, 33])
def test_parallel_and_sequential_pooling_agree_forward_and_backward(rng, steps):
    x = rng.standard_normal((steps + 1, 3, 8)).astype("float32")
    upstream = rng.standard_normal((steps, 3, 4)).astype("float32")
    results = {
        name: layer_grads(_Pool(parallel, direct), x, upstream)
        for name, parallel, direct in (
            ("sequential", False, False),
            ("parallel", True, False),
            ("direct", False, True),
        )
    }
    out, grads = results["direct"]
    for name in ("sequential", "parallel"):
        got, got_grads = results[name]
        np.testing.assert_allclose(got, out, rtol=1e-5, atol=1e-5, err_msg=name)
        np.testing.assert_allclose(
            got_grads["inputs"], grads["inputs"], rtol=1e-5, atol=1e-5, err_msg=name
        )
    # The values themselves: float64 NumPy.
    a, b, c = _sigmoid(x[1:, :, :4].astype(np.float64)), x[1:, :, 4:], x[0, :, :4]
    expected = []
    for t in range(steps):
        c = a[t] * c + b[t]
        expected.append(c)
    np.testing.assert_allclose(out, np.stack(expected), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("pooling", ["sequential", "parallel"])
@pytest.mark.parametrize("window,output_gate", [(1, True), (2, True), (2, False)])
def test_gradients_equal_automatic_differentiation_of_the_direct_definition(
    rng, monkeypatch, window, output_gate, pooling
):
    x = rng.standard_normal((3, 6, 4)).astype("float32")
    x_last = rng.standard_normal((3, 4)).astype("float32")
    c0 = rng.standard_normal((3, 5)).astype("float32")
    upstreams = [rng.standard_normal(s).astype("float32") for s in ((3, 6, 5), (3, 4), (3, 5))]
    layer = _layer(window=window, output_gate=output_gate, pooling=pooling, rng=rng)
    results, grads = layer_state_grads(layer, x, x_last, c0, upstreams)
    monkeypatch.setattr(qrnn_module, "linear_recurrence", _direct_recurrence)
    direct_results, direct_grads = layer_state_grads(layer, x, x_last, c0, upstreams)
    for got, want in zip(results, direct_results):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    assert set(grads) == set(direct_grads)
    for name in grads:
        np.testing.assert_allclose(grads[name], direct_grads[name], rtol=1e-4, atol=1e-5)
    if window == 2:  # the first step reads x_{t-1}
        assert np.abs(grads["h0"]).max() > 0


def test_auto_pooling_is_the_backends_choice(monkeypatch):
    from awd_lstm import backend

    layer = QRNN(4)
    for choice in (True, False):
        monkeypatch.setattr(backend, "parallel_pooling", lambda choice=choice: choice)
        assert layer.uses_parallel_pooling() is choice
    assert QRNN(4, pooling="parallel").uses_parallel_pooling()
    assert not QRNN(4, pooling="sequential").uses_parallel_pooling()


@pytest.mark.parametrize("pooling", ["sequential", "parallel"])
def test_padded_sequences_equal_the_unpadded_ones_on_their_first_steps(rng, pooling):
    """JAX (`length`): a sequence padded to 9 steps gives the outputs, final state and
    gradients of its first 5 steps alone (zero outputs and input gradients after them),
    whatever the padding holds; elsewhere `length` is refused."""
    from awd_lstm import backend

    layer = _layer(window=2, pooling=pooling, rng=rng)
    x = rng.standard_normal((3, 9, 4)).astype("float32")
    x_last = rng.standard_normal((3, 4)).astype("float32")
    c0 = rng.standard_normal((3, 5)).astype("float32")
    if not backend.runs_padded_segments():
        assert not layer.pads_segments()
        with pytest.raises(ValueError, match="length"):
            layer(x, length=np.asarray(5, "int32"))
        return
    upstreams = [rng.standard_normal(s).astype("float32") for s in ((3, 9, 5), (3, 4), (3, 5))]
    padded, padded_grads = layer_state_grads(
        layer, x, x_last, c0, upstreams, length=np.asarray(5, "int32")
    )
    short = [upstreams[0][:, :5], *upstreams[1:]]
    want, want_grads = layer_state_grads(layer, x[:, :5], x_last, c0, short)
    np.testing.assert_allclose(padded[0][:, :5], want[0], rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(padded[0][:, 5:], 0.0)
    for got, expected in zip(padded[1:], want[1:]):
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(padded_grads["inputs"][:, :5], want_grads["inputs"], atol=1e-5)
    np.testing.assert_array_equal(padded_grads["inputs"][:, 5:], 0.0)
    for name in want_grads:
        if name != "inputs":
            np.testing.assert_allclose(padded_grads[name], want_grads[name], atol=1e-5)


# -- weight drop and zoneout -----------------------------------------------------------


def test_call_mode_draws_one_mask_per_call_for_all_steps(rng, recorded_masks):
    layer = _layer(window=2, weight_dropout=0.5, rng=rng)
    x = rng.standard_normal((3, 6, 4)).astype("float32")
    outputs, x_last, c = layer(x, training=True)
    assert len(recorded_masks) == 1
    (mask,) = recorded_masks
    assert mask.shape == layer.kernel.shape
    assert set(np.unique(mask)) == {0.0, 2.0}
    kernel, bias = _weights(layer)
    expected = numpy_qrnn(x, kernel * mask, bias, 2, True)
    np.testing.assert_allclose(to_numpy(outputs), expected[0], rtol=1e-5, atol=1e-5)
    layer(x, training=True)
    assert len(recorded_masks) == 2 and not np.array_equal(recorded_masks[0], recorded_masks[1])


def test_no_mask_drawn_at_inference(rng, recorded_masks):
    layer = _layer(weight_dropout=0.5, zoneout=0.5, rng=rng)
    x = rng.standard_normal((3, 6, 4)).astype("float32")
    outputs = layer(x, training=False)
    assert recorded_masks == []
    plain = numpy_qrnn(x, *_weights(layer), 1, True)  # zoneout: the identity here
    np.testing.assert_allclose(to_numpy(outputs[0]), plain[0], rtol=1e-5, atol=1e-5)


def test_manual_mode_fixed_until_resampled(rng):
    layer = _layer(weight_dropout=0.5, weight_dropout_mode="manual", rng=rng)
    x = rng.standard_normal((3, 6, 4)).astype("float32")
    first = to_numpy(layer(x, training=True)[0])
    np.testing.assert_allclose(to_numpy(layer(x, training=True)[0]), first, rtol=1e-6)
    mask = to_numpy(layer.kernel_mask)
    kernel, bias = _weights(layer)
    np.testing.assert_allclose(first, numpy_qrnn(x, kernel * mask, bias, 1, True)[0], atol=1e-5)
    layer.resample_weight_masks()
    assert not np.array_equal(to_numpy(layer.kernel_mask), mask)
    with pytest.raises(ValueError, match="needs weight_dropout_mode='manual'"):
        QRNN(4).resample_weight_masks()


def test_zoneout_keeps_the_cell_where_the_forget_gate_is_set_to_one(rng, monkeypatch):
    from awd_lstm import backend

    layer = _layer(window=2, zoneout=0.4, rng=rng)
    x = rng.standard_normal((3, 6, 4)).astype("float32")
    drawn = []
    keep_mask = backend.keep_mask

    def recording(shape, rate, seed):
        keep = keep_mask(shape, rate, seed)
        drawn.append((tuple(int(s) for s in shape), rate, to_numpy(keep)))
        return keep

    monkeypatch.setattr(backend, "keep_mask", recording)
    outputs, _, c = layer(x, training=True)
    ((shape, rate, keep),) = drawn
    assert shape == (6, 3, 5) and rate == 0.4  # time-major inside the layer
    zoned = ~np.transpose(keep, (1, 0, 2))
    assert 0.2 < zoned.mean() < 0.6
    expected = numpy_qrnn(x, *_weights(layer), 2, True, forget_mask=zoned)
    np.testing.assert_allclose(to_numpy(outputs), expected[0], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(to_numpy(c), expected[2], rtol=1e-5, atol=1e-5)


# -- saving and arguments --------------------------------------------------------------


def test_config_and_keras_file_round_trip(rng, tmp_path):
    layer = QRNN(
        5,
        window=2,
        output_gate=False,
        weight_dropout=0.3,
        zoneout=0.1,
        pooling="parallel",
        seed=4,
        return_sequences=True,
        kernel_regularizer=keras.regularizers.L2(1e-3),
    )
    again = QRNN.from_config(layer.get_config())
    for name in ("units", "window", "output_gate", "weight_dropout", "zoneout", "pooling", "seed"):
        assert getattr(again, name) == getattr(layer, name)
    inputs = keras.Input((6, 4))
    model = keras.Model(inputs, QRNN(5, window=2, return_sequences=True, seed=1)(inputs))
    x = rng.standard_normal((2, 6, 4)).astype("float32")
    path = tmp_path / "qrnn.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_allclose(to_numpy(loaded(x)), to_numpy(model(x)), rtol=1e-6)


@pytest.mark.parametrize(
    "name,value,message",
    [
        ("units", 0, "`units` must be a positive integer"),
        ("window", 3, "`window` must be 1 or 2"),
        ("window", True, "`window` must be 1 or 2"),
        ("output_gate", 1, "`output_gate` must be True or False"),
        ("weight_dropout", 1.0, "weight_dropout"),
        ("zoneout", -0.1, "zoneout"),
        ("pooling", "fast", "pooling"),
        ("weight_dropout_mode", "step", "weight_dropout_mode"),
        ("seed", 1.5, "`seed` must be an integer or None"),
    ],
)
def test_rejects_bad_arguments(name, value, message):
    kwargs = {"units": 4, name: value}
    with pytest.raises(ValueError, match=message):
        QRNN(**kwargs)


def test_rejects_masks_and_wrong_ranks():
    layer = QRNN(4)
    with pytest.raises(ValueError, match="QRNN does not support masks"):
        layer(np.ones((2, 3, 4), "float32"), mask=np.ones((2, 3), bool))
    with pytest.raises(ValueError):
        QRNN(4)(np.ones((2, 4), "float32"))


# -- in the language model -------------------------------------------------------------


def test_the_language_model_on_qrnn_layers(rng):
    """`cell="qrnn"`: the reference's AWD-QRNN (window 2 in the first layer, 1 after),
    its weights initialized as `nn.Linear`'s, its carried state `[x_last, c]` in a
    stateful model."""
    from awd_lstm.models import AWDLSTMLanguageModel

    options = dict(embedding_size=6, hidden_size=8, num_layers=3, seed=3, cell="qrnn")
    model = AWDLSTMLanguageModel(17, stateful=True, batch_size=2, **options)
    ids = rng.integers(0, 17, size=(2, 7)).astype("int32")
    model.build((2, 7))
    layers = model.encoder.lstms
    assert [type(layer).__name__ for layer in layers] == ["QRNN"] * 3
    assert [layer.window for layer in layers] == [2, 1, 1]
    assert [tuple(layer.kernel.shape) for layer in layers] == [(12, 24), (8, 24), (8, 18)]
    bound = 1 / np.sqrt(12)
    assert np.abs(to_numpy(layers[0].kernel)).max() <= bound
    assert np.abs(to_numpy(layers[0].kernel)).max() > 0.9 * bound
    assert model.encoder.state_sizes == [(6, 8), (8, 8), (8, 6)]
    from awd_lstm import backend

    assert model.encoder.pads_segments() == backend.runs_padded_segments()
    assert [tuple(v.shape) for v in model.state_variables[0]] == [(2, 6), (2, 8)]
    whole = to_numpy(model(ids))
    model.reset_state()
    parts = np.concatenate([to_numpy(model(ids[:, :3])), to_numpy(model(ids[:, 3:]))], axis=1)
    np.testing.assert_allclose(parts, whole, rtol=1e-5, atol=1e-6)
    again = AWDLSTMLanguageModel.from_config(model.get_config())
    assert again.encoder.cell == "qrnn"


def test_a_qrnn_run_trains_evaluates_generates_and_exports(qrnn_run, tmp_path, capsys):
    import json

    from awd_lstm.cli import main
    from awd_lstm.presets import PRESETS

    assert PRESETS["wikitext-103"].cell == "qrnn"
    ptb = PRESETS["ptb-qrnn"]
    assert (ptb.cell, ptb.hidden_size, ptb.num_layers, ptb.weight_dropout) == ("qrnn", 1550, 4, 0.1)
    assert (ptb.clip, ptb.seed, PRESETS["wikitext-2-qrnn"].batch_size) == (0.2, 9001, 40)
    run = qrnn_run
    assert json.loads((run / "config.json").read_text())["config"]["cell"] == "qrnn"
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert metrics[-1]["val_loss"] < metrics[0]["val_loss"]
    for extra in (["--cache-pointer", "--window", "20"], ["--dynamic-eval"]):
        assert main(["evaluate", "--run", str(run), "--no-progress", *extra]) == 0
    capsys.readouterr()
    assert main(["generate", "--run", str(run), "--tokens", "6", "--seed", "1"]) == 0
    assert capsys.readouterr().out.split()
    sentence = tmp_path / "sentence.txt"
    sentence.write_text("w0001 w0002 w0003\n")
    assert main(["score", "--run", str(run), str(sentence)]) == 0
    from_run = capsys.readouterr().out
    exported = tmp_path / "qrnn.keras"
    assert main(["export", "--run", str(run), "--out", str(exported)]) == 0
    capsys.readouterr()
    assert main(["score", "--model", str(exported), str(sentence)]) == 0
    assert capsys.readouterr().out == from_run
    check_savedmodel_serves_the_runs_model(run, tmp_path / "saved")


@pytest.mark.skipif(
    keras.backend.backend() != "tensorflow", reason="TensorFlow's shape-generic traces"
)
@pytest.mark.parametrize("pooling", ["sequential", "parallel"])
@pytest.mark.parametrize("steps", [None, 9], ids=["generic", "static"])
def test_a_traced_call_pools_every_step_with_static_shapes(rng, pooling, steps):
    """In a trace whose time axis is unknown (TensorFlow's training steps for every
    segment length) the layer runs all the steps, forward and backward (with
    `pooling="parallel"` the loop: the scan needs the number of steps); in one whose
    shapes are known, the outputs and gradients have them (TensorFlow's scan loses
    them, `backend.associative_scan` gives them back)."""
    import tensorflow as tf

    layer = QRNN(4, window=2, return_sequences=True, return_state=True, pooling=pooling, seed=0)
    x = tf.constant(rng.normal(size=(2, 9, 3)).astype("float32"))  # 2 rows, 9 steps
    traced_shapes = []

    def outputs_and_gradient(sequences):
        with tf.GradientTape() as tape:
            tape.watch(sequences)
            out, x_last, c = layer(sequences, training=True)
            loss = tf.reduce_sum(out * tf.range(1.0, 5.0)) + tf.reduce_sum(c * x_last[:, :1])
        gradient = tape.gradient(loss, sequences)
        traced_shapes.append([tuple(t.shape) for t in (out, x_last, c, gradient)])
        return out, gradient

    eager = outputs_and_gradient(x)
    traced = tf.function(outputs_and_gradient, input_signature=[tf.TensorSpec((2, steps, 3))])
    for ours, theirs in zip(traced(x), eager):
        np.testing.assert_allclose(ours.numpy(), theirs.numpy(), rtol=1e-5, atol=1e-6)
    assert traced_shapes[-1] == [(2, steps, 4), (2, 3), (2, 4), (2, steps, 3)]
