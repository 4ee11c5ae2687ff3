"""Corpus files, tokens and the vocabulary.

Word level as in the reference implementation: every line is split on whitespace and
ends with `<eos>`, empty lines included. Character level: every character of a line is
a token (white space becomes `_`), then `<eos>`.
"""

import bz2
import collections
import gzip
import hashlib
import itertools
import json
import lzma
import os

import numpy as np

from awd_lstm._files import write_json_atomic

EOS = "<eos>"
UNK = "<unk>"
LEVELS = ("word", "char")

# Folder layouts, tried in this order: the file names of the train, valid, test splits.
LAYOUTS = {
    "ptb": ("ptb.train.txt", "ptb.valid.txt", "ptb.test.txt"),
    "ptb-char": ("ptb.char.train.txt", "ptb.char.valid.txt", "ptb.char.test.txt"),
    "wikitext": ("wiki.train.tokens", "wiki.valid.tokens", "wiki.test.tokens"),
    "plain": ("train.txt", "valid.txt", "test.txt"),
}
SPLITS = ("train", "valid", "test")
# A split file may also be compressed: `ptb.train.txt.xz` and the like.
COMPRESSED = {".xz": lzma.open, ".gz": gzip.open, ".bz2": bz2.open}


class CorpusError(ValueError):
    """A corpus or vocabulary that cannot be used; the message is one sentence."""


def tokenize_line(line, level="word"):
    """The tokens of one line (without its line break), `<eos>` last."""
    if level == "word":
        return line.split() + [EOS]
    return ["_" if c.isspace() else c for c in line] + [EOS]


def split_lines(raw, source):
    """The lines of UTF-8 bytes (with or without a byte-order mark; `\\n`, `\\r\\n` or
    `\\r` line ends). Raises `CorpusError` naming `source` for bytes that are not
    UTF-8 or text that is empty."""
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise CorpusError(f"{source} is not valid UTF-8 (byte {e.start}, line {line})") from None
    if not text.strip():
        raise CorpusError(f"{source} is empty")
    # Only \n, \r\n and \r end lines (str.splitlines would also split at form
    # feeds and other separators); a last line without a line end still counts.
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    if lines[-1] == "":
        lines.pop()
    return lines


def read_tokens(path, level="word"):
    """Reads a text file into a list of tokens.

    Accepts UTF-8 with or without a byte-order mark and `\\n`, `\\r\\n` or `\\r` line
    ends, plain or compressed (`.xz`, `.gz`, `.bz2`). Raises `CorpusError` for a
    missing, unreadable, non-UTF-8 or empty file.
    """
    if level not in LEVELS:
        raise CorpusError(f"level must be one of {LEVELS}; got {level!r}")
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise CorpusError(f"corpus file {path} does not exist")
    opener = COMPRESSED.get(os.path.splitext(path)[1], open)
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError, lzma.LZMAError) as e:
        reason = e.strerror or str(e) if isinstance(e, OSError) else str(e) or type(e).__name__
        raise CorpusError(f"corpus file {path} cannot be read: {reason}") from None
    lines = split_lines(raw, f"corpus file {path}")
    tokens = []
    for line in lines:
        tokens.extend(tokenize_line(line, level))
    return tokens


class Vocabulary:
    """Tokens and their ids, most frequent first (ties in order of appearance).

    Args:
        tokens: The tokens in id order.
        counts: Their training counts (optional, same length).
        level: "word" or "char", the tokenization the vocabulary was built with.
    """

    def __init__(self, tokens, counts=None, level="word"):
        tokens = list(tokens)
        if not tokens:
            raise CorpusError("a vocabulary needs at least one token")
        if len(set(tokens)) != len(tokens):
            raise CorpusError("vocabulary tokens must be distinct")
        if counts is not None and len(counts) != len(tokens):
            raise CorpusError("vocabulary counts must match its tokens one to one")
        if level not in LEVELS:
            raise CorpusError(f"level must be one of {LEVELS}; got {level!r}")
        self.tokens = tokens
        self.counts = None if counts is None else [int(c) for c in counts]
        self.level = level
        self.index = {token: i for i, token in enumerate(tokens)}

    @classmethod
    def build(cls, tokens, level="word", extra_tokens=()):
        """A vocabulary of `tokens` (counted) and `extra_tokens` (count 0 unless also
        in `tokens`), most frequent first, ties in order of first appearance."""
        counts = collections.Counter(tokens)
        first = {}
        for i, token in enumerate(itertools.chain(tokens, extra_tokens, [EOS])):
            first.setdefault(token, i)
        ordered = sorted(first, key=lambda t: (-counts[t], first[t]))
        return cls(ordered, [counts[t] for t in ordered], level)

    def __len__(self):
        return len(self.tokens)

    def __contains__(self, token):
        return token in self.index

    @property
    def unk_id(self):
        return self.index.get(UNK)

    def encode(self, tokens, source="input"):
        """Token ids; unknown tokens map to `<unk>` when the vocabulary has it and
        raise `CorpusError` naming the first one otherwise."""
        unk = self.unk_id
        ids = np.empty(len(tokens), dtype=np.int32)
        for i, token in enumerate(tokens):
            found = self.index.get(token, unk)
            if found is None:
                raise CorpusError(
                    f"{source} has the token {token!r} (position {i}), which is not in "
                    f"the vocabulary of {len(self)} tokens and the vocabulary has no {UNK}"
                )
            ids[i] = found
        return ids

    def decode(self, ids):
        return [self.tokens[int(i)] for i in ids]

    def fingerprint(self):
        """A short hash of the level and the tokens in order: two vocabularies with the
        same fingerprint map every token to the same id."""
        text = self.level + "\n" + "\n".join(self.tokens)
        return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]

    def to_json(self):
        return {"level": self.level, "tokens": self.tokens, "counts": self.counts}

    def save(self, path):
        """Writes the vocabulary as JSON, atomically (a temporary file, then rename)."""
        write_json_atomic(path, self.to_json())

    @classmethod
    def load(cls, path):
        path = os.fspath(path)
        try:
            with open(path, encoding="utf-8") as f:
                data = json.load(f)
            return cls(data["tokens"], data.get("counts"), data.get("level", "word"))
        except FileNotFoundError:
            raise CorpusError(f"vocabulary file {path} does not exist") from None
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise CorpusError(f"vocabulary file {path} is not a valid vocabulary: {e}") from None


class Corpus:
    """The three splits of a corpus as token-id arrays, with their vocabulary."""

    def __init__(self, vocab, train, valid, test, paths=None):
        self.vocab = vocab
        self.train = train
        self.valid = valid
        self.test = test
        self.paths = paths or {}

    def split(self, name):
        if name not in SPLITS:
            raise CorpusError(f"split must be one of {SPLITS}; got {name!r}")
        return getattr(self, name)

    def stats(self):
        """Token counts, vocabulary size and out-of-vocabulary rates, per split."""
        unk = self.vocab.unk_id
        result = {"vocab_size": len(self.vocab), "level": self.vocab.level}
        for name in SPLITS:
            ids = self.split(name)
            result[name] = {
                "tokens": int(len(ids)),
                "unk_rate": float(np.mean(ids == unk)) if unk is not None and len(ids) else 0.0,
            }
        return result


def _split_file(directory, name):
    """The path of `name` in `directory`, plain or compressed; None if neither."""
    for suffix in ("", *COMPRESSED):
        path = os.path.join(directory, name + suffix)
        if os.path.isfile(path):
            return path
    return None


def find_layout(directory):
    """Returns `(layout_name, {split: path})` for a corpus folder."""
    directory = os.fspath(directory)
    if not os.path.isdir(directory):
        raise CorpusError(f"data folder {directory} does not exist")
    for name, files in LAYOUTS.items():
        if _split_file(directory, files[0]) is None:
            continue
        paths = {s: _split_file(directory, f) for s, f in zip(SPLITS, files)}
        missing = [f for s, f in zip(SPLITS, files) if paths[s] is None]
        if missing:
            raise CorpusError(f"data folder {directory} has {files[0]} but not {missing[0]}")
        return name, paths
    known = "; ".join(", ".join(files) for files in LAYOUTS.values())
    raise CorpusError(f"data folder {directory} holds none of the known layouts ({known})")


def load_corpus(directory=None, paths=None, level="word", vocab=None):
    """Reads a corpus folder (any of `LAYOUTS`) or explicit `{split: path}`.

    Args:
        directory: A corpus folder.
        paths: Instead of `directory`, a dict with the paths of "train", "valid" and
            "test".
        level: "word" or "char".
        vocab: A `Vocabulary` to reuse (a run's). By default one is built, as the
            reference does, over all three splits (ordered by training frequency).

    Returns:
        A `Corpus`.
    """
    if (directory is None) == (paths is None):
        raise CorpusError("give either a data folder or the paths of the three splits")
    if directory is not None:
        _, paths = find_layout(directory)
    missing = [s for s in SPLITS if s not in paths]
    if missing:
        raise CorpusError(f"no path given for the {missing[0]} split")
    tokens = {s: read_tokens(paths[s], level) for s in SPLITS}
    if vocab is None:
        vocab = Vocabulary.build(tokens["train"], level, tokens["valid"] + tokens["test"])
    elif vocab.level != level:
        raise CorpusError(f"the vocabulary is {vocab.level}-level but level={level!r} was asked")
    ids = {s: vocab.encode(tokens[s], source=f"corpus file {paths[s]}") for s in SPLITS}
    return Corpus(vocab, ids["train"], ids["valid"], ids["test"], dict(paths))
