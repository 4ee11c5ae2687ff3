"""Using a trained language model: sampling text and scoring sentences.

Both take a language model (a run's, an exported one loaded with
`awd_lstm.load_model`, one of your own) and its vocabulary (by default the one it
carries), and make the stateful or stateless copy they need themselves.
Randomness comes from a NumPy generator seeded by the caller, never a global seed.
"""

import warnings

import numpy as np

from awd_lstm._validation import check_positive_int
from awd_lstm.data import EOS, UNK
from awd_lstm.log_probs import target_log_probs
from awd_lstm.progress import Progress


def _encode_with_unk(vocab, tokens, what):
    """Ids of `tokens`; words outside the vocabulary become `<unk>` with a warning
    (an error if the vocabulary has no `<unk>`)."""
    from awd_lstm.data import CorpusError

    unknown = sorted({t for t in tokens if t not in vocab})
    if unknown:
        if vocab.unk_id is None:
            raise CorpusError(
                f"{what} has words outside the vocabulary ({', '.join(unknown[:5])}) and the "
                f"vocabulary has no {UNK}"
            )
        shown = ", ".join(unknown[:10]) + (", ..." if len(unknown) > 10 else "")
        warnings.warn(
            f"{what}: {len(unknown)} word type(s) outside the vocabulary read as {UNK}: {shown}",
            stacklevel=3,
        )
    return vocab.encode(tokens)


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


def _detokenize(tokens, level, tokenization=None):
    """Text from generated tokens: `<eos>` ends a line; characters join without
    spaces (`_` is a space), words with spaces or as `tokenization` joins them
    (punctuation split by the Moses tokenizer joined back)."""
    lines, line = [], []
    for token in tokens:
        if token == EOS:
            lines.append(line)
            line = []
        else:
            line.append(token)
    lines.append(line)
    if level == "char":
        return "\n".join("".join(" " if c == "_" else c for c in words) for words in lines)
    join = " ".join if tokenization is None else tokenization.detokenize
    return "\n".join(join(words) for words in lines)


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
    tokens if given. An empty prompt starts a new sentence.

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
    drawn = []
    for _ in range(num_tokens):
        scaled = logits / temperature
        if top_k is not None and top_k < len(scaled):
            cutoff = np.partition(scaled, -top_k)[-top_k]
            scaled = np.where(scaled >= cutoff, scaled, -np.inf)
        p = np.exp(scaled - scaled.max())
        p /= p.sum()
        token_id = int(rng.choice(len(p), p=p))
        drawn.append(vocab.tokens[token_id])
        next_input = np.array([[token_id]], dtype=np.int32)
        logits = np.asarray(model.predict_on_batch(next_input), dtype=np.float64)[0, -1]
    return _detokenize(drawn, vocab.level, vocab.tokenization), drawn


def score_sentences(
    model, vocab=None, sentences=(), batch_size=32, length_quantum=8, progress=False
):
    """Log-probability of each sentence under a language model (`model`, `vocab` as
    in `generate`; a stateful model is scored through its copy for any batch,
    `model.as_stateless()`).

    Every sentence is scored on its own, from a zero state, as a line of the
    vocabulary's corpus (read with its tokenization): its tokens and `<eos>` are
    predicted with `<eos>` (the end of the line before) as the first input.
    Sentences are sorted by length and batched, padded to multiples of
    `length_quantum` to bound the number of compiled shapes; padding comes after a
    sentence's tokens and so cannot change them (the model reads left to right).

    Returns:
        A list with one `(log_prob, num_tokens)` per sentence, in input order
        (natural logarithm; `num_tokens` counts the `<eos>`).
    """
    check_positive_int("batch_size", batch_size)
    vocab = _vocabulary_of(model, vocab)
    if model.stateful:
        model = _as(model, "as_stateless")
    if isinstance(sentences, str):
        raise TypeError("`sentences` must be a list of strings, not one string")
    encoded = [_encode_with_unk(vocab, vocab.tokenize(s), "the input") for s in sentences]
    eos = vocab.index[EOS]
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))
    rows = min(batch_size, len(order))  # every batch as tall: one compiled shape per width
    results = [None] * len(encoded)
    bar = Progress(len(order), "sentence", progress)
    for first in range(0, len(order), rows):
        chunk = order[first : first + rows]
        longest = max(len(encoded[i]) for i in chunk)
        width = -(-longest // length_quantum) * length_quantum
        inputs = np.full((rows, width), eos, dtype=np.int32)
        targets = np.zeros((rows, width), dtype=np.int64)
        for row, i in enumerate(chunk):
            ids = encoded[i]
            inputs[row, 1 : len(ids)] = ids[:-1]
            targets[row, : len(ids)] = ids
        log_probs = target_log_probs(model.predict_on_batch(inputs), targets)
        for row, i in enumerate(chunk):
            n = len(encoded[i])
            results[i] = (float(log_probs[row, :n].sum()), n)
        bar.update(min(first + rows, len(order)))
    return results
