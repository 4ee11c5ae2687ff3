"""Whole-model training throughput: AWDLSTMLanguageModel against a PyTorch AWD-LSTM.

For each backend (each in its own process, since Keras fixes its backend at import)
and each size, the training setups take turns, one step each, in the same process
(the order rotating every round):

- `awd_lstm`: `awd_lstm.training.build_model` (stateful `AWDLSTMLanguageModel`,
  NT-ASGD, clipping 0.25, AR/TAR), one `train_on_batch` per step;
- `awd_lstm_no_wdrop`: the same with `weight_dropout=0` (the cost of weight drop);
- `user_logits`: the model as a Keras user builds it (`AWDLSTMLanguageModel(...,
  stateful=True)`, `keras.optimizers.SGD(30, global_clipnorm=0.25)`, the plain
  `SparseCategoricalCrossentropy(from_logits=True)`), one `train_on_batch` per step;
- `user_defaults`: the same compiled with `**model.compile_defaults()`;
- with `--mixed-precision`, also `awd_lstm_bf16` (`awd_lstm` with
  `mixed_precision=True`: Keras' `mixed_bfloat16` policy) and `torch_recipe_bf16`
  (the recipe's step under `torch.autocast("cpu", dtype=torch.bfloat16)`);
- `torch_recipe`: `benchmarks/torch_reference.py`, a weight-dropped `nn.LSTM` per layer
  with the dropped `weight_hh` passed to PyTorch's fused kernel, the same dropouts,
  tied decoder, AR/TAR, SGD, clipping 0.25.

Sizes: `small` (vocabulary 10,000, embedding 200, hidden 400, 3 layers, batch 20, bptt
35) and `ptb` (embedding 400, hidden 1150, batch 80, bptt 70). Reported: median tokens/s
(batch * bptt / step seconds), the ratio to `torch_recipe`, the paired ratios (the
median over rounds of the ratio of two setups' step times in the same round, against
`torch_recipe` and against `awd_lstm_no_wdrop`), the step's peak memory above
the resident size before it (Linux `VmHWM`, reset before every step; the largest over the
steps), and the FLOP/s of the step (the LSTMs' and decoder's matrix products, forward and
backward: 3 x forward) as a fraction of the machine's matrix-multiply throughput measured
in the same process before and after the steps (the best float32 rate of PyTorch's and
the backend's matmul at 2048^3 and at the PTB model's input projection).

Usage:

    python benchmarks/model_throughput.py [--backends tensorflow,jax,torch]
        [--sizes small,ptb] [--repeats 5] [--min-seconds 20] [--mixed-precision]
        [--json OUT]
"""

import argparse
import json
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import (  # noqa: E402
    argument_parser,
    memory_status,
    report,
    reset_memory_peak,
    run_backends,
    turn_order,
)

SIZES = {
    "small": dict(vocab=10_000, embedding=200, hidden=400, layers=3, batch=20, bptt=35),
    "ptb": dict(vocab=10_000, embedding=400, hidden=1150, layers=3, batch=80, bptt=70),
}
VARIANTS = ("awd_lstm", "awd_lstm_no_wdrop", "user_logits", "user_defaults", "torch_recipe")
MIXED = ("awd_lstm_bf16", "torch_recipe_bf16")
# PTB preset's dropouts (embedding, input, hidden, output, weight).
DROPOUTS = dict(
    embedding_dropout=0.1,
    input_dropout=0.4,
    hidden_dropout=0.25,
    output_dropout=0.4,
    weight_dropout=0.5,
)


def training_flops(size):
    """Multiply-adds x 2 of one training step's matrix products (forward x 3)."""
    tokens = size["batch"] * size["bptt"]
    forward = 0
    inputs = size["embedding"]
    for layer in range(size["layers"]):
        units = size["embedding"] if layer == size["layers"] - 1 else size["hidden"]
        forward += 2 * tokens * 4 * units * (inputs + units)
        inputs = units
    forward += 2 * tokens * size["embedding"] * size["vocab"]
    return 3 * forward


# Products whose float32 rate is the machine's matmul throughput: a square one and the
# PTB model's input projection, `(80 x 70, 1150) x (1150, 4600)`.
PEAK_SHAPES = ((2048, 2048, 2048), (5600, 1150, 4600))


def matmul_flops_per_second(device, seconds=2.0):
    """The best float32 matmul rate of PyTorch and of the Keras backend over
    `PEAK_SHAPES` (`(m, k, n)`: an `(m, k) x (k, n)` product)."""
    import keras
    import numpy as np

    rng = np.random.default_rng(0)
    best = 0.0
    for m, k, n in PEAK_SHAPES:
        a = rng.standard_normal((m, k), dtype=np.float32)
        b = rng.standard_normal((k, n), dtype=np.float32)
        for run in (_torch_product(a, b, device), _keras_product(keras, a, b)):
            run()
            start = time.perf_counter()
            count = 0
            while time.perf_counter() - start < seconds:
                run()
                count += 1
            best = max(best, 2 * m * k * n * count / (time.perf_counter() - start))
    return best


def _torch_product(a, b, device):
    import torch

    ta, tb = torch.from_numpy(a).to(device), torch.from_numpy(b).to(device)

    def run():
        torch.mm(ta, tb)
        if device.type == "cuda":
            torch.cuda.synchronize()

    return run


def _keras_product(keras, a, b):
    ka, kb = keras.ops.convert_to_tensor(a), keras.ops.convert_to_tensor(b)

    def run():
        # Reading one number back waits for the product (asynchronous backends).
        float(keras.ops.convert_to_numpy(keras.ops.matmul(ka, kb)[0, 0]))

    return run


def _training_steps(size, seed, device, mixed=False):
    """One step function per variant, each training on the next segment of a shared
    random stream and returning its cross-entropy."""
    import keras
    import numpy as np

    from awd_lstm.config import TrainingConfig
    from awd_lstm.models import AWDLSTMLanguageModel
    from awd_lstm.training import build_model

    batch, bptt = size["batch"], size["bptt"]
    rng = np.random.default_rng(seed)
    stream = rng.integers(0, size["vocab"], size=(batch, 64 * bptt + 1)).astype("int32")

    def segment(i):
        start = (i % 64) * bptt
        return stream[:, start : start + bptt], stream[:, start + 1 : start + bptt + 1]

    def keras_step(model, metric="ce"):
        def step(i):
            x, y = segment(i)
            return float(model.train_on_batch(x, y, return_dict=True)[metric])

        return step

    shape = dict(
        embedding_size=size["embedding"], hidden_size=size["hidden"], num_layers=size["layers"]
    )
    steps = {}
    for variant, loss in (("user_logits", "logits"), ("user_defaults", "defaults")):
        model = AWDLSTMLanguageModel(
            size["vocab"],
            **shape,
            stateful=True,
            batch_size=batch,
            seed=seed,
            **DROPOUTS,
        )
        optimizer = keras.optimizers.SGD(30.0, global_clipnorm=0.25)
        if loss == "logits":
            model.compile(optimizer, keras.losses.SparseCategoricalCrossentropy(from_logits=True))
            steps[variant] = keras_step(model, "loss")
        else:
            model.compile(optimizer, **model.compile_defaults())
            steps[variant] = keras_step(model)
    for variant in ("awd_lstm", "awd_lstm_no_wdrop", "awd_lstm_bf16")[: 3 if mixed else 2]:
        dropouts = dict(DROPOUTS)
        if variant == "awd_lstm_no_wdrop":
            dropouts["weight_dropout"] = 0.0
        config = TrainingConfig(
            **shape,
            batch_size=batch,
            bptt=bptt,
            seed=seed,
            mixed_precision=variant == "awd_lstm_bf16",
            **dropouts,
        )
        steps[variant] = keras_step(build_model(config, size["vocab"], batch))
    for variant in ("torch_recipe", "torch_recipe_bf16")[: 2 if mixed else 1]:
        steps[variant] = _torch_step(size, device, segment, bf16=variant.endswith("bf16"))
    return steps


def _torch_step(size, device, segment, bf16):
    import torch
    from torch_reference import TorchAWDLSTM, training_step

    reference = TorchAWDLSTM(
        size["vocab"], size["embedding"], size["hidden"], size["layers"], **DROPOUTS
    ).to(device)
    optimizer = torch.optim.SGD(reference.parameters(), lr=30.0, weight_decay=1.2e-6)
    hidden = [reference.init_hidden(size["batch"])]

    def torch_step(i):
        x, y = segment(i)
        # (time, batch), as nn.LSTM expects.
        x = torch.from_numpy(x.T.astype("int64")).to(device)
        y = torch.from_numpy(y.T.astype("int64")).to(device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            loss, hidden[0] = training_step(reference, optimizer, x, y, hidden[0])
        return loss

    return torch_step


def measure_backend(size_names, repeats, min_seconds, seed, mixed=False):
    """Runs in a child process whose KERAS_BACKEND is already set."""
    import keras
    import numpy as np
    import torch

    torch.set_num_threads(os.cpu_count())
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(seed)
    keras.utils.set_random_seed(seed)
    # Measured before and after the training steps (the machine's speed drifts during
    # a run); the rows get the best.
    peak_flops = matmul_flops_per_second(device)
    rows = []
    for name in size_names:
        size = SIZES[name]
        steps = _training_steps(size, seed, device, mixed)
        variants = list(VARIANTS + MIXED if mixed else VARIANTS)
        for variant in list(variants):  # warm-up (compilation)
            try:
                steps[variant](0)
            except RuntimeError as error:
                if variant not in MIXED:
                    raise
                # PyTorch's oneDNN LSTM has no bfloat16 primitive on a CPU without
                # AVX-512 BF16 or AMX: `torch.autocast` fails there. Not measured.
                reason = str(error).splitlines()[0]
                print(f"{name}: {variant} does not run on this CPU: {reason}", file=sys.stderr)
                variants.remove(variant)
        times = {v: [] for v in variants}
        peaks = {v: 0 for v in variants}
        i = 1
        while i <= repeats or min(sum(t) for t in times.values()) < min_seconds:
            for variant in turn_order(variants, i):
                before = memory_status("VmRSS")
                reset_memory_peak()
                start = time.perf_counter()
                loss = steps[variant](i)
                times[variant].append(time.perf_counter() - start)
                peaks[variant] = max(peaks[variant], memory_status("VmHWM") - before)
                if not np.isfinite(loss):
                    raise FloatingPointError(f"{variant} loss became {loss}")
            i += 1
        for variant in variants:
            seconds = statistics.median(times[variant])
            paired = {
                other: statistics.median(a / b for a, b in zip(times[other], times[variant]))
                for other in ("torch_recipe", "awd_lstm_no_wdrop", "awd_lstm")
            }
            rows.append(
                {
                    "backend": keras.backend.backend(),
                    "size": name,
                    "variant": variant,
                    "tokens_per_sec": size["batch"] * size["bptt"] / seconds,
                    "step_seconds": seconds,
                    "steps": len(times[variant]),
                    "step_times": times[variant],
                    # Each round's ratio of step times, then their median: a drift of
                    # the machine's speed over the run moves both steps of a round.
                    "paired_vs_recipe": paired["torch_recipe"],
                    "paired_vs_no_wdrop": paired["awd_lstm_no_wdrop"],
                    # bfloat16 against float32 (`awd_lstm_bf16`, `torch_recipe_bf16`).
                    "paired_vs_awd_lstm": paired["awd_lstm"],
                    "step_peak_bytes": peaks[variant],
                    "flops_per_sec": training_flops(size) / seconds,
                }
            )
    peak_flops = max(peak_flops, matmul_flops_per_second(device))
    for row in rows:
        row["matmul_flops_per_sec"] = peak_flops
    return rows


def table(rows):
    lines = [
        "| backend | size | variant | tokens/s | vs torch recipe | paired vs recipe | "
        "paired vs no_wdrop | paired vs awd_lstm | step peak (MiB) | GFLOP/s | "
        "of matmul peak | steps |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    base = {
        (r["backend"], r["size"]): r["tokens_per_sec"]
        for r in rows
        if r["variant"] == "torch_recipe"
    }
    for r in rows:
        ratio = r["tokens_per_sec"] / base[(r["backend"], r["size"])]
        lines.append(
            f"| {r['backend']} | {r['size']} | {r['variant']} | {r['tokens_per_sec']:,.0f} | "
            f"{ratio:.3f} | {r['paired_vs_recipe']:.3f} | "
            f"{r['paired_vs_no_wdrop']:.3f} | {r.get('paired_vs_awd_lstm', 1.0):.3f} | "
            f"{r['step_peak_bytes'] / 2**20:,.0f} | "
            f"{r['flops_per_sec'] / 1e9:.1f} | "
            f"{r['flops_per_sec'] / r['matmul_flops_per_sec']:.1%} | {r['steps']} |"
        )
    return "\n".join(lines)


def main():
    parser = argument_parser(__doc__, timing="steps per variant")
    parser.add_argument("--sizes", default="small,ptb")
    parser.add_argument(
        "--mixed-precision",
        action="store_true",
        help="also time the recipe and the PyTorch recipe in bfloat16",
    )
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    names = args.sizes.split(",")
    unknown = [n for n in names if n not in SIZES]
    if unknown:
        parser.error(f"unknown size {unknown[0]!r}; known: {', '.join(SIZES)}")
    if args.child:
        rows = measure_backend(
            names, args.repeats, args.min_seconds, args.seed, args.mixed_precision
        )
        print(json.dumps(rows))
        return 0
    arguments = ["--sizes", args.sizes, "--repeats", args.repeats]
    arguments += ["--min-seconds", args.min_seconds, "--seed", args.seed]
    arguments += ["--mixed-precision"] if args.mixed_precision else []
    report(run_backends(__file__, args.backends, arguments), table, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
