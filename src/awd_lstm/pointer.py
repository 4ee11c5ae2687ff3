"""The continuous cache pointer (Grave et al. 2016) over a trained language model.

Merity et al. (2017), section 5.3: keep the last `window` raw
last-layer hidden states `h_i` and the word that followed each; the next-word
probability mixes the model's softmax with attention over that cache,

    p(w) = (1 - λ) p_model(w) + λ Σ_{i in cache, next word of i = w} softmax(θ h_i·h_t)_i.

Nothing is trained. The cache starts empty and holds whatever states exist until it
fills (the reference's script uses the pointer only from a full window on; with a long
text the difference is the first `window` words).
"""

import math

import numpy as np

from awd_lstm._validation import check_positive_int
from awd_lstm.log_probs import target_log_probs
from awd_lstm.recipe import evaluation_loop

# The reference's pointer settings per corpus (Merity et al. 2017, section 5.3).
POINTER_PRESETS = {
    "ptb": {"window": 500, "theta": 1.0, "lambdah": 0.1},
    "wikitext-2": {"window": 3785, "theta": 0.6625, "lambdah": 0.1279},
}


def check_pointer_settings(window, theta, lambdah):
    """Raises `ValueError` (one sentence naming the argument) unless `window` is a
    positive integer, `theta` a finite number >= 0 and `lambdah` in [0, 1]."""
    check_positive_int("window", window)
    if not (isinstance(theta, (int, float)) and math.isfinite(theta) and theta >= 0):
        raise ValueError(f"`theta` must be a finite number >= 0; Received: theta={theta!r}")
    if not (isinstance(lambdah, (int, float)) and 0.0 <= lambdah <= 1.0):
        raise ValueError(f"`lambdah` must be in [0, 1]; Received: lambdah={lambdah!r}")


class CachePointer:
    """A cache of recent hidden states per stream and the mixture it gives.

    Args:
        window: States kept per stream (`--window`: 500 for PTB, 3785 for WikiText-2).
        theta: Inverse temperature of the attention over the cache (1.0; 0.6625).
        lambdah: Weight of the cache in the mixture, in [0, 1] (0.1; 0.1279).
        num_streams: Independent streams (the batch of the segments given).

    Example:

    >>> pointer = CachePointer(window=3, theta=1.0, lambdah=0.5)
    >>> logits = np.zeros((1, 2, 4))            # a uniform model over 4 words
    >>> hidden = np.ones((1, 2, 2))
    >>> p = np.exp(pointer.target_log_probs(logits, hidden, np.array([[1, 1]])))
    >>> [round(float(x), 3) for x in p[0]]       # the second 1 was seen once before
    [0.25, 0.625]
    """

    def __init__(self, window, theta, lambdah, num_streams=1):
        check_pointer_settings(window, theta, lambdah)
        self.window = window
        self.theta = float(theta)
        self.lambdah = float(lambdah)
        self.num_streams = num_streams
        self.reset()

    def reset(self):
        """Empties every stream's cache."""
        self._states = [None] * self.num_streams
        self._words = [None] * self.num_streams

    def target_log_probs(self, logits, hidden, targets):
        """Log-probabilities of `targets` under the mixture, then caches the segment.

        Args:
            logits: The model's next-word logits, `(streams, time, vocab)`.
            hidden: The raw last-layer states that produced them, `(streams, time, d)`.
            targets: The next words, `(streams, time)` ints.

        Returns:
            `(streams, time)` float64 log-probabilities.
        """
        logits = np.asarray(logits)  # target_log_probs works on a float64 copy
        hidden = np.asarray(hidden, dtype=np.float64)
        targets = np.asarray(targets)
        if (
            logits.ndim != 3
            or hidden.shape[:2] != logits.shape[:2]
            or targets.shape != logits.shape[:2]
        ):
            raise ValueError(
                "expected logits (streams, time, vocab), hidden (streams, time, d) and targets "
                f"(streams, time); Received: {logits.shape}, {hidden.shape}, {targets.shape}"
            )
        if logits.shape[0] != self.num_streams:
            raise ValueError(
                f"this pointer keeps {self.num_streams} streams; Received: {logits.shape[0]}"
            )
        log_model = target_log_probs(logits, targets)
        out = np.empty(targets.shape)
        for s in range(self.num_streams):
            out[s] = self._mix(s, np.exp(log_model[s]), hidden[s], targets[s])
        return out

    def _mix(self, stream, p_model, hidden, targets):
        time = len(targets)
        past_states, past_words = self._states[stream], self._words[stream]
        if past_states is None:
            past_states, past_words = hidden[:0], targets[:0]
        states = np.concatenate([past_states, hidden])  # (n + time, d)
        words = np.concatenate([past_words, targets])  # the word after each state
        n = len(past_states)
        # Position j (overall index n + j) attends to indices [n + j - window, n + j).
        position = n + np.arange(time)[:, None]
        index = np.arange(n + time)[None, :]
        in_cache = (index < position) & (index >= position - self.window)
        scores = np.where(in_cache, self.theta * hidden @ states.T, -np.inf)
        top = scores.max(-1, keepdims=True)
        has_cache = np.isfinite(top[:, 0])
        weights = np.exp(scores - np.where(np.isfinite(top), top, 0.0))
        attention = weights / np.maximum(weights.sum(-1, keepdims=True), 1e-300)
        p_cache = (attention * (words[None, :] == targets[:, None])).sum(-1)
        p = np.where(has_cache, (1 - self.lambdah) * p_model + self.lambdah * p_cache, p_model)
        self._states[stream] = states[-self.window :]
        self._words[stream] = words[-self.window :]
        return np.log(p)


def evaluate_with_cache(model, ids, bptt, pointer, progress=False):
    """Per-token cross-entropy (nats) of a stateful `model` over a split, with the
    cache pointer mixed in. Like `awd_lstm.recipe.evaluate` (state and cache carried
    over the whole split, segments of `bptt`), with `pointer.num_streams` equal to the
    model's batch."""

    def segment_loss(x, y):
        outputs = model.predict_hidden_on_batch(x)
        return -float(pointer.target_log_probs(outputs["logits"], outputs["hidden"], y).sum())

    model.reset_state()
    pointer.reset()
    return evaluation_loop(ids, model.batch_size, bptt, segment_loss, progress)
