"""A short demonstration: a weight-dropped language model learns a Markov source.

Run with `python -m awd_lstm.demo` (choose the backend with `KERAS_BACKEND`). The
corpus is drawn from a seeded first-order Markov chain, so the best achievable
perplexity is known exactly: `exp(entropy rate)`. The demo trains a small model
with every AWD layer (embedding dropout, locked dropout, weight-dropped LSTM,
AR/TAR, tied decoder) and prints its validation perplexity beside that optimum and
beside a unigram model's.
"""

import argparse
import math
import sys
import time

import keras
import numpy as np

from awd_lstm.layers import EmbeddingDropout, LockedDropout, WeightDropLSTM
from awd_lstm.regularizers import ActivationRegularization, TemporalActivationRegularization


def markov_source(vocab_size, seed, concentration=0.1):
    """A random transition matrix with peaked rows, and its stationary law."""
    rng = np.random.default_rng(seed)
    transitions = rng.dirichlet(np.full(vocab_size, concentration), size=vocab_size)
    eigenvalues, eigenvectors = np.linalg.eig(transitions.T)
    stationary = np.real(eigenvectors[:, np.argmin(np.abs(eigenvalues - 1.0))])
    stationary = stationary / stationary.sum()
    return transitions, stationary


def sample_chain(transitions, stationary, length, rng):
    cumulative = np.cumsum(transitions, axis=1)
    state = rng.choice(len(stationary), p=stationary)
    tokens = np.empty(length, dtype=np.int32)
    uniforms = rng.random(length)
    for t in range(length):
        tokens[t] = state
        state = min(int(np.searchsorted(cumulative[state], uniforms[t])), len(stationary) - 1)
    return tokens


def entropy_rate(transitions, stationary):
    """Nats per token of the best possible predictor of the chain."""
    logs = np.log(np.where(transitions > 0, transitions, 1.0))
    return float(-(stationary[:, None] * transitions * logs).sum())


def build_model(vocab_size, embedding_size, hidden_size, seed):
    """Embedding -> LSTM -> LSTM -> tied decoder, with every AWD regularizer."""
    ids = keras.Input((None,), dtype="int32")
    embedding = EmbeddingDropout(
        vocab_size,
        embedding_size,
        embedding_dropout=0.1,
        seed=seed,
        embeddings_initializer=keras.initializers.RandomUniform(-0.1, 0.1, seed=seed),
    )
    x = LockedDropout(0.2, seed=seed + 1)(embedding(ids))
    x = WeightDropLSTM(hidden_size, weight_dropout=0.3, return_sequences=True, seed=seed + 2)(x)
    x = LockedDropout(0.2, seed=seed + 3)(x)
    x = WeightDropLSTM(embedding_size, weight_dropout=0.3, return_sequences=True, seed=seed + 4)(x)
    x = TemporalActivationRegularization(1.0)(x)
    x = LockedDropout(0.2, seed=seed + 5)(x)
    x = ActivationRegularization(2.0)(x)
    logits = TiedDecoder(embedding)(x)
    return keras.Model(ids, logits)


class TiedDecoder(keras.layers.Layer):
    """Logits from the embedding matrix (weight tying) plus a bias."""

    def __init__(self, embedding, **kwargs):
        super().__init__(**kwargs)
        self.embedding = embedding

    def build(self, input_shape):
        self.bias = self.add_weight(
            shape=(self.embedding.input_dim,), initializer="zeros", name="bias"
        )

    def call(self, x):
        table = keras.ops.cast(self.embedding.embeddings, x.dtype)
        return keras.ops.matmul(x, keras.ops.transpose(table)) + self.bias


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m awd_lstm.demo",
        description="Train a small weight-dropped LSTM language model on a generated "
        "Markov corpus and compare its perplexity with the exact optimum.",
    )
    parser.add_argument("--epochs", type=int, default=12, help="training epochs (default 12)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--vocab-size", type=int, default=50, help="words in the source")
    parser.add_argument("--tokens", type=int, default=60_000, help="training tokens")
    args = parser.parse_args(argv)
    for name in ("epochs", "vocab_size", "tokens"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1; got {getattr(args, name)}")

    keras.utils.set_random_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    transitions, stationary = markov_source(args.vocab_size, args.seed)
    bptt, batch = 35, 32
    train = sample_chain(transitions, stationary, args.tokens, rng)
    valid = sample_chain(transitions, stationary, max(args.tokens // 10, 2 * bptt + 2), rng)

    def windows(tokens):
        n = (len(tokens) - 1) // bptt
        x = tokens[: n * bptt].reshape(n, bptt)
        y = tokens[1 : n * bptt + 1].reshape(n, bptt)
        return x, y

    optimum = math.exp(entropy_rate(transitions, stationary))
    counts = np.bincount(train, minlength=args.vocab_size) + 1.0
    unigram = math.exp(-np.mean(np.log((counts / counts.sum())[valid])))
    print(
        f"backend: {keras.backend.backend()}; corpus: {args.vocab_size}-word Markov chain, "
        f"{len(train):,} training tokens"
    )
    model = build_model(args.vocab_size, 32, 64, args.seed)
    model.compile(
        optimizer=keras.optimizers.Adam(1e-2, clipnorm=0.25),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    start = time.perf_counter()
    x_train, y_train = windows(train)
    x_valid, y_valid = windows(valid)
    history = model.fit(
        x_train,
        y_train,
        batch_size=batch,
        epochs=args.epochs,
        validation_data=(x_valid, y_valid),
        verbose=1 if sys.stdout.isatty() else 2,
    )
    seconds = time.perf_counter() - start
    valid_ppl = math.exp(history.history["val_loss"][-1])
    print(
        f"validation perplexity {valid_ppl:.2f}  (optimum {optimum:.2f}, "
        f"unigram {unigram:.2f}); {seconds:.0f} s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
