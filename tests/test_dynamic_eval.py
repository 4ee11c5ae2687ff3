"""Dynamic evaluation: the update rule, and adaptation to a shifted distribution."""

import dataclasses
import math

import keras
import numpy as np
import pytest

from awd_lstm.dynamic_eval import DynamicEvaluation, dynamic_evaluate, gradient_rms
from tests.conftest import to_numpy


def test_the_update_is_the_rms_normalized_step_with_decay(rng):
    w0 = rng.normal(size=(3, 4)).astype("float32")
    rms = [np.abs(rng.normal(size=(3, 4))).astype("float32") + 0.1]
    variable = keras.Variable(w0)
    optimizer = DynamicEvaluation(rms, learning_rate=0.1, decay=0.5, epsilon=1e-3)
    optimizer.build([variable])
    w, rate = w0.astype(np.float64), np.minimum(rms[0] / rms[0].mean(), 1 / 0.5)
    for _ in range(3):
        g = rng.normal(size=(3, 4)).astype("float32")
        optimizer.apply_gradients([(keras.ops.convert_to_tensor(g), variable)])
        w = w + 0.5 * rate * (w0 - w) - 0.1 * g / (rms[0] + 1e-3)
    np.testing.assert_allclose(to_numpy(variable), w, rtol=1e-5, atol=1e-6)


def test_adapts_to_a_shifted_test_distribution(tmp_path):
    from awd_lstm.data import HiddenMarkovSource, Vocabulary, load_corpus
    from awd_lstm.training import load_trained_weights, split_loss, train
    from tests.test_training import TINY

    trained_on = HiddenMarkovSource(num_states=4, vocab_size=30, seed=0)
    shifted = HiddenMarkovSource(num_states=4, vocab_size=30, seed=5)
    folder = tmp_path / "corpus"
    trained_on.write_corpus(folder, 3000, 400, 400)
    shifted.write_corpus(tmp_path / "shifted", 400, 400, 1500)
    (folder / "test.txt").write_text((tmp_path / "shifted" / "test.txt").read_text())
    corpus = load_corpus(folder, vocab=Vocabulary(trained_on.words()))
    config = dataclasses.replace(TINY, epochs=2)
    run = tmp_path / "run"
    train(config, corpus, str(run), log=lambda _: None, progress=False)
    best = run / "best.weights.h5"
    on_disk = best.read_bytes()
    weights = load_trained_weights(config, len(corpus.vocab), str(best))
    before = [w.copy() for w in weights]

    static = split_loss(config, len(corpus.vocab), corpus.test, 1, weights)
    rms = gradient_rms(config, len(corpus.vocab), weights, corpus.train, batch_size=10)
    assert all(np.all(np.isfinite(r)) and r.shape == w.shape for r, w in zip(rms, weights))
    dynamic = dynamic_evaluate(
        config, len(corpus.vocab), weights, corpus.test, rms, learning_rate=3e-3, decay=0.01
    )
    assert math.exp(dynamic) < 0.95 * math.exp(static)
    # A zero learning rate and decay: exactly the static evaluation (bptt 5 vs 10
    # makes no difference when the state is carried).
    still = dynamic_evaluate(
        config, len(corpus.vocab), weights, corpus.test, rms, learning_rate=0.0, decay=0.0
    )
    assert still == pytest.approx(static, rel=1e-5)
    for a, b in zip(weights, before):
        np.testing.assert_array_equal(a, b)
    assert best.read_bytes() == on_disk
