"""The ULMFiT text classifier: concat pooling, BPT3C, the head, saving, from_run."""

import keras
import numpy as np
import pytest

from awd_lstm.models import AWDLSTMClassifier, AWDLSTMEncoder
from tests.conftest import to_numpy

NO_DROPOUT = dict(embedding_dropout=0.0, input_dropout=0.0, hidden_dropout=0.0, weight_dropout=0.0)


def _encoder(**overrides):
    options = dict(embedding_size=6, hidden_size=8, num_layers=2, seed=4, **NO_DROPOUT)
    options.update(overrides)
    return AWDLSTMEncoder(20, **options)


def _classifier(bptt=5, max_len=None, cell="lstm", **kwargs):
    encoder = _encoder(cell=cell)
    model = AWDLSTMClassifier(encoder, 3, bptt=bptt, max_len=max_len, seed=1, **kwargs)
    model.build((None, None))
    return model


# The QRNN's carried state is `[x_last, c]`, its input width unlike its units.
CELLS = ["lstm", "qrnn"]


@pytest.mark.parametrize("cell", CELLS)
def test_concat_pooling_over_each_documents_own_tokens_equals_numpy(rng, cell):
    model = _classifier(cell=cell)
    lengths = np.array([12, 7, 1], dtype="int32")
    ids = rng.integers(0, 20, (3, 12)).astype("int32")
    ids[1, 7:] = 0  # padding, whatever its id
    ids[2, 1:] = 5
    pooled = to_numpy(model.pool(ids, lengths))
    assert pooled.shape == (3, 3 * 6)
    for row, length in enumerate(lengths):
        # The document alone, unpadded, in one pass.
        h = to_numpy(model.encoder(ids[row : row + 1, :length])["raw_outputs"][-1])[0]
        want = np.concatenate([h[-1], h.max(axis=0), h.mean(axis=0)])
        np.testing.assert_allclose(pooled[row], want, atol=1e-5)


@pytest.mark.parametrize("cell", CELLS)
def test_bpt3c_segments_pool_as_one_long_pass(rng, cell):
    ids = rng.integers(0, 20, (2, 23)).astype("int32")
    lengths = np.array([23, 16], dtype="int32")
    segmented = _classifier(bptt=4, cell=cell)
    whole = _classifier(bptt=100, cell=cell)
    whole.set_weights(segmented.get_weights())
    np.testing.assert_allclose(
        to_numpy(segmented.pool(ids, lengths)), to_numpy(whole.pool(ids, lengths)), atol=1e-5
    )
    # The ids alone: every row counts whole.
    np.testing.assert_allclose(
        to_numpy(segmented.pool(ids)), to_numpy(whole.pool(ids, np.array([23, 23]))), atol=1e-5
    )


@pytest.mark.parametrize("cell", CELLS)
def test_the_gradient_reaches_the_last_max_len_tokens_only(cell):
    # Tokens 1 and 2 fill the first two segments, 3..9 the last one (bptt 4, 12 steps).
    ids = np.array([[1, 2, 1, 2, 2, 1, 2, 1, 3, 4, 5, 6], [2, 1, 2, 1, 1, 2, 1, 2, 7, 8, 9, 3]])
    ids = ids.astype("int32")
    model = _classifier(bptt=4, max_len=4, head_dropout=(0.0, 0.0), cell=cell)
    model.compile(keras.optimizers.SGD(1.0), keras.losses.SparseCategoricalCrossentropy(True))
    table = model.encoder.embedding.embeddings
    before = to_numpy(table).copy()
    model.train_on_batch(ids, np.array([0, 2]))
    after = to_numpy(table)
    np.testing.assert_array_equal(after[[1, 2]], before[[1, 2]])  # beyond the gradient's reach
    assert np.abs(after[[3, 4, 5, 6, 7, 8, 9]] - before[[3, 4, 5, 6, 7, 8, 9]]).min() > 0
    np.testing.assert_array_equal(after[10:], before[10:])  # not in the batch


def test_the_head_and_its_checks():
    model = _classifier(head_sizes=(50, 20), head_dropout=(0.2, 0.1, 0.1))
    dense = [block[2] for block in model.head]
    assert [d.units for d in dense] == [50, 20, 3]
    assert [d.kernel.shape[0] for d in dense] == [18, 50, 20]  # 3 x the last layer's units
    assert [block[1].rate for block in model.head] == [0.2, 0.1, 0.1]
    groups = model.layer_groups()
    assert len(groups) == 4  # the embedding, two LSTMs, the head
    assert groups[0] == [model.encoder.embedding] and len(groups[-1]) == 9
    with pytest.raises(ValueError, match="`head_dropout` needs one rate per dense layer"):
        AWDLSTMClassifier(_encoder(), 3, head_sizes=(50,), head_dropout=(0.2,))
    with pytest.raises(ValueError, match="`num_classes` must be at least 2"):
        AWDLSTMClassifier(_encoder(), 1)
    with pytest.raises(TypeError, match="`encoder` must be an AWDLSTMEncoder"):
        AWDLSTMClassifier(keras.layers.Dense(3), 3)


def test_the_heads_batch_norm_keeps_pytorchs_statistics(rng):
    """One training call moves the head's moving mean a tenth of the way to the batch's
    mean (PyTorch's momentum 0.1; Keras' default 0.99 moves it a hundredth), and the
    variance likewise, with PyTorch's epsilon: after a short fine-tuning, inference
    normalizes with statistics near the data's, not near their start."""
    model = _classifier()
    ids = rng.integers(1, 20, size=(6, 9)).astype("int32")
    pooled = to_numpy(model.pool(ids))
    norm = model.head[0][0]
    assert (norm.momentum, norm.epsilon) == (0.9, 1e-5)
    model(ids, training=True)  # no dropout in the encoder: the same pooled features
    np.testing.assert_allclose(to_numpy(norm.moving_mean), 0.1 * pooled.mean(0), atol=1e-6)
    np.testing.assert_allclose(
        to_numpy(norm.moving_variance), 0.9 + 0.1 * pooled.var(0), rtol=1e-5, atol=1e-6
    )


def test_fit_trains_and_the_keras_file_round_trips(rng, tmp_path):
    model = _classifier(bptt=6)
    model.compile(keras.optimizers.Adam(0.01), keras.losses.SparseCategoricalCrossentropy(True))
    # Class 0 documents use the low ids, class 1 the high ones.
    labels = np.arange(32) % 2
    ids = np.where(
        labels[:, None] == 0, rng.integers(0, 10, (32, 9)), rng.integers(10, 20, (32, 9))
    )
    lengths = rng.integers(3, 10, 32)
    x = {"ids": ids.astype("int32"), "lengths": lengths.astype("int32")}
    history = model.fit(x, labels, batch_size=8, epochs=4, verbose=0)
    losses = history.history["loss"]
    assert losses[-1] < losses[0]
    path = tmp_path / "classifier.keras"
    model.save(path)
    again = keras.saving.load_model(path)
    np.testing.assert_allclose(to_numpy(again(x)), to_numpy(model(x)), atol=1e-5)
    assert again.get_config()["encoder"]["config"]["hidden_size"] == 8


@pytest.mark.parametrize("lm", ["run", "qrnn_run"])
def test_from_run_builds_on_the_language_models_encoder(lm, request, tmp_path):
    from awd_lstm import load_run

    run = request.getfixturevalue(lm)
    lm_run = load_run(run)
    model = AWDLSTMClassifier.from_run(run, 4)
    language_model = lm_run.load_model(stateful=False)
    for ours, theirs in zip(model.encoder.weights, language_model.encoder.weights):
        np.testing.assert_array_equal(to_numpy(ours), to_numpy(theirs))
    assert model.vocabulary.tokens == lm_run.vocabulary.tokens
    assert model.bptt == lm_run.config.bptt
    assert model.encoder.cell == lm_run.config.cell
    x = {"ids": np.arange(26, dtype="int32").reshape(2, 13) % 9, "lengths": np.array([13, 4])}
    logits = to_numpy(model(x))
    assert logits.shape == (2, 4)
    path = tmp_path / "classifier.keras"
    model.save(path)
    again = keras.saving.load_model(path)
    for ours, theirs in zip(model.weights, again.weights, strict=True):  # the head's too
        np.testing.assert_array_equal(to_numpy(ours), to_numpy(theirs))
    np.testing.assert_allclose(to_numpy(again(x)), logits, atol=1e-6)


@pytest.mark.parametrize(
    "kind", ["classifier", "qrnn_classifier", "language_model", "adaptive_softmax"]
)
def test_layer_groups_hold_every_trainable_variable_once(kind):
    from awd_lstm.models import AWDLSTMLanguageModel

    if kind.endswith("classifier"):
        model = _classifier(cell="qrnn" if kind == "qrnn_classifier" else "lstm")
    else:
        cutoffs = [10] if kind == "adaptive_softmax" else None
        model = AWDLSTMLanguageModel(
            20, embedding_size=6, hidden_size=8, num_layers=2, cutoffs=cutoffs
        )
        model.build((None, None))
    grouped = [
        v.path
        for group in model.layer_groups()
        for item in group
        for v in (item.trainable_variables if hasattr(item, "trainable_variables") else [item])
    ]
    assert sorted(grouped) == sorted(v.path for v in model.trainable_variables)
    assert len(model.layer_groups()) == 4


@pytest.mark.skipif(
    keras.backend.backend() != "tensorflow", reason="TensorFlow's shape-generic traces"
)
@pytest.mark.parametrize("cell", CELLS)
def test_a_shape_generic_trace_pools_as_the_python_loop(rng, cell):
    """In a trace whose batch and time axes are unknown (TensorFlow's `fit` after its
    second shape) the segments run in a loop of the graph from each layer's zero
    state (a QRNN's `[x_last, c]`): the same pooling as the loop over known segments."""
    import tensorflow as tf

    model = _classifier(bptt=4, cell=cell)
    ids = rng.integers(0, 20, (3, 11)).astype("int32")
    lengths = np.array([11, 6, 2], dtype="int32")
    spec = [tf.TensorSpec((None, None), tf.int32), tf.TensorSpec((None,), tf.int32)]
    generic = tf.function(model.pool, input_signature=spec)
    np.testing.assert_allclose(
        generic(ids, lengths).numpy(), to_numpy(model.pool(ids, lengths)), atol=1e-5
    )
