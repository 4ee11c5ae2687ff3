"""The continuous cache pointer: against a direct NumPy computation, and its gain."""

import dataclasses
import math

import numpy as np
import pytest

from awd_lstm.pointer import CachePointer, evaluate_with_cache
from tests.conftest import to_numpy


def _direct(logits, hidden, targets, window, theta, lambdah):
    """Position by position, over one whole stream: the definition, written plainly."""
    out = []
    for t in range(len(targets)):
        z = logits[t] - logits[t].max()
        p = np.exp(z) / np.exp(z).sum()
        cache = range(max(0, t - window), t)
        if len(cache):
            scores = np.array([theta * hidden[i] @ hidden[t] for i in cache])
            attention = np.exp(scores - scores.max())
            attention /= attention.sum()
            p_cache = np.zeros_like(p)
            for a, i in zip(attention, cache):
                p_cache[targets[i]] += a
            p = (1 - lambdah) * p + lambdah * p_cache
        out.append(math.log(p[targets[t]]))
    return np.array(out)


@pytest.mark.parametrize("window", [1, 4, 100])
def test_equals_the_definition_across_segments_and_streams(rng, window):
    streams, time, vocab, dim = 2, 23, 7, 5
    logits = rng.normal(size=(streams, time, vocab))
    hidden = rng.normal(size=(streams, time, dim))
    targets = rng.integers(0, vocab, (streams, time))
    pointer = CachePointer(window, theta=0.7, lambdah=0.3, num_streams=streams)
    pieces = [
        pointer.target_log_probs(logits[:, a:b], hidden[:, a:b], targets[:, a:b])
        for a, b in [(0, 5), (5, 6), (6, 23)]
    ]
    got = np.concatenate(pieces, axis=1)
    for s in range(streams):
        want = _direct(logits[s], hidden[s], targets[s], window, 0.7, 0.3)
        np.testing.assert_allclose(got[s], want, rtol=1e-10, atol=1e-12)
    pointer.reset()
    again = pointer.target_log_probs(logits[:, :5], hidden[:, :5], targets[:, :5])
    np.testing.assert_allclose(again, pieces[0])


def test_lambda_zero_is_the_model_and_arguments_are_checked(rng):
    logits = rng.normal(size=(1, 9, 4))
    targets = rng.integers(0, 4, (1, 9))
    pointer = CachePointer(5, 1.0, 0.0)
    got = pointer.target_log_probs(logits, rng.normal(size=(1, 9, 3)), targets)
    log_softmax = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    np.testing.assert_allclose(got, np.take_along_axis(log_softmax, targets[..., None], -1)[..., 0])
    with pytest.raises(ValueError, match="`window` must be a positive integer"):
        CachePointer(0, 1.0, 0.1)
    with pytest.raises(ValueError, match=r"`lambdah` must be in \[0, 1\]; Received: lambdah=1.5"):
        CachePointer(10, 1.0, 1.5)
    with pytest.raises(ValueError, match="`theta` must be a finite number"):
        CachePointer(10, float("nan"), 0.1)
    with pytest.raises(ValueError, match="this pointer keeps 1 streams; Received: 2"):
        pointer.target_log_probs(np.zeros((2, 3, 4)), np.zeros((2, 3, 2)), np.zeros((2, 3), int))


def _recurring_corpus(folder, rng, vocab=300, docs=(60, 12, 12), doc_words=6, doc_len=80):
    """Documents each repeating a few words drawn at random from a large vocabulary:
    no model can know which, a cache can."""
    from awd_lstm.data import Vocabulary, load_corpus

    words = [f"w{i}" for i in range(vocab)]
    folder.mkdir()
    for split, n in zip(("train", "valid", "test"), docs):
        lines = []
        for _ in range(n):
            chosen = rng.choice(vocab, doc_words, replace=False)
            lines.append(" ".join(words[i] for i in rng.choice(chosen, doc_len)))
        (folder / f"{split}.txt").write_text("\n".join(lines) + "\n")
    return load_corpus(folder, vocab=Vocabulary(["<eos>", *words]))


def test_the_cache_lowers_perplexity_where_words_recur(rng, tmp_path):
    from awd_lstm.training import build_model, copy_weights, evaluate, train
    from tests.test_training import TINY

    corpus = _recurring_corpus(tmp_path / "corpus", rng)
    config = dataclasses.replace(TINY, epochs=1, eval_batch_size=1)
    trained, _ = train(config, corpus, str(tmp_path / "run"), log=lambda _: None, progress=False)
    model = build_model(config, len(corpus.vocab), batch_size=1)
    copy_weights(trained.trainable_variables, model)
    plain = evaluate(model, corpus.test, config.bptt)
    pointer = CachePointer(window=100, theta=1.0, lambdah=0.3)
    cached = evaluate_with_cache(model, corpus.test, config.bptt, pointer)
    assert math.exp(cached) < 0.8 * math.exp(plain)
    # lambda 0: exactly the plain evaluation.
    no_cache = evaluate_with_cache(model, corpus.test, config.bptt, CachePointer(100, 1.0, 0.0))
    assert no_cache == pytest.approx(plain, rel=1e-6)


def test_predict_hidden_returns_the_raw_last_layer_states(rng):
    from awd_lstm.models import AWDLSTMLanguageModel

    model = AWDLSTMLanguageModel(
        20, embedding_size=4, hidden_size=6, num_layers=2, stateful=True, batch_size=2, seed=1
    )
    model.compile(loss="sparse_categorical_crossentropy")
    ids = rng.integers(0, 20, (2, 5))
    out = model.predict_hidden_on_batch(ids)
    model.reset_state()
    eager = model.hidden_states(ids)
    np.testing.assert_allclose(out["hidden"], to_numpy(eager["raw_outputs"][-1]), atol=1e-5)
    np.testing.assert_allclose(out["logits"], to_numpy(eager["logits"]), atol=1e-5)
    model.reset_state()
    np.testing.assert_allclose(model.predict_on_batch(ids), out["logits"], atol=1e-5)
