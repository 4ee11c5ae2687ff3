"""Adaptive softmax over a frequency-sorted vocabulary, tied to the output table.

Grave et al. (2017), "Efficient softmax approximation for GPUs"; in the tied form
that Merity et al. (2018), "An Analysis of Neural Language Modeling at Multiple
Scales", train AWD-LSTM with on WikiText-103 (cut-offs 2800, 20000, 76000). The ids
below the first cut-off form the *head*; the ids between consecutive cut-offs (and
from the last one to the end of the vocabulary) form the *tail clusters*. The head
softmax scores the head words and one logit per tail cluster; a tail word's
probability is its cluster's head probability times its probability within the
cluster:

    log p(w | h) = log softmax([W_head h + b_head ; C h + c])[w]              (head w)
    log p(w | h) = log softmax([...])[cluster(w)] + log softmax(W_i h + b_i)[w]  (tail w)

Every word's output vector `W` is its row of the (tied) output table, so the layer
owns only the cluster vectors `C` and their biases `c`. The distribution is exact:
the full log-probabilities sum to one over the vocabulary.

The saving is in training: a position's loss needs only the head and the one cluster
its target lies in. Each tail cluster is scored for a fixed number of rows (the
positions whose target falls in it, padded), so every backend, JAX included, sees
static shapes. `tail_capacity` sets those row budgets as fractions of a step's
positions; `reserve_capacity` grows them to fit given targets. A step whose targets
do not fit returns NaN losses rather than a wrong value.
"""

import math

import keras
import numpy as np
from keras import ops

# Row budgets are multiples of 1/CAPACITY_STEPS of a step's positions, so a growing
# budget recompiles a step a bounded number of times.
CAPACITY_STEPS = 64
_ROW_MULTIPLE = 8


def check_cutoffs(cutoffs, vocab_size=None):
    """Returns `cutoffs` as a tuple after checking that they are strictly increasing
    positive integers below `vocab_size`."""
    if not isinstance(cutoffs, (list, tuple)) or not cutoffs:
        raise ValueError(
            f"`cutoffs` must be a non-empty list of word ranks; Received: cutoffs={cutoffs!r}"
        )
    values = tuple(cutoffs)
    if not all(isinstance(c, int) and not isinstance(c, bool) for c in values) or not all(
        a < b for a, b in zip((0,) + values, values)
    ):
        raise ValueError(
            "`cutoffs` must be strictly increasing positive integers; "
            f"Received: cutoffs={cutoffs!r}"
        )
    if vocab_size is not None and values[-1] >= vocab_size:
        raise ValueError(
            f"every cut-off must be below the vocabulary size {vocab_size} (the last "
            f"cluster would be empty); Received: cutoffs={cutoffs!r}"
        )
    return values


def _check_capacity(tail_capacity, num_tails):
    if tail_capacity is None:
        return (1.0,) * num_tails
    values = tuple(tail_capacity)
    if len(values) != num_tails or not all(
        isinstance(f, (int, float)) and not isinstance(f, bool) and 0.0 <= f <= 1.0 for f in values
    ):
        raise ValueError(
            f"`tail_capacity` must hold one fraction in [0, 1] per tail cluster ({num_tails}); "
            f"Received: tail_capacity={tail_capacity!r}"
        )
    return tuple(float(f) for f in values)


def capacity_rows(fraction, positions):
    """Rows a tail cluster is scored for in a step of `positions` positions: `fraction`
    of them rounded up to a multiple of 8 (at least 8), at most all of them."""
    if fraction >= 1.0:
        return positions
    rows = max(_ROW_MULTIPLE, math.ceil(fraction * positions / _ROW_MULTIPLE) * _ROW_MULTIPLE)
    return min(positions, rows)


@keras.saving.register_keras_serializable(package="awd_lstm")
class AdaptiveSoftmax(keras.layers.Layer):
    """A tied adaptive softmax: the head and tail clusters of a frequency-sorted
    vocabulary, scored with the rows of a given output table.

    Args:
        vocab_size: Size of the vocabulary (ids sorted most frequent first).
        cutoffs: Increasing ids where the head ends and each further tail cluster
            begins, e.g. `[2800, 20000, 76000]` for WikiText-103.
        tail_capacity: Per tail cluster, the fraction of a step's positions it is
            scored for in `call(..., targets=...)` (rounded up to a multiple of 8 rows).
            `None`: all positions (exact for any targets, no memory saving).
            `reserve_capacity` grows the budgets to fit given targets.
        seed: Integer seed of the cluster vectors' initializer (`U(-0.1, 0.1)`).
        **kwargs: Base `Layer` arguments.

    Call arguments:
        hidden: `(..., d)` states to score.
        table: `(vocab_size, d)` output table (the tied embedding matrix).
        bias: `(vocab_size,)` output bias.
        targets: Optional integer ids `hidden.shape[:-1]`.

    Returns:
        Without targets, the full log-probabilities `(..., vocab_size)`; with them,
        the negative log-likelihood of each target `targets.shape` (NaN where a tail
        cluster's row budget was too small).

    Example:

    >>> layer = AdaptiveSoftmax(10, cutoffs=[4, 7])
    >>> table, bias = np.random.rand(10, 3), np.zeros(10)
    >>> log_p = layer(np.random.rand(2, 3), table, bias)
    >>> np.allclose(np.exp(keras.ops.convert_to_numpy(log_p)).sum(-1), 1.0, atol=1e-5)
    True
    """

    def __init__(self, vocab_size, cutoffs, tail_capacity=None, seed=None, **kwargs):
        if isinstance(vocab_size, bool) or not isinstance(vocab_size, int) or vocab_size < 2:
            raise ValueError(
                f"`vocab_size` must be an integer >= 2; Received: vocab_size={vocab_size!r}"
            )
        self.cutoffs = check_cutoffs(cutoffs, vocab_size)
        self.tail_capacity = _check_capacity(tail_capacity, len(self.cutoffs))
        super().__init__(**kwargs)
        self.vocab_size = vocab_size
        self.seed = seed

    @property
    def num_tails(self):
        return len(self.cutoffs)

    @property
    def bounds(self):
        """`(start, end)` ids of the head and of each tail cluster."""
        edges = (0,) + self.cutoffs + (self.vocab_size,)
        return list(zip(edges[:-1], edges[1:]))

    def build(self, hidden_shape, *args, **kwargs):
        dim = hidden_shape[-1]
        self.cluster_kernel = self.add_weight(
            shape=(dim, self.num_tails),
            initializer=keras.initializers.RandomUniform(-0.1, 0.1, seed=self.seed),
            name="cluster_kernel",
        )
        self.cluster_bias = self.add_weight(
            shape=(self.num_tails,), initializer="zeros", name="cluster_bias"
        )

    def clusters_of(self, targets):
        """NumPy: 0 for a head id, `i` for an id in tail cluster `i` (1-based)."""
        return np.searchsorted(np.asarray(self.cutoffs), np.asarray(targets), side="right")

    def reserve_capacity(self, targets):
        """Grows the tail row budgets so every batch in `targets` (one integer array
        of a step, or an iterable of them) fits. Returns True if a budget grew (a
        compiled step then has to be traced again)."""
        batches = [targets] if isinstance(targets, np.ndarray) else targets
        capacity = list(self.tail_capacity)
        for batch in batches:
            batch = np.asarray(batch)
            positions = batch.size
            counts = np.bincount(self.clusters_of(batch).ravel(), minlength=self.num_tails + 1)
            for i, count in enumerate(counts[1:]):
                if count > capacity_rows(capacity[i], positions):
                    steps = math.floor(count / positions * CAPACITY_STEPS) + 1
                    capacity[i] = min(1.0, steps / CAPACITY_STEPS)
        grew = tuple(capacity) != self.tail_capacity
        self.tail_capacity = tuple(capacity)
        return grew

    def _split(self, table, bias):
        # One split (its gradient is one concatenation), not a slice per cluster.
        tables = ops.split(table, list(self.cutoffs), axis=0)
        biases = ops.split(ops.cast(bias, table.dtype), list(self.cutoffs), axis=0)
        return tables, biases

    def _head_log_probs(self, hidden, head_table, head_bias):
        head = ops.matmul(hidden, ops.transpose(head_table)) + head_bias
        clusters = ops.matmul(hidden, ops.cast(self.cluster_kernel, hidden.dtype)) + ops.cast(
            self.cluster_bias, hidden.dtype
        )
        return ops.log_softmax(ops.concatenate([head, clusters], axis=-1), axis=-1)

    def call(self, hidden, table, bias, targets=None):
        table = ops.cast(table, hidden.dtype)
        tables, biases = self._split(table, bias)
        if targets is None:
            return self.log_probs(hidden, tables, biases)
        return self.token_loss(hidden, targets, tables, biases)

    def log_probs(self, hidden, tables, biases):
        head_size = self.cutoffs[0]
        head = self._head_log_probs(hidden, tables[0], biases[0])
        pieces = [head[..., :head_size]]
        for i in range(1, self.num_tails + 1):
            within = ops.log_softmax(
                ops.matmul(hidden, ops.transpose(tables[i])) + biases[i], axis=-1
            )
            pieces.append(head[..., head_size + i - 1 : head_size + i] + within)
        return ops.concatenate(pieces, axis=-1)

    def token_loss(self, hidden, targets, tables, biases):
        out_shape = ops.shape(targets)
        dim = hidden.shape[-1]
        h = ops.reshape(hidden, (-1, dim))
        t = ops.cast(ops.reshape(targets, (-1,)), "int32")
        n = ops.shape(h)[0]  # an int, or a tensor inside TF's shape-relaxed graphs
        head_size = self.cutoffs[0]
        cluster = ops.sum(
            ops.cast(ops.expand_dims(t, -1) >= ops.array(self.cutoffs, "int32"), "int32"), axis=-1
        )
        head = self._head_log_probs(h, tables[0], biases[0])
        head_target = ops.where(cluster == 0, t, head_size + cluster - 1)
        nll = -ops.take_along_axis(head, ops.expand_dims(head_target, -1), axis=-1)[:, 0]
        for i, (start, end) in enumerate(self.bounds[1:], 1):
            in_cluster = cluster == i
            rows = self._rows(self.tail_capacity[i - 1], n)
            if isinstance(n, int) and rows == n:
                index, valid = ops.arange(n), in_cluster
            else:
                # The positions in this cluster first (earliest first), then padding.
                order = ops.cast(n, "float32") - ops.cast(ops.arange(n), "float32")
                _, index = ops.top_k(ops.where(in_cluster, order, 0.0), rows)
                valid = ops.take(in_cluster, index)
                overflow = ops.sum(ops.cast(in_cluster, "int32")) > rows
                nll = ops.where(overflow, float("nan"), nll)
            picked_h = ops.take(h, index, axis=0)
            local = ops.clip(ops.take(t, index) - start, 0, end - start - 1)
            within = ops.log_softmax(
                ops.matmul(picked_h, ops.transpose(tables[i])) + biases[i], axis=-1
            )
            tail = -ops.take_along_axis(within, ops.expand_dims(local, -1), axis=-1)[:, 0]
            tail = ops.where(valid, tail, ops.zeros_like(tail))
            if isinstance(n, int) and rows == n:
                nll = nll + tail
            else:
                # Back to the positions by a gather (its gradient is the backends'
                # scatter-add): the k-th position in the cluster holds row k.
                slot = ops.cumsum(ops.cast(in_cluster, "int32")) - 1
                back = ops.take(tail, ops.clip(slot, 0, rows - 1))
                nll = nll + ops.where(in_cluster, back, ops.zeros_like(back))
        return ops.reshape(nll, out_shape)

    @staticmethod
    def _rows(fraction, n):
        if isinstance(n, int):
            return capacity_rows(fraction, n)
        if fraction >= 1.0:
            return n
        wanted = ops.cast(ops.ceil(fraction * ops.cast(n, "float32") / _ROW_MULTIPLE), "int32")
        return ops.minimum(n, ops.maximum(_ROW_MULTIPLE, wanted * _ROW_MULTIPLE))

    def compute_output_spec(self, hidden, table, bias, targets=None):
        if targets is None:
            return keras.KerasTensor((*hidden.shape[:-1], self.vocab_size), dtype=hidden.dtype)
        return keras.KerasTensor(targets.shape, dtype=hidden.dtype)

    def get_config(self):
        return {
            **super().get_config(),
            "vocab_size": self.vocab_size,
            "cutoffs": list(self.cutoffs),
            "tail_capacity": list(self.tail_capacity),
            "seed": self.seed,
        }
