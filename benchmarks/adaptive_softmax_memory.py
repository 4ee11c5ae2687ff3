"""Peak memory of a training step with a 267k-word vocabulary: full softmax against
the tied adaptive softmax.

For each backend and each output (`full`, `adaptive` with cut-offs 2800, 20000, 76000
as for WikiText-103), a fresh process builds the training model of
`awd_lstm.training.build_model` (stateful, NT-ASGD, clipping; embedding 400, hidden
1150, 3 layers by default) for a vocabulary of 267,735 words, then runs `--steps`
training steps on Zipf-distributed targets (p(rank) ~ 1/rank, the shape of word
frequencies). Reported per process:

- `baseline`: resident memory just before the first step (weights, optimizer state,
  imported libraries);
- `peak`: the highest resident memory during the steps (Linux `VmHWM`, reset just
  before the first step);
- `step peak`: `peak - baseline`, the memory a training step needs on top of the
  model; its ratio adaptive/full is the saving;
- seconds per step after the first (compiling) one.

Usage:

    python benchmarks/adaptive_softmax_memory.py [--backends tensorflow,jax,torch]
        [--vocab 267735] [--batch 20] [--bptt 70] [--steps 3] [--json OUT]
"""

import argparse
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

CUTOFFS = (2800, 20000, 76000)
OUTPUTS = ("full", "adaptive")


def measure(output, vocab, batch, bptt, steps, hidden, seed):
    """Runs in a child process whose KERAS_BACKEND is already set."""
    import keras
    import numpy as np

    from awd_lstm.config import TrainingConfig
    from awd_lstm.training import build_model

    keras.utils.set_random_seed(seed)
    config = TrainingConfig(
        embedding_size=400,
        hidden_size=hidden,
        num_layers=3,
        batch_size=batch,
        bptt=bptt,
        cutoffs=CUTOFFS if output == "adaptive" else (),
        seed=seed,
    )
    model = build_model(config, vocab, batch)
    model.optimizer.build(model.trainable_variables)
    rng = np.random.default_rng(seed)
    p = 1.0 / np.arange(1, vocab + 1)
    stream = rng.choice(vocab, size=(batch, steps * bptt + 1), p=p / p.sum()).astype("int32")
    segments = [
        (stream[:, i * bptt : (i + 1) * bptt], stream[:, i * bptt + 1 : (i + 1) * bptt + 1])
        for i in range(steps)
    ]
    # Row budgets for every step up front: no retracing while measuring.
    model.reserve_tail_capacity([y for _, y in segments])
    baseline = memory_status("VmRSS")
    reset_memory_peak()
    times = []
    for x, y in segments:
        start = time.perf_counter()
        loss = float(model.train_on_batch(x, y, return_dict=True)["ce"])
        times.append(time.perf_counter() - start)
    peak = memory_status("VmHWM")
    timed = times[1:] or times
    return {
        "backend": keras.backend.backend(),
        "output": output,
        "vocab": vocab,
        "shape": f"{batch}x{bptt}",
        "hidden": hidden,
        "baseline_bytes": baseline,
        "peak_bytes": peak,
        "step_peak_bytes": peak - baseline,
        "seconds_per_step": sum(timed) / len(timed),
        "first_step_seconds": times[0],
        "tail_capacity": None if model.tail_capacity is None else list(model.tail_capacity),
        "last_loss": loss,
    }


def table(rows):
    gib = 1024**3
    lines = [
        "| backend | output | baseline (GiB) | peak (GiB) | step peak (GiB) | "
        "step peak vs full | s/step |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    full = {r["backend"]: r["step_peak_bytes"] for r in rows if r["output"] == "full"}
    for r in rows:
        ratio = r["step_peak_bytes"] / full[r["backend"]] if r["backend"] in full else float("nan")
        lines.append(
            f"| {r['backend']} | {r['output']} | {r['baseline_bytes'] / gib:.2f} | "
            f"{r['peak_bytes'] / gib:.2f} | {r['step_peak_bytes'] / gib:.2f} | {ratio:.3f} | "
            f"{r['seconds_per_step']:.2f} |"
        )
    return "\n".join(lines)


def main():
    parser = argument_parser(__doc__)
    parser.add_argument("--vocab", type=int, default=267_735)
    parser.add_argument("--batch", type=int, default=20)
    parser.add_argument("--bptt", type=int, default=70)
    parser.add_argument("--hidden", type=int, default=1150)
    parser.add_argument("--steps", type=int, default=3, help="training steps (the first compiles)")
    parser.add_argument("--child", choices=OUTPUTS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    for name in ("vocab", "batch", "bptt", "hidden", "steps"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1")
    if args.vocab <= CUTOFFS[-1]:
        parser.error(f"--vocab must be above the last cut-off {CUTOFFS[-1]}")
    require_peak_memory(parser)
    sizes = (args.vocab, args.batch, args.bptt, args.steps, args.hidden, args.seed)
    if args.child:
        print(json.dumps(measure(args.child, *sizes)))
        return 0
    arguments = []
    for name in ("vocab", "batch", "bptt", "steps", "hidden", "seed"):
        arguments += [f"--{name}", getattr(args, name)]
    label = "{} softmax".format
    report(run_variants(__file__, args.backends, OUTPUTS, arguments, label), table, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
