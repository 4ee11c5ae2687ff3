"""Sampling text and scoring sentences with a trained language model."""

import numpy as np
import pytest

from awd_lstm.data import EOS, UNK, Vocabulary
from awd_lstm.generation import generate, score_sentences
from awd_lstm.models import AWDLSTMLanguageModel
from tests.conftest import to_numpy
from tests.test_language_model import _numpy_forward

WORDS = [EOS, UNK] + [f"w{i}" for i in range(14)]
VOCAB = Vocabulary(WORDS)


def _model(stateful, batch_size=None, source=None):
    model = AWDLSTMLanguageModel(
        len(WORDS),
        embedding_size=6,
        hidden_size=10,
        num_layers=2,
        stateful=stateful,
        batch_size=batch_size,
        seed=4,
    )
    model.compile(loss="sparse_categorical_crossentropy")
    model.build((batch_size or 1, None))
    if source is not None:
        for variable, value in zip(model.trainable_variables, source.trainable_variables):
            variable.assign(to_numpy(value))
    # Sharper than at initialization, so that the draws depend on the context.
    table = model.encoder.embedding.embeddings
    table.assign(to_numpy(table) * 30)
    return model


@pytest.fixture(scope="module")
def sampler():
    return _model(stateful=True, batch_size=1)


def test_same_seed_same_text_and_no_eos_word(sampler):
    text, tokens = generate(sampler, VOCAB, "w1 w2", num_tokens=60, seed=3)
    again, _ = generate(sampler, VOCAB, "w1 w2", num_tokens=60, seed=3)
    other, _ = generate(sampler, VOCAB, "w1 w2", num_tokens=60, seed=4)
    assert text == again and text != other
    assert len(tokens) == 60 and EOS not in text.split()
    assert tokens.count(EOS) == text.count("\n")
    assert text.split() == [t for t in tokens if t != EOS]


def test_top_1_is_greedy_decoding_from_the_prompt(sampler):
    _, tokens = generate(sampler, VOCAB, "w3 w4", num_tokens=8, top_k=1, seed=0)
    ids = [VOCAB.index[t] for t in [EOS, "w3", "w4", *tokens]]
    # Independently: the NumPy forward pass over the whole prefix, argmax at its end.
    for i in range(3, len(ids)):
        logits, _ = _numpy_forward(sampler, np.array([ids[:i]]))
        assert ids[i] == int(np.argmax(logits[0, -1]))


def test_temperature_and_top_k_shape_the_draws(sampler):
    def distinct(**kwargs):
        _, tokens = generate(sampler, VOCAB, "w5", num_tokens=200, seed=1, **kwargs)
        return len(set(tokens))

    assert distinct(temperature=0.05) < distinct(temperature=5.0)
    _, tokens = generate(sampler, VOCAB, "w5", num_tokens=12, top_k=2, seed=5)
    ids = [VOCAB.index[t] for t in [EOS, "w5", *tokens]]
    for i in range(2, len(ids)):
        logits, _ = _numpy_forward(sampler, np.array([ids[:i]]))
        assert ids[i] in np.argsort(logits[0, -1])[-2:]


def test_unknown_prompt_words_read_as_unk_with_a_warning(sampler):
    with pytest.warns(
        UserWarning, match=r"1 word type\(s\) outside the vocabulary read as <unk>: zz"
    ):
        unknown = generate(sampler, VOCAB, "w1 zz", num_tokens=20, seed=2)
    assert unknown == generate(sampler, VOCAB, f"w1 {UNK}", num_tokens=20, seed=2)


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"temperature": 0.0}, "`temperature` must be > 0; Received: temperature=0.0"),
        ({"top_k": 0}, "`top_k` must be at least 1; Received: top_k=0"),
        ({"num_tokens": -1}, "`num_tokens` must be at least 0; Received: num_tokens=-1"),
        ({"seed": -1}, r"`seed` must be an integer in \[0, 2\*\*32\)"),
    ],
)
def test_bad_generation_arguments(sampler, kwargs, message):
    with pytest.raises(ValueError, match=message):
        generate(sampler, VOCAB, "w1", **kwargs)


def test_scores_equal_a_numpy_forward_pass_per_sentence(sampler):
    sentences = ["w1 w2 w3", "", "w4", "w5 w6 w7 w8 w9 w10 w11 w12 w13 w0 w1", "w2 w2"]
    scorer = _model(stateful=False, source=sampler)
    batched = score_sentences(scorer, VOCAB, sentences, batch_size=2)
    one_by_one = score_sentences(scorer, VOCAB, sentences, batch_size=1)
    for sentence, (log_prob, n), (single, _) in zip(sentences, batched, one_by_one):
        ids = [VOCAB.index[t] for t in [*sentence.split(), EOS]]
        inputs = np.array([[VOCAB.index[EOS], *ids[:-1]]])
        logits, _ = _numpy_forward(scorer, inputs)
        log_softmax = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
        want = float(sum(log_softmax[0, t, i] for t, i in enumerate(ids)))
        assert n == len(ids)
        assert log_prob == pytest.approx(want, rel=1e-5, abs=1e-4)
        assert single == pytest.approx(log_prob, rel=1e-6)
