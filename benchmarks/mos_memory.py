"""Peak memory of the mixture of softmaxes at the PTB size (the `ptb-mos` preset:
15 components, embedding 280, LSTMs 960-960-620, batch 12, bptt 70, a 10,000-word
vocabulary): the layer's automatic chunks against one chunk of every position, and
the single softmax of the same model beside them.

For each backend and each variant a fresh process builds the training model of
`awd_lstm.training.build_model` and runs `--steps` evaluation steps and as many
training steps (`test_on_batch` is the forward pass alone) on uniform random tokens,
the evaluation steps first. Reported per process: resident memory before the first
step (`baseline`), and the highest resident memory above it during the evaluation
steps and during the training steps (Linux `VmHWM`, reset before each phase), with
seconds per training step after the first (compiling) one.

    python benchmarks/mos_memory.py [--backends tensorflow,jax,torch] [--steps 3]
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

VARIANTS = ("chunked", "one-chunk", "softmax")
VOCAB = 10_000


def measure(variant, steps, seed):
    """Runs in a child process whose KERAS_BACKEND is already set."""
    import keras
    import numpy as np

    from awd_lstm.presets import PRESETS
    from awd_lstm.training import build_model

    keras.utils.set_random_seed(seed)
    config = PRESETS["ptb-mos"]
    if variant == "softmax":
        config = dataclasses.replace(config, mixture_components=0, last_hidden_size=0)
    model = build_model(config, VOCAB, config.batch_size)
    model.optimizer.build(model.trainable_variables)
    batch, bptt = config.batch_size, config.bptt
    chunks = None
    if model.mixture is not None:
        if variant == "one-chunk":
            model.mixture.chunk_size = batch * bptt
        chunks = model.mixture.chunk_rows(batch * bptt)[0]
    rng = np.random.default_rng(seed)
    stream = rng.integers(0, VOCAB, size=(batch, steps * bptt + 1)).astype("int32")
    segments = [
        (stream[:, i * bptt : (i + 1) * bptt], stream[:, i * bptt + 1 : (i + 1) * bptt + 1])
        for i in range(steps)
    ]
    # The forward pass first (what it holds would otherwise hide in the allocators'
    # caches after the training steps), then the training steps, both from the same
    # baseline.
    baseline = memory_status("VmRSS")
    reset_memory_peak()
    for x, y in segments:
        model.test_on_batch(x, y)
    eval_peak = memory_status("VmHWM")
    reset_memory_peak()
    times = []
    for x, y in segments:
        start = time.perf_counter()
        model.train_on_batch(x, y)
        times.append(time.perf_counter() - start)
    train_peak = memory_status("VmHWM")
    timed = times[1:] or times
    return {
        "backend": keras.backend.backend(),
        "variant": variant,
        "chunks": chunks,
        "shape": f"{batch}x{bptt}",
        "baseline_bytes": baseline,
        "train_step_peak_bytes": train_peak - baseline,
        "eval_step_peak_bytes": eval_peak - baseline,
        "seconds_per_step": sum(timed) / len(timed),
    }


def table(rows):
    mib = 1024**2
    lines = [
        "| backend | output | chunks | baseline (MiB) | training step peak (MiB) | "
        "evaluation step peak (MiB) | s/step |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['backend']} | {r['variant']} | {r['chunks'] or '-'} | "
            f"{r['baseline_bytes'] / mib:,.0f} | {r['train_step_peak_bytes'] / mib:,.0f} | "
            f"{r['eval_step_peak_bytes'] / mib:,.0f} | {r['seconds_per_step']:.2f} |"
        )
    return "\n".join(lines)


def main():
    parser = argument_parser(__doc__)
    parser.add_argument("--steps", type=int, default=3, help="training steps (the first compiles)")
    parser.add_argument("--child", choices=VARIANTS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.steps < 1:
        parser.error("--steps must be at least 1")
    require_peak_memory(parser)
    if args.child:
        print(json.dumps(measure(args.child, args.steps, args.seed)))
        return 0
    arguments = ["--steps", args.steps, "--seed", args.seed]
    report(run_variants(__file__, args.backends, VARIANTS, arguments), table, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
