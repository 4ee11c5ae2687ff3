"""Sampling text and scoring sentences with a trained language model."""

import io
import itertools

import keras
import numpy as np
import pytest

from awd_lstm.data import EOS, UNK, Vocabulary
from awd_lstm.generation import (
    WINDOW_BATCHES,
    Detokenizer,
    generate,
    iter_generate,
    iter_scores,
    score_sentences,
)
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


def _reference_log_prob(model, sentence):
    """The sentence's log-probability from one NumPy forward pass over all of it."""
    ids = [VOCAB.index[t] for t in [*sentence.split(), EOS]]
    logits, _ = _numpy_forward(model, np.array([[VOCAB.index[EOS], *ids[:-1]]]))
    log_softmax = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    return float(sum(log_softmax[0, t, i] for t, i in enumerate(ids)))


def test_long_lines_scored_in_segments_equal_one_pass(sampler, monkeypatch):
    from awd_lstm.data import corpus

    rng = np.random.default_rng(0)
    words = [f"w{i}" for i in range(14)]
    # Lines longer than a segment (the last one padded, or exactly whole segments)
    # between short ones; the order of the results is the input's. (Segments of 8
    # and short lines of at most 8 tokens: one compiled shape each.)
    lengths = [3, 150, 0, 31, 7, 47, 2]
    sentences = [" ".join(rng.choice(words, n)) for n in lengths]
    scorer = _model(stateful=False, source=sampler)
    segmented = score_sentences(scorer, VOCAB, sentences, batch_size=2, segment_length=8)
    for sentence, n, (log_prob, tokens) in zip(sentences, lengths, segmented):
        assert tokens == n + 1
        assert log_prob == pytest.approx(_reference_log_prob(scorer, sentence), rel=1e-5)
    # The same text as a file read in pieces of a few bytes, with CRLF line ends: the
    # long lines come in many pieces.
    monkeypatch.setattr(corpus, "READ_BLOCK", 12)
    text = io.BytesIO("\r\n".join(sentences).encode())
    streamed = list(iter_scores(scorer, VOCAB, text, batch_size=2, segment_length=8))
    assert [t for _, t in streamed] == [t for _, t in segmented]
    for (got, _), (want, _) in zip(streamed, segmented):
        assert got == pytest.approx(want, rel=1e-6)
    # Words outside the vocabulary in several pieces of one line: one warning.
    text = io.BytesIO(f"zz {sentences[1]} zz yy\nw1\n".encode())
    with pytest.warns(UserWarning) as caught:
        list(iter_scores(scorer, VOCAB, text, batch_size=2, segment_length=8))
    assert [str(w.message) for w in caught if "outside" in str(w.message)] == [
        f"the input: 2 word type(s) outside the vocabulary read as {UNK}: yy, zz"
    ]


def test_scores_come_as_sentences_are_read(sampler):
    scorer = _model(stateful=False, source=sampler)
    read = []

    def endless():
        for i in itertools.count():
            read.append(i)
            yield "w1 w2" if i % 2 else "w3 " * (i % 12)  # some longer than a segment

    scores = iter_scores(scorer, VOCAB, endless(), batch_size=2, segment_length=8)
    log_prob, tokens = next(scores)
    assert tokens == 1 and log_prob == pytest.approx(_reference_log_prob(scorer, ""), rel=1e-5)
    # What was read: the first window of sorted batches, not the input (it has no end).
    assert len(read) <= 2 * WINDOW_BATCHES + 1
    for _ in range(24):  # past lines longer than a segment
        next(scores)
    assert len(read) <= 25 + 2 * WINDOW_BATCHES + 1


def test_iter_generate_yields_the_draws_and_the_text_builds_as_they_come(sampler):
    detokenizer, pieces = Detokenizer(VOCAB), []
    for token in iter_generate(sampler, VOCAB, "w1 w2", num_tokens=30, seed=3):
        pieces.append(detokenizer.add(token))
    text, drawn = generate(sampler, VOCAB, "w1 w2", num_tokens=30, seed=3)
    assert "".join(pieces) + detokenizer.finish() == text
    assert len(pieces) == len(drawn) == 30
    with pytest.raises(ValueError, match="`top_k` must be at least 1"):
        iter_generate(sampler, VOCAB, "w1", top_k=0)  # checked at the call, before a draw


@pytest.mark.skipif(
    keras.backend.backend() != "tensorflow", reason="text from tokens is the same everywhere"
)
def test_detokenizer_joins_words_characters_and_split_punctuation():
    from awd_lstm.data import Tokenization

    def text(vocab, tokens):
        detokenizer = Detokenizer(vocab)
        return "".join(detokenizer.add(t) for t in tokens) + detokenizer.finish()

    assert text(VOCAB, ["w1", "w2", EOS, EOS, "w3"]) == "w1 w2\n\nw3"
    chars = Vocabulary([EOS, "a", "b", "_"], level="char")
    assert text(chars, ["a", "_", "b", EOS, "a"]) == "a b\na"
    moses = Vocabulary(
        [EOS, UNK, "hello", ",", "world", "!"], tokenization=Tokenization(split_punctuation=True)
    )
    assert text(moses, ["hello", ",", "world", "!", EOS, "hello", "!"]) == "hello, world!\nhello!"
