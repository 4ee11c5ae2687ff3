"""Training throughput of one LSTM layer: weight drop against Keras' own LSTMs.

For each backend (each in its own process, since Keras fixes its backend at import)
and each shape, three single-layer models take turns (the order rotating every round),
one training step each, for `--repeats` rounds after a warm-up:

- `lstm`: `keras.layers.LSTM` without dropout (the fused kernel where available);
- `weight_drop`: `awd_lstm.layers.WeightDropLSTM(weight_dropout=0.5)`;
- `recurrent_dropout`: `keras.layers.LSTM(recurrent_dropout=0.5)`, Keras' own way to
  regularize the recurrence (it forces the step loop).

Each step is `train_on_batch` of an MSE loss on the full output sequence with SGD,
i.e. the backend's compiled training step. The table reports the median tokens/s
(batch * steps / seconds) and the ratio to `lstm`. Usage:

    python benchmarks/layer_throughput.py [--backends tensorflow,jax,torch]
        [--shapes 80x70x400x1150,20x35x200x400] [--repeats 5] [--min-seconds 20]
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

VARIANTS = ("lstm", "weight_drop", "recurrent_dropout")


def parse_shape(text):
    batch, steps, features, units = (int(v) for v in text.lower().split("x"))
    return batch, steps, features, units


def measure_backend(shapes, repeats, min_seconds, seed):
    """Runs in a child process whose KERAS_BACKEND is already set."""
    import keras
    import numpy as np

    from awd_lstm.layers import WeightDropLSTM

    def make(variant, features, units, steps):
        if variant == "lstm":
            layer = keras.layers.LSTM(units, return_sequences=True, seed=seed)
        elif variant == "weight_drop":
            layer = WeightDropLSTM(units, weight_dropout=0.5, return_sequences=True, seed=seed)
        else:
            layer = keras.layers.LSTM(
                units, recurrent_dropout=0.5, return_sequences=True, seed=seed
            )
        model = keras.Sequential([keras.Input((steps, features)), layer])
        model.compile(keras.optimizers.SGD(0.01), "mse")
        return model, layer

    rows = []
    rng = np.random.default_rng(seed)
    for batch, steps, features, units in shapes:
        x = rng.standard_normal((batch, steps, features)).astype("float32")
        y = np.zeros((batch, steps, units), "float32")
        models = {v: make(v, features, units, steps) for v in VARIANTS}
        steps_of = {v: partial(model.train_on_batch, x, y) for v, (model, _) in models.items()}
        times = interleaved_times(steps_of, repeats, min_seconds)
        implementation = models["weight_drop"][1].last_call_implementation
        for variant in VARIANTS:
            median = statistics.median(times[variant])
            rows.append(
                {
                    "backend": keras.backend.backend(),
                    "shape": f"{batch}x{steps}x{features}x{units}",
                    "variant": variant,
                    "tokens_per_sec": batch * steps / median,
                    "median_step_s": median,
                    "min_step_s": min(times[variant]),
                    "rounds": len(times[variant]),
                    "weight_drop_path": implementation if variant == "weight_drop" else "",
                }
            )
    return rows


def table(rows):
    lines = [
        "| backend | shape (batch x steps x input x units) | variant | tokens/s | "
        "vs lstm | rounds | weight-drop path |",
        "|---|---|---|---:|---:|---:|---|",
    ]
    base = {(r["backend"], r["shape"]): r["tokens_per_sec"] for r in rows if r["variant"] == "lstm"}
    for r in rows:
        ratio = r["tokens_per_sec"] / base[(r["backend"], r["shape"])]
        lines.append(
            f"| {r['backend']} | {r['shape']} | {r['variant']} | {r['tokens_per_sec']:,.0f} | "
            f"{ratio:.3f} | {r['rounds']} | {r['weight_drop_path']} |"
        )
    return "\n".join(lines)


def main():
    parser = argument_parser(__doc__, timing="rounds per shape")
    parser.add_argument("--shapes", default="80x70x400x1150,20x35x200x400")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    shapes = [parse_shape(s) for s in args.shapes.split(",")]
    if args.child:
        print(json.dumps(measure_backend(shapes, args.repeats, args.min_seconds, args.seed)))
        return 0
    arguments = ["--shapes", args.shapes, "--repeats", args.repeats]
    arguments += ["--min-seconds", args.min_seconds, "--seed", args.seed]
    report(run_backends(__file__, args.backends, arguments), table, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
