"""Corpus reading, vocabulary, batching, the BPTT schedule and the synthetic source."""

import io
import itertools
import json
import math
import re

import keras
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from awd_lstm.data import (
    EOS,
    UNK,
    BPTTSchedule,
    CorpusError,
    HiddenMarkovSource,
    Tokenization,
    Vocabulary,
    batchify,
    find_layout,
    load_corpus,
    max_segment_length,
    read_ids,
    read_tokens,
    segment,
    tokenize_line,
)
from awd_lstm.data import corpus as corpus_module
from awd_lstm.data.corpus import line_pieces

# -- reading -------------------------------------------------------------------------


def _write(path, data):
    path.write_bytes(data if isinstance(data, bytes) else data.encode("utf-8"))
    return path


def test_word_level_reading_matches_reference_rule(tmp_path):
    path = _write(tmp_path / "a.txt", " the cat \n\nsat  on\tmat\n")
    assert read_tokens(path) == ["the", "cat", EOS, EOS, "sat", "on", "mat", EOS]


@pytest.mark.parametrize(
    "raw",
    [b"a b\nc\n", b"a b\r\nc\r\n", b"a b\rc\r", b"\xef\xbb\xbfa b\nc\n", b"a b\nc"],
    ids=["lf", "crlf", "cr", "bom", "no-final-newline"],
)
def test_line_ends_and_bom(tmp_path, raw):
    assert read_tokens(_write(tmp_path / "a.txt", raw)) == ["a", "b", EOS, "c", EOS]


def test_char_level(tmp_path):
    path = _write(tmp_path / "a.txt", "ab c\nd\n")
    assert read_tokens(path, level="char") == ["a", "b", "_", "c", EOS, "d", EOS]


@pytest.mark.parametrize(
    "raw,message",
    [
        (b"", "is empty"),
        (b" \n\n", "is empty"),
        (b"ok\n\xff\xfe bad\n", r"is not valid UTF-8 \(byte 3, line 2\)"),
    ],
)
def test_bad_files_give_one_sentence(tmp_path, raw, message):
    with pytest.raises(CorpusError, match=message):
        read_tokens(_write(tmp_path / "a.txt", raw))


def test_missing_file(tmp_path):
    with pytest.raises(CorpusError, match=r"corpus file .*nope.txt does not exist"):
        read_tokens(tmp_path / "nope.txt")


ONE_BACKEND = pytest.mark.skipif(
    keras.backend.backend() != "tensorflow", reason="reading text is the same on every backend"
)


@ONE_BACKEND
@pytest.mark.parametrize(
    "level,tokenization",
    [("word", None), ("char", None), ("char", Tokenization(lowercase=True))],
    ids=["words", "characters", "lower-cased-characters"],
)
def test_reading_in_blocks_of_a_few_bytes_gives_every_token(
    tmp_path, monkeypatch, level, tokenization
):
    # Lines longer than a block (words longer than one, capitals whose last sigma
    # lower-cases by the letters before it) and line ends split between reads.
    sigmas = " ".join("Α" * n + "Σ" for n in range(12))
    lines = [sigmas, "", "xxxxxxxxxxxxx  yy", "z  Σ", " ".join(f"w{i}" for i in range(60))]
    path = _write(
        tmp_path / "a.txt", "\ufeff" + "\r\n".join(lines[:3]) + "\r" + "\n".join(lines[3:])
    )
    want = [token for line in lines for token in tokenize_line(line, level, tokenization)]
    vocab = Vocabulary.build(want, level, tokenization=tokenization)
    monkeypatch.setattr(corpus_module, "READ_BLOCK", 5)
    assert read_tokens(path, level, tokenization) == want
    np.testing.assert_array_equal(read_ids(path, vocab), vocab.encode(want))
    assert read_ids(path, vocab).dtype == np.int32
    # A token outside a vocabulary without <unk>: its position in the whole file.
    missing = want[-2]
    kept = [t for t in vocab.tokens if t != missing]
    others = Vocabulary(kept, level=level, tokenization=tokenization)
    message = re.escape(f"has the token {missing!r} (position {want.index(missing)})")
    with pytest.raises(CorpusError, match=message):
        read_ids(path, others)


@ONE_BACKEND
def test_a_long_line_is_read_in_pieces_of_at_most_two_blocks():
    line = " ".join(["word"] * 200_000)
    pieces = list(line_pieces(io.BytesIO(line.encode()), "a line", block=4096))
    assert "".join(text for text, _ in pieces) == line
    assert [ends for _, ends in pieces] == [False] * (len(pieces) - 1) + [True]
    assert max(len(text) for text, _ in pieces) <= 2 * 4096


@settings(max_examples=60, deadline=None)
@given(st.binary(max_size=200))
def test_reader_never_raises_anything_but_corpus_error(tmp_path_factory, raw):
    path = tmp_path_factory.mktemp("fuzz") / "a.txt"
    path.write_bytes(raw)
    try:
        tokens = read_tokens(path)
    except CorpusError as e:
        assert "\n" not in str(e)
        return
    assert tokens[-1] == EOS
    text = raw.decode("utf-8-sig").replace("\r\n", "\n").replace("\r", "\n")
    assert tokens.count(EOS) == len(text.rstrip("\n").split("\n")) if text else True


# -- vocabulary and layouts --------------------------------------------------------


def test_vocabulary_frequency_order_and_round_trip(tmp_path):
    vocab = Vocabulary.build(["b", "a", "b", EOS, "c", "a", "b", EOS])
    assert vocab.tokens == ["b", "a", EOS, "c"]
    assert vocab.counts == [3, 2, 2, 1]
    np.testing.assert_array_equal(vocab.encode(["c", "b"]), [3, 0])
    vocab.save(tmp_path / "vocab.json")
    loaded = Vocabulary.load(tmp_path / "vocab.json")
    assert loaded.tokens == vocab.tokens and loaded.counts == vocab.counts
    assert not list(tmp_path.glob(".tmp-*"))  # the temporary file was renamed


def test_unknown_tokens_map_to_unk_or_fail_clearly():
    with_unk = Vocabulary.build(["a", UNK, EOS])
    np.testing.assert_array_equal(with_unk.encode(["zzz", "a"]), [with_unk.unk_id, 0])
    without = Vocabulary.build(["a", EOS])
    with pytest.raises(CorpusError, match=r"has the token 'zzz' \(position 1\), which is not in"):
        without.encode(["a", "zzz"], source="test.txt")


def test_bad_vocabulary_file(tmp_path):
    _write(tmp_path / "v.json", "{not json")
    with pytest.raises(CorpusError, match="is not a valid vocabulary"):
        Vocabulary.load(tmp_path / "v.json")
    _write(tmp_path / "w.json", json.dumps({"tokens": ["a", "a"]}))
    with pytest.raises(CorpusError, match="is not a valid vocabulary"):
        Vocabulary.load(tmp_path / "w.json")


@pytest.mark.parametrize("layout", ["ptb", "wikitext", "plain"])
def test_layouts(tmp_path, layout):
    names = {
        "ptb": ("ptb.train.txt", "ptb.valid.txt", "ptb.test.txt"),
        "wikitext": ("wiki.train.tokens", "wiki.valid.tokens", "wiki.test.tokens"),
        "plain": ("train.txt", "valid.txt", "test.txt"),
    }[layout]
    for name, text in zip(names, ("a b a\nc\n", "a c\n", "b\n")):
        _write(tmp_path / name, text)
    assert find_layout(tmp_path)[0] == layout
    corpus = load_corpus(tmp_path)
    assert corpus.vocab.tokens == ["a", EOS, "b", "c"]
    np.testing.assert_array_equal(corpus.valid, [0, 3, 1])
    assert corpus.stats()["train"]["tokens"] == 6


@pytest.mark.parametrize("suffix", [".xz", ".gz", ".bz2"])
def test_compressed_split_files_read_like_plain_ones(tmp_path, suffix):
    import bz2
    import gzip
    import lzma

    compress = {".xz": lzma.compress, ".gz": gzip.compress, ".bz2": bz2.compress}[suffix]
    texts = ("a b a\r\nc\n", "a c\n", "\ufeffb\n")
    for folder in ("plain", "packed"):
        (tmp_path / folder).mkdir()
    for name, text in zip(("ptb.train.txt", "ptb.valid.txt", "ptb.test.txt"), texts):
        _write(tmp_path / "plain" / name, text)
        (tmp_path / "packed" / (name + suffix)).write_bytes(compress(text.encode("utf-8")))
    packed, plain = load_corpus(tmp_path / "packed"), load_corpus(tmp_path / "plain")
    assert find_layout(tmp_path / "packed") == (
        "ptb",
        {s: str(tmp_path / "packed" / f"ptb.{s}.txt{suffix}") for s in ("train", "valid", "test")},
    )
    assert packed.vocab.tokens == plain.vocab.tokens
    for split in ("train", "valid", "test"):
        np.testing.assert_array_equal(packed.split(split), plain.split(split))
    (tmp_path / "packed" / ("ptb.test.txt" + suffix)).write_bytes(b"not compressed at all")
    with pytest.raises(CorpusError, match=r"corpus file .*ptb.test.txt.* cannot be read"):
        load_corpus(tmp_path / "packed")


def test_layout_errors(tmp_path):
    with pytest.raises(CorpusError, match="holds none of the known layouts"):
        load_corpus(tmp_path)
    _write(tmp_path / "train.txt", "a\n")
    with pytest.raises(CorpusError, match="has train.txt but not valid.txt"):
        load_corpus(tmp_path)
    with pytest.raises(CorpusError, match="does not exist"):
        load_corpus(tmp_path / "missing")


def test_words_only_in_valid_or_test_join_the_vocabulary_last(tmp_path):
    for name, text in zip(("train.txt", "valid.txt", "test.txt"), ("a a b\n", "z\n", "b y\n")):
        _write(tmp_path / name, text)
    corpus = load_corpus(tmp_path)
    assert corpus.vocab.tokens == ["a", "b", EOS, "z", "y"]
    assert corpus.vocab.counts == [2, 1, 1, 0, 0]


def test_reused_vocabulary_rejects_other_corpus(tmp_path):
    for name in ("train.txt", "valid.txt", "test.txt"):
        _write(tmp_path / name, "x y\n")
    vocab = Vocabulary.build(["a", EOS])
    with pytest.raises(CorpusError, match="'x'"):
        load_corpus(tmp_path, vocab=vocab)


# -- batching and BPTT --------------------------------------------------------------


def test_batchify_contiguous_streams():
    batched = batchify(np.arange(23), 4)
    assert batched.shape == (4, 5)
    np.testing.assert_array_equal(batched[1], [5, 6, 7, 8, 9])
    with pytest.raises(CorpusError, match="too few for 10 streams"):
        batchify(np.arange(15), 10, split="valid")
    with pytest.raises(CorpusError, match="batch size must be a positive integer"):
        batchify(np.arange(15), 0)


@pytest.mark.parametrize("quantum", [1, 5])
def test_schedule_covers_every_position_once(quantum):
    schedule = BPTTSchedule(1000, bptt=70, seed=3, length_quantum=quantum)
    covered = np.zeros(999, int)
    for start, length in schedule:
        covered[start : start + length] += 1
    assert covered.max() == 1
    assert covered.sum() >= 999 - (quantum - 1)
    batched = batchify(np.arange(4000), 4)
    x, y = segment(batched, *schedule.segments[0])
    np.testing.assert_array_equal(y, x + 1)


def test_segment_length_distribution():
    lengths = np.array(
        [
            length
            for seed in range(40)
            for _, length in list(BPTTSchedule(20_000, bptt=70, seed=seed))[:-1]
        ]
    )
    short = lengths < 52  # the bptt/2 = 35 mode
    assert abs(short.mean() - 0.05) < 0.01
    assert abs(lengths[~short].mean() - 69.5) < 0.3  # int() of N(70, 5)
    assert abs(lengths[~short].std() - 5.0) < 0.3
    assert lengths.min() >= 5


def test_quantized_lengths_bound_the_compiled_shapes():
    schedule = BPTTSchedule(1, bptt=70, length_quantum=5)
    seen = set()
    for epoch in range(30):
        seen |= {length for _, length in BPTTSchedule(5003, bptt=70, seed=epoch, length_quantum=5)}
    assert all(length % 5 == 0 for length in seen)
    assert len(seen) <= schedule.max_distinct_lengths() == 18


@settings(max_examples=25, deadline=None)
@given(bptt=st.integers(1, 120), quantum=st.integers(1, 9), seed=st.integers(0, 1000))
def test_max_segment_length_bounds_every_drawn_length(bptt, quantum, seed):
    """What JAX pads training segments to: no drawn length exceeds it, and it is a
    multiple of the quantum."""
    longest = max_segment_length(bptt, quantum)
    assert longest % quantum == 0 and bptt + 20 <= longest < bptt + 20 + quantum
    schedule = BPTTSchedule(20_000, bptt=bptt, seed=seed, length_quantum=quantum)
    assert max(length for _, length in schedule) <= longest


def test_fixed_schedule_for_evaluation():
    schedule = BPTTSchedule(101, bptt=30, variable=False)
    assert [length for _, length in schedule] == [30, 30, 30, 10]


# -- the hidden Markov source --------------------------------------------------------


def test_forward_algorithm_equals_brute_force_enumeration():
    source = HiddenMarkovSource(num_states=3, vocab_size=5, seed=1, words_per_state=3)
    ids = source.sample(6, seed=2)
    brute = 0.0
    for path in itertools.product(range(3), repeat=len(ids)):
        p = source.initial[path[0]] * source.emissions[path[0], ids[0]]
        for t in range(1, len(ids)):
            p *= source.transitions[path[t - 1], path[t]] * source.emissions[path[t], ids[t]]
        brute += p
    assert source.log_likelihood(ids) == pytest.approx(math.log(brute), rel=1e-10)


def test_source_is_a_distribution_and_seeded():
    source = HiddenMarkovSource(num_states=16, vocab_size=1000, seed=0)
    np.testing.assert_allclose(source.transitions.sum(1), 1.0)
    np.testing.assert_allclose(source.emissions.sum(1), 1.0)
    np.testing.assert_allclose(source.initial @ source.transitions, source.initial, atol=1e-10)
    np.testing.assert_array_equal(source.sample(100, seed=5), source.sample(100, seed=5))
    again = HiddenMarkovSource(num_states=16, vocab_size=1000, seed=0)
    np.testing.assert_array_equal(again.transitions, source.transitions)


def test_optimum_beats_unigram_and_written_corpus_reads_back(tmp_path):
    source = HiddenMarkovSource(num_states=16, vocab_size=200, seed=0)
    paths = source.write_corpus(tmp_path, 5000, 1000, 1000)
    corpus = load_corpus(tmp_path)
    words = source.words()
    assert corpus.vocab.decode(corpus.test[:50]) == [
        words[i] for i in source.sample(1000, seed=3)[:50]
    ]
    assert set(paths) == {"train", "valid", "test"}
    ids = np.array([words.index(t) for t in corpus.vocab.decode(corpus.test)])
    optimum = source.optimal_perplexity(ids)
    assert 1.0 < optimum < source.unigram_perplexity(source.sample(5000, seed=1), ids)
