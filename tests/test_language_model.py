"""AWDLSTMLanguageModel and its encoder backbone."""

import keras
import numpy as np
import pytest

from awd_lstm.models import AWDLSTMEncoder, AWDLSTMLanguageModel
from tests.conftest import to_numpy
from tests.reference import numpy_lstm

VOCAB = 23
NO_DROPOUT = dict(
    embedding_dropout=0.0,
    input_dropout=0.0,
    hidden_dropout=0.0,
    output_dropout=0.0,
    weight_dropout=0.0,
)


def _tiny(**kwargs):
    args = dict(embedding_size=6, hidden_size=10, num_layers=3, seed=0)
    args.update(kwargs)
    return AWDLSTMLanguageModel(VOCAB, **args)


def _numpy_forward(model, ids, states=None):
    """Embedding, LSTM stack, tied decoder, in float64 NumPy with the model's weights."""
    x = to_numpy(model.encoder.embedding.embeddings).astype(np.float64)[ids]
    new_states = []
    for layer, lstm in enumerate(model.encoder.lstms):
        kernel, recurrent, bias = (to_numpy(v).astype(np.float64) for v in lstm.cell.weights[:3])
        h0, c0 = (None, None) if states is None else states[layer]
        x, h, c = numpy_lstm(x, kernel, recurrent, bias, h0, c0)
        new_states.append((h, c))
    table = to_numpy(model.encoder.embedding.embeddings).astype(np.float64)
    logits = x @ table.T + to_numpy(model.decoder_bias)
    return logits, new_states


def _cross_entropy(logits, targets):
    logits = logits - logits.max(-1, keepdims=True)
    log_probs = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    return -np.take_along_axis(log_probs, targets[..., None], -1).mean()


def _random_bias(model, rng, ids):
    """Builds the model on `ids` and gives its decoder bias random values (it starts
    at zero, where a bias left out would go unseen)."""
    model(ids)
    model.decoder_bias.assign(rng.normal(size=VOCAB).astype("float32"))


def test_logits_shape_and_tied_decoder(rng):
    model = _tiny()
    ids = rng.integers(0, VOCAB, (2, 5))
    assert tuple(model(ids).shape) == (2, 5, VOCAB)
    assert model.encoder.layer_units == [10, 10, 6]
    names = sorted(w.path.split("/")[-1] for w in model.trainable_weights)
    assert names.count("embeddings") == 1 and "decoder_bias" in names
    assert not any("decoder/" in w.path for w in model.trainable_weights)
    untied = _tiny(tie_weights=False)
    untied(ids)
    assert untied.encoder.layer_units == [10, 10, 10]
    assert any(w.path.endswith("decoder/kernel") for w in untied.trainable_weights)


def test_initialization_follows_the_reference(rng):
    model = _tiny(hidden_size=64)
    model(rng.integers(0, VOCAB, (1, 2)))
    table = to_numpy(model.encoder.embedding.embeddings)
    assert table.min() >= -0.1 and table.max() <= 0.1 and table.std() > 0.04
    kernel = to_numpy(model.encoder.lstms[0].cell.recurrent_kernel)
    assert np.abs(kernel).max() <= 1 / 8 + 1e-7  # U(-1/sqrt(64), 1/sqrt(64))
    np.testing.assert_array_equal(to_numpy(model.decoder_bias), 0.0)


def test_evaluation_loss_equals_hand_computation(rng):
    model = _tiny(**NO_DROPOUT, alpha=0.0, beta=0.0)
    model.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    ids = rng.integers(0, VOCAB, (4, 9))
    targets = rng.integers(0, VOCAB, (4, 9))
    _random_bias(model, rng, ids)
    loss = model.evaluate(ids, targets, batch_size=4, verbose=0)
    logits, _ = _numpy_forward(model, ids)
    assert loss == pytest.approx(_cross_entropy(logits, targets), abs=1e-5)
    np.testing.assert_allclose(to_numpy(model(ids)), logits, atol=1e-5)


def test_per_token_losses_equal_hand_computation(rng):
    """`score(ids, targets)` is each token's cross-entropy (the loss training
    minimizes): `-log softmax(logits)[target]` of the NumPy forward; compiled
    (`score_on_batch`) it is the same."""
    model = _tiny(**NO_DROPOUT, alpha=0.0, beta=0.0)
    ids = rng.integers(0, VOCAB, (3, 7))
    targets = rng.integers(0, VOCAB, (3, 7))
    _random_bias(model, rng, ids)
    losses = to_numpy(model.score(ids, targets))
    logits, _ = _numpy_forward(model, ids)
    assert losses.shape == (3, 7)
    np.testing.assert_allclose(model.score_on_batch(ids, targets), losses, atol=1e-5)
    for row in range(3):
        for step in range(7):
            want = _cross_entropy(logits[row, step], targets[row, step])
            assert losses[row, step] == pytest.approx(want, abs=1e-5)


def test_one_input_form_and_keras_steps_on_per_token_losses(rng):
    """`call` takes the ids alone (a tuple is refused, naming `score`); compiled with
    `compile_defaults`, Keras' own `evaluate` on `(ids, targets)` gives the mean of
    `score`, through the model's steps."""
    model = _tiny(**NO_DROPOUT, alpha=0.0, beta=0.0)
    ids = rng.integers(0, VOCAB, (4, 5))
    targets = rng.integers(0, VOCAB, (4, 5))
    with pytest.raises(TypeError, match=r"score\(ids, targets\)"):
        model((ids, targets))
    want = float(np.mean(to_numpy(model.score(ids, targets))))
    model.compile(optimizer="sgd", **model.compile_defaults())
    got = model.evaluate(ids, targets, batch_size=4, verbose=0, return_dict=True)
    assert got["ce"] == pytest.approx(want, rel=1e-5)
    assert got["loss"] == pytest.approx(want, rel=1e-5)


def test_a_plain_logits_loss_takes_the_fast_route_with_the_same_numbers(rng):
    """Compiled with Keras' `SparseCategoricalCrossentropy(from_logits=True)`, the model
    computes it as `LogitsCrossEntropy` (the same loss; metrics still see the logits);
    a loss with other settings is kept as given."""
    from awd_lstm.models.language_model import LogitsCrossEntropy

    model = _tiny(**NO_DROPOUT, alpha=0.0, beta=0.0)
    ids = rng.integers(0, VOCAB, (4, 5))
    targets = rng.integers(0, VOCAB, (4, 5))
    logits = to_numpy(model(ids)).astype(np.float64)
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    model.compile(optimizer="sgd", loss=loss, metrics=["accuracy"])
    assert isinstance(model.loss, LogitsCrossEntropy)
    got = model.evaluate(ids, targets, batch_size=4, verbose=0, return_dict=True)
    want = np.mean(
        [_cross_entropy(logits[b, t], targets[b, t]) for b in range(4) for t in range(5)]
    )
    assert got["loss"] == pytest.approx(want, rel=1e-5)
    assert got["accuracy"] == pytest.approx(np.mean(logits.argmax(-1) == targets))
    kept = keras.losses.SparseCategoricalCrossentropy(from_logits=True, ignore_class=0)
    model.compile(optimizer="sgd", loss=kept)
    assert model.loss is kept


def test_stateful_model_carries_state_without_gradient(rng):
    model = _tiny(**NO_DROPOUT, stateful=True, batch_size=3)
    ids = rng.integers(0, VOCAB, (3, 8))
    first_half, second_half = ids[:, :4], ids[:, 4:]
    model(first_half)
    carried = to_numpy(model(second_half))
    _, states = _numpy_forward(model, first_half)
    want, _ = _numpy_forward(model, second_half, states)
    np.testing.assert_allclose(carried, want, atol=1e-5)
    model.reset_state()
    fresh, _ = _numpy_forward(model, second_half)
    np.testing.assert_allclose(to_numpy(model(second_half)), fresh, atol=1e-5)
    assert all(not v.trainable for pair in model.state_variables for v in pair)


LIGHT_DROPOUT = dict(
    embedding_dropout=0.05,
    input_dropout=0.1,
    hidden_dropout=0.1,
    output_dropout=0.1,
    weight_dropout=0.1,
)


def test_stateful_model_trains_across_segments(rng):
    model = _tiny(stateful=True, batch_size=4, **LIGHT_DROPOUT)
    model.compile(
        keras.optimizers.Adam(0.01, global_clipnorm=0.25),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    stream = np.tile(np.arange(VOCAB), 8)[: 4 * 40].reshape(4, 40)  # a cycle: learnable
    losses = []
    for _ in range(40):
        model.reset_state()
        for start in range(0, 36, 9):
            x, y = stream[:, start : start + 9], stream[:, start + 1 : start + 10]
            losses.append(float(model.train_on_batch(x, y)))
    assert np.mean(losses[-4:]) < np.mean(losses[:4]) - 0.3


def test_stateful_model_rejects_other_batch_sizes(rng):
    model = _tiny(stateful=True, batch_size=3)
    with pytest.raises(ValueError, match=r"batch_size=3; Received: inputs with batch 5"):
        model(rng.integers(0, VOCAB, (5, 4)))
    with pytest.raises(ValueError, match="a stateful model needs `batch_size`"):
        _tiny(stateful=True)


def test_ar_and_tar_enter_the_losses_in_training(rng):
    model = _tiny(**NO_DROPOUT, alpha=2.0, beta=1.0)
    ids = rng.integers(0, VOCAB, (2, 6))
    model(ids, training=True)
    ar, tar = (float(to_numpy(loss)) for loss in model.losses)
    h = to_numpy(model.hidden_states(ids, training=True)["raw_outputs"][-1]).astype(np.float64)
    assert ar == pytest.approx(2.0 * np.mean(h**2), rel=1e-5)
    assert tar == pytest.approx(np.mean((h[:, 1:] - h[:, :-1]) ** 2), rel=1e-5)
    model.score(ids, ids, training=True)
    ar, tar = (float(to_numpy(loss)) for loss in model.losses)
    assert ar == pytest.approx(2.0 * np.mean(h**2), rel=1e-5)
    assert tar == pytest.approx(np.mean((h[:, 1:] - h[:, :-1]) ** 2), rel=1e-5)
    model(ids, training=False)
    assert model.losses == []


def test_hidden_outputs_of_every_layer(rng):
    model = _tiny(hidden_dropout=0.5, output_dropout=0.5)
    ids = rng.integers(0, VOCAB, (2, 6))
    hidden = model.hidden_states(ids, training=True)
    assert [tuple(o.shape) for o in hidden["raw_outputs"]] == [(2, 6, 10), (2, 6, 10), (2, 6, 6)]
    for raw, dropped in zip(hidden["raw_outputs"], hidden["dropped_outputs"]):
        raw, dropped = to_numpy(raw), to_numpy(dropped)
        kept = dropped != 0
        np.testing.assert_allclose(dropped[kept], 2.0 * raw[kept], rtol=1e-5)
        assert (~kept).any()


def test_fit_lowers_the_loss(rng):
    model = _tiny(**LIGHT_DROPOUT)
    model.compile(
        keras.optimizers.Adam(0.01, global_clipnorm=0.25),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    stream = np.tile(np.arange(VOCAB), 20)
    x = np.stack([stream[i : i + 10] for i in range(0, 300, 3)])
    y = np.stack([stream[i + 1 : i + 11] for i in range(0, 300, 3)])
    before = model.evaluate(x, y, verbose=0)
    model.fit(x, y, epochs=12, batch_size=10, verbose=0)
    assert model.evaluate(x, y, verbose=0) < before - 0.5


def test_config_round_trip_and_bad_sizes():
    model = _tiny(stateful=True, batch_size=2, alpha=1.5)
    clone = AWDLSTMLanguageModel.from_config(model.get_config())
    assert clone.get_config() == model.get_config()
    with pytest.raises(ValueError, match=r"`hidden_size` must be a positive integer"):
        AWDLSTMEncoder(10, hidden_size=0)
    with pytest.raises(ValueError, match=r"`weight_dropout` must be a number in \[0, 1\)"):
        _tiny(weight_dropout=1.0)


@pytest.mark.skipif(
    keras.backend.backend() != "tensorflow", reason="the model's own TensorFlow step functions"
)
def test_tensorflow_steps_equal_keras_own_and_bound_the_traces(rng, monkeypatch):
    """On TensorFlow under a strategy `train_on_batch` runs the model's own step
    functions (a trace per segment length, up to `EXACT_SHAPES`, then one
    shape-generic trace): the same losses and weights as Keras' own `train_on_batch`,
    which serves a model built on one device. By default every length shares the
    generic trace."""
    from awd_lstm.backend import tensorflow as tf_backend
    from awd_lstm.config import TrainingConfig
    from awd_lstm.training import build_model

    monkeypatch.setattr(tf_backend, "EXACT_SHAPES", 2)
    config = TrainingConfig(embedding_size=8, hidden_size=12, num_layers=2, lr=5.0, seed=2)
    ours, theirs = (build_model(config, 30, 3) for _ in range(2))
    assert not ours.own_tf_steps  # one device: Keras' own step
    ours.own_tf_steps = True  # as under a strategy (tests/test_distribute.py runs one)
    theirs.set_weights(ours.get_weights())
    for length in (5, 6, 5, 7, 8, 6):
        x = rng.integers(0, 30, size=(3, length)).astype("int32")
        y = rng.integers(0, 30, size=(3, length)).astype("int32")
        a = ours.train_on_batch(x, y, return_dict=True)
        b = keras.Model.train_on_batch(theirs, x, y, return_dict=True)
        assert a["ce"] == pytest.approx(b["ce"], rel=1e-5)
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5)
    for u, v in zip(ours.trainable_variables, theirs.trainable_variables):
        np.testing.assert_allclose(to_numpy(u), to_numpy(v), rtol=1e-5, atol=1e-6)
    steps = ours._tf_step_functions["train"]
    assert len(steps.shapes) == 2
    # (+1: the first call traces twice, as it creates the metrics' variables.)
    assert steps.exact.experimental_get_tracing_count() <= 2 + 1
    assert steps.generic.experimental_get_tracing_count() >= 1
    monkeypatch.undo()
    assert tf_backend.EXACT_SHAPES == 0
    model = build_model(config, 30, 3)
    model.own_tf_steps = True
    for length in (5, 6, 5, 7, 8, 6, 9, 10):
        x = rng.integers(0, 30, size=(3, length)).astype("int32")
        model.train_on_batch(x, x, return_dict=True)
    steps = model._tf_step_functions["train"]
    assert steps.exact.experimental_get_tracing_count() == 0
    # The first shape, the metrics' variables, then one trace for every other length.
    assert steps.generic.experimental_get_tracing_count() <= 3


@pytest.mark.skipif(keras.backend.backend() != "jax", reason="JAX's padded segments")
def test_jax_padded_segments_equal_keras_own_steps_and_compile_once(rng):
    """On JAX `train_on_batch` pads every segment to `segment_capacity` steps and trains
    with its length: the losses, metrics, weights and carried states of Keras' own
    unpadded `train_on_batch` (dropouts, AR and TAR on; lengths that fill the last
    chunk of 5 steps and lengths that do not), one compilation for every length up to
    the capacity, and one more when a longer segment grows it."""
    import jax

    from awd_lstm.config import TrainingConfig
    from awd_lstm.training import build_model

    config = TrainingConfig(embedding_size=8, hidden_size=12, num_layers=2, lr=5.0, bptt=5, seed=2)
    ours, theirs = (build_model(config, 30, 3) for _ in range(2))
    assert ours.segment_capacity == 25  # bptt + 20
    ours.segment_capacity = 15
    theirs.set_weights(ours.get_weights())
    compilations = []
    jax.monitoring.register_event_duration_secs_listener(
        lambda event, seconds, **_: (
            compilations.append(event) if event.endswith("backend_compile_duration") else None
        )
    )
    counts = []
    for length in (10, 7, 15, 17, 6):
        x = rng.integers(0, 30, size=(3, length)).astype("int32")
        y = rng.integers(0, 30, size=(3, length)).astype("int32")
        before = len(compilations)
        a = ours.train_on_batch(x, y, return_dict=True)
        counts.append(len(compilations) - before)
        b = keras.Model.train_on_batch(theirs, x, y, return_dict=True)
        assert a["ce"] == pytest.approx(b["ce"], rel=1e-5)
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5)
        assert ours.encoder.lstms[0].last_call_implementation == "padded"
    for u, v in zip(ours.variables, theirs.variables):
        np.testing.assert_allclose(to_numpy(u), to_numpy(v), rtol=1e-5, atol=1e-6)
    assert ours.segment_capacity == 20
    # The first step compiles; 17 grows the capacity to 20 (one more); no other length.
    assert counts[0] >= 1 and counts[3] >= 1
    assert counts[1:3] == [0, 0] and counts[4:] == [0]


def test_padded_segments_are_refused_where_they_cannot_run(rng):
    """A `length` input needs targets, the full softmax and layers that pad (JAX without
    cuDNN); elsewhere the call says so instead of computing something else."""
    ids = rng.integers(0, VOCAB, (2, 10)).astype("int32")
    inputs = {"ids": ids, "targets": ids, "length": np.full((2,), 4, "int32")}
    if keras.backend.backend() != "jax":
        with pytest.raises(ValueError, match="JAX"):
            _tiny()(inputs)
    with pytest.raises(ValueError, match="targets"):
        _tiny()({"ids": ids, "length": inputs["length"]})
    with pytest.raises(ValueError, match="full softmax"):
        _tiny(cutoffs=[10])(inputs)
