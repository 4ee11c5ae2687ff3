"""MogrifierLSTM: the paper's equations, the LSTM at rounds=0, gradients, weight
drop, saving and argument checks."""

import dataclasses

import keras
import numpy as np
import pytest

from awd_lstm.layers import MogrifierLSTM, WeightDropLSTM
from awd_lstm.layers import mogrifier as mogrifier_module
from awd_lstm.layers.mogrifier import MogrifierLSTMCell
from tests.backend_grad import layer_state_grads
from tests.conftest import check_savedmodel_serves_the_runs_model, to_numpy

BACKEND = keras.backend.backend()


def _inputs(rng, batch=3, steps=6, features=4):
    return rng.standard_normal((batch, steps, features)).astype("float32")


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def numpy_mogrifier(x, kernel, recurrent_kernel, bias, mogrifier, h0=None, c0=None):
    """The Mogrifier LSTM in float64 NumPy, straight from the paper's equations 1-2
    (`mogrifier`: one tuple of factors per round, their product `Q^i` or `R^i` in
    row-vector layout), then Keras' LSTM step (gates i, f, c, o). Returns
    `(outputs, h, c)`."""
    x = np.asarray(x, np.float64)
    batch, steps, _ = x.shape
    units = recurrent_kernel.shape[0]
    h = np.zeros((batch, units)) if h0 is None else np.asarray(h0, np.float64)
    c = np.zeros((batch, units)) if c0 is None else np.asarray(c0, np.float64)
    matrices = []
    for factors in mogrifier:
        matrix = np.asarray(factors[0], np.float64)
        for factor in factors[1:]:
            matrix = matrix @ np.asarray(factor, np.float64)
        matrices.append(matrix)
    outputs = []
    for t in range(steps):
        x_t, h_m = x[:, t], h
        for i, matrix in enumerate(matrices, start=1):
            if i % 2:  # x <- 2 sigmoid(Q^i h) * x
                x_t = 2.0 * _sigmoid(h_m @ matrix) * x_t
            else:  # h <- 2 sigmoid(R^i x) * h
                h_m = 2.0 * _sigmoid(x_t @ matrix) * h_m
        z = x_t @ kernel + h_m @ recurrent_kernel + bias
        i_, f, g, o = np.split(z, 4, axis=1)
        c = _sigmoid(f) * c + _sigmoid(i_) * np.tanh(g)
        h = _sigmoid(o) * np.tanh(c)
        outputs.append(h)
    return np.stack(outputs, axis=1), h, c


def _weights(layer, masked=False):
    """`(kernel, recurrent_kernel, bias, mogrifier)` of a MogrifierLSTM in float64
    (the recurrent kernel times its "manual" mask with `masked`)."""
    cell = layer.cell

    def value(v):
        return to_numpy(v).astype(np.float64)

    recurrent = value(cell.recurrent_kernel)
    if masked:
        recurrent = recurrent * value(cell.recurrent_kernel_mask)
    mogrifier = [tuple(value(f) for f in factors) for factors in cell.mogrifier_weights]
    return value(cell.kernel), recurrent, value(cell.bias), mogrifier


def _randomize(layer, rng, scale=0.5):
    """Random weights everywhere (biases too), large enough that every round of the
    mogrifier changes the result visibly."""
    for variable in layer.trainable_variables:
        variable.assign(scale * rng.standard_normal(variable.shape).astype("float32"))


def _layer(units=5, build=(3, 6, 4), rng=None, **kwargs):
    kwargs.setdefault("seed", 3)
    layer = MogrifierLSTM(units, return_sequences=True, return_state=True, **kwargs)
    layer.build(build)
    if rng is not None:
        _randomize(layer, rng)
    return layer


CONFIGS = [(1, None), (2, None), (5, None), (1, 2), (2, 2), (5, 2)]


# -- the equations -------------------------------------------------------------------


@pytest.mark.parametrize("training", [False, True], ids=["inference", "training"])
@pytest.mark.parametrize("rounds,rank", CONFIGS)
def test_equals_numpy_equations_with_initial_state(rng, rounds, rank, training):
    x = _inputs(rng)
    h0, c0 = (rng.standard_normal((3, 5)).astype("float32") for _ in range(2))
    layer = _layer(rounds=rounds, rank=rank, rng=rng)
    outputs, h, c = layer(x, initial_state=[h0, c0], training=training)
    assert layer.uses_hand_written_gradient(training=training) == training
    want = numpy_mogrifier(x, *_weights(layer), h0=h0, c0=c0)
    for got, expected in zip((outputs, h, c), want):
        np.testing.assert_allclose(to_numpy(got), expected, rtol=1e-5, atol=1e-5)
    # The rounds matter: without them the same weights give another result.
    kernel, recurrent, bias, _ = _weights(layer)
    plain, _, _ = numpy_mogrifier(x, kernel, recurrent, bias, [], h0=h0, c0=c0)
    assert np.abs(to_numpy(outputs) - plain).max() > 1e-2


@pytest.mark.parametrize("training", [False, True], ids=["inference", "training"])
@pytest.mark.parametrize("rounds,rank", [(2, None), (5, 2)])
def test_two_calls_carrying_the_state_equal_one_call(rng, rounds, rank, training):
    x = _inputs(rng, steps=7)
    layer = _layer(rounds=rounds, rank=rank, build=(3, 7, 4), rng=rng)
    whole, h_whole, c_whole = layer(x, training=training)
    first, h, c = layer(x[:, :3], training=training)
    second, h, c = layer(x[:, 3:], initial_state=[h, c], training=training)
    np.testing.assert_allclose(
        np.concatenate([to_numpy(first), to_numpy(second)], axis=1),
        to_numpy(whole),
        atol=1e-6,
    )
    np.testing.assert_allclose(to_numpy(h), to_numpy(h_whole), atol=1e-6)
    np.testing.assert_allclose(to_numpy(c), to_numpy(c_whole), atol=1e-6)


def test_stateful_layer_carries_its_state(rng):
    x = _inputs(rng, batch=2, steps=6)
    stateful = MogrifierLSTM(5, rounds=3, rank=2, return_sequences=True, stateful=True, seed=1)
    plain = MogrifierLSTM(5, rounds=3, rank=2, return_sequences=True, seed=1)
    stateful.build(x.shape)
    plain.build(x.shape)
    plain.set_weights(stateful.get_weights())
    whole = to_numpy(plain(x))
    halves = [to_numpy(stateful(x[:, :2])), to_numpy(stateful(x[:, 2:]))]
    np.testing.assert_allclose(np.concatenate(halves, axis=1), whole, atol=1e-6)
    stateful.reset_state()
    np.testing.assert_allclose(to_numpy(stateful(x)), whole, atol=1e-6)


def test_stateful_model_trains(rng):
    """Training steps of a stateful layer (on PyTorch the state variables are
    assigned after a loop whose gradient needs their previous values)."""
    x = _inputs(rng, batch=2, steps=5)
    y = rng.standard_normal((2, 5, 1)).astype("float32")
    model = keras.Sequential(
        [
            keras.Input((5, 4), batch_size=2),
            MogrifierLSTM(5, rounds=3, return_sequences=True, stateful=True, seed=1),
            keras.layers.Dense(1),
        ]
    )
    model.compile(keras.optimizers.Adam(0.01), "mse")
    losses = [float(model.train_on_batch(x, y)) for _ in range(3)]
    assert all(np.isfinite(losses))


@pytest.mark.parametrize("training", [False, True], ids=["inference", "training"])
def test_go_backwards_runs_the_reversed_sequence(rng, training):
    x = _inputs(rng)
    layer = _layer(rounds=3, rank=2, rng=rng, go_backwards=True)
    outputs, h, c = layer(x, training=training)
    want, want_h, want_c = numpy_mogrifier(x[:, ::-1], *_weights(layer))
    np.testing.assert_allclose(to_numpy(outputs), want, atol=1e-5)
    np.testing.assert_allclose(to_numpy(h), want_h, atol=1e-5)
    np.testing.assert_allclose(to_numpy(c), want_c, atol=1e-5)


@pytest.mark.parametrize("training", [False, True], ids=["inference", "training"])
def test_masked_steps_keep_the_state(rng, training):
    x = _inputs(rng, batch=2)
    mask = np.array([[1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1]], dtype=bool)
    layer = _layer(rounds=3, rank=2, build=(2, 6, 4), rng=rng)
    assert not layer.uses_hand_written_gradient(mask=mask, training=training)
    outputs, h, c = layer(x, mask=mask, training=training)
    weights = _weights(layer)
    short, short_h, short_c = numpy_mogrifier(x[:1, :4], *weights)
    full, full_h, full_c = numpy_mogrifier(x[1:], *weights)
    np.testing.assert_allclose(to_numpy(outputs)[:1, :4], short, atol=1e-5)
    np.testing.assert_allclose(to_numpy(outputs)[1:], full, atol=1e-5)
    np.testing.assert_allclose(to_numpy(h), np.concatenate([short_h, full_h]), atol=1e-5)
    np.testing.assert_allclose(to_numpy(c), np.concatenate([short_c, full_c]), atol=1e-5)


def test_weights_shapes_and_names():
    layer = MogrifierLSTM(5, rounds=3, rank=2)
    layer.build((None, 6, 4))
    shapes = {v.name: tuple(v.shape) for v in layer.trainable_weights}
    assert shapes == {
        "kernel": (4, 20),
        "recurrent_kernel": (5, 20),
        "bias": (20,),
        "q_1_left": (5, 2),
        "q_1_right": (2, 4),
        "r_2_left": (4, 2),
        "r_2_right": (2, 5),
        "q_3_left": (5, 2),
        "q_3_right": (2, 4),
    }
    full = MogrifierLSTM(5, rounds=2)
    full.build((None, 6, 4))
    assert [tuple(f.shape) for fs in full.cell.mogrifier_weights for f in fs] == [(5, 4), (4, 5)]
    assert len(layer.non_trainable_weights) == 0


# -- rounds=0 is the weight-dropped LSTM -----------------------------------------------


@pytest.mark.parametrize("training", [False, True], ids=["inference", "training"])
def test_zero_rounds_equal_weight_drop_lstm(rng, training):
    x = _inputs(rng)
    h0, c0 = (rng.standard_normal((3, 5)).astype("float32") for _ in range(2))
    ours = MogrifierLSTM(5, rounds=0, return_sequences=True, return_state=True, seed=3)
    lstm = WeightDropLSTM(5, return_sequences=True, return_state=True, seed=3)
    ours.build(x.shape)
    lstm.build(x.shape)
    assert [w.name for w in ours.weights] == ["kernel", "recurrent_kernel", "bias"]
    _randomize(ours, rng)
    lstm.set_weights(ours.get_weights())
    got = ours(x, initial_state=[h0, c0], training=training)
    want = lstm(x, initial_state=[h0, c0], training=training)
    for a, b in zip(got, want):
        np.testing.assert_allclose(to_numpy(a), to_numpy(b), atol=1e-5)


@pytest.mark.parametrize("mode", ["manual", "call"])
def test_zero_rounds_with_weight_drop_equal_weight_drop_lstm(rng, mode, recorded_masks):
    """With the same weights the same masks: assigned ("manual"), or drawn from the
    same seed ("call": the cell is a `WeightDropLSTMCell`, its mask stream too)."""
    x = _inputs(rng)
    options = dict(
        weight_dropout=0.5, weight_dropout_mode=mode, return_sequences=True, return_state=True
    )
    ours = MogrifierLSTM(5, rounds=0, seed=3, **options)
    lstm = WeightDropLSTM(5, seed=3, **options)
    ours.build(x.shape)
    lstm.build(x.shape)
    _randomize(ours, rng)
    for variable, value in zip(lstm.trainable_weights, ours.trainable_weights):
        variable.assign(value)
    if mode == "manual":
        mask = to_numpy(ours.cell.recurrent_kernel_mask)
        assert 0 < np.mean(mask == 0) < 1
        lstm.cell.recurrent_kernel_mask.assign(mask)
    for _ in range(2):
        got = ours(x, training=True)
        want = lstm(x, training=True)
        for a, b in zip(got, want):
            np.testing.assert_allclose(to_numpy(a), to_numpy(b), atol=1e-5)
    if mode == "call":
        assert len(recorded_masks) == 4  # one per call of each layer
        np.testing.assert_array_equal(recorded_masks[0], recorded_masks[1])
        np.testing.assert_array_equal(recorded_masks[2], recorded_masks[3])


# -- gradients -------------------------------------------------------------------------


def _numpy_loss_gradients(layer, x, h0, c0, upstreams, eps=1e-6):
    """Central finite differences, in float64 NumPy, of `sum(outputs * u_out) +
    sum(h * u_h) + sum(c * u_c)` for the equations with the layer's weights (the
    recurrent kernel times its "manual" mask), with respect to the inputs, the
    initial state and every trainable variable (by name)."""
    cell = layer.cell
    names = [v.name for v in layer.trainable_variables]
    params = {
        name: to_numpy(v).astype(np.float64) for name, v in zip(names, layer.trainable_variables)
    }
    params.update(inputs=x.astype(np.float64), h0=h0.astype(np.float64), c0=c0.astype(np.float64))
    mask = to_numpy(cell.recurrent_kernel_mask).astype(np.float64)
    factor_names = [[f.name for f in factors] for factors in cell.mogrifier_weights]

    def loss(p):
        mogrifier = [tuple(p[n] for n in round_) for round_ in factor_names]
        results = numpy_mogrifier(
            p["inputs"],
            p["kernel"],
            p["recurrent_kernel"] * mask,
            p["bias"],
            mogrifier,
            h0=p["h0"],
            c0=p["c0"],
        )
        return sum(np.sum(r * u) for r, u in zip(results, upstreams))

    grads = {}
    for name, value in params.items():
        grad = np.zeros_like(value)
        for index in np.ndindex(value.shape):
            saved = value[index]
            value[index] = saved + eps
            up = loss(params)
            value[index] = saved - eps
            down = loss(params)
            value[index] = saved
            grad[index] = (up - down) / (2 * eps)
        grads[name] = grad
    return grads


@pytest.mark.parametrize("rounds,rank", [(2, None), (5, 2)])
def test_gradients_equal_finite_differences_of_the_equations(rng, rounds, rank):
    """Every gradient of a training call (inputs, initial state, kernels, bias and
    mogrifier factors; the hand-written gradient), with upstream gradients on the
    outputs and the final state, against float64 finite differences."""
    batch, steps, features, units = 2, 4, 3, 4
    x = _inputs(rng, batch=batch, steps=steps, features=features)
    h0, c0 = (rng.standard_normal((batch, units)).astype("float32") for _ in range(2))
    upstreams = [
        rng.standard_normal(shape).astype("float32")
        for shape in ((batch, steps, units), (batch, units), (batch, units))
    ]
    layer = _layer(
        units,
        build=x.shape,
        rng=rng,
        rounds=rounds,
        rank=rank,
        weight_dropout=0.5,
        weight_dropout_mode="manual",
    )
    assert layer.uses_hand_written_gradient(training=True)
    results, grads = layer_state_grads(layer, x, h0, c0, upstreams)
    kernel, recurrent, bias, mogrifier = _weights(layer, masked=True)
    want = numpy_mogrifier(x, kernel, recurrent, bias, mogrifier, h0=h0, c0=c0)
    for got, expected in zip(results, want):
        np.testing.assert_allclose(got, expected, atol=1e-5)
    want_grads = _numpy_loss_gradients(layer, x, h0, c0, upstreams)
    assert sorted(grads) == sorted(want_grads)
    for name, expected in want_grads.items():
        np.testing.assert_allclose(grads[name], expected, rtol=1e-4, atol=1e-4, err_msg=name)
    # Dropped recurrent weights get no gradient.
    mask = to_numpy(layer.cell.recurrent_kernel_mask)
    assert np.all(grads["recurrent_kernel"][mask == 0] == 0)


@pytest.mark.parametrize("go_backwards", [False, True])
@pytest.mark.parametrize("rounds,rank", [(0, None), (1, None), (4, None), (3, 2), (5, 2)])
def test_hand_written_gradient_equals_automatic_differentiation(rng, rounds, rank, go_backwards):
    """The hand-written gradient against this backend's automatic differentiation
    of the layer's own step loop, in float32."""
    x = _inputs(rng, steps=7)
    h0, c0 = (rng.standard_normal((3, 5)).astype("float32") for _ in range(2))
    upstreams = [
        rng.standard_normal(shape).astype("float32") for shape in ((3, 7, 5), (3, 5), (3, 5))
    ]
    options = dict(
        rounds=rounds,
        rank=rank,
        weight_dropout=0.5,
        weight_dropout_mode="manual",
        go_backwards=go_backwards,
    )
    ours = _layer(build=x.shape, rng=rng, **options)
    automatic = _layer(build=x.shape, **options)
    automatic.set_weights(ours.get_weights())
    automatic._hand_written_gradient = False
    results, grads = layer_state_grads(ours, x, h0, c0, upstreams)
    want, want_grads = layer_state_grads(automatic, x, h0, c0, upstreams)
    for got, expected in zip(results, want):
        np.testing.assert_allclose(got, expected, atol=1e-6)
    assert sorted(grads) == sorted(want_grads)
    for name in grads:
        np.testing.assert_allclose(grads[name], want_grads[name], atol=1e-5, err_msg=name)


def test_hand_written_gradient_runs_in_training_only(rng, monkeypatch):
    calls = []
    original = mogrifier_module._trained_recurrence

    def counted(*args):
        calls.append(1)
        return original(*args)

    monkeypatch.setattr(mogrifier_module, "_trained_recurrence", counted)
    x = _inputs(rng)
    layer = MogrifierLSTM(5, rounds=2, return_sequences=True, seed=1)
    layer(x, training=True)
    assert len(calls) == 1
    layer(x, training=False)
    assert len(calls) == 1
    other = MogrifierLSTM(5, rounds=2, activation="relu", return_sequences=True, seed=1)
    assert not other.uses_hand_written_gradient(training=True)
    other(x, training=True)
    assert len(calls) == 1


def test_fit_trains(rng):
    """Inside the compiled training step (tf.function, jit): the loss falls."""
    x = _inputs(rng, batch=8)
    y = rng.standard_normal((8, 6, 1)).astype("float32")
    model = keras.Sequential(
        [
            keras.Input((6, 4)),
            MogrifierLSTM(8, rounds=5, rank=2, weight_dropout=0.3, return_sequences=True, seed=2),
            keras.layers.Dense(1),
        ]
    )
    model.compile(keras.optimizers.Adam(0.05), "mse")
    history = model.fit(x, y, epochs=10, batch_size=8, verbose=0)
    assert history.history["loss"][-1] < history.history["loss"][0]
    np.testing.assert_array_equal(model.predict(x, verbose=0), model.predict(x, verbose=0))


# -- weight masks ---------------------------------------------------------------------


@pytest.mark.parametrize("hand_written", [True, False], ids=["hand-written", "automatic"])
def test_call_mode_one_mask_per_call_shared_by_all_steps(rng, recorded_masks, hand_written):
    x = _inputs(rng, batch=4, steps=7)
    layer = _layer(build=x.shape, rng=rng, rounds=3, rank=2, weight_dropout=0.4)
    layer._hand_written_gradient = hand_written
    kernel, recurrent, bias, mogrifier = _weights(layer)
    outputs = []
    for _ in range(3):
        outputs.append(to_numpy(layer(x, training=True)[0]))
    assert len(recorded_masks) == 3
    for mask, out in zip(recorded_masks, outputs):
        assert mask.shape == (5, 20)
        want, _, _ = numpy_mogrifier(x, kernel, recurrent * mask, bias, mogrifier)
        np.testing.assert_allclose(out, want, atol=1e-5)
    assert not np.array_equal(recorded_masks[0], recorded_masks[1])
    assert not np.array_equal(recorded_masks[1], recorded_masks[2])


def test_no_mask_drawn_at_inference(rng, recorded_masks):
    x = _inputs(rng)
    layer = _layer(build=x.shape, rng=rng, rounds=2, weight_dropout=0.5)
    outputs = to_numpy(layer(x, training=False)[0])
    assert recorded_masks == []
    want, _, _ = numpy_mogrifier(x, *_weights(layer))
    np.testing.assert_allclose(outputs, want, atol=1e-5)


def test_manual_mode_fixed_until_resampled(rng):
    x = _inputs(rng)
    layer = _layer(
        build=x.shape, rng=rng, rounds=3, rank=2, weight_dropout=0.5, weight_dropout_mode="manual"
    )
    assert [v.name for v in layer.non_trainable_weights] == ["recurrent_kernel_mask"]
    first = to_numpy(layer(x, training=True)[0])
    mask = to_numpy(layer.cell.recurrent_kernel_mask)
    np.testing.assert_array_equal(to_numpy(layer(x, training=True)[0]), first)
    kernel, recurrent, bias, mogrifier = _weights(layer)
    want, _, _ = numpy_mogrifier(x, kernel, recurrent * mask, bias, mogrifier)
    np.testing.assert_allclose(first, want, atol=1e-5)
    layer.resample_weight_masks()
    assert not np.array_equal(to_numpy(layer.cell.recurrent_kernel_mask), mask)
    resampled = to_numpy(layer(x, training=True)[0])
    assert np.abs(resampled[:, 1:] - first[:, 1:]).max() > 1e-3
    np.testing.assert_array_equal(to_numpy(layer(x, training=True)[0]), resampled)
    # Inference ignores the mask.
    want, _, _ = numpy_mogrifier(x, kernel, recurrent, bias, mogrifier)
    np.testing.assert_allclose(to_numpy(layer(x, training=False)[0]), want, atol=1e-5)


def test_resample_needs_manual_mode():
    with pytest.raises(ValueError, match="weight_dropout_mode='manual'"):
        MogrifierLSTM(5, weight_dropout=0.5).resample_weight_masks()


def test_cell_in_rnn_equals_layer(rng):
    x = _inputs(rng)
    layer = MogrifierLSTM(5, rounds=3, rank=2, weight_dropout=0.5, return_sequences=True, seed=21)
    rnn = keras.layers.RNN(
        MogrifierLSTMCell(5, rounds=3, rank=2, weight_dropout=0.5, seed=21),
        return_sequences=True,
    )
    layer.build(x.shape)
    rnn.build(x.shape)
    rnn.set_weights(layer.get_weights())
    for training in (False, True, True):  # the same seeds: the same masks
        np.testing.assert_allclose(
            to_numpy(rnn(x, training=training)), to_numpy(layer(x, training=training)), atol=1e-5
        )


# -- saving ----------------------------------------------------------------------------


def test_config_round_trip():
    layer = MogrifierLSTM(
        6,
        rounds=4,
        rank=3,
        weight_dropout=0.25,
        weight_dropout_mode="manual",
        seed=5,
        return_sequences=True,
        return_state=True,
        unit_forget_bias=False,
        mogrifier_initializer=keras.initializers.RandomNormal(stddev=0.2),
        name="mog",
    )
    config = layer.get_config()
    assert {k: config[k] for k in ("units", "rounds", "rank", "weight_dropout", "seed")} == {
        "units": 6,
        "rounds": 4,
        "rank": 3,
        "weight_dropout": 0.25,
        "seed": 5,
    }
    assert "cell" not in config
    clone = MogrifierLSTM.from_config(config)
    assert clone.get_config() == config
    revived = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
    assert isinstance(revived, MogrifierLSTM) and revived.get_config() == config
    cell = MogrifierLSTMCell(4, rounds=2, rank=2, seed=1)
    assert MogrifierLSTMCell.from_config(cell.get_config()).get_config() == cell.get_config()


@pytest.mark.parametrize("mode", ["call", "manual"])
def test_keras_file_round_trip(rng, tmp_path, mode):
    x = _inputs(rng, batch=2)
    model = keras.Sequential(
        [
            keras.Input((6, 4)),
            MogrifierLSTM(
                5,
                rounds=3,
                rank=2,
                weight_dropout=0.5,
                weight_dropout_mode=mode,
                return_sequences=True,
                seed=4,
            ),
            keras.layers.Dense(2),
        ]
    )
    path = tmp_path / "mogrifier.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded.layers[0], MogrifierLSTM)
    assert loaded.layers[0].get_config() == model.layers[0].get_config()
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), model.predict(x, verbose=0))
    if mode == "manual":  # the mask is a weight: training outputs agree too
        np.testing.assert_allclose(
            to_numpy(loaded(x, training=True)), to_numpy(model(x, training=True)), atol=1e-6
        )


# -- bad arguments ---------------------------------------------------------------------

BAD_ARGUMENTS = [
    ("units", 0),
    ("units", -3),
    ("units", 2.5),
    ("units", "8"),
    ("rounds", -1),
    ("rounds", 1.5),
    ("rounds", True),
    ("rank", 0),
    ("rank", -2),
    ("rank", 2.5),
    ("weight_dropout", 1.0),
    ("weight_dropout", -0.1),
    ("weight_dropout", float("nan")),
    ("weight_dropout", "0.5"),
    ("weight_dropout_mode", "step"),
    ("weight_dropout_mode", "x"),
    ("dropout", 0.1),
    ("recurrent_dropout", 0.2),
]


@pytest.mark.parametrize("cls", [MogrifierLSTM, MogrifierLSTMCell])
@pytest.mark.parametrize("name,value", BAD_ARGUMENTS, ids=lambda v: repr(v))
def test_rejects_bad_arguments(cls, name, value):
    kwargs = {"units": 4, name: value}
    with pytest.raises(ValueError, match=rf"`{name}`") as error:
        cls(**kwargs)
    message = str(error.value)
    assert f"Received: {name}={value!r}" in message
    assert "\n" not in message and message.count(". ") == 0


def test_rejects_wrong_input_rank():
    with pytest.raises(ValueError, match="expected ndim=3, found ndim=2"):
        MogrifierLSTM(4)(np.ones((2, 3), "float32"))


# -- in the language model and the pipeline ---------------------------------------------


def test_the_language_model_on_mogrifier_cells():
    """`cell="mogrifier"`: with 0 rounds the language model computes what the LSTM one
    does with the same weights; with rounds and a rank its config rebuilds it."""
    from awd_lstm.models import AWDLSTMLanguageModel

    options = dict(embedding_size=6, hidden_size=8, num_layers=2, seed=3, output_dropout=0.0)
    ids = np.random.default_rng(0).integers(0, 17, size=(2, 7)).astype("int32")
    plain = AWDLSTMLanguageModel(17, **options)
    zero = AWDLSTMLanguageModel(17, cell="mogrifier", mogrifier_rounds=0, **options)
    for model in (plain, zero):
        model.build((2, 7))
    zero.set_weights(plain.get_weights())
    assert [type(layer).__name__ for layer in zero.encoder.lstms] == ["MogrifierLSTM"] * 2
    np.testing.assert_allclose(to_numpy(zero(ids)), to_numpy(plain(ids)), rtol=1e-5, atol=1e-6)
    model = AWDLSTMLanguageModel(
        17, cell="mogrifier", mogrifier_rounds=3, mogrifier_rank=2, **options
    )
    model.build((2, 7))
    config = model.get_config()
    assert (config["cell"], config["mogrifier_rounds"], config["mogrifier_rank"]) == (
        "mogrifier",
        3,
        2,
    )
    again = AWDLSTMLanguageModel.from_config(config)
    again.build((2, 7))
    again.set_weights(model.get_weights())
    np.testing.assert_allclose(to_numpy(again(ids)), to_numpy(model(ids)), rtol=1e-6)
    with pytest.raises(ValueError, match="`cell` must be one of 'lstm', 'mogrifier'"):
        AWDLSTMLanguageModel(17, cell="gru", **options)


@pytest.mark.skipif(BACKEND != "tensorflow", reason="a parameter count, the same everywhere")
def test_the_ptb_mogrifier_preset_is_the_tuned_24m_model():
    """Their 24M-parameter budget: the largest hidden size whose model (10,000 words,
    tied) has at most 24M parameters (counted as the built model's, see
    tests/test_resources.py)."""
    from awd_lstm.presets import PRESETS
    from awd_lstm.resources import count_parameters

    preset = PRESETS["ptb-mogrifier"]
    assert (preset.cell, preset.num_layers, preset.mogrifier_rounds) == ("mogrifier", 2, 5)
    assert (preset.mogrifier_rank, preset.optimizer, preset.batch_size) == (84, "rmsprop", 64)
    assert preset.embedding_size == preset.hidden_size == 912 and preset.tie_weights
    sizes = {}
    for units in (912, 913):
        config = dataclasses.replace(preset, embedding_size=units, hidden_size=units)
        sizes[units] = count_parameters(config, 10_000)
    assert sizes[912] <= 24_000_000 < sizes[913]


def test_a_mogrifier_run_trains_evaluates_and_exports(tmp_path, capsys):
    import json

    from awd_lstm.cli import main
    from tests.conftest import TINY_FLAGS

    run = tmp_path / "mogrifier"
    flags = ["--cell", "mogrifier", "--mogrifier-rounds", "3", "--mogrifier-rank", "2"]
    # The optimizer of the ptb-mogrifier preset (the lr after the tiny flags' own).
    flags += ["--optimizer", "rmsprop"]
    assert main(["train", "--out", str(run), *TINY_FLAGS, *flags, "--lr", "0.003"]) == 0
    config = json.loads((run / "config.json").read_text())["config"]
    assert (config["cell"], config["mogrifier_rounds"], config["mogrifier_rank"]) == (
        "mogrifier",
        3,
        2,
    )
    assert config["optimizer"] == "rmsprop"
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert metrics[-1]["val_loss"] < metrics[0]["val_loss"]
    assert main(["evaluate", "--run", str(run), "--no-progress", "--cache-pointer"]) == 0
    sentence = tmp_path / "sentence.txt"
    sentence.write_text("w0001 w0002 w0003\n")
    capsys.readouterr()
    assert main(["score", "--run", str(run), str(sentence)]) == 0
    from_run = capsys.readouterr().out
    exported = tmp_path / "mogrifier.keras"
    assert main(["export", "--run", str(run), "--out", str(exported)]) == 0
    capsys.readouterr()
    assert main(["score", "--model", str(exported), str(sentence)]) == 0
    assert capsys.readouterr().out == from_run
    check_savedmodel_serves_the_runs_model(run, tmp_path / "saved")


@pytest.mark.skipif(
    keras.backend.backend() != "tensorflow", reason="TensorFlow's shape-generic traces"
)
def test_a_shape_generic_trace_runs_every_step(rng):
    """In a trace whose time axis is unknown (TensorFlow's training steps for every
    segment length), the time-major loops run all the steps, not as many as the batch
    has rows, forward and in the hand-written gradient."""
    import tensorflow as tf

    layer = MogrifierLSTM(4, rounds=3, rank=2, return_sequences=True, seed=0)
    x = tf.constant(rng.normal(size=(2, 9, 3)).astype("float32"))  # 2 rows, 9 steps

    def outputs_and_gradient(sequences):
        with tf.GradientTape() as tape:
            tape.watch(sequences)
            out = layer(sequences, training=True)
            loss = tf.reduce_sum(out * tf.range(1.0, 5.0))
        return out, tape.gradient(loss, sequences)

    eager = outputs_and_gradient(x)
    assert layer.uses_hand_written_gradient(None, True)
    generic = tf.function(outputs_and_gradient, input_signature=[tf.TensorSpec((2, None, 3))])
    for ours, theirs in zip(generic(x), eager):
        np.testing.assert_allclose(ours.numpy(), theirs.numpy(), rtol=1e-5, atol=1e-6)
