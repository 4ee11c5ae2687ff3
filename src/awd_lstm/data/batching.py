"""Contiguous batch streams and the variable-length BPTT schedule.

Merity et al. (2017), section 4.1: a training segment's length is `bptt` with
probability 0.95 and `bptt / 2` otherwise, then perturbed by N(0, 5) and floored at 5;
the learning rate of the step is scaled by `seq_len / bptt`, so that short segments do
not weigh as much as long ones.
"""

import math

import numpy as np

from awd_lstm.data.corpus import CorpusError

MIN_SEGMENT = 5


def batchify(ids, batch_size, split="data"):
    """Cuts a token stream into `batch_size` contiguous streams, dropping the tail.

    Returns an int32 array `(batch_size, n)`: row `b` holds tokens
    `[b * n, (b + 1) * n)` of the stream.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise CorpusError(f"batch size must be a positive integer; got {batch_size!r}")
    n = len(ids) // batch_size
    if n < 2:
        raise CorpusError(
            f"the {split} split has {len(ids)} tokens, too few for {batch_size} streams "
            f"(each needs at least 2 tokens: an input and its target)"
        )
    return np.asarray(ids[: n * batch_size], dtype=np.int32).reshape(batch_size, n)


def max_segment_length(bptt, length_quantum=1):
    """The longest segment `segment_length` draws for `bptt`: 4 standard deviations
    above it (the reference has no cap; the cap changes about 3 segments in
    100,000), rounded up to a multiple of `length_quantum`."""
    return length_quantum * math.ceil((bptt + 20) / length_quantum)


def segment_length(bptt, rng, length_quantum=1):
    """One training segment length drawn as the reference does, rounded to a multiple
    of `length_quantum` (so that a compiled step sees few distinct shapes)."""
    base = bptt if rng.random() < 0.95 else bptt / 2
    # Capped so that the set of lengths is bounded (`max_segment_length`).
    length = min(max(MIN_SEGMENT, int(rng.normal(base, 5))), bptt + 20)
    if length_quantum > 1:
        length = max(length_quantum, int(round(length / length_quantum)) * length_quantum)
    return length


class BPTTSchedule:
    """The segments of one pass over batched data: `(start, length)` pairs.

    Training (`variable=True`) draws lengths with `segment_length`; evaluation uses
    fixed `bptt` segments. Segments cover positions `0 .. n-2` once each (the target
    of position `t` is `t + 1`). With `length_quantum > 1` the last, shorter segment is
    also rounded down to a multiple of the quantum (dropping fewer than
    `length_quantum` positions), so the number of distinct segment lengths over any
    number of epochs is at most `max_length // length_quantum`.

    Args:
        num_steps: Columns of the batched data.
        bptt: Base segment length.
        variable: Draw lengths (training) or use `bptt` (evaluation).
        seed: Seed of this pass's lengths (pass the epoch in it for a new schedule
            per epoch).
        length_quantum: Round lengths to multiples of this (1: the reference exactly).
    """

    def __init__(self, num_steps, bptt, variable=True, seed=0, length_quantum=1):
        if isinstance(bptt, bool) or not isinstance(bptt, int) or bptt < 1:
            raise CorpusError(f"bptt must be a positive integer; got {bptt!r}")
        if length_quantum < 1:
            raise CorpusError(f"length_quantum must be >= 1; got {length_quantum!r}")
        self.num_steps = num_steps
        self.bptt = bptt
        self.variable = variable
        self.seed = seed
        self.length_quantum = length_quantum
        self.segments = self._plan()

    def _plan(self):
        rng = np.random.default_rng(self.seed)
        segments, start, last = [], 0, self.num_steps - 1
        while start < last:
            if self.variable:
                length = segment_length(self.bptt, rng, self.length_quantum)
            else:
                length = self.bptt
            length = min(length, last - start)
            if self.variable and self.length_quantum > 1 and length % self.length_quantum:
                length -= length % self.length_quantum
                if length == 0:
                    break
            segments.append((start, length))
            start += length
        return segments

    def __len__(self):
        return len(self.segments)

    def __iter__(self):
        return iter(self.segments)

    def tokens(self):
        return sum(length for _, length in self.segments)

    def max_distinct_lengths(self):
        """An upper bound of the distinct lengths this kind of schedule produces."""
        if not self.variable:
            return 2  # bptt, and the last segment's
        return max_segment_length(self.bptt, self.length_quantum) // self.length_quantum


def segment(batched, start, length):
    """Inputs and targets of one segment: `(batched[:, s:s+l], batched[:, s+1:s+l+1])`."""
    return batched[:, start : start + length], batched[:, start + 1 : start + length + 1]
