"""Whole training epochs at the PTB `small` flags: the reference implementation's
`main.py` (Merity et al.'s salesforce/awd-lstm-lm) against `awd-lstm train`, on the
same machine, one after the other, epoch for epoch.

The reference is not part of this project: give a checkout of it with `--reference
DIR`. It runs from a temporary copy of that folder, on the CPU, with

    python main.py --cuda --data DATA --epochs N --emsize 200 --nhid 400 --nlayers 3
        --batch_size 20 --bptt 35 --dropout 0.4 --dropouth 0.25 --dropouti 0.4
        --dropoute 0.1 --wdrop 0.5 --lr 30 --seed 141

(its `--cuda` flag is `store_false`: given, it stays on the CPU) and these fixes for
current PyTorch, applied at run time by a `sitecustomize.py` on its `PYTHONPATH` (its
files are not changed):

- `torch.load` defaults to `weights_only=True` since PyTorch 2.6, which refuses the
  pickled corpus cache and model the reference saves and loads again itself: the
  patch passes `weights_only=False` when the caller gives no value.

`awd-lstm train` then runs the same settings (`--preset small` with the reference's
dropouts, learning rate and seed) for N epochs on the chosen backend. Both times
include each epoch's validation: the reference's as it prints it (`| end of epoch
N | time: ...s`), ours from `metrics.jsonl` (`seconds`). Also printed: each epoch's
validation perplexity, and the training tokens/s of both.

Usage:

    python benchmarks/reference_epoch.py --reference DIR --data PTB_DIR
        [--backend tensorflow] [--epochs 1] [--json OUT]

`PTB_DIR` holds `ptb.train.txt`, `ptb.valid.txt`, `ptb.test.txt` (or the
`train.txt`... layout), plain or compressed.
"""

import argparse
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import cpu, versions  # noqa: E402

FLAGS = dict(
    emsize=200,
    nhid=400,
    nlayers=3,
    batch_size=20,
    bptt=35,
    dropout=0.4,
    dropouth=0.25,
    dropouti=0.4,
    dropoute=0.1,
    wdrop=0.5,
    lr=30,
    seed=141,
)
# The same settings in `awd-lstm train`'s names.
OURS = dict(
    embedding_size=200,
    hidden_size=400,
    num_layers=3,
    batch_size=20,
    bptt=35,
    output_dropout=0.4,
    hidden_dropout=0.25,
    input_dropout=0.4,
    embedding_dropout=0.1,
    weight_dropout=0.5,
    lr=30,
    seed=141,
)
SITECUSTOMIZE = """\
import functools

import torch

_load = torch.load


@functools.wraps(_load)
def load(*args, **kwargs):
    kwargs.setdefault("weights_only", False)
    return _load(*args, **kwargs)


torch.load = load
"""
EPOCH_LINE = re.compile(
    r"end of epoch\s+(\d+)\s+\|\s+time:\s+([\d.]+)s\s+\|\s+valid loss\s+([\d.]+)"
)


def plain_ptb(data, out):
    """The three splits of `data` (any layout this package reads) as the reference's
    `train.txt`, `valid.txt`, `test.txt` in `out`."""
    from awd_lstm.data import find_layout
    from awd_lstm.data.corpus import COMPRESSED

    _, paths = find_layout(data)
    os.makedirs(out, exist_ok=True)
    for split, path in paths.items():
        with COMPRESSED.get(os.path.splitext(path)[1], open)(path, "rb") as f:
            raw = f.read()
        with open(os.path.join(out, f"{split}.txt"), "wb") as f:
            f.write(raw)
    return out


def run_reference(reference, data, epochs, work):
    """The reference's epochs: `[{"epoch", "seconds", "val_ppl"}]`, and its tokens/s."""
    copy = os.path.join(work, "reference")
    shutil.copytree(reference, copy, ignore=shutil.ignore_patterns(".git"))
    shim = os.path.join(work, "shim")
    os.makedirs(shim)
    with open(os.path.join(shim, "sitecustomize.py"), "w") as f:
        f.write(SITECUSTOMIZE)
    command = [sys.executable, "main.py", "--cuda", "--data", data, "--epochs", str(epochs)]
    command += ["--save", os.path.join(work, "reference.pt")]
    for name, value in FLAGS.items():
        command += [f"--{name}", str(value)]
    env = dict(os.environ, PYTHONPATH=shim)
    print("running the reference:", " ".join(command), file=sys.stderr, flush=True)
    done = subprocess.run(command, cwd=copy, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"the reference failed:\n{done.stderr[-3000:]}")
    epochs_seen = []
    for match in EPOCH_LINE.finditer(done.stdout):
        epoch, seconds, loss = int(match[1]), float(match[2]), float(match[3])
        epochs_seen.append({"epoch": epoch, "seconds": seconds, "val_ppl": math.exp(loss)})
    ms = [float(m) for m in re.findall(r"ms/batch\s+([\d.]+)", done.stdout)]
    tokens_per_sec = None
    if ms:
        tokens_per_sec = FLAGS["batch_size"] * FLAGS["bptt"] / (sum(ms) / len(ms) / 1000)
    return epochs_seen, tokens_per_sec


def run_ours(data, epochs, backend, work):
    """`awd-lstm train`'s epochs: `[{"epoch", "seconds", "val_ppl", "tokens_per_sec"}]`."""
    out = os.path.join(work, "ours")
    command = [sys.executable, "-m", "awd_lstm", "train", "--data", data, "--preset", "small"]
    command += ["--backend", backend, "--epochs", str(epochs), "--out", out, "--no-progress"]
    for name, value in OURS.items():
        command += ["--" + name.replace("_", "-"), str(value)]
    print("running awd-lstm:", " ".join(command), file=sys.stderr, flush=True)
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"awd-lstm train failed:\n{done.stderr[-3000:]}")
    with open(os.path.join(out, "metrics.jsonl"), encoding="utf-8") as f:
        records = [json.loads(line) for line in f if line.strip()]
    return [
        {
            "epoch": r["epoch"],
            "seconds": r["seconds"],
            "val_ppl": r["val_ppl"],
            "tokens_per_sec": r["tokens_per_sec"],
        }
        for r in records
    ]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reference", required=True, help="a checkout of awd-lstm-lm")
    parser.add_argument("--data", required=True, help="the Penn Treebank folder")
    parser.add_argument("--backend", default="tensorflow", choices=("tensorflow", "jax", "torch"))
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--json", help="also write the results to this JSON file")
    args = parser.parse_args()
    if not os.path.isfile(os.path.join(args.reference, "main.py")):
        parser.error(f"{args.reference} holds no main.py: give a checkout of awd-lstm-lm")
    with tempfile.TemporaryDirectory(prefix="reference-epoch-") as work:
        data = plain_ptb(args.data, os.path.join(work, "penn"))
        started = time.time()
        reference, reference_speed = run_reference(args.reference, data, args.epochs, work)
        ours = run_ours(args.data, args.epochs, args.backend, work)
        wall = time.time() - started
    machine = cpu()
    print(f"versions: {json.dumps(versions())}")
    print(f"cpu: {machine['model']}; flags: {', '.join(machine['flags'])}; "
          f"{machine['cpus']} logical CPUs; threads: {machine['threads']}")  # fmt: skip
    print(f"| epoch | reference s | awd-lstm ({args.backend}) s | reference / ours | "
          "reference val ppl | our val ppl |")  # fmt: skip
    print("|---:|---:|---:|---:|---:|---:|")
    for theirs, mine in zip(reference, ours):
        print(
            f"| {mine['epoch']} | {theirs['seconds']:.1f} | {mine['seconds']:.1f} | "
            f"{theirs['seconds'] / mine['seconds']:.3f} | {theirs['val_ppl']:.2f} | "
            f"{mine['val_ppl']:.2f} |"
        )
    ours_speed = ours[0]["tokens_per_sec"]
    print(
        f"training tokens/s: reference {reference_speed or float('nan'):,.0f} (its ms/batch "
        f"lines), awd-lstm {ours_speed:,.0f} (epoch 1, validation included); {wall:.0f} s"
    )
    if args.json:
        with open(args.json, "w") as f:
            record = {"versions": versions(), "cpu": machine, "backend": args.backend}
            json.dump({**record, "reference": reference, "ours": ours}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
