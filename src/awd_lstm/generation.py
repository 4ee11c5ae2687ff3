"""Using a trained language model: sampling text and scoring sentences.

Both take a language model (a run's, an exported one loaded with
`awd_lstm.load_model`, one of your own) and its vocabulary (by default the one it
carries), and make the stateful or stateless copy they need themselves.
Randomness comes from a NumPy generator seeded by the caller, never a global seed.

Both also stream: `iter_generate` yields each token as it is drawn (`Detokenizer`
makes text of them as they come), and `iter_scores` reads sentences as it goes and
yields each one's score as soon as its batch is scored, in memory that does not grow
with the length of a line or of the input.
"""

import io
import warnings

import numpy as np

from awd_lstm._validation import check_positive_int
from awd_lstm.data import EOS, UNK
from awd_lstm.data.corpus import file_tokens, text_tokens
from awd_lstm.presets import SCORE_SEGMENT_LENGTH
from awd_lstm.progress import Progress

# Lines are sorted by length within windows of this many batches, so that a batch
# pads its lines to about the same length.
WINDOW_BATCHES = 8


def _encode_with_unk(vocab, tokens, what):
    """Ids of `tokens`; words outside the vocabulary become `<unk>` with a warning
    (an error if the vocabulary has no `<unk>`)."""
    unknown = {t for t in tokens if t not in vocab}
    if unknown:
        _read_as_unk(vocab, unknown, what, stacklevel=4)
    return vocab.encode(tokens)


def _read_as_unk(vocab, unknown, what, stacklevel):
    """Warns that the word types `unknown` of `what` read as `<unk>`; `CorpusError`
    if the vocabulary has no `<unk>`."""
    from awd_lstm.data import CorpusError

    unknown = sorted(unknown)
    if vocab.unk_id is None:
        raise CorpusError(
            f"{what} has words outside the vocabulary ({', '.join(unknown[:5])}) and the "
            f"vocabulary has no {UNK}"
        )
    shown = ", ".join(unknown[:10]) + (", ..." if len(unknown) > 10 else "")
    warnings.warn(
        f"{what}: {len(unknown)} word type(s) outside the vocabulary read as {UNK}: {shown}",
        stacklevel=stacklevel,
    )


def _vocabulary_of(model, vocab):
    """`vocab`, else the model's own; checked against the model's size."""
    vocab = vocab if vocab is not None else getattr(model, "vocabulary", None)
    if vocab is None:
        raise ValueError(
            "the model carries no vocabulary; pass `vocab` (a run's: "
            "awd_lstm.load_run(path).vocabulary)"
        )
    size = getattr(model, "vocab_size", len(vocab))
    if len(vocab) != size:
        raise ValueError(f"the vocabulary has {len(vocab)} tokens and the model {size}")
    return vocab


def _as(model, variant, *args):
    if not hasattr(model, variant):
        raise TypeError(
            f"expected an AWDLSTMLanguageModel (a run's or awd_lstm.load_model's); "
            f"got {type(model).__name__}"
        )
    return getattr(model, variant)(*args)


class Detokenizer:
    """Text of generated tokens as they come: `<eos>` ends a line; characters join
    without spaces (`_` is a space), words with spaces or as the vocabulary's
    tokenization joins them (punctuation split by the Moses tokenizer joined back,
    a line at a time).

    `add(token)` returns the text that token adds (with punctuation splitting, `""`
    until the line's `<eos>`), `finish()` the rest; together, the text `generate`
    returns.

    Args:
        vocab: The `Vocabulary` the tokens come from.
    """

    def __init__(self, vocab):
        self.level = vocab.level
        tokenization = vocab.tokenization
        self._moses = tokenization if tokenization.split_punctuation else None
        self._line_started = False
        self._words = []

    def add(self, token):
        if self.level == "char":
            return "\n" if token == EOS else " " if token == "_" else token
        if self._moses is not None:
            if token != EOS:
                self._words.append(token)
                return ""
            return self.finish() + "\n"
        if token == EOS:
            self._line_started = False
            return "\n"
        text = " " + token if self._line_started else token
        self._line_started = True
        return text

    def finish(self):
        """The text still held (a line of split punctuation without its `<eos>`)."""
        words, self._words = self._words, []
        return self._moses.detokenize(words) if words else ""


def _is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


def check_generation_settings(num_tokens=100, temperature=1.0, top_k=None, seed=None):
    """Raises `ValueError` (one sentence naming the argument) unless `num_tokens` is an
    integer >= 0, `temperature` a number > 0, `top_k` None or an integer >= 1 and
    `seed` None or an integer in [0, 2**32)."""
    if not _is_int(num_tokens) or num_tokens < 0:
        raise ValueError(f"`num_tokens` must be at least 0; Received: num_tokens={num_tokens!r}")
    if not (isinstance(temperature, (int, float)) and temperature > 0):
        raise ValueError(f"`temperature` must be > 0; Received: temperature={temperature!r}")
    if top_k is not None and (not _is_int(top_k) or top_k < 1):
        raise ValueError(f"`top_k` must be at least 1; Received: top_k={top_k!r}")
    if seed is not None and (not _is_int(seed) or not 0 <= seed < 2**32):
        raise ValueError(f"`seed` must be an integer in [0, 2**32); Received: seed={seed!r}")


def generate(model, vocab=None, prompt="", num_tokens=100, temperature=1.0, top_k=None, seed=None):
    """Samples a continuation of `prompt` from a stateful language model of batch 1.

    The prompt is read like a line of the vocabulary's corpus, with its tokenization
    (without its `<eos>`; words outside the vocabulary become `<unk>` with a
    warning), run through the model to set its state, then each next token is drawn
    from `softmax(logits / temperature)`, restricted to the `top_k` most likely
    tokens if given. An empty prompt starts a new sentence. `iter_generate` yields
    the same tokens one at a time, as they are drawn.

    Args:
        model: An `AWDLSTMLanguageModel`: a run's (`Run.load_model`), a loaded
            `.keras` file's (`awd_lstm.load_model`), your own. Generation runs a
            stateful copy of batch 1 (`model.as_stateful(1)`; the model itself if it
            is one).
        vocab: Its `Vocabulary` (default: `model.vocabulary`).
        prompt: Text to continue.
        num_tokens: Tokens to draw (`<eos>` counts as one).
        temperature: > 0; below 1 sharpens, above 1 flattens the distribution.
        top_k: Draw only among the `k` most likely tokens (None: all).
        seed: Seed of the draws.

    Returns:
        `(text, tokens)`: the continuation as text (`<eos>` ends a line, never
        printed as a word) and the drawn tokens.
    """
    drawn = list(iter_generate(model, vocab, prompt, num_tokens, temperature, top_k, seed))
    text = Detokenizer(_vocabulary_of(model, vocab))
    return "".join(text.add(token) for token in drawn) + text.finish(), drawn


def iter_generate(
    model, vocab=None, prompt="", num_tokens=100, temperature=1.0, top_k=None, seed=None
):
    """`generate`'s tokens, yielded one at a time as each is drawn (the arguments
    are `generate`'s): a long generation can be shown, and stopped, as it goes.

    The arguments are checked and the prompt is run through the model when this is
    called; the draws happen as the returned iterator is consumed, each step from the
    state the model carries (so one stateful model runs one generation at a time).
    """
    check_generation_settings(num_tokens, temperature, top_k, seed)
    vocab = _vocabulary_of(model, vocab)
    if not (model.stateful and model.batch_size == 1):
        model = _as(model, "as_stateful", 1)
    # A prompt starts a sentence: the line before it ended with <eos>.
    tokens = vocab.tokenize(prompt)[:-1] if prompt.strip() else []
    ids = _encode_with_unk(vocab, [EOS, *tokens], "the prompt")
    rng = np.random.default_rng(seed)
    model.reset_state()
    logits = np.asarray(model.predict_on_batch(ids[None, :]), dtype=np.float64)[0, -1]
    return _draws(model, vocab, logits, rng, num_tokens, temperature, top_k)


def _draws(model, vocab, logits, rng, num_tokens, temperature, top_k):
    for step in range(num_tokens):
        scaled = logits / temperature
        if top_k is not None and top_k < len(scaled):
            cutoff = np.partition(scaled, -top_k)[-top_k]
            scaled = np.where(scaled >= cutoff, scaled, -np.inf)
        p = np.exp(scaled - scaled.max())
        p /= p.sum()
        token_id = int(rng.choice(len(p), p=p))
        yield vocab.tokens[token_id]
        if step + 1 < num_tokens:
            next_input = np.array([[token_id]], dtype=np.int32)
            logits = np.asarray(model.predict_on_batch(next_input), dtype=np.float64)[0, -1]


def score_sentences(
    model,
    vocab=None,
    sentences=(),
    batch_size=32,
    length_quantum=8,
    progress=False,
    segment_length=SCORE_SEGMENT_LENGTH,
):
    """Log-probability of each sentence under a language model, as a list
    (`iter_scores`' results, with a progress bar over the sentences if `progress`).

    Returns:
        A list with one `(log_prob, num_tokens)` per sentence, in input order
        (natural logarithm; `num_tokens` counts the `<eos>`).
    """
    if isinstance(sentences, str):
        raise TypeError("`sentences` must be a list of strings, not one string")
    if not hasattr(sentences, "__len__"):
        sentences = list(sentences)
    results = []
    bar = Progress(len(sentences), "sentence", progress)
    scores = iter_scores(model, vocab, sentences, batch_size, length_quantum, segment_length)
    for result in scores:
        results.append(result)
        bar.update(len(results))
    return results


def iter_scores(
    model,
    vocab=None,
    sentences=(),
    batch_size=32,
    length_quantum=8,
    segment_length=SCORE_SEGMENT_LENGTH,
):
    """Yields the log-probability of each sentence under a language model, in input
    order, as soon as it is scored, reading `sentences` as it goes.

    Every sentence is scored on its own, from a zero state, as a line of the
    vocabulary's corpus (read with its tokenization): its tokens and `<eos>` are
    predicted with `<eos>` (the end of the line before) as the first input. Only
    each target's log-probability is kept (the model's `score_on_batch`), never a
    distribution over the vocabulary per position.

    Sentences of at most `segment_length` tokens are sorted by length within windows
    of `WINDOW_BATCHES` batches and scored in batches of `batch_size` (a stateless
    copy, `model.as_stateless()`), padded to multiples of `length_quantum` to bound
    the number of compiled shapes; padding comes after a sentence's tokens and so
    cannot change them (the model reads left to right). A longer sentence is scored
    alone by a stateful copy of batch 1 (`model.as_stateful(1)`) in segments of
    `segment_length` tokens, the state carried from one to the next: the same
    log-probability as one call over the whole sentence, to float rounding. Memory
    stays bounded by `batch_size x segment_length` positions however long a line or
    the input is.

    Args:
        model: An `AWDLSTMLanguageModel` (as in `generate`).
        vocab: Its `Vocabulary` (default: `model.vocabulary`).
        sentences: An iterable of strings, one sentence each (read lazily), or a
            binary file (`open(path, "rb")`, `sys.stdin.buffer`) of UTF-8 text, one
            sentence per line, read as corpus files are, a block at a time (a long
            line in pieces); a pipe or terminal that has nothing more to read yet has
            the sentences read so far scored first. `CorpusError` (naming the file)
            when the reading reaches bytes that are not UTF-8, or for a file of
            nothing but white space.
        batch_size: Sentences scored per call.
        length_quantum: Batches are padded to a multiple of this many positions.
        segment_length: Positions of a long sentence scored per call.

    Yields:
        `(log_prob, num_tokens)` per sentence (natural logarithm; `num_tokens` counts
        the `<eos>`). Words outside the vocabulary read as `<unk>`, with a warning per
        sentence that has them.
    """
    check_positive_int("batch_size", batch_size)
    check_positive_int("length_quantum", length_quantum)
    check_positive_int("segment_length", segment_length)
    vocab = _vocabulary_of(model, vocab)
    level, tokenization = vocab.level, vocab.tokenization
    if isinstance(sentences, str):
        raise TypeError("`sentences` must be an iterable of strings, not one string")
    if isinstance(sentences, io.TextIOBase):
        raise TypeError(
            "a file of sentences must be opened in binary mode (`open(path, 'rb')`, "
            "`sys.stdin.buffer`): it is read as UTF-8"
        )
    rows = batch_size
    if hasattr(sentences, "read"):
        name = str(getattr(sentences, "name", "the input"))
        source = "standard input" if name == "<stdin>" else name
        pieces = file_tokens(sentences, source, level, tokenization, report_idle=True)
    else:
        if hasattr(sentences, "__len__"):  # no taller batches than the sentences
            rows = max(1, min(batch_size, len(sentences)))
        pieces = text_tokens(sentences, level, tokenization)
    scorer = _LineScorer(model, vocab, rows, length_quantum, segment_length)
    return scorer.scores(pieces)


class _LineScorer:
    """`iter_scores`' work: short lines in sorted windows, long ones in segments."""

    def __init__(self, model, vocab, rows, length_quantum, segment_length):
        self.model = model
        self.stateless = _as(model, "as_stateless") if model.stateful else model
        self.stateful = None  # made for the first long line
        self.vocab = vocab
        self.eos = vocab.index[EOS]
        self.rows = rows
        self.quantum = length_quantum
        self.segment_length = segment_length

    def scores(self, pieces):
        """`(log_prob, num_tokens)` per line of `pieces` (`(tokens, ends)` of
        `file_tokens` or `text_tokens`; `None`: score what is read)."""
        pieces = iter(pieces)
        encoder = _LineEncoder(self.vocab)
        window = []  # the ids of short lines read and not scored yet
        line, size = [], 0  # the current line's ids so far
        for piece in pieces:
            if piece is None:  # the input waits for its writer
                yield from self._window(window)
                window = []
                continue
            line.append(encoder.encode(*piece))
            size += len(line[-1])
            if size > self.segment_length:
                yield from self._window(window)  # the lines before it first
                window = []
                yield self._long_line(np.concatenate(line), piece[1], pieces, encoder)
                line, size = [], 0
            elif piece[1]:
                window.append(np.concatenate(line))
                line, size = [], 0
                if len(window) == self.rows * WINDOW_BATCHES:
                    yield from self._window(window)
                    window = []
        yield from self._window(window)

    def _window(self, window):
        # Sorted by length, in batches of `rows` (each as tall: one compiled shape
        # per width); the results in the lines' order.
        order = sorted(range(len(window)), key=lambda i: len(window[i]))
        results = [None] * len(window)
        for first in range(0, len(order), self.rows):
            batch = order[first : first + self.rows]
            width = _padded(max(len(window[i]) for i in batch), self.quantum)
            inputs = np.full((self.rows, width), self.eos, dtype=np.int32)
            targets = np.zeros((self.rows, width), dtype=np.int32)
            for row, i in enumerate(batch):
                ids = window[i]
                inputs[row, 1 : len(ids)] = ids[:-1]
                targets[row, : len(ids)] = ids
            losses = self.stateless.score_on_batch(inputs, targets)
            for row, i in enumerate(batch):
                n = len(window[i])
                results[i] = (-float(losses[row, :n].sum(dtype=np.float64)), n)
        return results

    def _long_line(self, ids, ends, pieces, encoder):
        """The score of a line longer than a segment: `ids` its first pieces', the
        rest read from `pieces`."""
        if self.stateful is None:
            model = self.model
            one_stream = model.stateful and model.batch_size == 1
            self.stateful = model if one_stream else _as(model, "as_stateful", 1)
        line = _SegmentedLine(self.stateful, self.eos, self.segment_length, self.quantum)
        line.add(ids)
        for piece in pieces if not ends else ():
            if piece is not None:
                line.add(encoder.encode(*piece))
                if piece[1]:
                    break
        return line.finish()


class _SegmentedLine:
    """The score of one line fed to a stateful model of batch 1 a piece at a time:
    each segment of `segment_length` tokens scored as soon as it is read, the state
    carried to the next; the last one padded to a multiple of `quantum`."""

    def __init__(self, model, eos, segment_length, quantum):
        model.reset_state()
        self.model = model
        self.segment_length = segment_length
        self.quantum = quantum
        self.previous = eos  # the input before the next segment's first target
        self.held = np.zeros(0, dtype=np.int32)
        self.loss, self.count = 0.0, 0

    def add(self, ids):
        ids = np.concatenate([self.held, ids])
        length = self.segment_length
        while len(ids) >= length:
            self._score(ids[:length], length)
            ids = ids[length:]
        self.held = ids

    def finish(self):
        """`(log_prob, num_tokens)` of the line."""
        if len(self.held):  # the state the padding leaves is not used
            self._score(self.held, _padded(len(self.held), self.quantum))
        return -self.loss, self.count

    def _score(self, ids, width):
        inputs = np.full((1, width), self.previous, dtype=np.int32)
        inputs[0, 1 : len(ids)] = ids[:-1]
        targets = np.zeros((1, width), dtype=np.int32)
        targets[0, : len(ids)] = ids
        losses = self.model.score_on_batch(inputs, targets)
        self.loss += float(losses[0, : len(ids)].sum(dtype=np.float64))
        self.count += len(ids)
        self.previous = int(ids[-1])


class _LineEncoder:
    """Token ids of a line's pieces; the line's words outside the vocabulary read as
    `<unk>`, with one warning per line (an error if the vocabulary has no `<unk>`)."""

    def __init__(self, vocab):
        self.vocab = vocab
        self.unknown = set()  # the line's word types outside the vocabulary so far

    def encode(self, tokens, ends):
        self.unknown.update(t for t in tokens if t not in self.vocab)
        if self.unknown and (ends or self.vocab.unk_id is None):
            unknown, self.unknown = self.unknown, set()
            _read_as_unk(self.vocab, unknown, "the input", stacklevel=4)
        return self.vocab.encode(tokens)


def _padded(length, quantum):
    return -(-length // quantum) * quantum
