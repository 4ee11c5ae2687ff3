"""Corpus files, tokens and the vocabulary.

Word level as in the reference implementation: every line is split on whitespace and
ends with `<eos>`, empty lines included. Character level: every character of a line is
a token (white space becomes `_`), then `<eos>`. The vocabulary is the reference's,
built over all three splits.

For text that is not pre-tokenized like PTB and WikiText, a `Tokenization` lower-cases
lines, splits punctuation from words (the Moses tokenizer of the optional `sacremoses`
package) and builds the vocabulary from the training split alone, without its rare
words (`min_count`) or beyond its most frequent ones (`max_vocab`): the words left out
become `<unk>`. The vocabulary keeps these settings, so that a run reads prompts and
sentences as it read its training text.
"""

import array
import bz2
import codecs
import collections
import dataclasses
import functools
import gzip
import hashlib
import itertools
import json
import lzma
import numbers
import os
import re
import select
import stat

import numpy as np

from awd_lstm._files import write_json_atomic
from awd_lstm._validation import json_type, short_repr

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


# The fewest tokens `max_vocab` may keep: `<eos>`, `<unk>` and one word.
MIN_MAX_VOCAB = 3


def _is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


def _is_count(value):
    return isinstance(value, numbers.Integral) and not isinstance(value, bool) and value >= 0


@dataclasses.dataclass(frozen=True)
class Tokenization:
    """How lines become tokens and which tokens the vocabulary keeps.

    The defaults are the reference's (whitespace split, every word of the three splits
    in the vocabulary), right for pre-tokenized corpora such as PTB and WikiText. Any
    other setting builds the vocabulary from the training split only; the words it
    does not keep, and those of the valid and test splits (and of prompts, scored
    sentences) that are not in it, become `<unk>`.

    Args:
        lowercase: Lower-case every line first.
        split_punctuation: Split punctuation from words, "Hello, world!" into
            "Hello , world !" (word level; needs the `sacremoses` package:
            `pip install 'awd-lstm[text]'`); `<unk>` in the text stays one token.
        min_count: Training words seen fewer times become `<unk>`.
        max_vocab: Keep at most this many tokens, `<eos>` and `<unk>` included: the
            most frequent training words (ties: the word seen first in training wins).
        train_only: Build the vocabulary from the training split only; implied by
            every other setting that is not its default.
    """

    lowercase: bool = False
    split_punctuation: bool = False
    min_count: int = 1
    max_vocab: int | None = None
    train_only: bool = False

    def __post_init__(self):
        for name in ("lowercase", "split_punctuation", "train_only"):
            value = getattr(self, name)
            if not isinstance(value, bool):
                raise CorpusError(f"`{name}` must be true or false; Received: {name}={value!r}")
        if not _is_int(self.min_count) or self.min_count < 1:
            raise CorpusError(
                f"`min_count` must be a positive integer; Received: min_count={self.min_count!r}"
            )
        if self.max_vocab is not None and (
            not _is_int(self.max_vocab) or self.max_vocab < MIN_MAX_VOCAB
        ):
            raise CorpusError(
                f"`max_vocab` must be an integer of at least {MIN_MAX_VOCAB} ({EOS}, {UNK} "
                f"and a word); Received: max_vocab={self.max_vocab!r}"
            )
        others = (self.lowercase, self.split_punctuation, self.min_count > 1)
        if any(others) or self.max_vocab is not None:
            object.__setattr__(self, "train_only", True)

    @property
    def is_default(self):
        """Whether these are the reference's settings."""
        return self == Tokenization()

    def to_json(self):
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data):
        """The settings of a `to_json` dict; `CorpusError` names an unknown one."""
        if isinstance(data, cls):
            return data
        if not isinstance(data, dict):
            raise CorpusError(f"tokenization settings must be a dict; got {type(data).__name__}")
        names = {field.name for field in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise CorpusError(f"unknown tokenization setting {unknown[0]!r}")
        return cls(**data)

    def check_level(self, level):
        """Raises `CorpusError` for settings that do not apply at `level`."""
        if self.split_punctuation and level != "word":
            raise CorpusError(
                "punctuation splitting is for word-level corpora: at character level "
                "every character is a token already"
            )

    def detokenize(self, words):
        """One line of text from word-level tokens: joined by spaces, or with the Moses
        detokenizer after `split_punctuation` ("Hello , world !" -> "Hello, world!")."""
        if self.split_punctuation:
            return _moses()[1].detokenize(list(words))
        return " ".join(words)


@functools.lru_cache(maxsize=1)
def _moses():
    """The Moses tokenizer and detokenizer (English rules) of `sacremoses`."""
    try:
        from sacremoses import MosesDetokenizer, MosesTokenizer
    except ImportError:
        raise CorpusError(
            "punctuation splitting needs the sacremoses package, which is not installed: "
            "pip install 'awd-lstm[text]' (or pip install sacremoses)"
        ) from None
    return MosesTokenizer(lang="en"), MosesDetokenizer(lang="en")


# `<unk>` in a corpus (WikiText's) stays one token when punctuation is split.
_PROTECTED = [re.escape(UNK)]

DEFAULT_TOKENIZATION = Tokenization()


def tokenize_line(line, level="word", tokenization=None):
    """The tokens of one line (without its line break), `<eos>` last, read with
    `tokenization` (a `Tokenization`; default: the reference's whitespace split)."""
    if tokenization is not None and (tokenization.lowercase or tokenization.split_punctuation):
        if tokenization.lowercase:
            line = line.lower()
        if tokenization.split_punctuation:
            tokenization.check_level(level)
            words = _moses()[0].tokenize(line, escape=False, protected_patterns=_PROTECTED)
            return words + [EOS]
    if level == "word":
        return line.split() + [EOS]
    return ["_" if c.isspace() else c for c in line] + [EOS]


# Text is read in blocks of this many bytes. A line longer than a block comes in
# pieces (see `line_pieces`), so that reading holds about a block of text at a time
# however long a line or a file is.
READ_BLOCK = 1 << 16

# Everything up to the last white space (as `str.split` and `str.isspace` define it).
_UP_TO_LAST_SPACE = re.compile(r".*\s", re.DOTALL)
_SPACE = re.compile(r"\s")


def _space_end(text, start=0, stop=None):
    """The index just after the last white space of `text[start:stop]`; None if it
    has none."""
    found = _UP_TO_LAST_SPACE.match(text, start, len(text) if stop is None else stop)
    return None if found is None else found.end()


def _waits(file):
    """Whether reading `file` now would wait for its writer (a pipe or terminal with
    nothing to read yet); False where that cannot be told (files never wait)."""
    try:
        descriptor = file.fileno()
        if stat.S_ISREG(os.fstat(descriptor).st_mode):
            return False
        return not select.select([descriptor], [], [], 0)[0]
    except (AttributeError, OSError, ValueError):  # no descriptor; select on Windows pipes
        return False


def line_pieces(file, source, whole_words=True, report_idle=False, block=None):
    """The lines of a binary file of UTF-8 text, as they are read, in pieces.

    Yields `(text, ends)`: a piece of a line (without its line end) and whether the
    line ends with it. Lines are read as corpus files are (with or without a
    byte-order mark; `\\n`, `\\r\\n` or `\\r` line ends; a last line with or without
    its end). A line is given in more than one piece only when it is longer than a
    block of `block` bytes (default `READ_BLOCK`): its text so far is then given up to
    its last white space, so that no word is cut (a line without white space is
    held whole where `whole_words`, else cut anywhere: characters are tokens).

    Raises `CorpusError` naming `source` for bytes that are not UTF-8 (when the
    reading reaches them, after the lines before) or a file with nothing but white
    space (before any line is given, unless the white space is longer than a block).
    With `report_idle`, yields `None` whenever the next read would wait for the
    file's writer (a pipe or a terminal): a reader can then finish what it holds.
    """
    block = READ_BLOCK if block is None else block
    read = getattr(file, "read1", None) or file.read
    decoder = codecs.getincrementaldecoder("utf-8")()
    read_bytes = newlines = 0  # before the present read
    first = True
    carried_cr = False  # a read ended with "\r": a line end, or half of "\r\n"
    pending = ""  # the current line's text not given yet
    started = False  # a piece of the current line was given
    content = False  # a character other than white space was read
    held, held_size = [], 0  # lines of white space before any content
    while True:
        if report_idle and content and _waits(file):
            yield None
        raw = read(block)
        final = not raw
        carried = decoder.getstate()[0]  # an incomplete character from the last read
        try:
            text = decoder.decode(raw, final)
        except UnicodeDecodeError as e:
            data = carried + raw
            byte = read_bytes - len(carried) + e.start
            line = newlines + data[: e.start].count(b"\n") + 1
            raise CorpusError(f"{source} is not valid UTF-8 (byte {byte}, line {line})") from None
        read_bytes += len(raw)
        newlines += raw.count(b"\n")
        if first and text:
            first = False
            text = text.removeprefix("\ufeff")
        if carried_cr:
            text = "\r" + text
        carried_cr = not final and text.endswith("\r")
        if carried_cr:
            text = text[:-1]
        if not content and text and not text.isspace():
            content = True
        # Only \n, \r\n and \r end lines (str.splitlines would also split at form
        # feeds and other separators).
        lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
        out = []
        for line in lines[:-1]:
            out.append((pending + line, True))
            pending, started = "", False
        pending += lines[-1]
        if final:
            if pending or started:
                out.append((pending, True))
        elif len(pending) > block:
            cut = _space_end(pending)
            if cut is None:
                cut = 0 if whole_words else len(pending)
            if cut:
                out.append((pending[:cut], False))
                pending, started = pending[cut:], True
        if not content:
            held += out
            held_size += sum(len(piece) + 1 for piece, _ in out)
            out = []
        if content or held_size > block:
            yield from held
            held, held_size = [], 0
        yield from out
        if final:
            break
    if not content:
        raise CorpusError(f"{source} is empty")


def read_lines(file, source):
    """The lines of a binary file of UTF-8 text, each whole, as `line_pieces` reads
    them."""
    parts = []
    for text, ends in line_pieces(file, source):
        parts.append(text)
        if ends:
            yield "".join(parts)
            parts = []


def token_pieces(pieces, level="word", tokenization=None):
    """The tokens of `line_pieces`' pieces, as `tokenize_line` reads lines: yields
    `(tokens, ends)`, `<eos>` last in a line's last piece (and `None` where the pieces
    have it). Punctuation splitting takes each line whole: the Moses rules look
    across words."""
    whole_lines = tokenization is not None and tokenization.split_punctuation
    held = []
    for piece in pieces:
        if piece is None:
            yield None
            continue
        text, ends = piece
        if whole_lines and not ends:
            held.append(text)
            continue
        if held:
            text = "".join(held) + text
            held = []
        tokens = tokenize_line(text, level, tokenization)
        if not ends:
            tokens.pop()
        yield tokens, ends


def _text_pieces(line, whole_words, block=None):
    """One line held as a string, in the pieces `line_pieces` would give it: yields
    `(text, ends)`."""
    block = READ_BLOCK if block is None else block
    start = 0
    while len(line) - start > block:
        cut = _space_end(line, start, start + block)
        if cut is None and not whole_words:
            cut = start + block
        elif cut is None:  # a word longer than a block: cut after it
            found = _SPACE.search(line, start + block)
            if found is None:
                break
            cut = found.end()
        yield line[start:cut], False
        start = cut
    yield line[start:], True


def _whole_words(level, tokenization):
    """Whether pieces of a line must keep its words whole to give its tokens: at word
    level, and where lower-casing looks at the letters around (Unicode's final
    sigma)."""
    return level == "word" or (tokenization is not None and tokenization.lowercase)


def file_tokens(file, source, level="word", tokenization=None, report_idle=False):
    """The tokens of the lines of a binary file of UTF-8 text as they are read, a
    piece of a line at a time (`line_pieces` then `token_pieces`): yields `(tokens,
    ends)`, and `None` where the next read would wait with `report_idle`."""
    whole = _whole_words(level, tokenization)
    pieces = line_pieces(file, source, whole_words=whole, report_idle=report_idle)
    return token_pieces(pieces, level, tokenization)


def text_tokens(lines, level="word", tokenization=None):
    """The tokens of lines held as strings, in pieces as `file_tokens` gives them."""
    whole = _whole_words(level, tokenization)
    for line in lines:
        if not isinstance(line, str):
            raise TypeError(f"expected lines of text (str); Received: {type(line).__name__}")
        yield from token_pieces(_text_pieces(line, whole), level, tokenization)


def _file_token_pieces(path, level, tokenization):
    """`token_pieces` of a corpus file, with `read_tokens`' checks."""
    if level not in LEVELS:
        raise CorpusError(f"level must be one of {LEVELS}; got {level!r}")
    if tokenization is not None:
        tokenization.check_level(level)
        if tokenization.split_punctuation:
            _moses()  # a missing sacremoses is reported before the file is read
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise CorpusError(f"corpus file {path} does not exist")
    opener = COMPRESSED.get(os.path.splitext(path)[1], open)
    try:
        with opener(path, "rb") as f:
            yield from file_tokens(f, f"corpus file {path}", level, tokenization)
    except (OSError, EOFError, lzma.LZMAError) as e:
        reason = e.strerror or str(e) if isinstance(e, OSError) else str(e) or type(e).__name__
        raise CorpusError(f"corpus file {path} cannot be read: {reason}") from None


def read_tokens(path, level="word", tokenization=None):
    """Reads a text file into a list of tokens.

    Accepts UTF-8 with or without a byte-order mark and `\\n`, `\\r\\n` or `\\r` line
    ends, plain or compressed (`.xz`, `.gz`, `.bz2`). Raises `CorpusError` for a
    missing, unreadable, non-UTF-8 or empty file. `tokenization`: a `Tokenization`
    (default: the reference's whitespace split).
    """
    tokens = []
    for piece, _ in _file_token_pieces(path, level, tokenization):
        tokens += piece
    return tokens


def read_ids(path, vocab):
    """The token ids (int32) of a text file read as `vocab`'s corpus was (its level
    and tokenization): `vocab.encode(read_tokens(path, ...))`, a piece of a line at a
    time, so that the tokens are never all held as strings (4 bytes a token)."""
    source = f"corpus file {os.fspath(path)}"
    ids = array.array("i")  # C int: 4 bytes wherever NumPy's int32 is
    for tokens, _ in _file_token_pieces(path, vocab.level, vocab.tokenization):
        ids.frombytes(vocab.encode(tokens, source, start=len(ids)).tobytes())
    return np.frombuffer(ids, dtype=np.intc).astype(np.int32, copy=False)


class Vocabulary:
    """Tokens and their ids, most frequent first (ties in order of appearance).

    Args:
        tokens: The tokens in id order.
        counts: Their training counts (optional, same length).
        level: "word" or "char", the tokenization the vocabulary was built with.
        tokenization: The `Tokenization` it was built with (default: the
            reference's), which `tokenize` reads new text with.
    """

    def __init__(self, tokens, counts=None, level="word", tokenization=None):
        tokens = list(tokens)
        if not tokens:
            raise CorpusError("a vocabulary needs at least one token")
        odd = [t for t in tokens if not isinstance(t, str)]  # (None is one of them)
        if odd:
            raise CorpusError(f"vocabulary tokens must be strings; got {short_repr(odd[0])}")
        if len(set(tokens)) != len(tokens):
            raise CorpusError("vocabulary tokens must be distinct")
        if counts is not None:
            counts = list(counts)
            if len(counts) != len(tokens):
                raise CorpusError("vocabulary counts must match its tokens one to one")
            odd = [c for c in counts if not _is_count(c)]
            if odd:
                raise CorpusError(
                    f"vocabulary counts must be integers >= 0; got {short_repr(odd[0])}"
                )
        if not isinstance(level, str) or level not in LEVELS:
            raise CorpusError(f"level must be one of {LEVELS}; got {level!r}")
        tokenization = DEFAULT_TOKENIZATION if tokenization is None else tokenization
        if not isinstance(tokenization, Tokenization):
            raise CorpusError(
                f"tokenization must be a Tokenization; got {type(tokenization).__name__}"
            )
        tokenization.check_level(level)
        self.tokens = tokens
        self.counts = None if counts is None else [int(c) for c in counts]
        self.level = level
        self.tokenization = tokenization
        self.index = {token: i for i, token in enumerate(tokens)}

    @classmethod
    def build(cls, tokens, level="word", extra_tokens=(), tokenization=None):
        """A vocabulary of `tokens` (counted) and `extra_tokens` (count 0 unless also
        in `tokens`), most frequent first, ties in order of first appearance."""
        counts = collections.Counter(tokens)
        first = {}
        for i, token in enumerate(itertools.chain(tokens, extra_tokens, [EOS])):
            first.setdefault(token, i)
        ordered = sorted(first, key=lambda t: (-counts[t], first[t]))
        return cls(ordered, [counts[t] for t in ordered], level, tokenization)

    @classmethod
    def from_training(cls, tokens, level="word", tokenization=None):
        """The vocabulary of the training tokens alone under `tokenization`'s
        `min_count` and `max_vocab`, with `<eos>` and `<unk>` always in it: most
        frequent first, ties in order of first appearance; the counts are those of
        the training tokens with the words left out read as `<unk>`."""
        tokenization = DEFAULT_TOKENIZATION if tokenization is None else tokenization
        counts = collections.Counter(tokens)
        first = {}
        for i, token in enumerate(tokens):
            first.setdefault(token, i)
        words = [t for t in first if t not in (EOS, UNK) and counts[t] >= tokenization.min_count]
        words.sort(key=lambda t: (-counts[t], first[t]))
        if tokenization.max_vocab is not None:
            words = words[: tokenization.max_vocab - 2]  # room for <eos> and <unk>
        kept = {*words, EOS, UNK}
        mapped = [t if t in kept else UNK for t in tokens]
        return cls.build(mapped, level, [UNK], tokenization)

    def __len__(self):
        return len(self.tokens)

    def __contains__(self, token):
        return token in self.index

    @property
    def unk_id(self):
        return self.index.get(UNK)

    def encode(self, tokens, source="input", start=0):
        """Token ids; unknown tokens map to `<unk>` when the vocabulary has it and
        raise `CorpusError` naming the first one otherwise (its position counted from
        `start`: the tokens of `source` before these)."""
        unk = self.unk_id
        ids = np.empty(len(tokens), dtype=np.int32)
        for i, token in enumerate(tokens):
            found = self.index.get(token, unk)
            if found is None:
                raise CorpusError(
                    f"{source} has the token {token!r} (position {start + i}), which is not in "
                    f"the vocabulary of {len(self)} tokens and the vocabulary has no {UNK}"
                )
            ids[i] = found
        return ids

    def decode(self, ids):
        return [self.tokens[int(i)] for i in ids]

    def tokenize(self, line):
        """The tokens of one line of new text (a prompt, a sentence to score), read as
        the vocabulary's corpus was: `<eos>` last."""
        return tokenize_line(line, self.level, self.tokenization)

    def fingerprint(self):
        """A short hash of the level and the tokens in order: two vocabularies with the
        same fingerprint map every token to the same id."""
        text = self.level + "\n" + "\n".join(self.tokens)
        return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]

    def to_json(self):
        data = {"level": self.level, "tokens": self.tokens, "counts": self.counts}
        if not self.tokenization.is_default:  # absent: the reference's (older files)
            data["tokenization"] = self.tokenization.to_json()
        return data

    def save(self, path):
        """Writes the vocabulary as JSON, atomically (a temporary file, then rename)."""
        write_json_atomic(path, self.to_json())

    @classmethod
    def load(cls, path):
        path = os.fspath(path)
        try:
            with open(path, encoding="utf-8") as f:
                data = json.load(f)
            if not isinstance(data, dict):
                raise ValueError(f"a JSON {json_type(data)} where an object belongs")
            if "tokens" not in data:
                raise ValueError("it has no 'tokens'")
            tokens, counts = data["tokens"], data.get("counts")
            if not isinstance(tokens, list):
                raise ValueError(f"its 'tokens' must be a list; got a JSON {json_type(tokens)}")
            if counts is not None and not isinstance(counts, list):
                raise ValueError(f"its 'counts' must be a list; got a JSON {json_type(counts)}")
            tokenization = data.get("tokenization")
            if tokenization is not None:
                tokenization = Tokenization.from_json(tokenization)
            return cls(tokens, counts, data.get("level", "word"), tokenization)
        except FileNotFoundError:
            raise CorpusError(f"vocabulary file {path} does not exist") from None
        except (OSError, ValueError) as e:
            reason = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise CorpusError(
                f"vocabulary file {path} is not a valid vocabulary: {reason}"
            ) from None


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
        if not self.vocab.tokenization.is_default:
            result["tokenization"] = self.vocab.tokenization.to_json()
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


def load_corpus(directory=None, paths=None, level="word", vocab=None, tokenization=None):
    """Reads a corpus folder (any of `LAYOUTS`) or explicit `{split: path}`.

    Args:
        directory: A corpus folder.
        paths: Instead of `directory`, a dict with the paths of "train", "valid" and
            "test".
        level: "word" or "char".
        vocab: A `Vocabulary` to reuse (a run's); the text is read with its
            tokenization. By default one is built, as the reference does, over all
            three splits (ordered by training frequency).
        tokenization: A `Tokenization` (or its `to_json` dict) for text that is not
            pre-tokenized: the vocabulary is then built from the training split only
            and words outside it read as `<unk>`. Default: the reference's (with
            `vocab`: the vocabulary's).

    Returns:
        A `Corpus`.
    """
    paths = _split_paths(directory, paths)
    if tokenization is not None:
        tokenization = Tokenization.from_json(tokenization)
    if vocab is not None:
        if vocab.level != level:
            raise CorpusError(
                f"the vocabulary is {vocab.level}-level but level={level!r} was asked"
            )
        if tokenization is not None and tokenization != vocab.tokenization:
            raise CorpusError(
                "the vocabulary was built with other tokenization settings than those given"
            )
        tokenization = vocab.tokenization
    tokenization = DEFAULT_TOKENIZATION if tokenization is None else tokenization
    tokenization.check_level(level)
    if vocab is not None:  # read a line at a time, never all the tokens as strings
        ids = {s: read_ids(paths[s], vocab) for s in SPLITS}
        return Corpus(vocab, ids["train"], ids["valid"], ids["test"], dict(paths))
    tokens = {s: read_tokens(paths[s], level, tokenization) for s in SPLITS}
    if tokenization.train_only:
        vocab = Vocabulary.from_training(tokens["train"], level, tokenization)
    else:
        extra = tokens["valid"] + tokens["test"]
        vocab = Vocabulary.build(tokens["train"], level, extra, tokenization)
    ids = {s: vocab.encode(tokens[s], source=f"corpus file {paths[s]}") for s in SPLITS}
    return Corpus(vocab, ids["train"], ids["valid"], ids["test"], dict(paths))


def _split_paths(directory, paths):
    """`{split: path}` of a corpus folder (any of `LAYOUTS`) or of explicit paths,
    each of the three splits named."""
    if (directory is None) == (paths is None):
        raise CorpusError("give either a data folder or the paths of the three splits")
    if directory is not None:
        return find_layout(directory)[1]
    missing = [s for s in SPLITS if s not in paths]
    if missing:
        raise CorpusError(f"no path given for the {missing[0]} split")
    return paths


def read_split(split, vocab, directory=None, paths=None):
    """One split of a corpus (a folder, or the paths of the three splits, as
    `load_corpus` takes them) as token ids read with `vocab` (`read_ids`), without
    reading the other splits."""
    if split not in SPLITS:
        raise CorpusError(f"split must be one of {SPLITS}; got {split!r}")
    return read_ids(_split_paths(directory, paths)[split], vocab)
