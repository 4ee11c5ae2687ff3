"""AWD-LSTM, AWD-LSTM with a mixture of softmaxes, the Mogrifier LSTM and the same
LSTM without AWD regularization, side by side on PTB at the `small` size.

Every model is the `small` preset (tied embedding 200, 3 layers of 400-400-200 units,
batch 20, variable-length BPTT around 35, seed 141, the pipeline's `train`) trained
for the same `--epochs` on the same data, one after another, each in its own process
with the whole machine:

- `awd`: the preset itself: dropoute 0.1, dropouti 0.4, dropouth 0.25, dropout 0.4,
  weight drop 0.5, AR 2, TAR 1, weight decay 1.2e-6, NT-ASGD from lr 30, clip 0.25;
- `mos`: the same with a mixture of `--mixture-components` softmaxes (15, the MoS
  paper's) over the tied embedding, its latent vectors dropped with 0.29 (its
  `dropoutl`);
- `mogrifier`: the same recipe on Mogrifier LSTMs, 5 rounds of rank
  `--mogrifier-rank` (40: the rank-to-width ratio of the paper's tuned PTB model,
  84 of 912 units, at 400 units);
- `plain`: the same tied model, clipping and variable-length BPTT with every
  regularizer off (the five dropouts, AR/TAR, weight decay) and plain SGD (no
  averaging);
- `qrnn`: the same sizes on QRNN layers with the reference's AWD-QRNN regularization
  (its PTB command: weight drop 0.1 on the gate weights, dropouth 0.3, clip 0.2; the
  other settings the preset's).

`--max-minutes M` gives every model the same training time instead (each stops at
the end of the epoch after which another would pass it; `--epochs` still bounds it).

`--train-fraction F` trains on the first F of the training split's lines (the same
for every model; the vocabulary is still the full corpus's 10,000 words, and the
validation and test splits are whole), so that the epochs fit a CPU's time. After
every epoch the test split is scored beside the validation split, with the same
weights (the averages once NT-ASGD averages) and the same batch of 10 streams; at the
end the best validated weights are tested with batch 1, the reference's test
(`final.json`). Tokens/s is the pipeline's training speed (training steps only). The
run folders stay in `--out`. Usage:

    python benchmarks/ptb_models.py --data data/ptb --train-fraction 0.25 \\
        --epochs 12 [--models awd,mos,mogrifier,plain] [--backend tensorflow] \\
        [--out runs/ptb-models] [--json OUT]
"""

import argparse
import dataclasses
import json
import lzma
import math
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import report, run_child  # noqa: E402

MODELS = ("awd", "mos", "mogrifier", "plain", "qrnn")


def model_config(name, epochs, mixture_components, mogrifier_rank):
    """The `TrainingConfig` of one of `MODELS`."""
    from awd_lstm.presets import PRESETS

    config = dataclasses.replace(PRESETS["small"], epochs=epochs)
    if name == "mos":
        return dataclasses.replace(
            config, mixture_components=mixture_components, mixture_dropout=0.29
        )
    if name == "mogrifier":
        return dataclasses.replace(
            config, cell="mogrifier", mogrifier_rounds=5, mogrifier_rank=mogrifier_rank
        )
    if name == "qrnn":
        return dataclasses.replace(
            config, cell="qrnn", weight_dropout=0.1, hidden_dropout=0.3, clip=0.2
        )
    if name == "plain":
        off = ("embedding_dropout", "input_dropout", "hidden_dropout", "output_dropout")
        off += ("weight_dropout", "alpha", "beta", "weight_decay")
        return dataclasses.replace(config, optimizer="sgd", **{field: 0.0 for field in off})
    return config


def _read(path):
    opener = lzma.open if path.endswith(".xz") else open
    with opener(path, "rt", encoding="utf-8") as f:
        return f.read()


def prepare_data(data, fraction, out):
    """`{split: path}`: the first `fraction` of the training split's lines written to
    `out/data/train.txt`, the validation and test files as they are."""
    from awd_lstm.data.corpus import find_layout

    _, paths = find_layout(data)
    lines = _read(paths["train"]).splitlines(keepends=True)
    keep = lines[: max(1, round(fraction * len(lines)))]
    os.makedirs(os.path.join(out, "data"), exist_ok=True)
    train = os.path.join(out, "data", "train.txt")
    with open(train, "w", encoding="utf-8") as f:
        f.writelines(keep)
    return {"train": train, "valid": paths["valid"], "test": paths["test"]}


def train_model(args):
    """Runs in a child process whose KERAS_BACKEND is already set: trains one model,
    returns its rows."""
    import keras
    import numpy as np

    from awd_lstm import recipe, training
    from awd_lstm.callbacks import AveragedValidation
    from awd_lstm.data import Corpus, load_corpus, read_tokens

    paths = json.loads(args.paths)
    # Read once: the whole corpus's vocabulary (as a full run has) and its validation
    # and test splits, with the shortened training split beside them.
    whole = load_corpus(args.data)
    vocab = whole.vocab
    train = read_tokens(paths["train"], vocab.level, vocab.tokenization)
    train = vocab.encode(train, source=f"corpus file {paths['train']}")
    corpus = Corpus(vocab, train, whole.valid, whole.test, paths)
    config = model_config(args.model, args.epochs, args.mixture_components, args.mogrifier_rank)
    scorer = AveragedValidation(
        recipe.build_model(config, len(vocab), config.eval_batch_size), corpus.test, config.bptt
    )
    tests = []

    class TestEachEpoch(keras.callbacks.Callback):
        """The test split scored with the weights the validation scored: the averages
        when NT-ASGD averaged during the epoch (it may switch on at the epoch's end,
        after the validation)."""

        def on_epoch_end(self, epoch, logs=None):
            averaged = bool((logs or {}).get("averaging"))
            weights = recipe.evaluation_weights(self.model) if averaged else None
            loss = scorer.score(weights or list(self.model.trainable_variables))
            tests.append(math.exp(loss))
            print(f"epoch {epoch + 1}: test perplexity {tests[-1]:.2f}", file=sys.stderr)

    run_dir = os.path.join(args.out, args.model)
    log = lambda line: print(line, file=sys.stderr, flush=True)  # noqa: E731
    max_seconds = None if args.max_minutes is None else 60 * args.max_minutes
    evaluator, records = training.train(
        config,
        corpus,
        run_dir,
        log=log,
        progress=False,
        callbacks=[TestEachEpoch()],
        max_seconds=max_seconds,
    )
    with open(os.path.join(run_dir, "final.json")) as f:
        final = json.load(f)
    parameters = int(sum(np.prod(v.shape) for v in evaluator.trainable_variables))
    return [
        {
            "model": args.model,
            "backend": keras.backend.backend(),
            "parameters": parameters,
            "train_fraction": args.train_fraction,
            "max_minutes": args.max_minutes,
            "training_seconds": sum(r["seconds"] for r in records),
            "train_tokens": int(len(corpus.train)),
            "epochs": [
                {
                    "epoch": r["epoch"],
                    "train_ppl": r["train_ppl"],
                    "val_ppl": r["val_ppl"],
                    "test_ppl": test,
                    "tokens_per_sec": r["tokens_per_sec"],
                    "seconds": r["seconds"],
                    "averaging": r["averaging"],
                }
                for r, test in zip(records, tests)
            ],
            "test_ppl_batch_1": final["test_ppl"],
        }
    ]


def overtakes(rows, a, b):
    """The epoch from which model `a`'s validation perplexity stays below `b`'s to the
    last epoch both ran; None if it is not below at that last epoch."""
    by_model = {row["model"]: row["epochs"] for row in rows}
    if a not in by_model or b not in by_model:
        return None
    found = None
    for ra, rb in zip(by_model[a], by_model[b]):
        if ra["val_ppl"] < rb["val_ppl"]:
            found = found or ra["epoch"]
        else:
            found = None
    return found


def table(rows):
    header = "| model | parameters | epochs | minutes | tokens/s (median) | valid ppl per epoch "
    lines = [header + "| test ppl per epoch | best valid | test (batch 1) |"]
    lines.append("|---|---:|---:|---:|---:|---|---|---:|---:|")
    for row in rows:
        epochs = row["epochs"]
        speeds = sorted(e["tokens_per_sec"] for e in epochs)
        speed = speeds[len(speeds) // 2]
        lines.append(
            f"| {row['model']} | {row['parameters'] / 1e6:.2f}M | {len(epochs)} | "
            f"{sum(e['seconds'] for e in epochs) / 60:.1f} | {speed:,.0f} | "
            + " / ".join(f"{e['val_ppl']:.1f}" for e in epochs)
            + " | "
            + " / ".join(f"{e['test_ppl']:.1f}" for e in epochs)
            + f" | {min(e['val_ppl'] for e in epochs):.2f} | {row['test_ppl_batch_1']:.2f} |"
        )
    lines.append("")
    pairs = (("awd", "plain"), ("mos", "awd"), ("mogrifier", "awd"), ("qrnn", "awd"))
    for other, reference in pairs:
        if {other, reference} <= {row["model"] for row in rows}:
            found = overtakes(rows, other, reference)
            when = f"from epoch {found} on" if found else "not at the last epoch"
            lines.append(f"{other} below {reference} in validation perplexity: {when}")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help="the PTB folder (ptb.*.txt, or .xz)")
    parser.add_argument("--train-fraction", type=float, default=1.0)
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--backend", default="tensorflow")
    parser.add_argument("--max-minutes", type=float)
    parser.add_argument("--mixture-components", type=int, default=15)
    parser.add_argument("--mogrifier-rank", type=int, default=40)
    parser.add_argument("--out", default="runs/ptb-models")
    parser.add_argument("--json")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--paths", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(train_model(args)))
        return
    if not 0 < args.train_fraction <= 1:
        parser.error("--train-fraction must be in (0, 1]")
    models = args.models.split(",")
    unknown = [m for m in models if m not in MODELS]
    if unknown:
        parser.error(f"unknown model {unknown[0]!r}; choose among {', '.join(MODELS)}")
    existing = [m for m in models if os.path.exists(os.path.join(args.out, m))]
    if existing:
        parser.error(f"{os.path.join(args.out, existing[0])} exists; choose another --out")
    paths = prepare_data(args.data, args.train_fraction, args.out)
    shared = ["--data", args.data, "--epochs", args.epochs, "--out", args.out]
    shared += ["--train-fraction", args.train_fraction]
    if args.max_minutes is not None:
        shared += ["--max-minutes", args.max_minutes]
    shared += ["--mixture-components", args.mixture_components]
    shared += ["--mogrifier-rank", args.mogrifier_rank, "--paths", json.dumps(paths)]
    rows = []
    for model in models:
        rows.extend(run_child(__file__, args.backend, [*shared, "--model", model], label=model))
        if args.json:  # the rows so far, should a later model fail
            with open(args.json, "w") as f:
                json.dump({"rows": rows, "train_fraction": args.train_fraction}, f, indent=1)
    report(rows, table, args.json)


if __name__ == "__main__":
    main()
