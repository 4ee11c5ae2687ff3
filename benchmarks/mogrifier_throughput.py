"""Training-step time of the Mogrifier LSTM against the weight-dropped LSTM.

For each backend (each in its own process, since Keras fixes its backend at import),
single-layer models take turns (the order rotating every round), one training step
each, for `--repeats` rounds after a warm-up:

- `weight_drop`: `awd_lstm.layers.WeightDropLSTM(weight_dropout=0.5)`, the AWD-LSTM
  layer (its fused or projected path: the input projection of all steps hoisted);
- `mogrifier`: `awd_lstm.layers.MogrifierLSTM(rounds, rank, weight_dropout=0.5)`,
  one product `[x, h] @ [[W], [U]]` per step, trained with its hand-written
  gradient (the kernels' gradient one product after the backward loop);
- `mogrifier_autodiff` (optional): the same layer trained through automatic
  differentiation of its step loop (which adds a kernel-sized gradient update at
  every step of the backward loop);
- `mogrifier_full_rank` (optional): full mogrifier matrices (`rank=None`).

Each step is `train_on_batch` (forward and backward, `training=True`) of an MSE loss
on the full output sequence with SGD, i.e. the backend's compiled training step. The
default shape is AWD-LSTM's PTB layer: batch 20, BPTT 70, input 400, 1150 units. The
defaults `--rounds 5 --rank 84` are those of the Mogrifier paper's tuned 24M PTB word
model (DeepMind's `lamb`, `experiment/mogrifier/config/
786252db3825+_tune_ptb_24m_lstm_fm_d2_arms/trial_483/config`: `feature_mask_rounds
5`, `feature_mask_rank 84`). The table reports the median step time, tokens/s and the
ratio of each variant's median step time to `weight_drop`'s. Usage:

    python benchmarks/mogrifier_throughput.py [--backends tensorflow,jax,torch]
        [--shape 20x70x400x1150] [--rounds 5] [--rank 84]
        [--variants weight_drop,mogrifier] [--repeats 5] [--min-seconds 20]
        [--json OUT]
"""

import argparse
import json
import os
import statistics
import sys
from functools import partial

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import argument_parser, interleaved_times, report, run_backends  # noqa: E402

VARIANTS = ("weight_drop", "mogrifier", "mogrifier_autodiff", "mogrifier_full_rank")


def parse_shape(text):
    batch, steps, features, units = (int(v) for v in text.lower().split("x"))
    return batch, steps, features, units


def measure_backend(shape, variants, rounds, rank, repeats, min_seconds, seed):
    """Runs in a child process whose KERAS_BACKEND is already set."""
    import keras
    import numpy as np

    from awd_lstm.layers import MogrifierLSTM, WeightDropLSTM

    batch, steps, features, units = shape

    def make(variant):
        if variant == "weight_drop":
            layer = WeightDropLSTM(units, weight_dropout=0.5, return_sequences=True, seed=seed)
        else:
            layer = MogrifierLSTM(
                units,
                rounds=rounds,
                rank=None if variant == "mogrifier_full_rank" else rank,
                weight_dropout=0.5,
                return_sequences=True,
                seed=seed,
            )
            if variant == "mogrifier_autodiff":
                layer._hand_written_gradient = False
        model = keras.Sequential([keras.Input((steps, features), batch_size=batch), layer])
        model.compile(keras.optimizers.SGD(0.01), "mse")
        return model, layer

    rng = np.random.default_rng(seed)
    x = rng.standard_normal((batch, steps, features)).astype("float32")
    y = np.zeros((batch, steps, units), "float32")
    models = {v: make(v) for v in variants}
    steps_of = {v: partial(model.train_on_batch, x, y) for v, (model, _) in models.items()}
    times = interleaved_times(steps_of, repeats, min_seconds)
    rows = []
    for variant in variants:
        layer = models[variant][1]
        median = statistics.median(times[variant])
        rows.append(
            {
                "backend": keras.backend.backend(),
                "shape": f"{batch}x{steps}x{features}x{units}",
                "variant": variant,
                "rounds": 0 if variant == "weight_drop" else rounds,
                "rank": None if variant in ("weight_drop", "mogrifier_full_rank") else rank,
                "parameters": int(sum(np.prod(w.shape) for w in layer.trainable_weights)),
                "median_step_s": median,
                "min_step_s": min(times[variant]),
                "tokens_per_sec": batch * steps / median,
                "timed_rounds": len(times[variant]),
                "weight_drop_path": getattr(layer, "last_call_implementation", None) or "",
            }
        )
    return rows


def table(rows):
    lines = [
        "| backend | shape (batch x steps x input x units) | variant | rounds | rank | "
        "parameters | median step (s) | tokens/s | step vs weight_drop | timed rounds |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    base = {
        (r["backend"], r["shape"]): r["median_step_s"]
        for r in rows
        if r["variant"] == "weight_drop"
    }
    for r in rows:
        reference = base.get((r["backend"], r["shape"]))
        ratio = f"{r['median_step_s'] / reference:.3f}" if reference else "-"
        variant = r["variant"] + (f" ({r['weight_drop_path']})" if r["weight_drop_path"] else "")
        lines.append(
            f"| {r['backend']} | {r['shape']} | {variant} | {r['rounds']} | "
            f"{r['rank'] if r['rank'] is not None else '-'} | {r['parameters']:,} | "
            f"{r['median_step_s']:.4f} | {r['tokens_per_sec']:,.0f} | {ratio} | "
            f"{r['timed_rounds']} |"
        )
    return "\n".join(lines)


def main():
    parser = argument_parser(__doc__, timing="rounds")
    parser.add_argument("--shape", default="20x70x400x1150")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--rank", type=int, default=84)
    parser.add_argument("--variants", default="weight_drop,mogrifier")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    variants = tuple(args.variants.split(","))
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        parser.error(f"unknown variants {unknown}; choose from {', '.join(VARIANTS)}")
    if args.child:
        rows = measure_backend(
            parse_shape(args.shape),
            variants,
            args.rounds,
            args.rank,
            args.repeats,
            args.min_seconds,
            args.seed,
        )
        print(json.dumps(rows))
        return 0
    arguments = ["--shape", args.shape, "--rounds", args.rounds, "--rank", args.rank]
    arguments += ["--variants", args.variants, "--repeats", args.repeats]
    arguments += ["--min-seconds", args.min_seconds, "--seed", args.seed]
    report(run_backends(__file__, args.backends, arguments), table, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
