"""Text that is not pre-tokenized: `awd_lstm.data.Tokenization` (lower-casing,
punctuation splitting, a vocabulary of the training split with `min_count` and
`max_vocab`), kept in the run's `vocab.json` and used by `score` and `generate`; the
defaults keep the reference's vocabulary and ids."""

import json
import math
import sys

import numpy as np
import pytest

from awd_lstm.data import EOS, UNK, CorpusError, Tokenization, Vocabulary, load_corpus
from awd_lstm.data import corpus as corpus_module
from awd_lstm.generation import generate, score_sentences
from tests.conftest import one_error_line

TRAIN = "Hello, world! Hello again.\nThe world is big, the World is round.\n"
VALID = "Hello, Mars!\n"
TEST = "The moon is round.\n"


@pytest.fixture
def text(tmp_path):
    """A tiny mixed-case, punctuated corpus in the plain layout."""
    for name, content in (("train.txt", TRAIN), ("valid.txt", VALID), ("test.txt", TEST)):
        (tmp_path / name).write_text(content, encoding="utf-8")
    return tmp_path


def _ids(vocab, words):
    return [vocab.index[w] for w in words]


# -- the defaults: the reference's vocabulary ------------------------------------------


def test_defaults_keep_the_reference_vocabulary_and_ids(text, tmp_path):
    corpus = load_corpus(text)
    # Whitespace split, every word of the three splits, ordered by training count
    # (ties: first appearance), valid and test words last with count 0.
    assert corpus.vocab.tokens == [
        EOS, "is", "Hello,", "world!", "Hello", "again.", "The", "world", "big,", "the",
        "World", "round.", "Mars!", "moon",
    ]  # fmt: skip
    assert corpus.vocab.counts == [2, 2] + [1] * 10 + [0, 0]
    np.testing.assert_array_equal(corpus.valid, [2, 12, 0])
    np.testing.assert_array_equal(corpus.test, [6, 13, 1, 11, 0])
    assert UNK not in corpus.vocab
    # The reference's dictionary: the same words, with nothing left out.
    words = {w for part in (TRAIN, VALID, TEST) for line in part.splitlines() for w in line.split()}
    assert set(corpus.vocab.tokens) == words | {EOS}
    # Default settings given explicitly change nothing, and vocab.json is as before.
    explicit = load_corpus(text, tokenization=Tokenization())
    assert explicit.vocab.tokens == corpus.vocab.tokens
    assert explicit.vocab.fingerprint() == corpus.vocab.fingerprint()
    for split in ("train", "valid", "test"):
        np.testing.assert_array_equal(explicit.split(split), corpus.split(split))
    corpus.vocab.save(tmp_path / "vocab.json")
    saved = json.loads((tmp_path / "vocab.json").read_text())
    assert sorted(saved) == ["counts", "level", "tokens"]
    assert "tokenization" not in corpus.stats()


def test_a_vocabulary_file_without_tokenization_reads_text_the_old_way(tmp_path):
    path = tmp_path / "vocab.json"
    path.write_text(json.dumps({"level": "word", "tokens": [EOS, "Hello,", "world!"]}))
    vocab = Vocabulary.load(path)
    assert vocab.tokenization == Tokenization() and vocab.tokenization.is_default
    assert vocab.tokenize("Hello, world!") == ["Hello,", "world!", EOS]


# -- each option ---------------------------------------------------------------------


def test_train_only_vocabulary_reads_unseen_words_as_unk(text):
    corpus = load_corpus(text, tokenization=Tokenization(train_only=True))
    assert corpus.vocab.tokens == [
        EOS, "is", "Hello,", "world!", "Hello", "again.", "The", "world", "big,", "the",
        "World", "round.", UNK,
    ]  # fmt: skip
    assert corpus.vocab.counts[-1] == 0
    unk = corpus.vocab.unk_id
    np.testing.assert_array_equal(corpus.valid, [2, unk, 0])  # Mars! is not in training
    np.testing.assert_array_equal(corpus.test, [6, unk, 1, 11, 0])  # nor moon
    assert corpus.stats()["valid"]["unk_rate"] == pytest.approx(1 / 3)


def test_lowercase(text):
    corpus = load_corpus(text, tokenization=Tokenization(lowercase=True))
    vocab = corpus.vocab
    assert vocab.tokenization.train_only  # implied
    assert vocab.tokens == [
        EOS, "the", "world", "is", "hello,", "world!", "hello", "again.", "big,", "round.", UNK,
    ]  # fmt: skip
    assert vocab.counts == [2, 2, 2, 2, 1, 1, 1, 1, 1, 1, 0]
    np.testing.assert_array_equal(corpus.valid, [4, 10, 0])  # hello, mars! <eos>
    np.testing.assert_array_equal(corpus.test, [1, 10, 3, 9, 0])


def test_punctuation_splitting(text):
    corpus = load_corpus(text, tokenization=Tokenization(split_punctuation=True))
    vocab = corpus.vocab
    assert vocab.tokens == [
        "Hello", ",", "world", ".", EOS, "is", "!", "again", "The", "big", "the", "World",
        "round", UNK,
    ]  # fmt: skip
    assert vocab.counts == [2, 2, 2, 2, 2, 2, 1, 1, 1, 1, 1, 1, 1, 0]
    assert vocab.decode(corpus.train[:8]) == [
        "Hello",
        ",",
        "world",
        "!",
        "Hello",
        "again",
        ".",
        EOS,
    ]
    np.testing.assert_array_equal(corpus.valid, [0, 1, 13, 6, 4])  # Hello , <unk> ! <eos>
    assert vocab.tokenization.detokenize(["Hello", ",", "world", "!"]) == "Hello, world!"


def test_lowercase_and_punctuation_splitting(text):
    both = Tokenization(lowercase=True, split_punctuation=True)
    vocab = load_corpus(text, tokenization=both).vocab
    assert vocab.tokens == [
        "world", "hello", ",", ".", EOS, "the", "is", "!", "again", "big", "round", UNK,
    ]  # fmt: skip
    assert vocab.tokenize("HELLO, Mars!") == ["hello", ",", "mars", "!", EOS]


def test_min_count_reads_rare_training_words_as_unk(text):
    rare = Tokenization(lowercase=True, split_punctuation=True, min_count=2)
    corpus = load_corpus(text, tokenization=rare)
    # !, again, big and round are seen once: four <unk> in training, now the most frequent.
    assert corpus.vocab.tokens == [UNK, "world", "hello", ",", ".", EOS, "the", "is"]
    assert corpus.vocab.counts == [4, 3, 2, 2, 2, 2, 2, 2]
    unk = corpus.vocab.unk_id
    np.testing.assert_array_equal(corpus.train[:8], [2, 3, 1, unk, 2, unk, 4, 5])


def test_max_vocab_keeps_the_most_frequent_ties_broken_by_first_appearance(text):
    small = Tokenization(lowercase=True, split_punctuation=True, max_vocab=5)
    corpus = load_corpus(text, tokenization=small)
    # world (3) then, of hello , . the is (2 each), the first two seen: <eos> and <unk>
    # take the other two places.
    assert corpus.vocab.tokens == [UNK, "world", "hello", ",", EOS]
    assert corpus.vocab.counts == [10, 3, 2, 2, 2]
    assert len(corpus.vocab) == 5
    again = load_corpus(text, tokenization=small)
    assert again.vocab.tokens == corpus.vocab.tokens  # deterministic


def test_unk_in_the_text_stays_one_token(tmp_path):
    for name in ("train.txt", "valid.txt", "test.txt"):
        (tmp_path / name).write_text("the <unk> sat, (the <unk>).\n")
    vocab = load_corpus(tmp_path, tokenization=Tokenization(split_punctuation=True)).vocab
    assert vocab.tokenize("the <unk> sat.") == ["the", UNK, "sat", ".", EOS]
    assert "<" not in vocab


@pytest.mark.parametrize(
    "settings,message",
    [
        (dict(min_count=0), r"`min_count` must be a positive integer; Received: min_count=0"),
        (dict(max_vocab=1), r"`max_vocab` must be an integer of at least 3 .*max_vocab=1"),
        (dict(lowercase="yes"), r"`lowercase` must be true or false"),
    ],
)
def test_bad_settings_are_one_sentence(settings, message):
    with pytest.raises(CorpusError, match=message):
        Tokenization(**settings)


def test_settings_that_do_not_fit_are_refused(text, tmp_path):
    with pytest.raises(CorpusError, match="punctuation splitting is for word-level corpora"):
        load_corpus(text, level="char", tokenization=Tokenization(split_punctuation=True))
    vocab = load_corpus(text).vocab
    with pytest.raises(CorpusError, match="other tokenization settings than those given"):
        load_corpus(text, vocab=vocab, tokenization=Tokenization(lowercase=True))
    with pytest.raises(CorpusError, match="unknown tokenization setting 'casefold'"):
        Tokenization.from_json({"casefold": True})
    (tmp_path / "v.json").write_text(json.dumps({"tokens": [EOS], "tokenization": {"x": 1}}))
    with pytest.raises(CorpusError, match="is not a valid vocabulary: unknown tokenization"):
        Vocabulary.load(tmp_path / "v.json")


def test_character_level_lowercase_and_min_count(text):
    corpus = load_corpus(text, level="char", tokenization=Tokenization(lowercase=True, min_count=3))
    vocab = corpus.vocab
    assert UNK in vocab and "H" not in vocab and "h" in vocab
    # Characters seen fewer than 3 times in training (b, g, ! ...) are <unk>.
    assert "b" not in vocab and "!" not in vocab and "_" in vocab


def test_missing_sacremoses_is_one_sentence_naming_the_install(text, monkeypatch):
    corpus_module._moses.cache_clear()
    monkeypatch.setitem(sys.modules, "sacremoses", None)  # import fails
    try:
        with pytest.raises(CorpusError, match=r"needs the sacremoses package.*awd-lstm\[text\]"):
            load_corpus(text, tokenization=Tokenization(split_punctuation=True))
        load_corpus(text, tokenization=Tokenization(lowercase=True))  # no need of it
    finally:
        corpus_module._moses.cache_clear()


def test_settings_round_trip_through_json(tmp_path):
    settings = Tokenization(lowercase=True, split_punctuation=True, min_count=2, max_vocab=50)
    assert Tokenization.from_json(json.loads(json.dumps(settings.to_json()))) == settings
    vocab = Vocabulary([EOS, UNK, "a"], tokenization=settings)
    vocab.save(tmp_path / "vocab.json")
    assert Vocabulary.load(tmp_path / "vocab.json").tokenization == settings


# -- the run keeps them: score and generate read text the run's way ---------------------


class _ScriptedModel:
    """A stand-in language model: uniform probabilities for scoring; for generation,
    logits that pick `script`'s tokens in turn. Records its inputs."""

    stateful, batch_size = True, 1

    def __init__(self, vocab_size, script=()):
        self.vocab_size, self.script, self.inputs = vocab_size, list(script), []

    def reset_state(self):
        pass

    def predict_on_batch(self, ids):
        self.inputs.append(np.asarray(ids))
        logits = np.zeros((*np.shape(ids), self.vocab_size))
        if self.script:
            logits[..., self.script.pop(0)] = 10.0
        return logits

    def score_on_batch(self, ids, targets):
        self.inputs.append(np.asarray(ids))
        return np.full(np.shape(targets), math.log(self.vocab_size))  # each -log p


def test_run_folder_keeps_the_settings_and_score_and_generate_use_them(text, tmp_path):
    from awd_lstm.config import TrainingConfig
    from awd_lstm.runs import Run

    settings = Tokenization(lowercase=True, split_punctuation=True)
    corpus = load_corpus(text, tokenization=settings)
    config = TrainingConfig(embedding_size=4, hidden_size=4, num_layers=1, batch_size=1)
    Run.create(tmp_path / "run", config, corpus.vocab, data=text)
    run = Run.open(tmp_path / "run")
    assert run.tokenization == settings and run.vocabulary.tokenization == settings
    reread = run.corpus()
    for split in ("train", "valid", "test"):
        np.testing.assert_array_equal(reread.split(split), corpus.split(split))
    vocab = run.vocabulary

    scorer = _ScriptedModel(len(vocab))
    scorer.stateful = False  # scoring takes a model for any batch
    [(log_prob, tokens)] = score_sentences(scorer, vocab, ["Hello, World!"])
    assert tokens == 5  # hello , world ! <eos>
    assert log_prob == pytest.approx(-5 * math.log(len(vocab)))
    np.testing.assert_array_equal(
        scorer.inputs[0][0, :5], _ids(vocab, [EOS, "hello", ",", "world", "!"])
    )

    script = _ids(vocab, ["hello", ",", "world", "!", EOS, "the"])
    sampler = _ScriptedModel(len(vocab), [_ids(vocab, ["is"])[0], *script])
    with_prompt, drawn = generate(sampler, vocab, "The WORLD", num_tokens=6, top_k=1, seed=0)
    np.testing.assert_array_equal(sampler.inputs[0][0], _ids(vocab, [EOS, "the", "world"]))
    assert drawn == ["is", "hello", ",", "world", "!", EOS]
    assert with_prompt == "is hello, world!\n"  # detokenized: punctuation joined back


# -- the command ---------------------------------------------------------------------


def test_train_flags_then_score_and_generate_read_text_the_run_way(tmp_path, capsys):
    from awd_lstm.cli import main
    from tests.conftest import TINY_FLAGS

    data = tmp_path / "text"
    data.mkdir()
    for name, content, repeat in (("train", TRAIN, 12), ("valid", VALID, 6), ("test", TEST, 4)):
        (data / f"{name}.txt").write_text(content * repeat, encoding="utf-8")
    tiny = [f for f in TINY_FLAGS if f not in ("--synthetic-tokens", "3000")]
    tiny[tiny.index("--epochs") + 1] = "1"
    out = tmp_path / "run"
    base = ["train", "--data", str(data), "--out", str(out), *tiny]
    for flags, message in [
        (["--min-count", "0"], "--min-count must be a positive integer; got 0$"),
        (["--max-vocab", "1"], r"--max-vocab must be an integer of at least 3 \(.*\); got 1$"),
        (["--split-punctuation", "--level", "char"], "for word-level corpora"),
    ]:
        assert main([*base, *flags]) == 2
        one_error_line(capsys, message)
    assert main(["train", "--out", str(out), *TINY_FLAGS, "--lowercase"]) == 2
    one_error_line(capsys, "give --data, a corpus folder, for tokenization settings")
    assert not out.exists()

    flags = ["--lowercase", "--split-punctuation", "--min-count", "2"]
    assert main([*base, *flags, "--show-config"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["tokenization"]["min_count"] == 2 and shown["tokenization"]["train_only"]
    assert main([*base, *flags]) == 0
    saved = json.loads((out / "vocab.json").read_text())["tokenization"]
    assert saved == Tokenization(lowercase=True, split_punctuation=True, min_count=2).to_json()
    assert "<unk>" in json.loads((out / "vocab.json").read_text())["tokens"]

    sentences = tmp_path / "sentences.txt"
    sentences.write_text("Hello, World!\nThe MOON is round.\n")
    capsys.readouterr()
    assert main(["score", "--run", str(out), str(sentences), "--no-progress"]) == 0
    result = capsys.readouterr()
    assert [row.split("\t")[1] for row in result.out.split("\n")[:2]] == ["5", "6"]
    assert "outside the vocabulary read as <unk>: moon" in result.err
    argv = ["generate", "--run", str(out), "--prompt", "Hello, World!", "--tokens", "5"]
    assert main(argv) == 0
    result = capsys.readouterr()
    assert result.out.startswith("Hello, World! ") and result.err == ""

    assert main(["train", "--resume", str(out), "--lowercase", "--max-vocab", "9"]) == 2
    one_error_line(capsys, "with its own settings; drop --lowercase, --max-vocab$")


def test_train_help_names_the_vocabulary_flags(capsys):
    from awd_lstm.cli import main

    with pytest.raises(SystemExit):
        main(["train", "--help"])
    shown = " ".join(capsys.readouterr().out.split())
    for flag in ("--lowercase", "--split-punctuation", "--min-count N", "--max-vocab N"):
        assert flag in shown
