"""Labelled documents for text classification (ULMFiT's third stage).

Two layouts are read: a table with a header row (CSV or TSV, one document per row,
in the columns `label` and `text` by default; fields quoted as the `csv` module's
default dialect writes them, so a document may hold the delimiter or line breaks),
and a folder per class (`path/<label>/*.txt`, the layout of IMDb's `aclImdb/train`
and of `keras.utils.text_dataset_from_directory`). `load_labelled` finds the splits
of a data folder and carves those it lacks from the training documents, stratified
by class.

A document is tokenized as the language model's corpus files are read: every line
(`\\n`, `\\r\\n` or `\\r` ends it; a last line without one still counts) becomes its
tokens and `<eos>`, with the vocabulary's `Tokenization`; words outside the
vocabulary become `<unk>`. Documents are batched by similar length
(`length_batches`) and padded to the longest of their batch (`pad_batch`).
"""

import csv
import dataclasses
import io
import json
import lzma
import math
import os

import numpy as np

from awd_lstm._files import atomic_path, write_json_atomic
from awd_lstm._validation import check_json_fields
from awd_lstm.data.corpus import COMPRESSED, SPLITS, CorpusError, tokenize_line

LABEL_COLUMN = "label"
TEXT_COLUMN = "text"
# Table files by extension (before a compression suffix) and their delimiters.
DELIMITERS = {".csv": ",", ".tsv": "\t"}
# Sub-folders of a folder per class that are not classes: aclImdb's unlabelled reviews.
UNLABELLED_FOLDERS = ("unsup",)
# The field size limit while a table is read: documents can be long.
_FIELD_LIMIT = 2**31 - 1


def _quoted(names):
    return ", ".join(repr(n) for n in names) if names else "none"


def _decode(raw, source):
    """The text of UTF-8 bytes (a byte-order mark dropped); `CorpusError` naming
    `source`, the byte and the line for bytes that are not UTF-8."""
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise CorpusError(f"{source} is not valid UTF-8 (byte {e.start}, line {line})") from None


def _read_bytes(path, source):
    opener = COMPRESSED.get(os.path.splitext(path)[1], open)
    try:
        with opener(path, "rb") as f:
            return f.read()
    except (OSError, EOFError, lzma.LZMAError) as e:
        reason = e.strerror or str(e) if isinstance(e, OSError) else str(e) or type(e).__name__
        raise CorpusError(f"{source} cannot be read: {reason}") from None


def _sort_labels(labels):
    """Distinct labels sorted: as numbers when every label is an integer ("2" before
    "10"), as strings otherwise."""
    labels = sorted(set(labels))
    try:
        return sorted(labels, key=int)
    except ValueError:
        return labels


class LabelVocabulary:
    """Class labels (strings) and their ids, in the given order.

    Args:
        labels: The distinct, non-empty labels in id order.
    """

    def __init__(self, labels):
        labels = list(labels)
        if not labels:
            raise CorpusError("a label vocabulary needs at least one label")
        bad = [label for label in labels if not isinstance(label, str) or not label.strip()]
        if bad:
            raise CorpusError(f"labels must be non-empty strings; got {bad[0]!r}")
        if len(set(labels)) != len(labels):
            raise CorpusError("labels must be distinct")
        self.labels = labels
        self.index = {label: i for i, label in enumerate(labels)}

    @classmethod
    def from_labels(cls, labels):
        """The vocabulary of the distinct `labels`, sorted (numerically when every
        label is an integer)."""
        return cls(_sort_labels(labels))

    def __len__(self):
        return len(self.labels)

    def __iter__(self):
        return iter(self.labels)

    def __contains__(self, label):
        return label in self.index

    def __eq__(self, other):
        return isinstance(other, LabelVocabulary) and self.labels == other.labels

    def __repr__(self):
        return f"LabelVocabulary({self.labels!r})"

    def encode(self, labels):
        """The id of one label (a string), or an int32 array of the ids of a sequence
        of labels; `CorpusError` names a label that is not in the vocabulary."""
        if isinstance(labels, str):
            return self._id(labels)
        return np.array([self._id(label) for label in labels], dtype=np.int32)

    def _id(self, label):
        found = self.index.get(label)
        if found is None:
            raise CorpusError(
                f"the label {label!r} is not one of the {len(self)} classes "
                f"({_quoted(self.labels)})"
            )
        return found

    def decode(self, ids):
        """The labels of class ids (a sequence), or of one id."""
        if np.ndim(ids) == 0:
            return self.labels[int(ids)]
        return [self.labels[int(i)] for i in ids]

    def to_json(self):
        return {"labels": self.labels}

    def save(self, path):
        """Writes the labels as JSON, atomically (a temporary file, then rename)."""
        write_json_atomic(path, self.to_json())

    @classmethod
    def load(cls, path):
        path = os.fspath(path)
        try:
            with open(path, encoding="utf-8") as f:
                data = json.load(f)
            check_json_fields(data, {"labels": ("array",)})
            if "labels" not in data:
                raise ValueError("it has no 'labels'")
            return cls(data["labels"])
        except FileNotFoundError:
            raise CorpusError(f"label file {path} does not exist") from None
        except (OSError, ValueError) as e:
            reason = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise CorpusError(
                f"label file {path} is not a valid label vocabulary: {reason}"
            ) from None


# -- reading ---------------------------------------------------------------------------


def table_delimiter(path):
    """The delimiter of a table file from its extension: "," for `.csv`, a tab for
    `.tsv` (also compressed: `train.tsv.gz`); None for any other."""
    stem, ext = os.path.splitext(os.fspath(path))
    if ext in COMPRESSED:
        ext = os.path.splitext(stem)[1]
    return DELIMITERS.get(ext.lower())


def read_labelled_table(path, label_column=LABEL_COLUMN, text_column=TEXT_COLUMN, delimiter=None):
    """Reads a CSV or TSV file with a header row into `(text, label)` pairs.

    Accepts UTF-8 with or without a byte-order mark, plain or compressed (`.xz`,
    `.gz`, `.bz2`); quoted fields may hold the delimiter and line breaks. Labels are
    stripped of surrounding white space, documents kept as they are; blank lines are
    skipped. Raises `CorpusError` for a missing, unreadable, non-UTF-8 or empty file, a
    header without the label or text column, a row whose fields do not match the
    header's, an empty label or an empty document.

    Args:
        path: The table file.
        label_column: The header name of the labels' column.
        text_column: The header name of the documents' column.
        delimiter: The field delimiter; default: from the extension (`.csv`: ",",
            `.tsv`: a tab).

    Returns:
        A list of `(text, label)` pairs in file order.
    """
    path = os.fspath(path)
    source = f"table file {path}"
    if not os.path.isfile(path):
        raise CorpusError(f"{source} does not exist")
    if delimiter is None:
        delimiter = table_delimiter(path)
        if delimiter is None:
            raise CorpusError(
                f"the delimiter of {source} cannot be told from its extension (.csv or "
                f".tsv); pass delimiter"
            )
    if label_column == text_column:
        raise CorpusError(f"the label and text columns must differ; both are {label_column!r}")
    text = _decode(_read_bytes(path, source), source)
    if not text.strip():
        raise CorpusError(f"{source} is empty")
    previous = csv.field_size_limit(_FIELD_LIMIT)
    try:
        return _read_rows(text, delimiter, label_column, text_column, source)
    except csv.Error as e:
        raise CorpusError(f"{source} cannot be parsed: {e}") from None
    finally:
        csv.field_size_limit(previous)


def _read_rows(text, delimiter, label_column, text_column, source):
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    header = [name.strip() for name in next((row for row in reader if row), [])]
    for role, name in (("label", label_column), ("text", text_column)):
        if name not in header:
            raise CorpusError(
                f"{source} has no {role} column {name!r} in its header row (its columns: "
                f"{_quoted(header)}); the first row must name the columns"
            )
    label_at, text_at = header.index(label_column), header.index(text_column)
    docs = []
    for row in reader:
        if not any(field.strip() for field in row):
            continue  # a blank line
        where = f"data row {len(docs) + 1} (line {reader.line_num})"
        if len(row) != len(header):
            relation = "fewer" if len(row) < len(header) else "more"
            raise CorpusError(
                f"{source} has {len(row)} fields in {where}, {relation} than the "
                f"{len(header)} of its header row (quote fields that hold the delimiter)"
            )
        label, doc = row[label_at].strip(), row[text_at]
        if not label:
            raise CorpusError(f"{source} has an empty label in {where}")
        if not doc.strip():
            raise CorpusError(f"{source} has an empty document in {where}")
        docs.append((doc, label))
    if not docs:
        raise CorpusError(f"{source} has a header row but no documents")
    return docs


def _visible(names):
    return sorted(n for n in names if not n.startswith("."))


def class_folders(path, unlabelled=False):
    """The class folders of a folder per class: its visible sub-folders, sorted,
    without `UNLABELLED_FOLDERS` (unless `unlabelled`)."""
    return [
        name
        for name in _visible(os.listdir(path))
        if os.path.isdir(os.path.join(path, name))
        and (unlabelled or name not in UNLABELLED_FOLDERS)
    ]


def read_labelled_folder(path, classes=None):
    """Reads a folder per class, `path/<label>/*.txt`, into `(text, label)` pairs.

    Labels are the names of the sub-folders; hidden files and folders (their names
    start with a dot), files not ending with `.txt`, nested folders and the folders
    of unlabelled documents (`UNLABELLED_FOLDERS`: aclImdb's `unsup`) are skipped.
    Documents are read as UTF-8 (with or without a byte-order mark), class by class
    in sorted order and, within a class, file by file in sorted order, so that the
    result is the same on every machine. Raises `CorpusError` for a missing folder,
    one without class folders, a class folder without documents, and a document
    file that cannot be read, is not UTF-8 or is empty.

    Args:
        path: The folder.
        classes: The class folders to read (default: all of them but
            `UNLABELLED_FOLDERS`; naming one reads it as a class).

    Returns:
        A list of `(text, label)` pairs.
    """
    path = os.fspath(path)
    if not os.path.isdir(path):
        raise CorpusError(f"data folder {path} does not exist")
    if classes is None:
        classes = class_folders(path)
    else:
        classes = list(classes)
        found = class_folders(path, unlabelled=True)
        missing = [c for c in classes if c not in found]
        if missing:
            raise CorpusError(
                f"data folder {path} has no class folder {missing[0]!r} (its class "
                f"folders: {_quoted(found)})"
            )
    if not classes:
        raise CorpusError(
            f"data folder {path} has no class folders (sub-folders of .txt documents, "
            f"one per label)"
        )
    docs = []
    for label in classes:
        folder = os.path.join(path, label)
        files = [
            name
            for name in _visible(os.listdir(folder))
            if name.lower().endswith(".txt") and os.path.isfile(os.path.join(folder, name))
        ]
        if not files:
            raise CorpusError(f"class folder {folder} holds no .txt documents")
        for name in files:
            file = os.path.join(folder, name)
            source = f"document file {file}"
            text = _decode(_read_bytes(file, source), source)
            if not text.strip():
                raise CorpusError(f"{source} is empty")
            docs.append((text, label))
    return docs


# -- writing ---------------------------------------------------------------------------


def write_labelled_table(
    path, docs, label_column=LABEL_COLUMN, text_column=TEXT_COLUMN, delimiter=None
):
    """Writes `(text, label)` pairs as a table with a header row (the delimiter from
    the extension by default), atomically; `read_labelled_table` gives them back.
    Returns the path."""
    path = os.fspath(path)
    delimiter = delimiter or table_delimiter(path)
    if delimiter is None:
        raise CorpusError(f"the delimiter of table file {path} cannot be told; pass delimiter")
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer, delimiter=delimiter, lineterminator="\n")
    writer.writerow([label_column, text_column])
    writer.writerows((label, text) for text, label in docs)
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8", newline="") as f:
        f.write(buffer.getvalue())
    return path


def write_labelled_folder(path, docs):
    """Writes `(text, label)` pairs as a folder per class, `path/<label>/NNNNNN.txt`
    (numbered in the order given, so that `read_labelled_folder` reads each class in
    that order). Returns the path."""
    path = os.fspath(path)
    counts = {}
    for text, label in docs:
        folder = os.path.join(path, label)
        if label not in counts:
            os.makedirs(folder, exist_ok=True)
        number = counts.get(label, 0)
        counts[label] = number + 1
        with atomic_path(os.path.join(folder, f"{number:06d}.txt")) as tmp:
            with open(tmp, "w", encoding="utf-8", newline="") as f:
                f.write(text)
    return path


# -- the splits ------------------------------------------------------------------------


@dataclasses.dataclass
class LabelledCorpus:
    """The three splits of a classification corpus with its label vocabulary.

    Attributes:
        train, valid, test: Lists of `(text, label)` pairs (labels as strings).
        labels: The `LabelVocabulary` of the training labels.
        paths: `{split: path}` of the splits read from files.
        carved: The splits carved from the training documents, in order.
    """

    train: list
    valid: list
    test: list
    labels: LabelVocabulary
    paths: dict = dataclasses.field(default_factory=dict)
    carved: tuple = ()

    def split(self, name):
        if name not in SPLITS:
            raise CorpusError(f"split must be one of {SPLITS}; got {name!r}")
        return getattr(self, name)

    def texts(self, name):
        """The documents of a split, in order."""
        return [text for text, _ in self.split(name)]

    def label_ids(self, name):
        """The class ids of a split's documents, an int32 array."""
        return self.labels.encode([label for _, label in self.split(name)])

    def stats(self):
        """Documents per split and class."""
        result = {"labels": list(self.labels), "carved": list(self.carved)}
        for name in SPLITS:
            docs = self.split(name)
            per_class = {label: 0 for label in self.labels}
            for _, label in docs:
                per_class[label] = per_class.get(label, 0) + 1
            result[name] = {"documents": len(docs), "per_class": per_class}
        return result


def _round(x):
    return int(math.floor(x + 0.5))


def stratified_split(docs, fractions, seed=0):
    """Carves parts of `fractions` (each of the documents of every class) from
    `(text, label)` pairs, at random with `seed`; at least one document of every
    class stays in the rest.

    Returns:
        `[rest, part_1, part_2, ...]`, one list per fraction after the rest, each in
        the order of `docs`.
    """
    fractions = list(fractions)
    for fraction in fractions:
        if isinstance(fraction, bool) or not 0.0 <= fraction < 1.0:
            raise CorpusError(f"a split fraction must be in [0, 1); got {fraction!r}")
    if sum(fractions) >= 1.0:
        raise CorpusError(f"the split fractions must add up to less than 1; got {fractions}")
    rng = np.random.default_rng(seed)
    by_class = {}
    for i, (_, label) in enumerate(docs):
        by_class.setdefault(label, []).append(i)
    part_of = np.zeros(len(docs), dtype=np.int64)
    for label in _sort_labels(by_class):
        members = np.array(by_class[label])
        members = members[rng.permutation(len(members))]
        sizes = [_round(f * len(members)) for f in fractions]
        while sum(sizes) > len(members) - 1:  # keep one for training
            sizes[int(np.argmax(sizes))] -= 1
        start = 0
        for part, size in enumerate(sizes, start=1):
            part_of[members[start : start + size]] = part
            start += size
    return [[d for d, p in zip(docs, part_of) if p == part] for part in range(len(fractions) + 1)]


def _table_split(directory, split):
    """The table file of `split` in `directory` (`train.csv`, `train.tsv`, plain or
    compressed); None if there is none."""
    found = [
        name + suffix
        for name in (f"{split}.csv", f"{split}.tsv")
        for suffix in ("", *COMPRESSED)
        if os.path.isfile(os.path.join(directory, name + suffix))
    ]
    if len(found) > 1:
        raise CorpusError(
            f"data folder {directory} has several {split} tables ({', '.join(found)}); keep one"
        )
    return os.path.join(directory, found[0]) if found else None


def find_labelled_layout(path):
    """Returns `(layout, {split: path})` of labelled data: "table" (a table file, or a
    folder with `train.csv` or `train.tsv` and optional `valid.*`, `test.*`),
    "split-folders" (a folder with a `train/` folder per class and optional `valid/`,
    `test/`) or "folder" (one folder per class); tried in this order."""
    path = os.fspath(path)
    if os.path.isfile(path):
        return "table", {"train": path}
    if not os.path.isdir(path):
        raise CorpusError(f"data path {path} does not exist")
    if _table_split(path, "train") is not None:
        paths = {s: _table_split(path, s) for s in SPLITS}
        return "table", {s: p for s, p in paths.items() if p is not None}
    if os.path.isdir(os.path.join(path, "train")):
        paths = {s: os.path.join(path, s) for s in SPLITS}
        return "split-folders", {s: p for s, p in paths.items() if os.path.isdir(p)}
    if class_folders(path):
        return "folder", {"train": path}
    raise CorpusError(
        f"data folder {path} holds no labelled layout (train.csv or train.tsv, a train/ "
        f"folder, or class folders)"
    )


def load_labelled(
    path,
    label_column=LABEL_COLUMN,
    text_column=TEXT_COLUMN,
    delimiter=None,
    valid_fraction=0.1,
    test_fraction=0.1,
    seed=0,
    classes=None,
):
    """Reads labelled documents and their splits (any layout of
    `find_labelled_layout`).

    The splits a layout lacks are carved from its training documents, stratified by
    class (`stratified_split` with `seed`): `valid_fraction` of every class when there
    is no validation split, and likewise `test_fraction` when there is no test split
    (carved first, so that a given validation split does not change it); a fraction of
    0 leaves the split empty. The label vocabulary is that of the training documents,
    sorted (numerically when every label is an integer).

    Args:
        path: A table file, or a data folder.
        label_column, text_column, delimiter: How tables are read
            (`read_labelled_table`).
        valid_fraction: The fraction of the training documents to validate on when
            the data has no validation split.
        test_fraction: The fraction of the training documents to test on when the
            data has no test split.
        seed: Seed of the carved splits.
        classes: The class folders to read in the folder layouts (default: all).

    Returns:
        A `LabelledCorpus`. Raises `CorpusError` (one sentence) for data that cannot
        be read, only one class, or a class without any training document.
    """
    layout, paths = find_labelled_layout(path)
    if layout == "table":
        splits = {
            s: read_labelled_table(p, label_column, text_column, delimiter)
            for s, p in paths.items()
        }
    else:
        splits = {s: read_labelled_folder(p, classes) for s, p in paths.items()}
    carve = [s for s in ("test", "valid") if s not in splits]
    fractions = {"test": test_fraction, "valid": valid_fraction}
    if carve:
        train, *parts = stratified_split(splits["train"], [fractions[s] for s in carve], seed=seed)
        splits["train"] = train
        splits.update(zip(carve, parts))
    every = {label for docs in splits.values() for _, label in docs}
    if len(every) < 2:
        raise CorpusError(
            f"the data at {os.fspath(path)} has only one class ({_quoted(every)}); a "
            f"classifier needs at least two"
        )
    trained = {label for _, label in splits["train"]}
    for split in ("valid", "test"):
        untrained = [label for _, label in splits[split] if label not in trained]
        if untrained:
            count = untrained.count(untrained[0])
            raise CorpusError(
                f"the class {untrained[0]!r} has no training document ({count} in the "
                f"{split} split)"
            )
    return LabelledCorpus(
        train=splits["train"],
        valid=splits["valid"],
        test=splits["test"],
        labels=LabelVocabulary.from_labels(trained),
        paths=dict(paths),
        carved=tuple(carve),
    )


# -- tokens and batches ----------------------------------------------------------------


def document_lines(text):
    """The lines of a document: `\\n`, `\\r\\n` and `\\r` end lines, and a last line
    without a line end still counts (as the corpus reader reads a file)."""
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    if lines[-1] == "":
        lines.pop()
    return lines


def encode_documents(docs, vocab, max_tokens=None, start=0):
    """The token ids of documents, read as the language model's corpus files are:
    each line's tokens then `<eos>`, with `vocab`'s tokenization; words outside the
    vocabulary become `<unk>` (a vocabulary without `<unk>` raises `CorpusError`).

    Args:
        docs: Document texts, or `(text, label)` pairs.
        vocab: The language model's `Vocabulary`.
        max_tokens: Keep at most this many tokens of every document, the first ones
            (default: all).
        start: The number of the first document, for messages (documents read in
            windows).

    Returns:
        A list of int32 arrays, one per document.
    """
    out = []
    for i, doc in enumerate(docs):
        text = doc[0] if isinstance(doc, tuple) else doc
        tokens = [t for line in document_lines(text) for t in vocab.tokenize(line)]
        if not tokens:
            tokens = tokenize_line("", vocab.level, vocab.tokenization)
        if max_tokens is not None:
            tokens = tokens[:max_tokens]
        out.append(vocab.encode(tokens, source=f"document {start + i}"))
    return out


def padded_length(length, length_quantum=1):
    """`length` rounded up to a multiple of `length_quantum`."""
    return length_quantum * math.ceil(length / length_quantum)


def _check_positive(name, value):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise CorpusError(f"{name} must be a positive integer; got {value!r}")


def _cut(chunk, batch_size):
    """Batches of consecutive documents of `chunk` (longest first): the one smaller
    batch, if any, holds the longest documents, where padding costs most."""
    first = len(chunk) % batch_size
    bounds = ([0] if first else []) + list(range(first, len(chunk) + 1, batch_size))
    return [chunk[start:stop] for start, stop in zip(bounds, bounds[1:])]


def length_batches(lengths, batch_size, seed=0, epoch=0, shuffle=True, window=50, noise=0.02):
    """Batches of document indices, the documents of a batch of similar length.

    Training (`shuffle=True`): the documents are shuffled, cut into windows of
    `window` batches, sorted by length within each window (the lengths scaled by a
    random factor in `[1 - noise, 1 + noise]`, so that documents of about the same
    length change batches from epoch to epoch), cut into batches, and the batches of
    all windows shuffled; all of it drawn from `(seed, epoch)`. Evaluation
    (`shuffle=False`): all documents sorted by length, longest first (ties in index
    order), which pads least. Every document is in exactly one batch; only one batch
    may be smaller than `batch_size`, the one of the last window's longest documents
    (a long tail of lengths costs the most padding there).

    Args:
        lengths: The documents' token counts.
        batch_size: Documents per batch.
        seed: Seed of the shuffles.
        epoch: The epoch, for a new order every epoch.
        shuffle: Shuffle (training) or sort (evaluation).
        window: Batches per sorting window: larger windows pad less and shuffle less.
        noise: The spread of the random length factor (0: sort by exact length):
            larger values mix the batches more and pad more.

    Returns:
        A list of int64 index arrays.
    """
    _check_positive("batch_size", batch_size)
    _check_positive("window", window)
    if isinstance(noise, bool) or not 0.0 <= noise < 1.0:
        raise CorpusError(f"noise must be in [0, 1); got {noise!r}")
    lengths = np.asarray(lengths, dtype=np.float64)
    n = len(lengths)
    if not shuffle:
        return _cut(np.argsort(-lengths, kind="stable"), batch_size)
    rng = np.random.default_rng([seed, epoch])
    order = rng.permutation(n)
    batches = []
    size = batch_size * window
    for start in range(0, n, size):
        chunk = order[start : start + size]
        keys = lengths[chunk] * rng.uniform(1.0 - noise, 1.0 + noise, len(chunk))
        batches.extend(_cut(chunk[np.argsort(-keys, kind="stable")], batch_size))
    return [batches[i] for i in rng.permutation(len(batches))]


def padding_fraction(batches, lengths, length_quantum=1):
    """The fraction of the padded batches' tokens that are padding: each batch padded
    to its longest document, rounded up to a multiple of `length_quantum`."""
    lengths = np.asarray(lengths, dtype=np.int64)
    real = padded = 0
    for batch in batches:
        batch_lengths = lengths[batch]
        real += int(batch_lengths.sum())
        padded += len(batch) * padded_length(int(batch_lengths.max()), length_quantum)
    return 1.0 - real / padded if padded else 0.0


def pad_batch(docs, indices, labels=None, pad_id=0, length_quantum=1, pad_first=False):
    """The arrays of one batch: `(ids, lengths, labels)`.

    Args:
        docs: Token-id arrays (`encode_documents`).
        indices: The batch's document indices (`length_batches`).
        labels: The class ids of all documents (optional).
        pad_id: The id of the padding positions.
        length_quantum: Pad to a multiple of this, so that a compiled step sees few
            distinct shapes.
        pad_first: Pad before the documents (their last tokens aligned) instead of
            after them.

    Returns:
        `ids` int32 `(batch, padded_length)`, `lengths` int32 `(batch,)` and the
        batch's labels int32 `(batch,)`, or None without `labels`.
    """
    _check_positive("length_quantum", length_quantum)
    rows = [np.asarray(docs[int(i)]) for i in indices]
    lengths = np.array([len(r) for r in rows], dtype=np.int32)
    width = padded_length(int(lengths.max(initial=1)), length_quantum)
    ids = np.full((len(rows), width), pad_id, dtype=np.int32)
    for r, row in enumerate(rows):
        if pad_first:
            ids[r, width - len(row) :] = row
        else:
            ids[r, : len(row)] = row
    batch_labels = None
    if labels is not None:
        batch_labels = np.asarray(labels)[np.asarray(indices, dtype=np.int64)].astype(np.int32)
    return ids, lengths, batch_labels


def padded_batches(
    docs,
    labels,
    batch_size,
    seed=0,
    epoch=0,
    shuffle=True,
    pad_id=0,
    length_quantum=1,
    pad_first=False,
    window=50,
    noise=0.02,
):
    """The `(ids, lengths, labels)` batches of one epoch (`length_batches`, then
    `pad_batch`); `labels` may be None."""
    lengths = [len(d) for d in docs]
    for batch in length_batches(lengths, batch_size, seed, epoch, shuffle, window, noise):
        yield pad_batch(docs, batch, labels, pad_id, length_quantum, pad_first)
