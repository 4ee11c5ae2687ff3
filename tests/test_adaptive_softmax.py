"""The tied adaptive softmax: exact distribution, static-shape training loss, and the
language model and pipeline built on it."""

import dataclasses

import keras
import numpy as np
import pytest

from awd_lstm.layers.adaptive_softmax import AdaptiveSoftmax, capacity_rows
from awd_lstm.models import AWDLSTMLanguageModel
from tests.backend_grad import layer_grads
from tests.conftest import to_numpy

VOCAB = 40
CUTOFFS = (10, 22, 31)


def _numpy_log_probs(hidden, table, bias, cluster_kernel, cluster_bias, cutoffs):
    """The definition, in float64: head softmax over the head words and one logit
    per cluster; a tail word adds its log-probability within its cluster."""
    h = hidden.astype(np.float64)

    def log_softmax(z):
        z = z - z.max(-1, keepdims=True)
        return z - np.log(np.exp(z).sum(-1, keepdims=True))

    edges = [0, *cutoffs, len(table)]
    head = log_softmax(
        np.concatenate(
            [h @ table[: cutoffs[0]].T + bias[: cutoffs[0]], h @ cluster_kernel + cluster_bias],
            -1,
        )
    )
    pieces = [head[..., : cutoffs[0]]]
    for i in range(1, len(edges) - 1):
        start, end = edges[i], edges[i + 1]
        within = log_softmax(h @ table[start:end].T + bias[start:end])
        pieces.append(head[..., cutoffs[0] + i - 1][..., None] + within)
    return np.concatenate(pieces, -1)


@pytest.fixture
def inputs(rng):
    hidden = rng.normal(size=(4, 25, 6)).astype("float32")
    table = rng.normal(scale=0.5, size=(VOCAB, 6)).astype("float32")
    bias = rng.normal(scale=0.1, size=VOCAB).astype("float32")
    # Frequency-like targets: mostly head words, some in every tail cluster.
    targets = np.minimum(rng.zipf(1.3, size=(4, 25)) - 1, VOCAB - 1).astype("int32")
    targets[0, :4] = [12, 25, 35, 39]
    return hidden, table, bias, targets


def test_log_probs_are_the_definition_and_sum_to_one(inputs):
    hidden, table, bias, _ = inputs
    layer = AdaptiveSoftmax(VOCAB, CUTOFFS)
    log_p = to_numpy(layer(hidden, table, bias))
    assert log_p.shape == (4, 25, VOCAB)
    expected = _numpy_log_probs(
        hidden, table, bias, to_numpy(layer.cluster_kernel), to_numpy(layer.cluster_bias), CUTOFFS
    )
    np.testing.assert_allclose(log_p, expected, atol=1e-5)
    np.testing.assert_allclose(np.exp(log_p.astype(np.float64)).sum(-1), 1.0, atol=1e-5)


@pytest.mark.parametrize("seed", range(4))
def test_any_cutoffs_give_a_distribution(seed):
    rng = np.random.default_rng(seed)
    vocab = int(rng.integers(3, 60))
    cutoffs = sorted(rng.choice(np.arange(1, vocab), size=rng.integers(1, min(4, vocab - 1) + 1)))
    layer = AdaptiveSoftmax(vocab, [int(c) for c in cutoffs])
    hidden = rng.normal(size=(5, 4)).astype("float32")
    table = rng.normal(size=(vocab, 4)).astype("float32")
    log_p = to_numpy(layer(hidden, table, np.zeros(vocab, "float32")))
    np.testing.assert_allclose(np.exp(log_p.astype(np.float64)).sum(-1), 1.0, atol=1e-5)


@pytest.mark.parametrize("budget", ["all positions", "reserved", "one step larger"])
def test_token_loss_equals_the_full_distribution(inputs, budget):
    hidden, table, bias, targets = inputs
    layer = AdaptiveSoftmax(
        VOCAB, CUTOFFS, tail_capacity=None if budget == "all positions" else [0, 0, 0]
    )
    if budget != "all positions":
        assert layer.reserve_capacity(targets)
        assert not layer.reserve_capacity(targets)  # already fits
        if budget == "one step larger":
            layer.tail_capacity = tuple(min(1.0, f + 1 / 64) for f in layer.tail_capacity)
        # The budgets leave rows out: the saving is real.
        assert all(capacity_rows(f, targets.size) < targets.size for f in layer.tail_capacity)
    full = to_numpy(layer(hidden, table, bias))
    expected = -np.take_along_axis(full, targets[..., None], -1)[..., 0]
    losses = to_numpy(layer(hidden, table, bias, targets=targets))
    np.testing.assert_allclose(losses, expected, rtol=1e-5, atol=1e-5)


def test_a_budget_too_small_gives_nan_not_a_wrong_loss(inputs):
    hidden, table, bias, targets = inputs
    targets = targets.copy()
    targets[1] = 35  # 25 positions in the third cluster, 8 rows at the smallest budget
    layer = AdaptiveSoftmax(VOCAB, CUTOFFS, tail_capacity=[0, 0, 0])
    assert np.isnan(to_numpy(layer(hidden, table, bias, targets=targets))).all()
    layer.reserve_capacity(targets)
    assert np.isfinite(to_numpy(layer(hidden, table, bias, targets=targets))).all()


def test_reserve_capacity_fits_every_batch():
    layer = AdaptiveSoftmax(100, [10, 50], tail_capacity=[0, 0])
    rng = np.random.default_rng(0)
    batches = [rng.integers(0, 100, size=(4, n)) for n in (5, 30, 70)]
    layer.reserve_capacity(batches)
    for batch in batches:
        counts = np.bincount(layer.clusters_of(batch).ravel(), minlength=3)[1:]
        rows = [capacity_rows(f, batch.size) for f in layer.tail_capacity]
        assert all(c <= r for c, r in zip(counts, rows))
        assert all(f * 64 == int(f * 64) for f in layer.tail_capacity)


class _Scored(keras.layers.Layer):
    """The adaptive softmax over its own table and bias: per-token losses, either by
    the row-budgeted path or read off the full distribution."""

    def __init__(self, table, bias, targets, budgeted):
        super().__init__()
        self.softmax = AdaptiveSoftmax(VOCAB, CUTOFFS, tail_capacity=[0, 0, 0])
        self.softmax.reserve_capacity(targets)
        self.targets = targets
        self.budgeted = budgeted
        self.table = self.add_weight(shape=table.shape, name="table")
        self.table.assign(table)
        self.out_bias = self.add_weight(shape=bias.shape, name="out_bias")
        self.out_bias.assign(bias)

    def build(self, shape):
        self.softmax.build(shape)
        self.softmax.cluster_kernel.assign(
            np.random.default_rng(5).normal(size=(shape[-1], len(CUTOFFS))).astype("float32")
        )

    def call(self, hidden, training=False):
        if self.budgeted:
            return self.softmax(hidden, self.table, self.out_bias, targets=self.targets)
        full = self.softmax(hidden, self.table, self.out_bias)
        picked = keras.ops.take_along_axis(full, keras.ops.expand_dims(self.targets, -1), -1)
        return -picked[..., 0]


def test_gradients_equal_those_of_the_full_distribution(inputs):
    hidden, table, bias, targets = inputs
    results = []
    for budgeted in (True, False):
        layer = _Scored(table, bias, targets, budgeted)
        layer.build(hidden.shape)
        results.append(layer_grads(layer, hidden, np.ones(targets.shape), training=True))
    (out_b, grads_b), (out_f, grads_f) = results
    np.testing.assert_allclose(to_numpy(out_b), to_numpy(out_f), rtol=1e-5, atol=1e-5)
    assert grads_b.keys() == grads_f.keys() and len(grads_b) == 5  # input, table, bias, C, c
    for name in grads_b:
        np.testing.assert_allclose(grads_b[name], grads_f[name], rtol=1e-4, atol=1e-5, err_msg=name)
        assert np.abs(grads_b[name]).max() > 0, name


@pytest.mark.parametrize(
    "kwargs,message",
    [
        (dict(cutoffs=[10, 5]), "strictly increasing"),
        (dict(cutoffs=[0, 5]), "strictly increasing"),
        (dict(cutoffs=[]), "non-empty"),
        (dict(cutoffs=[10, VOCAB]), "below the vocabulary size 40"),
        (dict(cutoffs=[10], tail_capacity=[0.5, 0.5]), "one fraction in \\[0, 1\\] per tail"),
        (dict(cutoffs=[10], tail_capacity=[1.5]), "one fraction"),
    ],
)
def test_bad_arguments_are_one_sentence(kwargs, message):
    with pytest.raises(ValueError, match=message):
        AdaptiveSoftmax(VOCAB, **kwargs)


def _model(**kwargs):
    args = dict(
        embedding_size=6,
        hidden_size=10,
        num_layers=2,
        cutoffs=CUTOFFS,
        seed=0,
        embedding_dropout=0.0,
        input_dropout=0.0,
        hidden_dropout=0.0,
        output_dropout=0.0,
        weight_dropout=0.0,
    )
    args.update(kwargs)
    return AWDLSTMLanguageModel(VOCAB, **args)


@pytest.mark.parametrize("tie_weights", [True, False])
def test_language_model_outputs_log_probs_or_token_losses(rng, tie_weights):
    model = _model(tie_weights=tie_weights)
    ids = rng.integers(0, VOCAB, size=(2, 9)).astype("int32")
    targets = rng.integers(0, VOCAB, size=(2, 9)).astype("int32")
    log_p = to_numpy(model(ids))
    np.testing.assert_allclose(np.exp(log_p.astype(np.float64)).sum(-1), 1.0, atol=1e-5)
    losses = to_numpy(model.score(ids, targets))
    expected = -np.take_along_axis(log_p, targets[..., None], -1)[..., 0]
    np.testing.assert_allclose(losses, expected, rtol=1e-5, atol=1e-5)
    # Same from its config (cut-offs and budgets included).
    clone = AWDLSTMLanguageModel.from_config(model.get_config())
    clone.build((2, 9))
    clone.set_weights(model.get_weights())
    assert clone.cutoffs == CUTOFFS
    np.testing.assert_allclose(to_numpy(clone(ids)), log_p, atol=1e-6)


def test_full_softmax_model_also_returns_token_losses(rng):
    model = _model(cutoffs=None)
    ids = rng.integers(0, VOCAB, size=(2, 5)).astype("int32")
    logits = to_numpy(model(ids)).astype(np.float64)
    log_p = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    losses = to_numpy(model.score(ids, ids))
    np.testing.assert_allclose(
        losses, -np.take_along_axis(log_p, ids[..., None], -1)[..., 0], atol=1e-5
    )


def test_training_lowers_the_loss_and_a_checkpoint_keeps_the_budgets(tmp_path):
    from awd_lstm.checkpoints import load_checkpoint, save_checkpoint
    from awd_lstm.recipe import build_model
    from tests.test_training import TINY

    config = dataclasses.replace(TINY, cutoffs=(4, 12), optimizer="adam", lr=1e-2)
    rng = np.random.default_rng(0)
    # A learnable stream: each word is followed by its successor.
    start = rng.integers(0, 20, size=(4, 1))
    ids = ((start + np.arange(11)[None]) % 20).astype("int32")
    model = build_model(config, 20, batch_size=4)
    losses = []
    for _ in range(30):
        model.reset_state()
        losses.append(float(model.train_on_batch(ids[:, :-1], ids[:, 1:], return_dict=True)["ce"]))
    assert losses[-1] < losses[0] - 0.3
    assert model.tail_capacity != (0.0, 0.0)
    save_checkpoint(model, {"epoch": 1}, str(tmp_path / "c.weights.h5"))
    fresh = build_model(config, 20, batch_size=4)
    assert load_checkpoint(fresh, str(tmp_path / "c.weights.h5")) == {"epoch": 1}
    assert fresh.tail_capacity == model.tail_capacity
