"""WeightDropLSTM and WeightDropLSTMCell: semantics, golden values, fused path."""

import keras
import keras.src.backend
import numpy as np
import pytest

from awd_lstm.layers import WeightDropLSTM, WeightDropLSTMCell
from tests.backend_grad import layer_grads, layer_state_grads
from tests.conftest import to_numpy
from tests.reference import numpy_lstm, torch_lstm_outputs_and_grads, torch_lstm_state_grads

BACKEND = keras.backend.backend()


def _inputs(rng, batch=3, steps=6, features=4):
    return rng.standard_normal((batch, steps, features)).astype("float32")


def _weights(layer):
    cell = layer.cell
    return (
        to_numpy(cell.kernel).astype(np.float64),
        to_numpy(cell.recurrent_kernel).astype(np.float64),
        to_numpy(cell.bias).astype(np.float64),
    )


# -- equivalence with keras.layers.LSTM --------------------------------------------


@pytest.mark.parametrize("training", [False, True])
def test_zero_rates_identical_to_keras_lstm(rng, training):
    x = _inputs(rng)
    ours = WeightDropLSTM(5, return_sequences=True, return_state=True, seed=3)
    plain = keras.layers.LSTM(5, return_sequences=True, return_state=True, seed=3)
    ours.build(x.shape)
    plain.build(x.shape)
    plain.set_weights(ours.get_weights())
    for a, b in zip(ours(x, training=training), plain(x, training=training)):
        # Equal up to float rounding: where no fused kernel runs, the projected loop
        # sums (x W + b) + h U where Keras' cell sums (x W + h U) + b.
        np.testing.assert_allclose(to_numpy(a), to_numpy(b), rtol=1e-6, atol=1e-7)


LSTM_OPTIONS = [
    dict(return_sequences=True, return_state=True),
    dict(return_sequences=False, go_backwards=True),
    dict(return_sequences=True, stateful=True),
    dict(return_sequences=True, masking=True),
    dict(return_sequences=True, dropout=0.0, unroll=True),
]


@pytest.mark.parametrize("options", LSTM_OPTIONS, ids=lambda o: "-".join(sorted(o)))
def test_lstm_behaviours_hold_with_weight_drop(rng, options):
    """In "manual" mode the dropped kernel is fixed, so WeightDropLSTM in training
    must equal keras.layers.LSTM whose recurrent kernel *is* the dropped kernel, for
    every LSTM option."""
    options = dict(options)
    masking = options.pop("masking", False)
    x = _inputs(rng, batch=2)
    mask = np.array([[1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1]], dtype=bool) if masking else None
    ours = WeightDropLSTM(
        5,
        weight_dropout=0.5,
        input_weight_dropout=0.3,
        weight_dropout_mode="manual",
        seed=7,
        **options,
    )
    plain = keras.layers.LSTM(5, **options)
    ours.build(x.shape)
    plain.build(x.shape)
    cell = ours.cell
    kernel, recurrent, bias = (to_numpy(v) for v in (cell.kernel, cell.recurrent_kernel, cell.bias))
    plain.set_weights(
        [
            kernel * to_numpy(cell.kernel_mask),
            recurrent * to_numpy(cell.recurrent_kernel_mask),
            bias,
        ]
    )
    for _ in range(2):  # twice: stateful layers must carry their state identically
        got = ours(x, mask=mask, training=True)
        want = plain(x, mask=mask, training=True)
        got = got if isinstance(got, (list, tuple)) else [got]
        want = want if isinstance(want, (list, tuple)) else [want]
        assert len(got) == len(want)
        for a, b in zip(got, want):
            np.testing.assert_allclose(to_numpy(a), to_numpy(b), rtol=1e-5, atol=1e-6)
    if options.get("stateful"):
        ours.reset_state()
        plain.reset_state()
        np.testing.assert_allclose(
            to_numpy(ours(x, training=True)), to_numpy(plain(x, training=True)), atol=1e-6
        )


# -- the semantics of weight drop ---------------------------------------------------


def test_first_step_independent_of_mask_later_steps_not(rng):
    x = _inputs(rng)
    layer = WeightDropLSTM(6, weight_dropout=0.5, return_sequences=True, seed=11)
    inference = to_numpy(layer(x, training=False))
    runs = [to_numpy(layer(x, training=True)) for _ in range(4)]
    for out in runs:
        # h_{-1} = 0, so h_0 never meets the recurrent kernel.
        np.testing.assert_allclose(out[:, 0], inference[:, 0], atol=1e-6)
        assert np.abs(out[:, 1:] - inference[:, 1:]).max() > 1e-3
    for a, b in zip(runs, runs[1:]):
        assert np.abs(a[:, 1:] - b[:, 1:]).max() > 1e-3


def test_call_mode_one_mask_shared_by_time_and_batch(rng, recorded_masks):
    """The whole output equals a NumPy LSTM run with one dropped kernel for every
    step and row, on whichever path (fused or step loop) this backend takes."""
    x = _inputs(rng, batch=4, steps=7)
    layer = WeightDropLSTM(5, weight_dropout=0.4, return_sequences=True, seed=5)
    layer.build(x.shape)
    out = to_numpy(layer(x, training=True))
    assert len(recorded_masks) == 1
    (mask,) = recorded_masks
    kernel, recurrent, bias = _weights(layer)
    want, _, _ = numpy_lstm(x, kernel, recurrent * mask, bias)
    np.testing.assert_allclose(out, want, atol=1e-5)


def test_call_mode_new_mask_every_call(rng, recorded_masks):
    x = _inputs(rng)
    layer = WeightDropLSTM(5, weight_dropout=0.5, seed=5)
    for _ in range(3):
        layer(x, training=True)
    assert len(recorded_masks) == 3
    assert not np.array_equal(recorded_masks[0], recorded_masks[1])
    assert not np.array_equal(recorded_masks[1], recorded_masks[2])


def test_no_mask_drawn_in_inference(rng, recorded_masks):
    layer = WeightDropLSTM(5, weight_dropout=0.5, seed=5)
    layer(_inputs(rng), training=False)
    keras.layers.RNN(WeightDropLSTMCell(5, weight_dropout=0.5))(_inputs(rng))
    assert recorded_masks == []


@pytest.mark.parametrize("rate", [0.2, 0.5, 0.8])
def test_mask_fraction_and_scale(rng, recorded_masks, rate):
    layer = WeightDropLSTM(64, weight_dropout=rate, input_weight_dropout=rate, seed=2)
    layer(_inputs(rng, features=64), training=True)
    assert len(recorded_masks) == 2  # input kernel, then recurrent kernel
    for mask in recorded_masks:
        assert mask.shape == (64, 256)
        dropped = np.mean(mask == 0)
        # Binomial standard deviation over 16384 draws is at most 0.004.
        assert abs(dropped - rate) < 0.02
        np.testing.assert_allclose(np.unique(mask), [0.0, 1.0 / (1.0 - rate)], rtol=1e-6)
        # The 1/(1-p) scaling preserves the mean of the kernel's entries.
        assert abs(mask.mean() - 1.0) < 0.05


@pytest.mark.parametrize("rate", [0.05, 0.3, 0.5, 0.9])
def test_drawn_masks_are_independent_bernoulli_entries(rate):
    """`draw_weight_mask` over many draws of an odd-sized kernel: every entry dropped
    with probability `rate` (in the whole mask and in each half), independently of
    the others, new draws differ, the same seed repeats them."""
    from awd_lstm.layers.weight_drop import draw_weight_mask

    shape = (33, 65)
    generator = keras.random.SeedGenerator(7)
    masks = np.stack(
        [to_numpy(draw_weight_mask(shape, rate, generator, "float32")) for _ in range(30)]
    )
    kept = (masks != 0).reshape(30, -1).astype(np.float64)
    half = kept.shape[1] // 2
    # 30 x 2145 entries: the standard deviation of a fraction is at most 0.0023.
    for part in (kept, kept[:, :half], kept[:, half:]):
        assert abs(1.0 - part.mean() - rate) < 0.015
    np.testing.assert_allclose(masks[masks != 0], 1.0 / (1.0 - rate), rtol=1e-6)
    # Entries at any distance up to half the mask are uncorrelated (JAX and PyTorch
    # make 2 or 3 entries from one random word, a half or a third of the mask apart).
    centered = kept - kept.mean()
    size, variance = kept.shape[1], centered.var()
    correlations = [
        np.mean(centered[:, : size - lag] * centered[:, lag:]) / variance
        for lag in range(1, size // 2 + 2)
    ]
    assert max(abs(c) for c in correlations) < 0.06
    assert not np.array_equal(masks[0], masks[1])
    again = keras.random.SeedGenerator(7)
    np.testing.assert_array_equal(
        to_numpy(draw_weight_mask(shape, rate, again, "float32")), masks[0]
    )


def test_same_seed_same_masks(rng):
    x = _inputs(rng)
    a = WeightDropLSTM(5, weight_dropout=0.5, return_sequences=True, seed=42)
    b = WeightDropLSTM(5, weight_dropout=0.5, return_sequences=True, seed=42)
    a.build(x.shape)
    b.build(x.shape)
    b.set_weights(a.get_weights())
    for _ in range(2):
        np.testing.assert_array_equal(to_numpy(a(x, training=True)), to_numpy(b(x, training=True)))


def test_manual_mode_fixed_until_resampled(rng):
    x = _inputs(rng)
    layer = WeightDropLSTM(
        5, weight_dropout=0.5, weight_dropout_mode="manual", return_sequences=True, seed=9
    )
    first = to_numpy(layer(x, training=True))
    mask_before = to_numpy(layer.cell.recurrent_kernel_mask)
    np.testing.assert_array_equal(to_numpy(layer(x, training=True)), first)
    layer.resample_weight_masks()
    mask_after = to_numpy(layer.cell.recurrent_kernel_mask)
    assert not np.array_equal(mask_before, mask_after)
    resampled = to_numpy(layer(x, training=True))
    assert np.abs(resampled[:, 1:] - first[:, 1:]).max() > 1e-3
    np.testing.assert_array_equal(to_numpy(layer(x, training=True)), resampled)
    # Inference ignores the mask.
    kernel, recurrent, bias = _weights(layer)
    want, _, _ = numpy_lstm(x, kernel, recurrent, bias)
    np.testing.assert_allclose(to_numpy(layer(x, training=False)), want, atol=1e-5)


def test_manual_mask_variables_are_non_trainable_weights(rng):
    layer = WeightDropLSTM(
        5, weight_dropout=0.5, input_weight_dropout=0.2, weight_dropout_mode="manual", seed=9
    )
    layer.build((None, 6, 4))
    names = sorted(v.name for v in layer.non_trainable_weights)
    assert names == ["kernel_mask", "recurrent_kernel_mask"]
    assert sorted(v.name for v in layer.trainable_weights) == ["bias", "kernel", "recurrent_kernel"]


def test_resample_needs_manual_mode():
    with pytest.raises(ValueError, match="weight_dropout_mode='manual'"):
        WeightDropLSTM(5, weight_dropout=0.5).resample_weight_masks()


# -- golden values against torch.nn.LSTM -----------------------------------------


@pytest.mark.parametrize("units,features", [(5, 4), (16, 9)])
def test_outputs_and_gradients_equal_torch_lstm(rng, units, features):
    x = _inputs(rng, batch=3, steps=5, features=features)
    upstream = rng.standard_normal((3, 5, units)).astype("float32")
    layer = WeightDropLSTM(
        units, weight_dropout=0.5, weight_dropout_mode="manual", return_sequences=True, seed=4
    )
    layer.build(x.shape)
    layer.cell.bias.assign(rng.uniform(-0.5, 0.5, size=4 * units).astype("float32"))
    mask = to_numpy(layer.cell.recurrent_kernel_mask)
    assert 0 < np.mean(mask == 0) < 1
    out, grads = layer_grads(layer, x, upstream, training=True)
    kernel, recurrent, bias = _weights(layer)
    want_out, want_grads = torch_lstm_outputs_and_grads(x, kernel, recurrent, bias, mask, upstream)
    np.testing.assert_allclose(out, want_out, atol=1e-5)
    for name in ("inputs", "kernel", "recurrent_kernel", "bias"):
        np.testing.assert_allclose(grads[name], want_grads[name], atol=1e-5, err_msg=name)
    # Dropped recurrent weights get no gradient.
    assert np.all(grads["recurrent_kernel"][mask == 0] == 0)


@pytest.mark.parametrize("go_backwards", [False, True])
@pytest.mark.parametrize("steps", [1, 7])
def test_gradients_through_states_equal_torch_lstm(rng, go_backwards, steps, monkeypatch):
    """Every gradient of a training call (inputs, initial state, W, U, b), with
    upstream gradients on the outputs and on the final state, against torch.nn.LSTM
    in float64. On TensorFlow and JAX this is the hand-written gradient of
    `awd_lstm.backend.recurrence_with_gradient` (checked to be the one that runs); on JAX with the
    recurrent product in uneven column blocks (7 columns at most here: 24 columns in
    4 blocks), which the other golden tests run whole."""
    if BACKEND == "jax":
        import awd_lstm.backend.jax

        monkeypatch.setattr(awd_lstm.backend.jax, "RECURRENT_COLUMNS", 7)
    units, features, batch = 6, 4, 3
    x = _inputs(rng, batch=batch, steps=steps, features=features)
    h0, c0 = (rng.standard_normal((batch, units)).astype("float32") for _ in range(2))
    upstreams = [
        rng.standard_normal(shape).astype("float32")
        for shape in ((batch, steps, units), (batch, units), (batch, units))
    ]
    layer = WeightDropLSTM(
        units, return_sequences=True, return_state=True, go_backwards=go_backwards, seed=2
    )
    layer.build(x.shape)
    layer.cell.bias.assign(rng.uniform(-0.5, 0.5, size=4 * units).astype("float32"))
    results, grads = layer_state_grads(layer, x, h0, c0, upstreams)
    assert layer.last_call_implementation == ("fused" if _fused_available() else "projected")
    kernel, recurrent, bias = _weights(layer)
    want, want_grads = torch_lstm_state_grads(
        x, h0, c0, kernel, recurrent, bias, upstreams, reverse=go_backwards
    )
    for got, expected in zip(results, want):
        np.testing.assert_allclose(got, expected, atol=1e-5)
    for name in ("inputs", "h0", "c0", "kernel", "recurrent_kernel", "bias"):
        np.testing.assert_allclose(grads[name], want_grads[name], atol=2e-5, err_msg=name)


def test_hand_written_gradient_runs_where_no_fused_kernel(rng, monkeypatch):
    """TensorFlow and JAX without cuDNN train through the recurrence with the
    hand-written gradient; inference and non-standard activations do not."""
    from awd_lstm import backend

    available = backend.recurrence_with_gradient()
    assert (available is not None) == (BACKEND in ("tensorflow", "jax"))
    if available is None or _fused_available():
        pytest.skip("the backend runs a fused kernel")
    calls = []

    def counted(*args):
        calls.append(1)
        return available(*args)

    monkeypatch.setattr(backend, "recurrence_with_gradient", lambda: counted)
    x = _inputs(rng)
    layer = WeightDropLSTM(5, weight_dropout=0.5, return_sequences=True, seed=1)
    layer(x, training=True)
    assert len(calls) == 1
    layer(x, training=False)
    other = WeightDropLSTM(5, activation="relu", return_sequences=True, seed=1)
    other(x, training=True)
    assert len(calls) == 1
    assert other.last_call_implementation == "projected"


@pytest.mark.parametrize("length", [7, 10])
def test_padded_sequences_equal_torch_lstm_on_their_first_steps(rng, length, monkeypatch):
    """JAX (`length`): inputs padded to 15 steps (chunks of 5; 7 leaves padded steps in
    the last chunk it runs, 10 none) give torch.nn.LSTM's outputs and final state on
    the first `length` steps, zero outputs after them, and every gradient of the
    unpadded sequence (zero for the padded inputs) whatever the padded inputs and the
    upstream gradients on the padded outputs hold."""
    if BACKEND != "jax" or _fused_available():
        pytest.skip("padded sequences are JAX's without cuDNN")
    import awd_lstm.backend.jax

    monkeypatch.setattr(awd_lstm.backend.jax, "RECURRENT_COLUMNS", 7)
    units, features, batch, capacity = 6, 4, 3, 15
    x = _inputs(rng, batch=batch, steps=capacity, features=features)
    h0, c0 = (rng.standard_normal((batch, units)).astype("float32") for _ in range(2))
    upstreams = [
        rng.standard_normal(shape).astype("float32")
        for shape in ((batch, capacity, units), (batch, units), (batch, units))
    ]
    layer = WeightDropLSTM(units, return_sequences=True, return_state=True, seed=2)
    layer.build(x.shape)
    assert layer.pads_segments()
    layer.cell.bias.assign(rng.uniform(-0.5, 0.5, size=4 * units).astype("float32"))
    results, grads = layer_state_grads(
        layer, x, h0, c0, upstreams, length=np.asarray(length, "int32")
    )
    assert layer.last_call_implementation == "padded"
    kernel, recurrent, bias = _weights(layer)
    unpadded = [upstreams[0][:, :length], *upstreams[1:]]
    want, want_grads = torch_lstm_state_grads(
        x[:, :length], h0, c0, kernel, recurrent, bias, unpadded
    )
    outputs, h, c = results
    np.testing.assert_allclose(outputs[:, :length], want[0], atol=1e-5)
    np.testing.assert_array_equal(outputs[:, length:], 0.0)
    np.testing.assert_allclose(h, want[1], atol=1e-5)
    np.testing.assert_allclose(c, want[2], atol=1e-5)
    np.testing.assert_allclose(grads["inputs"][:, :length], want_grads["inputs"], atol=2e-5)
    np.testing.assert_array_equal(grads["inputs"][:, length:], 0.0)
    for name in ("h0", "c0", "kernel", "recurrent_kernel", "bias"):
        np.testing.assert_allclose(grads[name], want_grads[name], atol=2e-5, err_msg=name)


def test_length_needs_a_layer_that_pads(rng):
    """`length` where padded sequences cannot run (other backends, a GPU's cuDNN, a
    non-standard layer) is refused, not ignored."""
    x = _inputs(rng, steps=10)
    layer = WeightDropLSTM(5, return_sequences=True, seed=1)
    other = WeightDropLSTM(5, activation="relu", return_sequences=True, seed=1)
    assert not other.pads_segments()
    with pytest.raises(ValueError, match="length"):
        other(x, training=True, length=np.asarray(4, "int32"))
    if BACKEND != "jax" or _fused_available():
        assert not layer.pads_segments()
        with pytest.raises(ValueError, match="length"):
            layer(x, training=True, length=np.asarray(4, "int32"))


# -- which implementation runs ---------------------------------------------------


def _fused_available():
    if BACKEND == "torch":
        return True  # Keras' torch LSTM has a fused CPU implementation too.
    if BACKEND == "tensorflow":
        import tensorflow as tf

        return bool(tf.config.list_physical_devices("GPU"))
    if BACKEND == "jax":
        import jax

        return jax.default_backend() == "gpu"
    return False


def test_fused_path_taken_whenever_backend_offers_it(rng):
    layer = WeightDropLSTM(5, weight_dropout=0.5, return_sequences=True, seed=1)
    layer(_inputs(rng), training=True)
    assert layer.last_call_implementation == ("fused" if _fused_available() else "projected")
    # Options neither the fused kernel nor the projected loop take fall back to the
    # step loop.
    slow = WeightDropLSTM(5, weight_dropout=0.5, recurrent_dropout=0.2, seed=1)
    slow(_inputs(rng), training=True)
    assert slow.last_call_implementation == "step"


def test_dropped_kernel_reaches_fused_kernel(rng, recorded_masks, monkeypatch):
    """The fused backend LSTM receives U*M/(1-p), and when it runs its result is
    the layer's output; when it declines, the projected loop gives the same numbers,
    and so does the step loop."""
    calls = []

    def fake_fused_lstm(inputs, h, c, mask, kernel, recurrent_kernel, bias, *args, **kwargs):
        calls.append((to_numpy(kernel), to_numpy(recurrent_kernel)))
        outputs, h_last, c_last = numpy_lstm(
            to_numpy(inputs), calls[-1][0], calls[-1][1], to_numpy(bias)
        )
        as_tensor = keras.ops.convert_to_tensor
        return (
            as_tensor(h_last.astype("float32")),
            as_tensor(outputs.astype("float32")),
            [as_tensor(h_last.astype("float32")), as_tensor(c_last.astype("float32"))],
        )

    def declining_lstm(*args, **kwargs):
        raise NotImplementedError

    x = _inputs(rng)
    results = {}
    weights = None
    # On PyTorch the layer calls torch's kernel itself; here the backend function is
    # the one under test.
    from awd_lstm import backend

    monkeypatch.setattr(backend, "native_lstm", lambda *args: None)
    for name, fn in (("fused", fake_fused_lstm), ("projected", declining_lstm), ("step", None)):
        monkeypatch.setattr(keras.src.backend, "lstm", fn or declining_lstm)
        if name == "step":
            monkeypatch.setattr(WeightDropLSTM, "_can_hoist", lambda self, mask: False)
        layer = WeightDropLSTM(5, weight_dropout=0.5, return_sequences=True, seed=8)
        layer.build(x.shape)
        weights = weights or layer.get_weights()
        layer.set_weights(weights)
        results[name] = to_numpy(layer(x, training=True))
        assert layer.last_call_implementation == name
    assert len(calls) == 1
    kernel, recurrent = calls[0]
    np.testing.assert_allclose(kernel, weights[0], atol=1e-6)
    np.testing.assert_allclose(recurrent, weights[1] * recorded_masks[0], atol=1e-6)
    np.testing.assert_array_equal(recorded_masks[0], recorded_masks[1])  # same seed
    np.testing.assert_array_equal(recorded_masks[0], recorded_masks[2])
    np.testing.assert_allclose(results["fused"], results["projected"], atol=1e-5)
    np.testing.assert_allclose(results["fused"], results["step"], atol=1e-5)


# -- the cell ----------------------------------------------------------------------


def test_cell_in_rnn_matches_layer(rng):
    x = _inputs(rng)
    layer = WeightDropLSTM(5, weight_dropout=0.5, return_sequences=True, seed=21)
    rnn = keras.layers.RNN(
        WeightDropLSTMCell(5, weight_dropout=0.5, seed=21), return_sequences=True
    )
    layer.build(x.shape)
    rnn.build(x.shape)
    rnn.set_weights(layer.get_weights())
    for training in (False, True, True):
        np.testing.assert_allclose(
            to_numpy(rnn(x, training=training)),
            to_numpy(layer(x, training=training)),
            atol=1e-6,
        )


def test_cell_call_mode_caches_until_reset(rng, recorded_masks):
    cell = WeightDropLSTMCell(5, weight_dropout=0.5, seed=3)
    x = _inputs(rng)
    state = [np.zeros((3, 5), "float32")] * 2
    cell.build(x[:, 0].shape)
    for t in range(3):
        _, state = cell(x[:, t], state, training=True)
    assert len(recorded_masks) == 1
    cell.reset_weight_masks()
    cell(x[:, 0], state, training=True)
    assert len(recorded_masks) == 2


def _python_loop(cell, x, training=True):
    state = [np.zeros((x.shape[0], cell.units), "float32")] * 2
    outputs = []
    for t in range(x.shape[1]):
        out, state = cell(x[:, t], state, training=training)
        outputs.append(to_numpy(out))
    return np.stack(outputs, axis=1)


@pytest.mark.parametrize("loop", ["rnn", "python"])
def test_cell_step_mode_fresh_mask_every_step(rng, recorded_masks, loop):
    """In keras.layers.RNN (on JAX inside lax.scan) and in a Python loop."""
    x = _inputs(rng, steps=5)
    cell = WeightDropLSTMCell(5, weight_dropout=0.5, weight_dropout_mode="step", seed=3)
    if loop == "python":
        out = _python_loop(cell, x)
    else:
        out = to_numpy(keras.layers.RNN(cell, return_sequences=True)(x, training=True))
    if BACKEND == "jax":
        import jax

        jax.effects_barrier()  # the masks recorded inside lax.scan, all delivered
    # TensorFlow and PyTorch run one discarded probe step before the loop.
    assert len(recorded_masks) in (5, 6)
    recorded_masks[:] = recorded_masks[-5:]
    for a, b in zip(recorded_masks, recorded_masks[1:]):
        assert not np.array_equal(a, b)
    # Replay the recorded masks step by step in NumPy.
    kernel, recurrent, bias = (
        to_numpy(v).astype(np.float64) for v in (cell.kernel, cell.recurrent_kernel, cell.bias)
    )
    h = c = np.zeros((3, 5))
    for t, mask in enumerate(recorded_masks):
        _, h, c = numpy_lstm(x[:, t : t + 1], kernel, recurrent * mask, bias, h, c)
        np.testing.assert_allclose(out[:, t], h, atol=1e-5)


def _step_mode_model(steps=6, features=4, seed=3):
    init = keras.initializers.GlorotUniform(seed=0)
    cell = WeightDropLSTMCell(
        5,
        weight_dropout=0.5,
        input_weight_dropout=0.3,
        weight_dropout_mode="step",
        seed=seed,
        kernel_initializer=init,
        recurrent_initializer=init,
    )
    return keras.Sequential(
        [
            keras.Input((steps, features)),
            keras.layers.RNN(cell, return_sequences=True),
            keras.layers.Dense(1, kernel_initializer=init),
        ]
    )


def test_cell_step_mode_in_fit(rng):
    """Step mode inside the compiled training step (jit on JAX, tf.function on
    TensorFlow): it trains, and predictions use the full weights."""
    x = _inputs(rng, batch=8)
    y = rng.standard_normal((8, 6, 1)).astype("float32")
    model = _step_mode_model()
    model.compile(keras.optimizers.Adam(0.05), "mse")
    history = model.fit(x, y, epochs=10, batch_size=8, verbose=0)
    assert history.history["loss"][-1] < history.history["loss"][0]
    np.testing.assert_array_equal(model.predict(x, verbose=0), model.predict(x, verbose=0))


@pytest.mark.skipif(BACKEND != "jax", reason="jax.jit and jaxprs are JAX's")
def test_jax_step_mode_under_jit_is_reproducible_and_bounded(rng):
    """Step mode under jax.jit (a stateless call): the same seed state gives the
    same masks, the next seed state others, and no array of the loop is as large as
    one mask per time step (masks are drawn inside the loop, step by step)."""
    import jax

    steps = 12
    x = _inputs(rng, steps=steps)
    model = _step_mode_model(steps=steps)

    def forward(trainable, non_trainable, x):
        return model.stateless_call(trainable, non_trainable, x, training=True)

    trainable = [v.value for v in model.trainable_variables]
    non_trainable = [v.value for v in model.non_trainable_variables]
    first, next_state = jax.jit(forward)(trainable, non_trainable, x)
    again, _ = jax.jit(forward)(trainable, non_trainable, x)
    other, _ = jax.jit(forward)(trainable, next_state, x)
    np.testing.assert_array_equal(np.asarray(first), np.asarray(again))
    assert np.abs(np.asarray(other) - np.asarray(first)).max() > 1e-4
    full = np.asarray(model.stateless_call(trainable, non_trainable, x)[0])
    assert np.abs(np.asarray(first) - full).max() > 1e-4

    def sizes(jaxpr):
        for eqn in jaxpr.eqns:
            for var in eqn.outvars:
                yield int(np.prod(var.aval.shape))
            for param in eqn.params.values():
                inner = getattr(param, "jaxpr", param)
                if hasattr(inner, "eqns"):
                    yield from sizes(inner)

    def loss(trainable):
        return jax.numpy.sum(forward(trainable, non_trainable, x)[0])

    # Forward and backward (where autodiff would keep each step's masked kernels for
    # the backward pass, were they not drawn again inside jax.checkpoint).
    for traced in (forward, jax.grad(loss)):
        args = (trainable, non_trainable, x) if traced is forward else (trainable,)
        largest = max(sizes(jax.make_jaxpr(traced)(*args).jaxpr))
        smallest_kernel = 4 * 20  # the input kernel's (the recurrent one is 5 x 20)
        assert largest < steps * smallest_kernel


@pytest.mark.skipif(BACKEND != "jax", reason="a trace of the user's own is JAX's")
def test_jax_step_mode_in_a_loop_of_ones_own_needs_the_sequence_seed(rng):
    import jax

    cell = WeightDropLSTMCell(5, weight_dropout=0.5, weight_dropout_mode="step", seed=3)
    x = _inputs(rng, steps=4)
    cell.build(x.shape[::2])

    def loop(x):
        def body(state, x_t):
            h, state = cell(x_t, state, training=True)
            return state, h

        zeros = jax.numpy.zeros((3, 5))
        return jax.lax.scan(body, [zeros, zeros], jax.numpy.swapaxes(x, 0, 1))[1]

    with pytest.raises(ValueError, match=r"call cell.prepare_sequence\(training=True\) before"):
        loop(x)
    # With the sequence's seed drawn first, one's own scan computes what
    # keras.layers.RNN does from the same seed-generator state.
    seed_state = to_numpy(cell.seed_generator.state)
    cell.prepare_sequence(training=True)
    outputs = np.swapaxes(np.asarray(loop(x)), 0, 1)
    cell.reset_weight_masks()
    cell.seed_generator.state.assign(seed_state)
    rnn = to_numpy(keras.layers.RNN(cell, return_sequences=True)(x, training=True))
    np.testing.assert_allclose(outputs, rnn, atol=1e-6)
    full = to_numpy(keras.layers.RNN(cell, return_sequences=True)(x, training=False))
    assert np.abs(rnn - full).max() > 1e-3


def test_cell_manual_mode_in_fit(rng):
    x = _inputs(rng, batch=8)
    y = rng.standard_normal((8, 6, 1)).astype("float32")
    cell = WeightDropLSTMCell(5, weight_dropout=0.5, weight_dropout_mode="manual", seed=3)
    model = keras.Sequential(
        [keras.Input((6, 4)), keras.layers.RNN(cell, return_sequences=True), keras.layers.Dense(1)]
    )
    model.compile(keras.optimizers.Adam(0.05), "mse")
    mask = to_numpy(cell.recurrent_kernel_mask)
    history = model.fit(x, y, epochs=10, batch_size=8, verbose=0)
    assert history.history["loss"][-1] < history.history["loss"][0]
    np.testing.assert_array_equal(to_numpy(cell.recurrent_kernel_mask), mask)


# -- bad arguments ---------------------------------------------------------------


@pytest.mark.parametrize("cls", [WeightDropLSTM, WeightDropLSTMCell])
@pytest.mark.parametrize("name", ["weight_dropout", "input_weight_dropout"])
@pytest.mark.parametrize("value", [1.0, 1.5, -0.1, float("nan"), "0.5", True])
def test_rejects_bad_rates(cls, name, value):
    with pytest.raises(
        ValueError,
        match=rf"`{name}` must be a number in \[0, 1\); "
        rf"Received: {name}=",
    ):
        cls(4, **{name: value})


def test_rejects_unknown_mode():
    with pytest.raises(ValueError, match="weight_dropout_mode.*Received: weight_dropout_mode='x'"):
        WeightDropLSTMCell(4, weight_dropout_mode="x")


def test_layer_rejects_step_mode():
    with pytest.raises(ValueError, match="weight_dropout_mode='step'"):
        WeightDropLSTM(4, weight_dropout_mode="step")


def test_rejects_wrong_input_rank():
    with pytest.raises(ValueError, match="expected ndim=3, found ndim=2"):
        WeightDropLSTM(4, weight_dropout=0.5)(np.ones((2, 3), "float32"))


def test_the_layer_is_built_around_its_own_cell():
    """The layer is made as Keras makes its LSTM: around one cell, the weight-dropped
    one, configured by the LSTM arguments (no second, plain cell holds weights)."""
    layer = WeightDropLSTM(
        4,
        weight_dropout=0.3,
        recurrent_activation="hard_sigmoid",
        dropout=0.1,
        unit_forget_bias=False,
        return_sequences=True,
        seed=3,
    )
    assert isinstance(layer.cell, WeightDropLSTMCell) and layer.cell.weight_dropout == 0.3
    assert layer.cell.dropout == 0.1 and not layer.cell.unit_forget_bias
    assert layer.return_sequences and layer.use_cudnn == "auto"
    layer.build((None, 5, 3))
    cell_weights = {id(w) for w in layer.cell.trainable_weights}
    assert len(layer.trainable_weights) == 3
    assert {id(w) for w in layer.trainable_weights} == cell_weights
    clone = WeightDropLSTM.from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()
    with pytest.raises(ValueError, match="use_cudnn"):
        WeightDropLSTM(4, use_cudnn="yes")
