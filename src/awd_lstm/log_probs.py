"""Log-probabilities of target tokens from logits, in NumPy (float64).

The one definition the evaluation loop, sentence scoring and the cache pointer share:
`log_softmax(logits)[target]`, computed stably.

Example:

>>> logits = np.log(np.array([[[0.5, 0.25, 0.25]]]))
>>> [round(float(x), 4) for x in np.exp(target_log_probs(logits, np.array([[1]])))[0]]
[0.25]
"""

import numpy as np


def target_log_probs(logits, targets):
    """`log_softmax(logits, axis=-1)` at `targets`: logits `(..., vocab)`, integer
    targets `(...)`; returns float64 `(...)`."""
    # One float64 copy, shifted and exponentiated in place: a segment's logits are
    # its positions times the vocabulary.
    shifted = np.array(logits, dtype=np.float64)
    shifted -= shifted.max(-1, keepdims=True)
    picked = np.take_along_axis(shifted, np.asarray(targets)[..., None], -1)[..., 0]
    return picked - np.log(np.exp(shifted, out=shifted).sum(-1))
