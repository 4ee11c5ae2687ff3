"""ULMFiT on the built-in classification task: the default run, the pretraining
ablation, and throughput.

1. `awd-lstm classify train` with its defaults (5,000 training documents of the
   built-in task, 12 epochs, a new encoder): wall time, and the test error beside the Bayes
   error and the bag-of-words baseline's.
2. The ablation with few labelled documents (`--few`, 200 by default), over seeds: a
   classifier from scratch, against one on an encoder pretrained on the built-in
   language-model corpus (`awd-lstm train`, the `synthetic` preset) and fine-tuned
   on the task's training text (`awd-lstm finetune --data`), at equal classifier
   budget (the same epochs and steps), with ULMFiT's gradual unfreezing and with
   every group trained from the start (`--unfreeze all`).
3. Throughput: the classifier's training tokens/s against the language model's at the
   same encoder size and batch, from their `metrics.jsonl`.

Each step is the command as a user runs it, in a process of its own. Run with nothing
else on the machine:

    python benchmarks/ulmfit_builtin.py --backends tensorflow --seeds 0,1,2
"""

import json
import os
import subprocess
import sys
import tempfile
import time

import _common


def command(argv, backend):
    env = dict(os.environ, KERAS_BACKEND=backend)
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "awd_lstm", *argv], env=env, capture_output=True, text=True
    )
    if done.returncode != 0:
        print(done.stdout, done.stderr, file=sys.stderr)
        sys.exit(done.returncode)
    return time.perf_counter() - started


PREDICT = """
import json, sys, time
from awd_lstm.classification import ClassifierRun
run = ClassifierRun.open(sys.argv[1])
texts = [t.replace("\\n", " ") for t in run.data().texts("test")]
run.predict(texts)  # compiles every padded width
started = time.perf_counter()
run.predict(texts)
print(json.dumps({"documents_per_sec": len(texts) / (time.perf_counter() - started)}))
"""


def predict_speed(folder, backend):
    """Documents per second of `ClassifierRun.predict` on the run's test documents
    (batch 64, after a first pass that compiles)."""
    env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="3")
    done = subprocess.run(
        [sys.executable, "-c", PREDICT, folder], env=env, capture_output=True, text=True
    )
    if done.returncode != 0:
        print(done.stderr, file=sys.stderr)
        sys.exit(done.returncode)
    return json.loads(done.stdout.strip().splitlines()[-1])["documents_per_sec"]


def read(folder, name):
    with open(os.path.join(folder, name)) as f:
        if name.endswith(".jsonl"):
            return [json.loads(line) for line in f if line.strip()]
        return json.load(f)


def text_corpus(task_folder, out):
    """The task's documents as a language-model corpus (train/valid/test.txt)."""
    from awd_lstm.data.labelled import load_labelled

    corpus = load_labelled(task_folder)
    os.makedirs(out, exist_ok=True)
    for split in ("train", "valid", "test"):
        with open(os.path.join(out, f"{split}.txt"), "w") as f:
            f.write(
                "".join(
                    text if text.endswith("\n") else text + "\n" for text in corpus.texts(split)
                )
            )
    return out


def main():
    parser = _common.argument_parser(__doc__)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--few", type=int, default=200, help="labelled training documents")
    parser.add_argument("--epochs", type=int, default=12, help="classifier epochs")
    args = parser.parse_args()
    rows = []
    for backend in args.backends.split(","):
        with tempfile.TemporaryDirectory() as work:
            default = os.path.join(work, "default")
            seconds = command(["classify", "train", "--out", default, "--no-progress"], backend)
            final = read(default, "final.json")
            rows.append(
                {
                    "backend": backend,
                    "what": "default",
                    "seconds": seconds,
                    **final,
                    "tokens_per_sec": read(default, "metrics.jsonl")[-1]["tokens_per_sec"],
                    "predict_documents_per_sec": predict_speed(default, backend),
                }
            )
            for seed in [int(s) for s in args.seeds.split(",")]:
                lm = os.path.join(work, f"lm{seed}")
                lm_seconds = command(
                    ["train", "--out", lm, "--seed", str(seed), "--no-progress"], backend
                )
                few = ["--train-documents", str(args.few), "--epochs", str(args.epochs)]
                scratch = os.path.join(work, f"scratch{seed}")
                command(
                    [
                        "classify",
                        "train",
                        "--out",
                        scratch,
                        "--seed",
                        str(seed),
                        *few,
                        "--no-progress",
                    ],
                    backend,
                )
                # The target domain's text: the task's own training documents.
                text = text_corpus(os.path.join(scratch, "data"), os.path.join(work, f"text{seed}"))
                tuned = os.path.join(work, f"tuned{seed}")
                command(
                    [
                        "finetune",
                        "--run",
                        lm,
                        "--data",
                        text,
                        "--out",
                        tuned,
                        "--epochs",
                        "4",
                        "--no-progress",
                    ],
                    backend,
                )
                errors = {}
                for unfreeze in ("gradual", "all"):  # ULMFiT's schedule, and all groups at once
                    on_lm = os.path.join(work, f"ulmfit{seed}{unfreeze}")
                    argv = ["classify", "train", "--out", on_lm, "--seed", str(seed)]
                    argv += ["--encoder", tuned, "--unfreeze", unfreeze, *few, "--no-progress"]
                    command(argv, backend)
                    errors[unfreeze] = read(on_lm, "final.json")["test_error"]
                a, b = read(scratch, "final.json"), read(on_lm, "final.json")
                rows.append(
                    {
                        "backend": backend,
                        "what": f"seed {seed}",
                        "scratch_error": a["test_error"],
                        "ulmfit_error": errors["gradual"],
                        "ulmfit_all_error": errors["all"],
                        "bayes_error": b["bayes_error"],
                        "bag_of_words_error": b["bag_of_words_error"],
                        "lm_seconds": lm_seconds,
                        "lm_tokens_per_sec": read(lm, "metrics.jsonl")[-1]["tokens_per_sec"],
                        "classifier_tokens_per_sec": read(scratch, "metrics.jsonl")[-1][
                            "tokens_per_sec"
                        ],
                    }
                )
    _common.report(rows, table, args.json)


def table(rows):
    def cells(*values):
        return "| " + " | ".join(values) + " |"

    lines = [
        cells("backend", "default run", "seconds", "test error", "Bayes error", "bag of words")
        + " training tokens/s | predict documents/s |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in (r for r in rows if r["what"] == "default"):
        lines.append(
            cells(
                r["backend"],
                "5,000 documents",
                f"{r['seconds']:.0f}",
                f"{r['test_error']:.1%}",
                f"{r['bayes_error']:.1%}",
                f"{r['bag_of_words_error']:.1%}",
                f"{r['tokens_per_sec']:,.0f}",
                f"{r['predict_documents_per_sec']:,.0f}",
            )
        )
    lines += [
        "",
        cells("backend", "seed", "from scratch", "pretrained + fine-tuned, gradual unfreezing")
        + " pretrained + fine-tuned, all groups | Bayes | bag of words |"
        + " classifier / LM tokens/s |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in (r for r in rows if r["what"] != "default"):
        ratio = r["classifier_tokens_per_sec"] / r["lm_tokens_per_sec"]
        lines.append(
            cells(
                r["backend"],
                r["what"],
                f"{r['scratch_error']:.1%}",
                f"{r['ulmfit_error']:.1%}",
                f"{r['ulmfit_all_error']:.1%}",
                f"{r['bayes_error']:.1%}",
                f"{r['bag_of_words_error']:.1%}",
                f"{ratio:.2f}",
            )
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
