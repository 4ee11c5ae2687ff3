"""The training loop: segment-length learning rates, evaluation, NT-ASGD, outputs."""

import dataclasses
import json
import math

import numpy as np
import pytest

from awd_lstm.data import HiddenMarkovSource, Vocabulary, load_corpus
from awd_lstm.training import TrainingConfig, build_model, copy_weights, evaluate, train
from tests.conftest import to_numpy
from tests.test_language_model import _cross_entropy, _numpy_forward

TINY = TrainingConfig(
    embedding_size=8,
    hidden_size=16,
    num_layers=2,
    embedding_dropout=0.0,
    input_dropout=0.1,
    hidden_dropout=0.1,
    output_dropout=0.1,
    weight_dropout=0.2,
    lr=20.0,
    epochs=3,
    batch_size=4,
    eval_batch_size=2,
    bptt=10,
    length_quantum=5,
    nonmono=1,
    seed=3,
)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    folder = tmp_path_factory.mktemp("hmm")
    source = HiddenMarkovSource(num_states=4, vocab_size=30, seed=0)
    source.write_corpus(folder, 3000, 400, 400)
    return load_corpus(folder, vocab=Vocabulary(source.words()))


def test_evaluation_carries_state_over_the_split_and_weights_by_length(rng, corpus):
    model = build_model(TINY, len(corpus.vocab), batch_size=2)
    ids = corpus.valid[:201]
    short = evaluate(model, ids, bptt=7)
    assert evaluate(model, ids, bptt=100) == pytest.approx(short, rel=1e-5)
    # The same as one pass over each whole stream, in NumPy.
    streams = ids[:200].reshape(2, 100)
    logits, _ = _numpy_forward(model, streams[:, :-1])
    assert short == pytest.approx(_cross_entropy(logits, streams[:, 1:]), rel=1e-5)


def test_learning_rate_follows_the_segment_length(corpus, tmp_path, monkeypatch):
    import keras

    seen = []
    original = keras.Model.train_on_batch

    def recording(self, x, y, **kwargs):
        seen.append((x.shape[1], float(to_numpy(self.optimizer.learning_rate))))
        return original(self, x, y, **kwargs)

    monkeypatch.setattr(keras.Model, "train_on_batch", recording)
    train(
        dataclasses.replace(TINY, epochs=1),
        corpus,
        str(tmp_path),
        log=lambda _: None,
        progress=False,
    )
    assert len({length for length, _ in seen}) > 1
    for length, lr in seen:
        assert lr == pytest.approx(TINY.lr * length / TINY.bptt, rel=1e-6)
        assert length % TINY.length_quantum == 0


def test_training_lowers_the_loss_and_writes_its_outputs(corpus, tmp_path):
    lines = []
    model, records = train(TINY, corpus, str(tmp_path), log=lines.append, progress=False)
    assert [r["epoch"] for r in records] == [1, 2, 3]
    assert records[-1]["val_loss"] < records[0]["val_loss"]
    assert records[0]["val_loss"] < math.log(len(corpus.vocab))
    written = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert written == records
    keys = {
        "epoch",
        "train_loss",
        "train_ppl",
        "val_loss",
        "val_ppl",
        "lr",
        "averaging",
        "tokens_per_sec",
        "seconds",
    }
    assert keys <= set(written[0])
    assert (tmp_path / "best.weights.h5").exists()
    assert not list(tmp_path.glob("*.tmp.*"))
    best = min(r["val_loss"] for r in records)
    assert evaluate(model, corpus.valid, TINY.bptt) == pytest.approx(best, rel=1e-5)


def test_nt_asgd_switches_by_the_rule_and_evaluates_the_average(corpus, tmp_path, monkeypatch):
    import awd_lstm.training as training

    # Scripted validation losses: with nonmono=1 the rule first holds at epoch 4
    # (2.6 > min(3.0, 2.0)); from epoch 5 on, validation uses the averaged weights.
    scripted = iter([3.0, 2.0, 2.5, 2.6, 2.7])
    evaluated_with = []
    real_copy = training.copy_weights

    def scripted_evaluate(model, ids, bptt):
        return next(scripted)

    def recording_copy(values, target):
        evaluated_with.append(all(v.path.endswith("_average") for v in values))
        return real_copy(values, target)

    monkeypatch.setattr(training, "evaluate", scripted_evaluate)
    monkeypatch.setattr(training, "copy_weights", recording_copy)
    lines = []
    _, records = train(
        dataclasses.replace(TINY, epochs=5), corpus, str(tmp_path), log=lines.append, progress=False
    )
    assert [r["averaging"] for r in records] == [False, False, False, True, True]
    assert evaluated_with == [False, False, False, False, True]
    assert any(line.startswith("epoch 4: switching to averaged SGD") for line in lines)


def test_copy_weights_between_batch_sizes(corpus):
    a = build_model(TINY, len(corpus.vocab), batch_size=4)
    b = build_model(dataclasses.replace(TINY, seed=9), len(corpus.vocab), batch_size=1)
    copy_weights(a.trainable_variables, b)
    for x, y in zip(a.trainable_variables, b.trainable_variables):
        np.testing.assert_array_equal(to_numpy(x), to_numpy(y))
