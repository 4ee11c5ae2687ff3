"""Corpora, vocabularies, batching and the built-in synthetic source."""

from awd_lstm.data.batching import (
    BPTTSchedule,
    batchify,
    max_segment_length,
    segment,
    segment_length,
)
from awd_lstm.data.corpus import (
    EOS,
    LAYOUTS,
    UNK,
    Corpus,
    CorpusError,
    Tokenization,
    Vocabulary,
    find_layout,
    load_corpus,
    read_ids,
    read_split,
    read_tokens,
    tokenize_line,
)
from awd_lstm.data.synthetic import HiddenMarkovSource

__all__ = [
    "EOS",
    "LAYOUTS",
    "UNK",
    "BPTTSchedule",
    "Corpus",
    "CorpusError",
    "HiddenMarkovSource",
    "Tokenization",
    "Vocabulary",
    "batchify",
    "find_layout",
    "load_corpus",
    "read_ids",
    "read_split",
    "read_tokens",
    "segment",
    "max_segment_length",
    "segment_length",
    "tokenize_line",
]
