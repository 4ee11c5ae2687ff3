"""Mixture of softmaxes: a high-rank output layer over the tied output table.

Yang, Dai, Salakhutdinov & Cohen (2018), "Breaking the Softmax Bottleneck: A
High-Rank RNN Language Model" (ICLR), on AWD-LSTM. A single softmax over `h . e_w`
caps the rank of the log-probability matrix at the embedding width plus one; the
mixture of softmaxes (MoS) mixes `K` softmaxes, each over its own context vector
`h_k`, with weights `pi_k` that depend on the context:

    pi(h)    = softmax(W_pi h)                       (prior, K weights, no bias)
    h_k      = tanh(W_k h + b_k)                     (latent, k = 1..K, width E)
    P(w | h) = sum_k pi_k(h) softmax(h_k . e_w + b_w)   (e_w: row w of the table)

computed in log space, in float32, as

    log P(w | h) = logsumexp_k [log_softmax(W_pi h)_k + z_kw - logsumexp_v z_kv],
    z_kv = h_k . e_v + b_v.

The reference code's names: `prior = nn.Linear(nhidlast, n_experts, bias=False)`,
`latent = nn.Sequential(nn.Linear(nhidlast, n_experts * ninp), nn.Tanh())`, and
`dropoutl`, the locked dropout of the latent vectors (`latent_dropout` here).

Memory: the scores `z` of all positions, `(batch, time, K, vocab)`, are never formed
whole when they are large. The `batch * time` positions are scored in chunks of at
most `chunk_positions(...)` positions, so that a chunk's `positions * K * vocab`
scores stay within `CHUNK_ELEMENTS` (or of at most `chunk_size` positions); with
targets a chunk keeps only each target's log-probability. Static shapes loop over
the chunks in Python (every backend differentiates that, jitted or not); a graph
whose time or batch axis is unknown (TensorFlow relaxes it after a step's second
shape) loops in the graph, over padded chunks.
"""

import keras
from keras import ops

from awd_lstm._seeds import derived_seed
from awd_lstm._validation import check_non_negative_int, check_positive_int, check_rate

# Scores per chunk: 2**26 float32 numbers, 256 MiB (for example 447 positions of
# K = 15 components over a 10,000-word vocabulary).
CHUNK_ELEMENTS = 2**26


def chunk_positions(positions, num_components, vocab_size, budget=CHUNK_ELEMENTS):
    """Positions per chunk for `positions` positions (None: not known yet) of
    `num_components` softmaxes over `vocab_size` words: as many as keep a chunk's
    `chunk * num_components * vocab_size` scores within `budget`, at least one (a
    single position may exceed the budget), spread evenly over the fewest chunks.

    >>> chunk_positions(1400, 15, 10000)  # 4 chunks
    350
    >>> chunk_positions(None, 15, 10000)
    447
    """
    num_components = check_positive_int("num_components", num_components)
    vocab_size = check_positive_int("vocab_size", vocab_size)
    budget = check_positive_int("budget", budget)
    most = max(1, budget // (num_components * vocab_size))
    if positions is None:
        return most
    positions = check_non_negative_int("positions", positions)
    return _balance(positions, most)[1]


def _balance(positions, most):
    """`(chunks, rows)`: `positions` rows spread evenly over the fewest chunks of at
    most `most` rows (the last one may hold fewer); `positions` is an int or, in a
    shape-relaxed graph, a scalar tensor (then so are the results)."""
    if isinstance(positions, int):
        rows = max(1, -(-positions // max(1, -(-positions // most))))
        return max(1, -(-positions // rows)), rows
    chunks = ops.maximum(1, (positions + most - 1) // most)
    rows = ops.maximum(1, (positions + chunks - 1) // chunks)
    return ops.maximum(1, (positions + rows - 1) // rows), rows


@keras.saving.register_keras_serializable(package="awd_lstm")
class MixtureOfSoftmaxes(keras.layers.Layer):
    """A mixture of `num_components` softmaxes over a given (tied) output table.

    From the hidden states `h` (the language model's dropped last LSTM output, width
    `H`) the layer computes the prior `softmax(h W_pi)` over the components and
    their latent vectors `tanh(h W + b)`, `(K, E)` per position, and scores each
    latent vector with the rows of the table (the `(vocab, E)` embedding matrix)
    and the output bias. The result is a normalized distribution: the full
    log-probabilities sum to one over the vocabulary. They are log-probabilities,
    not logits, but a consumer that treats them as logits (a softmax, a
    `log_softmax`, a cross-entropy `from_logits=True`) gets the same distribution,
    since `log_softmax(log p) = log p`; that is how the rest of the package uses
    them.

    The layer owns `prior_kernel` `(H, K)` (no bias, as the reference's `prior`),
    `latent_kernel` `(H, K * E)` and `latent_bias` `(K * E,)` (component `k` is the
    slice `[k * E, (k + 1) * E)`, the reference's layout). All three start as
    PyTorch's `nn.Linear` does, which the reference keeps: `U(-1/sqrt(H), 1/sqrt(H))`,
    as the package's LSTMs start as PyTorch's.

    Everything is computed in float32 from the scores on (under a mixed policy the
    products run in the compute dtype and are cast up, as the language model does
    for its logits), with the prior's `log_softmax` rather than the log of its
    softmax. The outputs are float32.

    Memory, for `N = batch * time` positions scored in chunks of `c` positions
    (at most `chunk_size`, or `chunk_positions(N, K, vocab)`): besides the inputs
    and the latent vectors (`N * K * E` numbers), a chunk holds its `c * K * vocab`
    float32 scores and at most two more arrays of that size (shifted, and their
    exponentials, inside `logsumexp`), and the output is gathered from the chunks'
    pieces (`N * vocab` numbers twice without targets, `N` with them). A peak of
    about `4 * (N * K * E + 2 * N * vocab + 3 * c * K * vocab)` bytes in float32,
    that is at most `3 * CHUNK_ELEMENTS` float32 numbers (768 MiB) for the chunk
    with the automatic chunks. Eager execution computes the chunks in order; in a
    compiled step the compiler schedules them (XLA minimizes the live memory;
    TensorFlow's graph executor may run independent chunks, or up to ten iterations
    of its loop over the chunks of a shape-relaxed graph, at the same time). In
    training, autodiff keeps each chunk's scores (or their softmax) for the
    backward pass, about `4 * N * K * vocab` bytes in all: the chunks bound the
    forward pass and inference, not the residuals of the gradient.

    Args:
        vocab_size: Size of the vocabulary (rows of the table).
        num_components: Number of softmaxes `K` (paper: `n_experts`, 15).
        embedding_size: Width `E` of the table and of each latent vector (paper:
            `emsize`, 280 on Penn Treebank). `None`: the width of the hidden states.
        latent_dropout: Float in [0, 1). Locked dropout of the latent vectors, one
            mask per sequence shared by all its time steps (paper: `dropoutl`, 0.29).
        chunk_size: Most positions scored at once. `None`: chosen by
            `chunk_positions` so that a chunk holds at most `CHUNK_ELEMENTS` scores.
        seed: Integer seed of the dropout's `SeedGenerator` (and, by derived seeds,
            of the initializers).
        **kwargs: Base `Layer` arguments.

    Call arguments:
        hidden: `(batch, time, H)` states to score.
        table: `(vocab_size, E)` output table (the tied embedding matrix).
        bias: `(vocab_size,)` output bias.
        targets: Optional integer ids `(batch, time)`.
        training: Python boolean; the latent dropout is applied only when true.

    Returns:
        Without targets, the log-probabilities `(batch, time, vocab_size)`; with
        them, each target's negative log-likelihood `(batch, time)` (nats).

    Example:

    >>> layer = MixtureOfSoftmaxes(10, num_components=3, seed=0)
    >>> hidden, table, bias = np.random.rand(2, 4, 6), np.random.rand(10, 6), np.zeros(10)
    >>> log_p = keras.ops.convert_to_numpy(layer(hidden, table, bias))
    >>> log_p.shape, bool(np.allclose(np.exp(log_p).sum(-1), 1.0, atol=1e-5))
    ((2, 4, 10), True)
    >>> nll = layer(hidden, table, bias, targets=np.zeros((2, 4), "int32"))
    >>> bool(np.allclose(keras.ops.convert_to_numpy(nll), -log_p[..., 0], atol=1e-5))
    True
    """

    def __init__(
        self,
        vocab_size,
        num_components,
        embedding_size=None,
        latent_dropout=0.0,
        chunk_size=None,
        seed=None,
        **kwargs,
    ):
        vocab_size = check_positive_int("vocab_size", vocab_size)
        num_components = check_positive_int("num_components", num_components)
        if embedding_size is not None:
            embedding_size = check_positive_int("embedding_size", embedding_size)
        latent_dropout = check_rate("latent_dropout", latent_dropout)
        if chunk_size is not None:
            chunk_size = check_positive_int("chunk_size", chunk_size)
        super().__init__(**kwargs)
        self.vocab_size = vocab_size
        self.num_components = num_components
        self.embedding_size = embedding_size
        self.latent_dropout = latent_dropout
        self.chunk_size = chunk_size
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def build(self, hidden_shape, *args, **kwargs):
        if len(hidden_shape) != 3 or hidden_shape[-1] is None:
            raise ValueError(
                "`hidden` must have rank 3 (batch, time, features) and a known width; "
                f"Received: hidden.shape={tuple(hidden_shape)}"
            )
        dim = hidden_shape[-1]
        width = self.embedding_size or dim
        self._width = width
        bound = 1.0 / dim**0.5

        def uniform(*names):
            return keras.initializers.RandomUniform(
                -bound, bound, seed=derived_seed(self.seed, *names)
            )

        self.prior_kernel = self.add_weight(
            shape=(dim, self.num_components),
            initializer=uniform("prior", "kernel"),
            name="prior_kernel",
        )
        self.latent_kernel = self.add_weight(
            shape=(dim, self.num_components * width),
            initializer=uniform("latent", "kernel"),
            name="latent_kernel",
        )
        self.latent_bias = self.add_weight(
            shape=(self.num_components * width,),
            initializer=uniform("latent", "bias"),
            name="latent_bias",
        )

    @property
    def latent_size(self):
        """The width `E` of each latent vector (known once built)."""
        return self.embedding_size or getattr(self, "_width", None)

    def chunk_rows(self, positions):
        """`(chunks, rows)`: how `positions` positions (an int, or a scalar tensor in a
        shape-relaxed graph) are scored: `chunks` chunks of `rows` positions (the
        last one holds the rest), at most `chunk_size` or `chunk_positions`' budget
        each."""
        most = self.chunk_size or chunk_positions(None, self.num_components, self.vocab_size)
        return _balance(positions, most)

    def _check_shapes(self, hidden_shape, table_shape, bias_shape, targets_shape):
        hidden_shape = tuple(hidden_shape)
        if len(hidden_shape) != 3:
            raise ValueError(
                "`hidden` must have rank 3 (batch, time, features); "
                f"Received: hidden.shape={hidden_shape}"
            )
        dim = self.prior_kernel.shape[0] if self.built else hidden_shape[-1]
        if hidden_shape[-1] != dim:
            raise ValueError(
                f"`hidden` must have the width {dim} the layer was built for; "
                f"Received: hidden.shape={hidden_shape}"
            )
        width = self.embedding_size or dim
        table_shape = tuple(table_shape)
        rows_match = len(table_shape) == 2 and table_shape[0] in (None, self.vocab_size)
        if not rows_match or table_shape[1] != width:
            raise ValueError(
                f"`table` must have shape (vocab_size, embedding_size) = ({self.vocab_size}, "
                f"{width}); Received: table.shape={table_shape}"
            )
        bias_shape = tuple(bias_shape)
        if len(bias_shape) != 1 or bias_shape[0] not in (None, self.vocab_size):
            raise ValueError(
                f"`bias` must have shape (vocab_size,) = ({self.vocab_size},); "
                f"Received: bias.shape={bias_shape}"
            )
        if targets_shape is not None:
            targets_shape = tuple(targets_shape)
            if len(targets_shape) != 2 or not all(
                t is None or h is None or t == h for t, h in zip(targets_shape, hidden_shape)
            ):
                raise ValueError(
                    "`targets` must have the shape (batch, time) of `hidden`; "
                    f"Received: targets.shape={targets_shape} for "
                    f"hidden.shape={hidden_shape}"
                )

    def call(self, hidden, table, bias, targets=None, training=False):
        self._check_shapes(
            hidden.shape, table.shape, bias.shape, None if targets is None else targets.shape
        )
        dtype = hidden.dtype
        components, width = self.num_components, self.latent_size
        table = ops.cast(table, dtype)
        bias = ops.cast(bias, "float32")
        prior = ops.matmul(hidden, ops.cast(self.prior_kernel, dtype))
        log_prior = ops.log_softmax(ops.cast(prior, "float32"), axis=-1)
        latent = ops.tanh(
            ops.matmul(hidden, ops.cast(self.latent_kernel, dtype))
            + ops.cast(self.latent_bias, dtype)
        )
        if training and self.latent_dropout > 0:
            shape = ops.shape(latent)
            latent = keras.random.dropout(
                latent,
                self.latent_dropout,
                noise_shape=(shape[0], 1, shape[2]),
                seed=self.seed_generator,
            )
        latent = ops.reshape(latent, (-1, components, width))
        log_prior = ops.reshape(log_prior, (-1, components))
        if targets is None:
            log_probs = self._chunked(
                self._chunk_log_probs, table, bias, [latent, log_prior], (self.vocab_size,)
            )
            batch, time = ops.shape(hidden)[0], ops.shape(hidden)[1]
            return ops.reshape(log_probs, (batch, time, self.vocab_size))
        ids = ops.reshape(ops.cast(targets, "int32"), (-1,))
        losses = self._chunked(self._chunk_losses, table, bias, [latent, log_prior, ids], ())
        return ops.reshape(losses, ops.shape(targets))

    def _scores(self, table, bias, latent):
        # (rows, K, vocab) float32 scores of a chunk's latent vectors, by one matrix
        # product of two-dimensional operands (whose shapes XLA knows in a loop of
        # unknown rows, as it does not those of a product of a 3-D and a 2-D one).
        flat = ops.reshape(latent, (-1, latent.shape[-1]))
        scores = ops.cast(ops.matmul(flat, ops.transpose(table)), "float32") + bias
        return ops.reshape(scores, (-1, self.num_components, self.vocab_size))

    def _chunk_log_probs(self, table, bias, latent, log_prior):
        scores = self._scores(table, bias, latent)
        shift = log_prior - ops.logsumexp(scores, axis=-1)  # log pi_k - logsumexp_v z_kv
        return ops.logsumexp(scores + ops.expand_dims(shift, -1), axis=1)

    def _chunk_losses(self, table, bias, latent, log_prior, ids):
        scores = self._scores(table, bias, latent)
        # The targets' scores from their table rows, without a gather of the scores.
        rows = ops.cast(ops.take(table, ids, axis=0), "float32")
        picked = ops.sum(ops.cast(latent, "float32") * ops.expand_dims(rows, 1), axis=-1)
        picked = picked + ops.expand_dims(ops.take(bias, ids, axis=0), -1)
        log_p = log_prior + picked - ops.logsumexp(scores, axis=-1)
        return -ops.logsumexp(log_p, axis=-1)

    def _chunked(self, fn, table, bias, arrays, tail):
        """`fn(table, bias, *arrays)`, `(positions, *tail)`, of the rows of `arrays`
        (positions first), a chunk of rows at a time."""
        positions = arrays[0].shape[0]
        if positions is not None:
            chunks, rows = self.chunk_rows(positions)
            if chunks == 1:
                return fn(table, bias, *arrays)
            # Static shapes: a loop of Python over the pieces of one split (its
            # gradient is one concatenation). Every backend differentiates it, jitted
            # or not; a scan would not run under TensorFlow's XLA (its gradient needs
            # a bounded loop) and a bounded loop is not differentiable on JAX.
            cuts = list(range(rows, positions, rows))
            pieces = zip(*(ops.split(a, cuts, axis=0) for a in arrays))
            return ops.concatenate([fn(table, bias, *piece) for piece in pieces], axis=0)
        # A shape-relaxed graph (TensorFlow's `fit` relaxes the time axis after its
        # second shape): a bounded loop of the graph over the padded chunks, each
        # written into its slot of the output.
        positions = ops.shape(arrays[0])[0]
        chunks, rows = self.chunk_rows(positions)
        padded = chunks * rows
        arrays = [
            ops.reshape(
                ops.pad(a, [[0, padded - positions]] + [[0, 0]] * (len(a.shape) - 1)),
                (chunks, rows, *a.shape[1:]),
            )
            for a in arrays
        ]
        slots = ops.reshape(ops.arange(chunks), (-1,) + (1,) * (1 + len(tail)))

        def body(index, out):
            result = fn(table, bias, *(ops.take(a, index, axis=0) for a in arrays))
            return index + 1, ops.where(slots == index, ops.expand_dims(result, 0), out)

        _, out = ops.while_loop(
            lambda index, out: index < chunks,
            body,
            (ops.zeros((), "int32"), ops.zeros((chunks, rows, *tail), "float32")),
            maximum_iterations=chunks,
        )
        return ops.reshape(out, (padded, *tail))[:positions]

    def compute_output_spec(self, hidden, table, bias, targets=None, training=False):
        self._check_shapes(
            hidden.shape, table.shape, bias.shape, None if targets is None else targets.shape
        )
        if targets is None:
            return keras.KerasTensor((*hidden.shape[:-1], self.vocab_size), dtype="float32")
        return keras.KerasTensor(targets.shape, dtype="float32")

    def get_config(self):
        return {
            **super().get_config(),
            "vocab_size": self.vocab_size,
            "num_components": self.num_components,
            "embedding_size": self.embedding_size,
            "latent_dropout": self.latent_dropout,
            "chunk_size": self.chunk_size,
            "seed": self.seed,
        }
