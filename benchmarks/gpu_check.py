"""On an NVIDIA GPU: the fused cuDNN path runs with weight drop on, and the model
comparison of `model_throughput.py`, in under 5 minutes.

For each backend (its own process) it checks that the backend sees a GPU, that a
`WeightDropLSTM(weight_dropout=0.5)` called in training takes the fused path
(`last_call_implementation == "fused"`) and that so does every LSTM of the language
model's training step; that a training step of the mixture-of-softmaxes model (the
`ptb-mos` preset) and of a Mogrifier model (`cell="mogrifier"`, which has no cuDNN
kernel: its own loop is expected) runs and gives a finite loss, with its seconds per
step; then it runs the side-by-side throughput comparison with short settings. It
exits with status 1, naming the backend and the check, if a check fails.

GPU installs: `pip install tensorflow[and-cuda]` (not `tensorflow-cpu`), `pip install
"jax[cuda12]"`, and a CUDA build of PyTorch.

Usage:

    python benchmarks/gpu_check.py [--backends tensorflow,jax,torch] [--json OUT]
"""

import argparse
import json
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


def gpu_visible():
    import keras

    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        return bool(tf.config.list_physical_devices("GPU"))
    if backend == "jax":
        import jax

        return jax.default_backend() == "gpu"
    import torch

    return torch.cuda.is_available()


def check():
    """Runs in a child process whose KERAS_BACKEND is already set; returns the list
    of failed checks."""
    import keras
    import numpy as np

    from awd_lstm.config import TrainingConfig
    from awd_lstm.layers import WeightDropLSTM
    from awd_lstm.training import build_model

    backend = keras.backend.backend()
    if not gpu_visible():
        return [f"{backend}: no GPU visible"]
    failed = []
    layer = WeightDropLSTM(1150, weight_dropout=0.5, return_sequences=True, seed=0)
    x = np.random.default_rng(0).standard_normal((80, 70, 400)).astype("float32")
    layer(x, training=True)
    if layer.last_call_implementation != "fused":
        failed.append(f"{backend}: WeightDropLSTM ran {layer.last_call_implementation!r}")
    config = TrainingConfig(batch_size=80, bptt=70)
    model = build_model(config, 10_000, 80)
    ids = np.random.default_rng(1).integers(0, 10_000, size=(80, 71)).astype("int32")
    model.train_on_batch(ids[:, :-1], ids[:, 1:])
    for lstm in model.encoder.lstms:
        if lstm.last_call_implementation != "fused":
            failed.append(
                f"{backend}: the model's {lstm.name} ran {lstm.last_call_implementation!r}"
            )
    failed += new_models(backend)
    return failed


def new_models(backend):
    """One compiled training step, then three timed ones, of the `ptb-mos` preset, of
    a Mogrifier model (5 rounds, rank 84, PTB sizes), of the `ptb-qrnn` preset and of
    the `ptb` LSTM beside it (the QRNN's speed-up on the GPU is printed); their losses
    must be finite. The QRNN pools with the associative scan there
    (`backend.parallel_pooling()`)."""
    import dataclasses
    import math
    import time

    import numpy as np

    from awd_lstm.presets import PRESETS
    from awd_lstm.training import build_model

    failed = []
    mogrifier = dataclasses.replace(
        PRESETS["ptb"], cell="mogrifier", mogrifier_rounds=5, mogrifier_rank=84
    )
    steps = {}
    models = (("mos", PRESETS["ptb-mos"]), ("mogrifier", mogrifier))
    models += (("qrnn", PRESETS["ptb-qrnn"]), ("lstm", PRESETS["ptb"]))
    for name, config in models:
        model = build_model(config, 10_000, config.batch_size)
        rng = np.random.default_rng(2)
        ids = rng.integers(0, 10_000, size=(config.batch_size, 71)).astype("int32")
        times = []
        for _ in range(4):
            started = time.perf_counter()
            loss = float(model.train_on_batch(ids[:, :-1], ids[:, 1:], return_dict=True)["ce"])
            times.append(time.perf_counter() - started)
        steps[name] = np.median(times[1:])
        print(f"{backend}: {name} training step {steps[name]:.3f} s", file=sys.stderr)
        if not math.isfinite(loss):
            failed.append(f"{backend}: the {name} model's loss is {loss}")
    # Not the same sizes (the QRNN preset has 4 layers of 1550, the LSTM 3 of 1150), as
    # the reference README's 28 s against 65 s per PTB epoch compares them.
    print(
        f"{backend}: ptb-qrnn step / ptb step {steps['qrnn'] / steps['lstm']:.2f}", file=sys.stderr
    )
    return failed


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backends", default="tensorflow,jax,torch")
    parser.add_argument("--json", help="write the throughput rows to this JSON file")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(check()))
        return 0
    failed = []
    for backend in args.backends.split(","):
        env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="3")
        done = subprocess.run(
            [sys.executable, __file__, "--child"], env=env, capture_output=True, text=True
        )
        if done.returncode != 0:
            failed.append(f"{backend}: the check crashed: {done.stderr.strip()[-2000:]}")
            continue
        result = json.loads(done.stdout.strip().splitlines()[-1])
        print(done.stderr.strip()[-1000:] if done.stderr else "", file=sys.stderr)
        print(f"{backend}: {'fused path taken' if not result else '; '.join(result)}")
        failed.extend(result)
    command = [sys.executable, os.path.join(HERE, "model_throughput.py"), "--backends"]
    command += [args.backends, "--repeats", "3", "--min-seconds", "5"]
    if args.json:
        command += ["--json", args.json]
    if subprocess.run(command).returncode != 0:
        failed.append("the throughput comparison failed")
    for line in failed:
        print(f"FAILED: {line}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
