"""Training speed of the QRNN language model against the LSTM one, and the QRNN's two
poolings against each other.

For each backend (each in its own process, since Keras fixes its backend at import):

1. **Language models** (`--sizes`, default `ptb`): the pipeline's models
   (`recipe.build_model`, every AWD regularizer on, NT-ASGD's SGD) with
   `cell="lstm"` and `cell="qrnn"` at the same sizes take turns (the order rotating
   every round), one `train_on_batch` of a `batch x bptt` segment each, for
   `--repeats` rounds after a warm-up. `ptb` is the reference's PTB model (embedding
   400, 3 layers of 1150, batch 20, bptt 70, 10,000 words); `small` the `small`
   preset's (200, 400, 3 layers, batch 20, bptt 35). The table gives the median step,
   tokens/s and the QRNN's speed over the LSTM's.
2. **Pooling** (`--pool-steps`, default `35,70,140,280`): `layers.qrnn.
   linear_recurrence` forward and backward (the gradient of `sum(c * u)`) over `(steps,
   batch 20, 1150 units)`, step by step (`sequential`) and by an associative scan
   (`parallel`), the two interleaved; median time per call, and which is faster.
   `QRNN(pooling="auto")` takes the faster of the two as `awd_lstm.backend.
   parallel_pooling()` states it.

Usage:

    python benchmarks/qrnn_throughput.py [--backends tensorflow,jax,torch]
        [--sizes ptb,small] [--pool-steps 35,70,140,280] [--repeats 5]
        [--min-seconds 20] [--json OUT]
"""

import argparse
import json
import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import argument_parser, interleaved_times, report, run_backends  # noqa: E402

SIZES = {
    "ptb": dict(embedding_size=400, hidden_size=1150, num_layers=3, batch_size=20, bptt=70),
    "small": dict(embedding_size=200, hidden_size=400, num_layers=3, batch_size=20, bptt=35),
}
VOCAB = 10_000


def _medians(functions, repeats, min_seconds):
    """Median seconds per call of each of `functions` (a dict) and its timed calls."""
    times = interleaved_times(functions, repeats, min_seconds)
    return {name: (statistics.median(t), len(t)) for name, t in times.items()}


def measure_models(size, repeats, min_seconds, seed):
    import keras
    import numpy as np

    from awd_lstm import recipe
    from awd_lstm.config import TrainingConfig

    shape = SIZES[size]
    batch, bptt = shape["batch_size"], shape["bptt"]
    rng = np.random.default_rng(seed)
    data = rng.integers(0, VOCAB, size=(batch, bptt + 1)).astype("int32")
    x, y = data[:, :-1], data[:, 1:]
    models, functions = {}, {}
    for cell in ("lstm", "qrnn"):
        config = TrainingConfig(**shape, cell=cell, seed=seed)
        model = recipe.build_model(config, VOCAB, batch)
        models[cell] = model
        functions[cell] = lambda model=model: model.train_on_batch(x, y)
    timed = _medians(functions, repeats, min_seconds)
    return [
        {
            "backend": keras.backend.backend(),
            "part": "model",
            "size": size,
            "variant": cell,
            "parameters": int(sum(np.prod(v.shape) for v in models[cell].trainable_variables)),
            "median_s": median,
            "tokens_per_sec": batch * bptt / median,
            "timed_rounds": rounds,
        }
        for cell, (median, rounds) in timed.items()
    ]


def measure_pooling(steps, repeats, min_seconds, seed, batch=20, units=1150):
    import keras
    import numpy as np
    from keras import ops

    rng = np.random.default_rng(seed)
    a = ops.convert_to_tensor(rng.uniform(0.0, 1.0, (steps, batch, units)).astype("float32"))
    b = ops.convert_to_tensor(rng.standard_normal((steps, batch, units)).astype("float32"))
    c0 = ops.convert_to_tensor(np.zeros((batch, units), "float32"))
    u = ops.convert_to_tensor(rng.standard_normal((steps, batch, units)).astype("float32"))
    functions = {
        name: _forward_backward(parallel, a, b, c0, u)
        for name, parallel in (("sequential", False), ("parallel", True))
    }
    timed = _medians(functions, repeats, min_seconds)
    return [
        {
            "backend": keras.backend.backend(),
            "part": "pooling",
            "size": f"{steps}x{batch}x{units}",
            "variant": name,
            "median_s": median,
            "timed_rounds": rounds,
        }
        for name, (median, rounds) in timed.items()
    ]


def _forward_backward(parallel, a, b, c0, u):
    """A compiled forward and backward pass of the pooling on this backend."""
    import keras

    from awd_lstm.layers.qrnn import linear_recurrence

    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        def loss(a, b, c0):
            return (linear_recurrence(a, b, c0, parallel) * u).sum()

        step = jax.jit(jax.grad(loss, argnums=(0, 1, 2)))
        return lambda: jax.block_until_ready(step(a, b, c0))
    if backend == "tensorflow":
        import tensorflow as tf

        @tf.function
        def step(a, b, c0):
            with tf.GradientTape() as tape:
                tape.watch([a, b, c0])
                loss = tf.reduce_sum(linear_recurrence(a, b, c0, parallel) * u)
            return tape.gradient(loss, [a, b, c0])

        return lambda: [g.numpy() for g in step(a, b, c0)]
    import torch

    def step():
        inputs = [t.detach().requires_grad_() for t in (a, b, c0)]
        loss = (linear_recurrence(*inputs, parallel) * u).sum()
        return torch.autograd.grad(loss, inputs)

    return step


def table(rows):
    lines = [
        "| backend | part | size | variant | median (s) | tokens/s | vs the other | timed rounds |",
        "|---|---|---|---|---:|---:|---:|---:|",
    ]
    medians = {(r["backend"], r["part"], r["size"], r["variant"]): r["median_s"] for r in rows}
    others = {"lstm": "qrnn", "qrnn": "lstm", "sequential": "parallel", "parallel": "sequential"}
    for r in rows:
        other = medians.get((r["backend"], r["part"], r["size"], others[r["variant"]]))
        speedup = f"{other / r['median_s']:.2f}x" if other else "-"
        speed = f"{r['tokens_per_sec']:,.0f}" if "tokens_per_sec" in r else "-"
        lines.append(
            f"| {r['backend']} | {r['part']} | {r['size']} | {r['variant']} | "
            f"{r['median_s']:.4f} | {speed} | {speedup} | {r['timed_rounds']} |"
        )
    return "\n".join(lines)


def main():
    parser = argument_parser(__doc__, timing="rounds")
    parser.add_argument("--sizes", default="ptb")
    parser.add_argument("--pool-steps", default="35,70,140,280")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    sizes = [s for s in args.sizes.split(",") if s]
    unknown = [s for s in sizes if s not in SIZES]
    if unknown:
        parser.error(f"unknown size {unknown[0]!r}; choose from {', '.join(SIZES)}")
    steps = [int(s) for s in args.pool_steps.split(",") if s]
    if args.child:
        rows = []
        for size in sizes:
            rows += measure_models(size, args.repeats, args.min_seconds, args.seed)
        for n in steps:
            rows += measure_pooling(n, args.repeats, args.min_seconds, args.seed)
        print(json.dumps(rows))
        return 0
    arguments = ["--sizes", args.sizes, "--pool-steps", args.pool_steps]
    arguments += ["--repeats", args.repeats, "--min-seconds", args.min_seconds, "--seed", args.seed]
    report(run_backends(__file__, args.backends, arguments), table, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
