"""The training-memory estimate (`awd_lstm.resources.training_memory`) against the
measured peak of real training steps, per backend and size.

For each backend and size a fresh process imports Keras and the backend, reads its
resident memory (`baseline`), then does what `awd_lstm.training.train` does before
and during its first epoch: builds the training model (with its optimizer's state)
and the evaluation model, runs `--steps` training steps on the longest segment the
schedule draws (`max_segment_length`), copies the weights to the evaluation model and
runs one evaluation step. `peak` is the highest resident memory above the baseline
(Linux `VmHWM`), the memory the run took on top of the libraries: what the estimate
estimates and what the check compares with the memory available. Targets follow
Zipf's law (p(rank) proportional to 1/rank), as words do.

    python benchmarks/memory_estimate.py [--backends tensorflow,jax,torch] [--sizes ...]
"""

import argparse
import dataclasses
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import (  # noqa: E402
    argument_parser,
    memory_status,
    report,
    require_peak_memory,
    reset_memory_peak,
    run_variants,
)


def _sizes():
    from awd_lstm.config import TrainingConfig
    from awd_lstm.presets import PRESETS

    small = dict(embedding_size=64, hidden_size=256, num_layers=2)
    return {
        # The encoder's activations alone: a deep, wide encoder and a tiny vocabulary.
        "encoder": (
            TrainingConfig(embedding_size=64, hidden_size=512, batch_size=128, bptt=70),
            100,
        ),
        # The output scores alone: a tiny encoder and a large vocabulary.
        "scores": (
            TrainingConfig(embedding_size=16, hidden_size=16, num_layers=1, batch_size=64, bptt=70),
            20_000,
        ),
        # Activations and scores dominate: a small model, a wide batch.
        "activations": (TrainingConfig(**small, batch_size=256, bptt=70), 2000),
        # The reference's PTB model and batch.
        "ptb": (PRESETS["ptb"], 10_000),
        # The weights and Adam's moments dominate: a large vocabulary, a narrow batch.
        "parameters": (
            TrainingConfig(batch_size=4, bptt=35, optimizer="adam", lr=1e-3),
            50_000,
        ),
        # The mixture of softmaxes' scores: ptb-mos at half its batch.
        "mos": (dataclasses.replace(PRESETS["ptb-mos"], batch_size=6), 10_000),
        # The Mogrifier LSTM: ptb-mogrifier at an eighth of its batch.
        "mogrifier": (dataclasses.replace(PRESETS["ptb-mogrifier"], batch_size=8), 10_000),
        # WikiText-103's vocabulary with the tied adaptive softmax of its preset, on
        # the reference's LSTMs (benchmarks/adaptive_softmax_memory.py's model).
        "wikitext-103": (
            TrainingConfig(batch_size=20, bptt=50, cutoffs=(2800, 20000, 76000)),
            267_735,
        ),
        # A QRNN with a tied adaptive softmax over a large vocabulary.
        "adaptive-qrnn": (
            TrainingConfig(
                cell="qrnn",
                num_layers=4,
                hidden_size=1000,
                batch_size=10,
                bptt=70,
                cutoffs=(2000, 10000, 40000),
                optimizer="adam",
                lr=1e-3,
            ),
            100_000,
        ),
    }


SIZES = (
    "encoder",
    "scores",
    "activations",
    "ptb",
    "parameters",
    "mos",
    "mogrifier",
    "adaptive-qrnn",
    "wikitext-103",
)


def measure(size, steps, seed):
    """Runs in a child process whose KERAS_BACKEND is already set."""
    import keras
    import numpy as np

    from awd_lstm import recipe, resources
    from awd_lstm.data import max_segment_length

    keras.utils.set_random_seed(seed)
    config, vocab_size = _sizes()[size]
    length = max_segment_length(config.bptt, config.length_quantum)
    rng = np.random.default_rng(seed)
    p = 1.0 / np.arange(1, vocab_size + 1)
    p /= p.sum()
    stream = rng.choice(vocab_size, size=(config.batch_size, length + 1), p=p).astype("int32")
    x, y = stream[:, :-1], stream[:, 1:]
    held_out = rng.choice(vocab_size, size=(config.eval_batch_size, config.bptt + 1), p=p)
    held_out = held_out.astype("int32")
    baseline = memory_status("VmRSS")
    reset_memory_peak()
    start = time.perf_counter()
    model = recipe.build_model(config, vocab_size, config.batch_size)
    model.optimizer.build(model.trainable_variables)
    evaluator = recipe.build_model(config, vocab_size, config.eval_batch_size)
    for _ in range(steps):
        model.train_on_batch(x, y)
    recipe.copy_weights(recipe.evaluation_weights(model), evaluator)
    evaluator.test_on_batch(held_out[:, :-1], held_out[:, 1:])
    seconds = time.perf_counter() - start
    peak = memory_status("VmHWM") - baseline
    estimate = resources.training_memory(config, vocab_size)
    return {
        "backend": keras.backend.backend(),
        "size": size,
        "parameters": estimate.parameters,
        "positions": config.batch_size * length,
        "baseline_bytes": baseline,
        "peak_bytes": peak,
        "estimate_bytes": estimate.total,
        "estimate_model_bytes": estimate.model,
        "estimate_step_bytes": estimate.step,
        "estimate_vs_peak": estimate.total / peak,
        "seconds": seconds,
    }


def table(rows):
    mib = 1024**2
    lines = [
        "| backend | size | parameters | positions | baseline (MiB) | peak (MiB) | "
        "estimate (MiB) | estimate / peak |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['backend']} | {r['size']} | {r['parameters'] / 1e6:.1f}M | "
            f"{r['positions']:,} | {r['baseline_bytes'] / mib:,.0f} | "
            f"{r['peak_bytes'] / mib:,.0f} | {r['estimate_bytes'] / mib:,.0f} | "
            f"{r['estimate_vs_peak']:.2f} |"
        )
    return "\n".join(lines)


def main():
    parser = argument_parser(__doc__)
    parser.add_argument("--sizes", default=",".join(SIZES), help=f"of {', '.join(SIZES)}")
    parser.add_argument("--steps", type=int, default=2, help="training steps (the first compiles)")
    parser.add_argument("--child", choices=SIZES, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.steps < 1:
        parser.error("--steps must be at least 1")
    require_peak_memory(parser)
    if args.child:
        print(json.dumps(measure(args.child, args.steps, args.seed)))
        return 0
    sizes = args.sizes.split(",")
    unknown = sorted(set(sizes) - set(SIZES))
    if unknown:
        parser.error(f"--sizes: unknown {', '.join(unknown)}; choose among {', '.join(SIZES)}")
    arguments = ["--steps", args.steps, "--seed", args.seed]
    report(run_variants(__file__, args.backends, sizes, arguments), table, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
