"""The mixture of softmaxes: its definition (and the tied softmax it contains), the
per-token losses, gradients, chunks, the latent dropout, saving and argument checks."""

import keras
import numpy as np
import pytest
from keras import ops

from awd_lstm.layers import MixtureOfSoftmaxes
from awd_lstm.layers.mixture_of_softmaxes import CHUNK_ELEMENTS, chunk_positions
from tests.conftest import to_numpy

VOCAB, COMPONENTS, WIDTH, HIDDEN, BATCH, TIME = 13, 3, 5, 7, 2, 4


@pytest.fixture
def inputs(rng):
    hidden = rng.normal(size=(BATCH, TIME, HIDDEN)).astype("float32")
    table = rng.normal(scale=0.5, size=(VOCAB, WIDTH)).astype("float32")
    bias = rng.normal(scale=0.1, size=VOCAB).astype("float32")
    targets = rng.integers(0, VOCAB, size=(BATCH, TIME)).astype("int32")
    return hidden, table, bias, targets


def _mos(num_components=COMPONENTS, **kwargs):
    layer = MixtureOfSoftmaxes(VOCAB, num_components, embedding_size=WIDTH, seed=0, **kwargs)
    layer.build((BATCH, TIME, HIDDEN))
    return layer


def _weights(layer):
    return [to_numpy(v).astype(np.float64) for v in layer.weights if v.trainable]


def _softmax(z, axis=-1):
    z = z - z.max(axis, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis, keepdims=True)


def _numpy_log_probs(hidden, table, bias, prior_kernel, latent_kernel, latent_bias):
    """The paper's definition, in float64 and in probability space (as the reference
    code computes it): `log sum_k pi_k softmax(h_k . e_w + b_w)`."""
    h = hidden.astype(np.float64)
    k = prior_kernel.shape[1]
    prior = _softmax(h @ prior_kernel)  # (B, T, K)
    latent = np.tanh(h @ latent_kernel + latent_bias).reshape(*h.shape[:-1], k, -1)
    within = _softmax(latent @ table.astype(np.float64).T + bias)  # (B, T, K, V)
    return np.log((prior[..., None] * within).sum(-2))


def test_log_probs_are_the_definition_and_sum_to_one(inputs):
    hidden, table, bias, _ = inputs
    layer = _mos()
    log_p = to_numpy(layer(hidden, table, bias))
    assert log_p.shape == (BATCH, TIME, VOCAB) and log_p.dtype == np.float32
    prior_kernel, latent_kernel, latent_bias = _weights(layer)
    assert prior_kernel.shape == (HIDDEN, COMPONENTS)  # no prior bias
    assert latent_kernel.shape == (HIDDEN, COMPONENTS * WIDTH)
    expected = _numpy_log_probs(hidden, table, bias, prior_kernel, latent_kernel, latent_bias)
    np.testing.assert_allclose(log_p, expected, atol=1e-5)
    np.testing.assert_allclose(np.exp(log_p.astype(np.float64)).sum(-1), 1.0, atol=1e-5)
    # Normalized log-probabilities: read as logits they give the same distribution.
    np.testing.assert_allclose(to_numpy(ops.log_softmax(log_p, axis=-1)), log_p, atol=1e-5)


def test_one_component_is_the_tied_softmax_of_a_tanh_projection(inputs):
    hidden, table, bias, _ = inputs
    layer = _mos(num_components=1)
    _, kernel, latent_bias = _weights(layer)
    logits = np.tanh(hidden.astype(np.float64) @ kernel + latent_bias) @ table.T + bias
    expected = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    np.testing.assert_allclose(to_numpy(layer(hidden, table, bias)), expected, atol=1e-5)


@pytest.mark.parametrize("chunk_size", [None, 3])
def test_token_losses_are_the_full_distribution_at_the_targets(inputs, chunk_size):
    hidden, table, bias, targets = inputs
    layer = _mos(chunk_size=chunk_size)
    full = to_numpy(layer(hidden, table, bias))
    losses = to_numpy(layer(hidden, table, bias, targets=targets))
    assert losses.shape == (BATCH, TIME) and losses.dtype == np.float32
    expected = -np.take_along_axis(full, targets[..., None], -1)[..., 0]
    np.testing.assert_allclose(losses, expected, rtol=1e-5, atol=1e-5)


def _grads(layer, x, upstream, compiled=False):
    """`(outputs, {"hidden": dx, variable.name: dv, ...})` for
    `loss = sum(layer(x) * upstream)`, one branch per backend (as
    `tests/backend_grad.py`). `compiled`: in a TensorFlow graph whose batch and time
    axes are unknown (as `fit` relaxes them), or under `jax.jit`."""
    backend = keras.backend.backend()
    variables = layer.trainable_variables
    names = ["hidden"] + [v.name for v in variables]
    upstream = np.asarray(upstream, dtype="float32")
    if backend == "tensorflow":
        import tensorflow as tf

        def run(x_t):
            with tf.GradientTape() as tape:
                tape.watch(x_t)
                out = layer(x_t)
                loss = tf.reduce_sum(out * upstream)
            return out, tape.gradient(loss, [x_t] + [v.value for v in variables])

        if compiled:
            spec = tf.TensorSpec((None, None, x.shape[-1]), tf.float32)
            run = tf.function(run, input_signature=[spec])
        out, grads = run(tf.constant(x))
    elif backend == "jax":
        import jax

        non_trainable = [v.value for v in layer.non_trainable_variables]

        def loss_fn(x_j, trainable):
            out, _ = layer.stateless_call(trainable, non_trainable, x_j)
            return (out * upstream).sum(), out

        step = jax.value_and_grad(loss_fn, argnums=(0, 1), has_aux=True)
        if compiled:
            step = jax.jit(step)
        (_, out), (d_x, d_vars) = step(jax.numpy.asarray(x), [v.value for v in variables])
        grads = [d_x, *d_vars]
    elif backend == "torch":
        import torch

        x_t = torch.tensor(np.asarray(x), requires_grad=True)
        out = layer(x_t)
        loss = (out * torch.tensor(upstream)).sum()
        grads = torch.autograd.grad(loss, [x_t] + [v.value for v in variables])
        out = out.detach()
    else:
        raise NotImplementedError(backend)
    grads = [ops.convert_to_numpy(g) for g in grads]
    return ops.convert_to_numpy(out), dict(zip(names, grads))


class _Scored(keras.layers.Layer):
    """A mixture of softmaxes over its own table and bias (the hidden states its only
    input): by the layer, or by the definition written directly in `keras.ops`."""

    def __init__(self, table, bias, targets=None, direct=False, **mos_kwargs):
        super().__init__(name="scored")  # a valid scope name in TensorFlow's graphs
        self.mos = MixtureOfSoftmaxes(
            VOCAB, COMPONENTS, embedding_size=WIDTH, seed=3, name="mos", **mos_kwargs
        )
        self.targets = targets
        self.direct = direct
        self.table = self.add_weight(shape=table.shape, name="table")
        self.table.assign(table)
        self.out_bias = self.add_weight(shape=bias.shape, name="out_bias")
        self.out_bias.assign(bias)

    def build(self, shape):
        self.mos.build(shape)

    def call(self, hidden):
        if not self.direct:
            return self.mos(hidden, self.table, self.out_bias, targets=self.targets)
        mos = self.mos
        log_prior = ops.log_softmax(ops.matmul(hidden, mos.prior_kernel), axis=-1)
        latent = ops.tanh(ops.matmul(hidden, mos.latent_kernel) + mos.latent_bias)
        latent = ops.reshape(latent, (*hidden.shape[:2], COMPONENTS, WIDTH))
        scores = ops.einsum("btke,ve->btkv", latent, self.table) + self.out_bias
        log_p = ops.logsumexp(
            ops.expand_dims(log_prior, -1) + ops.log_softmax(scores, axis=-1), axis=2
        )
        if self.targets is None:
            return log_p
        picked = ops.take_along_axis(log_p, ops.expand_dims(self.targets, -1), axis=-1)
        return -picked[..., 0]


def _scored_grads(inputs, with_targets, compiled=False, **kwargs):
    hidden, table, bias, targets = inputs
    targets = targets if with_targets else None
    layer = _Scored(table, bias, targets, **kwargs)
    layer.build(hidden.shape)
    shape = (BATCH, TIME) if with_targets else (BATCH, TIME, VOCAB)
    upstream = np.random.default_rng(7).normal(size=shape)
    return _grads(layer, hidden, upstream, compiled=compiled)


def _assert_same(result, expected):
    (out, grads), (out_e, grads_e) = result, expected
    np.testing.assert_allclose(out, out_e, rtol=1e-5, atol=1e-5)
    # hidden, table, bias, prior kernel, latent kernel and bias
    assert grads.keys() == grads_e.keys() and len(grads) == 6
    for name in grads:
        np.testing.assert_allclose(grads[name], grads_e[name], rtol=1e-4, atol=1e-5, err_msg=name)
        assert np.abs(grads_e[name]).max() > 0, name


@pytest.mark.parametrize("with_targets", [False, True])
def test_gradients_are_those_of_the_definition(inputs, with_targets):
    expected = _scored_grads(inputs, with_targets, direct=True)
    _assert_same(_scored_grads(inputs, with_targets), expected)


@pytest.mark.parametrize("compiled", [False, True])
@pytest.mark.parametrize("chunk_size", [1, 3])
@pytest.mark.parametrize("with_targets", [False, True])
def test_chunks_give_the_values_and_gradients_of_one_chunk(
    inputs, with_targets, chunk_size, compiled
):
    # 8 positions: chunks of 1, or of 3, 3 and 2 (padded to 3 in a shape-relaxed graph).
    expected = _scored_grads(inputs, with_targets)
    _assert_same(
        _scored_grads(inputs, with_targets, compiled=compiled, chunk_size=chunk_size), expected
    )


def test_latent_dropout_is_locked_over_time_and_off_at_inference(rng):
    # The same state at every position of both sequences.
    hidden = np.tile(rng.normal(size=(1, 1, HIDDEN)), (BATCH, TIME, 1)).astype("float32")
    table = rng.normal(size=(VOCAB, WIDTH)).astype("float32")
    bias = np.zeros(VOCAB, "float32")
    layer = _mos(latent_dropout=0.5)
    inference = to_numpy(layer(hidden, table, bias))
    np.testing.assert_allclose(to_numpy(layer(hidden, table, bias, training=False)), inference)
    np.testing.assert_allclose(
        inference, np.broadcast_to(inference[:1, :1], inference.shape), rtol=1e-6
    )
    dropped = to_numpy(layer(hidden, table, bias, training=True))
    # One mask per sequence, shared by its time steps, another for the other sequence.
    np.testing.assert_allclose(dropped, np.broadcast_to(dropped[:, :1], dropped.shape), atol=1e-6)
    assert np.abs(dropped[0, 0] - dropped[1, 0]).max() > 1e-3
    assert np.abs(dropped - inference).max() > 1e-3
    np.testing.assert_allclose(np.exp(dropped.astype(np.float64)).sum(-1), 1.0, atol=1e-5)
    # A new mask per call; and none at rate 0.
    assert np.abs(to_numpy(layer(hidden, table, bias, training=True)) - dropped).max() > 1e-3
    plain = _mos()
    plain.set_weights(layer.get_weights())
    np.testing.assert_allclose(
        to_numpy(plain(hidden, table, bias, training=True)), inference, rtol=1e-6
    )


def test_mixed_precision_gives_float32_log_probs(inputs):
    hidden, table, bias, targets = inputs
    exact = _mos()
    layer = MixtureOfSoftmaxes(
        VOCAB, COMPONENTS, embedding_size=WIDTH, seed=0, dtype="mixed_bfloat16"
    )
    layer.build(hidden.shape)
    layer.set_weights(exact.get_weights())
    log_p = to_numpy(layer(hidden, table, bias))
    losses = to_numpy(layer(hidden, table, bias, targets=targets))
    assert log_p.dtype == np.float32 and losses.dtype == np.float32
    np.testing.assert_allclose(np.exp(log_p.astype(np.float64)).sum(-1), 1.0, atol=1e-5)
    np.testing.assert_allclose(log_p, to_numpy(exact(hidden, table, bias)), atol=0.1)
    np.testing.assert_allclose(
        losses, -np.take_along_axis(log_p, targets[..., None], -1)[..., 0], atol=0.05
    )


def test_symbolic_calls_give_the_output_specs():
    layer = MixtureOfSoftmaxes(VOCAB, COMPONENTS, embedding_size=WIDTH)
    hidden = keras.KerasTensor((None, TIME, HIDDEN))
    table, bias = keras.KerasTensor((VOCAB, WIDTH)), keras.KerasTensor((VOCAB,))
    log_p = layer(hidden, table, bias)
    assert log_p.shape == (None, TIME, VOCAB) and log_p.dtype == "float32"
    losses = layer(hidden, table, bias, targets=keras.KerasTensor((None, TIME), "int32"))
    assert losses.shape == (None, TIME)


def test_config_round_trip(inputs):
    hidden, table, bias, _ = inputs
    layer = _mos(latent_dropout=0.25, chunk_size=3)
    config = layer.get_config()
    assert {k: config[k] for k in ("vocab_size", "num_components", "embedding_size")} == {
        "vocab_size": VOCAB,
        "num_components": COMPONENTS,
        "embedding_size": WIDTH,
    }
    assert (config["latent_dropout"], config["chunk_size"], config["seed"]) == (0.25, 3, 0)
    clone = MixtureOfSoftmaxes.from_config(config)
    assert clone.get_config() == config
    clone.build(hidden.shape)
    clone.set_weights(layer.get_weights())
    np.testing.assert_array_equal(
        to_numpy(clone(hidden, table, bias)), to_numpy(layer(hidden, table, bias))
    )


@keras.saving.register_keras_serializable(package="tests_mixture_of_softmaxes")
class TiedMoSModel(keras.Model):
    """Embedding, a tanh projection and a mixture of softmaxes tied to the embedding
    matrix. Given `{"ids", "targets"}` it returns the targets' losses."""

    def __init__(self, vocab_size, num_components, embedding_size, hidden_size, **kwargs):
        chunk_size = kwargs.pop("chunk_size", None)
        latent_dropout = kwargs.pop("latent_dropout", 0.0)
        super().__init__(**kwargs)
        self.args = dict(
            vocab_size=vocab_size,
            num_components=num_components,
            embedding_size=embedding_size,
            hidden_size=hidden_size,
            chunk_size=chunk_size,
            latent_dropout=latent_dropout,
        )
        self.embedding = keras.layers.Embedding(vocab_size, embedding_size, name="embedding")
        self.project = keras.layers.Dense(hidden_size, activation="tanh", name="project")
        self.mos = MixtureOfSoftmaxes(
            vocab_size,
            num_components,
            embedding_size=embedding_size,
            latent_dropout=latent_dropout,
            chunk_size=chunk_size,
            seed=0,
            name="mos",
        )
        self.out_bias = self.add_weight(shape=(vocab_size,), initializer="zeros", name="out_bias")

    def call(self, inputs, training=False):
        targets = None
        if isinstance(inputs, dict):
            inputs, targets = inputs["ids"], inputs["targets"]
        hidden = self.project(self.embedding(inputs))
        table = self.embedding.embeddings
        return self.mos(hidden, table, self.out_bias, targets=targets, training=training)

    def get_config(self):
        return {**super().get_config(), **self.args}


def test_keras_file_round_trip(rng, tmp_path):
    model = TiedMoSModel(VOCAB, COMPONENTS, WIDTH, HIDDEN, chunk_size=3, latent_dropout=0.2)
    ids = rng.integers(0, VOCAB, size=(BATCH, TIME)).astype("int32")
    log_p = to_numpy(model(ids))
    path = tmp_path / "mos.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded.mos, MixtureOfSoftmaxes)
    assert loaded.mos.get_config() == model.mos.get_config()
    np.testing.assert_array_equal(to_numpy(loaded(ids)), log_p)
    losses = to_numpy(loaded({"ids": ids, "targets": ids}))
    np.testing.assert_allclose(
        losses, -np.take_along_axis(log_p, ids[..., None], -1)[..., 0], rtol=1e-5, atol=1e-5
    )


def _mean_loss(y_true, y_pred):
    return ops.mean(y_pred)


@pytest.mark.parametrize("scored", [False, True])
def test_training_in_fit_and_train_on_batch_lowers_the_loss(scored):
    # A learnable stream: each word is followed by its successor.
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    ids = (rng.integers(0, VOCAB, size=(4, 1)) + np.arange(9)[None]) % VOCAB
    x, y = ids[:, :-1].astype("int32"), ids[:, 1:].astype("int32")
    model = TiedMoSModel(VOCAB, COMPONENTS, WIDTH, HIDDEN, chunk_size=5, latent_dropout=0.1)
    if scored:  # the targets' losses, from the layer
        model.compile(keras.optimizers.Adam(0.05), loss=_mean_loss)

        def batch(steps):
            return {"ids": x[:, :steps], "targets": y[:, :steps]}, y[:, :steps]

    else:  # its log-probabilities read as logits
        model.compile(
            keras.optimizers.Adam(0.05),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        )

        def batch(steps):
            return x[:, :steps], y[:, :steps]

    model(batch(8)[0])  # built eagerly, from real ids
    first = float(model.test_on_batch(*batch(8)))
    # Three segment lengths: TensorFlow traces the third step with unknown axes.
    for steps in (8, 6, 7) * 4:
        loss = float(model.train_on_batch(*batch(steps)))
        assert np.isfinite(loss)
    history = model.fit(*batch(8), batch_size=2, epochs=3, verbose=0)
    assert np.isfinite(history.history["loss"]).all()
    assert float(model.test_on_batch(*batch(8))) < first - 0.5


@pytest.mark.parametrize(
    "kwargs,message",
    [
        (dict(vocab_size=0), "`vocab_size` must be a positive integer; Received: vocab_size=0"),
        (dict(vocab_size=13.0), "`vocab_size` must be a positive integer"),
        (dict(num_components=0), "`num_components` must be a positive integer"),
        (dict(num_components=True), "Received: num_components=True"),
        (dict(embedding_size=-5), "`embedding_size` must be a positive integer"),
        (dict(latent_dropout=1.0), "`latent_dropout` must be a number in \\[0, 1\\)"),
        (dict(latent_dropout=-0.1), "Received: latent_dropout=-0.1"),
        (dict(chunk_size=0), "`chunk_size` must be a positive integer; Received: chunk_size=0"),
    ],
)
def test_bad_arguments_are_one_sentence(kwargs, message):
    args = dict(vocab_size=VOCAB, num_components=COMPONENTS)
    args.update(kwargs)
    with pytest.raises(ValueError, match=message) as error:
        MixtureOfSoftmaxes(**args)
    text = str(error.value)
    assert "\n" not in text and ". " not in text


@pytest.mark.parametrize(
    "shapes,message",
    [
        (dict(table=(VOCAB, WIDTH + 1)), "`table` must have shape .* = \\(13, 5\\); .*\\(13, 6\\)"),
        (dict(table=(VOCAB + 1, WIDTH)), "`table` must have shape .*table.shape=\\(14, 5\\)"),
        (dict(bias=(VOCAB + 1,)), "`bias` must have shape \\(vocab_size,\\) = \\(13,\\)"),
        (dict(hidden=(BATCH, TIME, HIDDEN + 1)), "`hidden` must have the width 7"),
        (dict(hidden=(BATCH * TIME, HIDDEN)), "`hidden` must have rank 3"),
        (dict(targets=(BATCH, TIME + 1)), "`targets` must have the shape \\(batch, time\\)"),
    ],
)
def test_bad_inputs_name_the_argument(shapes, message):
    layer = _mos()
    sizes = dict(hidden=(BATCH, TIME, HIDDEN), table=(VOCAB, WIDTH), bias=(VOCAB,))
    sizes.update(shapes)
    arrays = {name: np.zeros(shape, "float32") for name, shape in sizes.items()}
    targets = np.zeros(shapes["targets"], "int32") if "targets" in shapes else None
    with pytest.raises(ValueError, match=message):
        layer(arrays["hidden"], arrays["table"], arrays["bias"], targets=targets)


def test_the_table_is_as_wide_as_the_hidden_states_by_default(inputs):
    hidden, _, bias, _ = inputs
    layer = MixtureOfSoftmaxes(VOCAB, COMPONENTS)
    table = np.ones((VOCAB, HIDDEN), "float32")
    assert to_numpy(layer(hidden, table, bias)).shape == (BATCH, TIME, VOCAB)
    assert layer.latent_size == HIDDEN and layer.latent_kernel.shape == (HIDDEN, 3 * HIDDEN)
    with pytest.raises(ValueError, match="= \\(13, 7\\); Received: table.shape=\\(13, 5\\)"):
        layer(hidden, np.ones((VOCAB, WIDTH), "float32"), bias)


def test_automatic_chunks_keep_within_the_budget():
    # The paper's Penn Treebank step (20 x 70 positions) over a 10,000-word vocabulary.
    positions, components, vocab = 20 * 70, 15, 10000
    rows = chunk_positions(positions, components, vocab)
    assert 1 <= rows <= positions and rows * components * vocab <= CHUNK_ELEMENTS
    layer = MixtureOfSoftmaxes(vocab, components)
    chunks, layer_rows = layer.chunk_rows(positions)
    assert layer_rows == rows and (chunks - 1) * rows < positions <= chunks * rows
    assert (chunks, rows) == (4, 350)  # the fewest chunks, evenly filled
    # Small steps are one chunk; a position over the budget is a chunk of its own.
    assert chunk_positions(BATCH * TIME, COMPONENTS, VOCAB) == BATCH * TIME
    assert chunk_positions(positions, 15, 2 * CHUNK_ELEMENTS) == 1
    assert MixtureOfSoftmaxes(vocab, components, chunk_size=3).chunk_rows(8) == (3, 3)


# -- in the language model and the pipeline ---------------------------------------------


def _language_model(**kwargs):
    from awd_lstm.models import AWDLSTMLanguageModel

    options = dict(embedding_size=WIDTH, hidden_size=8, num_layers=2, seed=2)
    options.update(mixture_components=COMPONENTS, last_hidden_size=HIDDEN)
    options.update(kwargs)
    return AWDLSTMLanguageModel(VOCAB, **options)


def test_the_language_model_scores_with_the_mixture_over_its_embedding(rng):
    """`mixture_components`: the last LSTM (`last_hidden_size` units) feeds the
    mixture, which scores the tied embedding's rows; `call` gives normalized
    log-probabilities and `score` their targets' losses; the mixture is part of the
    output layer group and of the config."""
    model = _language_model(output_dropout=0.0)
    ids = rng.integers(0, VOCAB, size=(BATCH, TIME)).astype("int32")
    targets = rng.integers(0, VOCAB, size=(BATCH, TIME)).astype("int32")
    log_p = to_numpy(model(ids))
    np.testing.assert_allclose(np.exp(log_p).sum(-1), 1.0, rtol=1e-5)
    assert model.encoder.layer_units == [8, HIDDEN]
    hidden = model.hidden_states(ids)["dropped_outputs"][-1]
    table = model.encoder.embedding.embeddings
    np.testing.assert_allclose(
        log_p, to_numpy(model.mixture(hidden, table, model.decoder_bias)), rtol=1e-5, atol=1e-6
    )
    losses = to_numpy(model.score(ids, targets))
    gathered = -np.take_along_axis(log_p, targets[..., None], -1)[..., 0]
    np.testing.assert_allclose(losses, gathered, rtol=1e-5, atol=1e-6)
    assert any(layer is model.mixture for layer in model.layer_groups()[-1])
    config = model.get_config()
    assert (config["mixture_components"], config["last_hidden_size"]) == (COMPONENTS, HIDDEN)
    again = type(model).from_config(config)
    again.build((BATCH, TIME))
    again.set_weights(model.get_weights())
    np.testing.assert_allclose(to_numpy(again(ids)), log_p, rtol=1e-6)


def test_the_language_models_mixture_settings_are_checked():
    from awd_lstm.config import TrainingConfig

    with pytest.raises(ValueError, match="needs `tie_weights=True` and no `cutoffs`"):
        _language_model(tie_weights=False)
    with pytest.raises(ValueError, match="needs `tie_weights=True` and no `cutoffs`"):
        _language_model(cutoffs=[5])
    with pytest.raises(ValueError, match="`last_hidden_size` must equal `embedding_size`"):
        _language_model(mixture_components=None)
    with pytest.raises(ValueError, match="mixture_components must be an integer >= 0"):
        TrainingConfig(mixture_components=-1)
    with pytest.raises(ValueError, match="it needs tie_weights and no cutoffs"):
        TrainingConfig(mixture_components=3, cutoffs=(10,))
    with pytest.raises(ValueError, match="must equal embedding_size 400 with a tied softmax"):
        TrainingConfig(last_hidden_size=620)


def test_a_mixture_run_trains_evaluates_generates_scores_and_exports(tmp_path, capsys):
    """The pipeline on a run with a mixture of softmaxes: `train` with the flags,
    `evaluate` with the cache pointer and with dynamic evaluation, `generate`,
    `score`, and a `.keras` export that scores as the run does."""
    import json

    from awd_lstm.cli import main
    from awd_lstm.presets import PRESETS
    from tests.conftest import TINY_FLAGS

    preset = PRESETS["ptb-mos"]
    assert (preset.embedding_size, preset.hidden_size, preset.last_hidden_size) == (280, 960, 620)
    assert (preset.mixture_components, preset.mixture_dropout, preset.batch_size) == (15, 0.29, 12)
    run = tmp_path / "mos"
    flags = ["--mixture-components", "3", "--mixture-dropout", "0.1", "--last-hidden-size", "12"]
    assert main(["train", "--out", str(run), *TINY_FLAGS, *flags]) == 0
    config = json.loads((run / "config.json").read_text())["config"]
    assert (config["mixture_components"], config["last_hidden_size"]) == (3, 12)
    for extra in (["--cache-pointer", "--window", "20"], ["--dynamic-eval"]):
        assert main(["evaluate", "--run", str(run), "--no-progress", *extra]) == 0
    capsys.readouterr()
    assert main(["generate", "--run", str(run), "--tokens", "6", "--seed", "1"]) == 0
    assert capsys.readouterr().out.split()  # words (an <eos> ends a line)
    sentence = tmp_path / "sentence.txt"
    sentence.write_text("w0001 w0002 w0003\n")
    assert main(["score", "--run", str(run), str(sentence)]) == 0
    from_run = capsys.readouterr().out
    exported = tmp_path / "mos.keras"
    assert main(["export", "--run", str(run), "--out", str(exported)]) == 0
    capsys.readouterr()
    assert main(["score", "--model", str(exported), str(sentence)]) == 0
    assert capsys.readouterr().out == from_run
