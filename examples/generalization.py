"""Does weight drop help an LSTM generalize? A reproducible check of the claim the
project's TensorFlow 1.x cell was published with.

Task (generated, many-to-many): a sequence of random symbols from a 10-letter alphabet;
the target at step t is the symbol seen 3 steps earlier (`delay`), but in the training
set 30% of the targets are replaced by random symbols (label noise). A plain LSTM with
more capacity than the task needs memorizes the noise; the validation targets are clean,
so the validation error measures how much of the rule the model learned rather than the
noise. Both models have the same size and the same training budget; only
`weight_dropout` differs. Prints the validation error of both for each seed.

    python examples/generalization.py [--seeds 0 1 2] [--epochs 60]
"""

import argparse
import time

import keras
import numpy as np

from awd_lstm.layers import WeightDropLSTM

ALPHABET, STEPS, DELAY = 10, 30, 3


def make_data(n, noise, rng):
    x = rng.integers(0, ALPHABET, size=(n, STEPS))
    y = np.full((n, STEPS), 0)
    y[:, DELAY:] = x[:, :-DELAY]
    noisy = rng.random((n, STEPS)) < noise
    y = np.where(noisy, rng.integers(0, ALPHABET, size=(n, STEPS)), y)
    weights = np.ones((n, STEPS), "float32")
    weights[:, :DELAY] = 0.0  # nothing to predict before the first delayed symbol
    return x, y, weights


def build(units, weight_dropout, seed):
    inputs = keras.Input((STEPS,), dtype="int32")
    x = keras.layers.Embedding(ALPHABET, 16)(inputs)
    x = WeightDropLSTM(units, weight_dropout=weight_dropout, return_sequences=True, seed=seed)(x)
    outputs = keras.layers.Dense(ALPHABET)(x)
    model = keras.Model(inputs, outputs)
    model.compile(
        keras.optimizers.Adam(3e-3),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        weighted_metrics=["sparse_categorical_accuracy"],
    )
    return model


def run(seed, epochs, units, weight_dropout, train_size):
    rng = np.random.default_rng(seed)
    train = make_data(train_size, noise=0.3, rng=rng)
    valid = make_data(1000, noise=0.0, rng=rng)
    errors = {}
    for name, rate in (("plain LSTM", 0.0), (f"weight drop {weight_dropout}", weight_dropout)):
        keras.utils.set_random_seed(seed)
        model = build(units, rate, seed)
        model.fit(
            train[0], train[1], sample_weight=train[2], batch_size=32, epochs=epochs, verbose=0
        )
        accuracy = model.evaluate(
            valid[0], valid[1], sample_weight=valid[2], verbose=0, return_dict=True
        )["sparse_categorical_accuracy"]
        errors[name] = 1.0 - accuracy
    return errors


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--units", type=int, default=128)
    parser.add_argument("--weight-dropout", type=float, default=0.5)
    parser.add_argument("--train-size", type=int, default=200, help="training sequences")
    args = parser.parse_args()
    start = time.perf_counter()
    rows = []
    for seed in args.seeds:
        errors = run(seed, args.epochs, args.units, args.weight_dropout, args.train_size)
        rows.append((seed, errors))
        print(f"seed {seed}: " + ", ".join(f"{k} {v:.3f}" for k, v in errors.items()), flush=True)
    names = list(rows[0][1])
    print(
        f"\nvalidation error (clean targets), backend {keras.backend.backend()}, "
        f"{time.perf_counter() - start:.0f} s\n"
    )
    print("| seed | " + " | ".join(names) + " |")
    print("|---|" + "---:|" * len(names))
    for seed, errors in rows:
        print(f"| {seed} | " + " | ".join(f"{errors[n]:.3f}" for n in names) + " |")
    means = [np.mean([e[n] for _, e in rows]) for n in names]
    print("| mean | " + " | ".join(f"{m:.3f}" for m in means) + " |")


if __name__ == "__main__":
    main()
