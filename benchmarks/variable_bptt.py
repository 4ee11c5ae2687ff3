"""Training epochs with variable against fixed segment lengths, compilation included.

The reference draws each segment's length (bptt with probability 0.95, else bptt/2,
then normal with deviation 5); a compiled training step is specialized to its input
shape, so every new length can cost a compilation. The training pipeline rounds the
lengths to multiples of `length_quantum` (5), which bounds the number of shapes;
TensorFlow traces one shape-generic step, and JAX pads every segment to the model's
`segment_capacity` (one compiled step). This benchmark measures what is left: for
each backend (its own process), two fresh models train two epochs over `--tokens`
tokens, one with fixed `bptt` segments, the other with variable segments (the
pipeline's schedule and learning-rate scaling), their steps taking turns; each epoch's
time is the sum of its model's step times, compilation included (the first epoch
compiles every new length that needs it). The ratio variable/fixed of tokens/s is the
cost of variable lengths.

Usage:

    python benchmarks/variable_bptt.py [--backends tensorflow,jax,torch]
        [--tokens 929589] [--json OUT]
"""

import argparse
import itertools
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import argument_parser, report, run_backends  # noqa: E402

# The `small` preset's model: embedding 200, hidden 400, 3 layers, batch 20, bptt 35.
SIZE = dict(vocab=10_000, embedding=200, hidden=400, layers=3, batch=20, bptt=35)


def measure(tokens, seed):
    """Runs in a child process whose KERAS_BACKEND is already set."""
    import keras
    import numpy as np

    from awd_lstm.config import TrainingConfig
    from awd_lstm.data import BPTTSchedule, batchify, segment
    from awd_lstm.training import build_model

    keras.utils.set_random_seed(seed)
    config = TrainingConfig(
        embedding_size=SIZE["embedding"],
        hidden_size=SIZE["hidden"],
        num_layers=SIZE["layers"],
        batch_size=SIZE["batch"],
        bptt=SIZE["bptt"],
        input_dropout=0.4,
        hidden_dropout=0.25,
        seed=seed,
    )
    ids = np.random.default_rng(seed).integers(0, SIZE["vocab"], size=tokens).astype("int32")
    data = batchify(ids, config.batch_size)
    modes = ("fixed", "variable")
    models = {mode: build_model(config, SIZE["vocab"], config.batch_size) for mode in modes}
    rows = []
    for epoch in (1, 2):
        schedules = {
            mode: BPTTSchedule(
                data.shape[1],
                config.bptt,
                variable=mode == "variable",
                seed=seed * 100_003 + epoch,
                length_quantum=config.length_quantum,
            )
            for mode in modes
        }
        seconds = dict.fromkeys(modes, 0.0)
        counts = dict.fromkeys(modes, 0)
        for mode in modes:
            models[mode].reset_state()
        # The two models' steps take turns, so that a slower or faster stretch of the
        # machine falls on both alike.
        for pair in itertools.zip_longest(*(schedules[m] for m in modes)):
            for mode, item in zip(modes, pair):
                if item is None:
                    continue
                begin, length = item
                model = models[mode]
                x, y = segment(data, begin, length)
                start = time.perf_counter()
                model.optimizer.learning_rate.assign(config.lr * length / config.bptt)
                model.train_on_batch(x, y)
                seconds[mode] += time.perf_counter() - start
                counts[mode] += x.size
        for mode in modes:
            schedule = schedules[mode]
            rows.append(
                {
                    "backend": keras.backend.backend(),
                    "mode": mode,
                    "epoch": epoch,
                    "tokens": counts[mode],
                    "seconds": seconds[mode],
                    "tokens_per_sec": counts[mode] / seconds[mode],
                    "segments": len(schedule),
                    "distinct_lengths": len({length for _, length in schedule}),
                }
            )
    return rows


def table(rows):
    lines = [
        "| backend | epoch | mode | segments | distinct lengths | seconds | tokens/s | "
        "variable / fixed |",
        "|---|---:|---|---:|---:|---:|---:|---:|",
    ]
    fixed = {(r["backend"], r["epoch"]): r["tokens_per_sec"] for r in rows if r["mode"] == "fixed"}
    for r in sorted(rows, key=lambda r: (r["backend"], r["epoch"], r["mode"])):
        ratio = r["tokens_per_sec"] / fixed[(r["backend"], r["epoch"])]
        lines.append(
            f"| {r['backend']} | {r['epoch']} | {r['mode']} | {r['segments']} | "
            f"{r['distinct_lengths']} | {r['seconds']:.1f} | {r['tokens_per_sec']:,.0f} | "
            f"{ratio:.3f} |"
        )
    return "\n".join(lines)


def main():
    parser = argument_parser(__doc__)
    parser.add_argument(
        "--tokens", type=int, default=929_589, help="tokens per epoch (PTB's training split)"
    )
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.tokens < SIZE["batch"] * (SIZE["bptt"] + 1):
        parser.error(f"--tokens must be at least {SIZE['batch'] * (SIZE['bptt'] + 1)}")
    if args.child:
        print(json.dumps(measure(args.tokens, args.seed)))
        return 0
    arguments = ["--tokens", args.tokens, "--seed", args.seed]
    report(run_backends(__file__, args.backends, arguments), table, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
