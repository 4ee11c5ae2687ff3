"""Peak memory of `awd-lstm score` and `awd-lstm evaluate` against the length of their
input: one long line, many short lines, a long test split.

A small run is trained once (the built-in corpus, embedding 8, two LSTMs of 16, bptt
100, its 1,000-word vocabulary) into a temporary folder. Then, for each input length,
a fresh `awd-lstm` process (TensorFlow, the run's backend) scores a file of that many
tokens drawn from the vocabulary, as one line and as lines of 20 words, and evaluates
the run on a test split of that many tokens (its corpus's `test.txt` replaced; batch 1,
the state carried, segments of bptt). Reported per process: its peak resident memory
(Linux's `ru_maxrss` of the finished child, from `os.wait4`) and its seconds.

With `--before-src PATH` every process also runs with `PYTHONPATH=PATH` (another
checkout's `src` folder: the code before a change) on the same run and inputs; runs
that would need more memory than `--before-limit-gib` are left out (the old scoring
of one long line formed its `(1, tokens, vocabulary)` logits, then three float64
copies: 28 bytes x 1,000 words a token).

    python benchmarks/score_memory.py [--tokens 10000,100000,1000000]
        [--before-src ../main/src] [--json OUT]
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import report  # noqa: E402

SRC = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src")
TRAIN_FLAGS = [
    "--epochs", "1", "--embedding-size", "8", "--hidden-size", "16", "--num-layers", "2",
    "--batch-size", "4", "--eval-batch-size", "2", "--bptt", "100", "--length-quantum", "10",
    "--synthetic-tokens", "3000", "--no-progress",
]  # fmt: skip
LINE_WORDS = 20
# Bytes a token of one long line cost the old scoring: float32 logits, then three
# float64 arrays of the same shape (per word of the vocabulary).
OLD_LONG_LINE_BYTES = 28


def awd_lstm(argv, src, stdout=subprocess.DEVNULL):
    """Runs `awd-lstm ARGV` in a fresh process importing the package from `src`;
    returns `(exit status, peak resident MiB, seconds, stderr)`."""
    env = dict(os.environ, PYTHONPATH=src, KERAS_BACKEND="tensorflow", TF_CPP_MIN_LOG_LEVEL="3")
    started = time.perf_counter()
    with tempfile.TemporaryFile() as err:
        child = subprocess.Popen(
            [sys.executable, "-m", "awd_lstm", *argv], stdout=stdout, stderr=err, env=env
        )
        _, status, usage = os.wait4(child.pid, 0)
        child.returncode = os.waitstatus_to_exitcode(status)
        err.seek(0)
        message = err.read().decode(errors="replace")
    return child.returncode, usage.ru_maxrss / 1024, time.perf_counter() - started, message


def write_inputs(folder, words, tokens, rng):
    """`{"one line": path, "lines of 20": path, "test split": path}` of `tokens`
    tokens each (a line's `<eos>` counts as one)."""
    paths = {}
    drawn = rng.choice(words, tokens - 1)
    paths["one line"] = os.path.join(folder, f"one_line_{tokens}.txt")
    with open(paths["one line"], "w") as f:
        f.write(" ".join(drawn) + "\n")
    lines = tokens // (LINE_WORDS + 1)
    drawn = rng.choice(words, (lines, LINE_WORDS))
    paths["lines of 20"] = os.path.join(folder, f"lines_{tokens}.txt")
    with open(paths["lines of 20"], "w") as f:
        f.writelines(" ".join(line) + "\n" for line in drawn)
    paths["test split"] = paths["lines of 20"]
    return paths


def measure(args, work):
    import numpy as np

    run = os.path.join(work, "run")
    code, _, seconds, err = awd_lstm(["train", "--out", run, *TRAIN_FLAGS], SRC)
    if code != 0:
        sys.exit(f"training the run failed:\n{err}")
    print(f"trained the run in {seconds:.0f} s", file=sys.stderr, flush=True)
    with open(os.path.join(run, "vocab.json")) as f:
        words = [t for t in json.load(f)["tokens"] if t not in ("<eos>", "<unk>")]
    test_split = os.path.join(run, "corpus", "test.txt")
    codes = {"after": SRC} | ({"before": args.before_src} if args.before_src else {})
    rng = np.random.default_rng(args.seed)
    rows = []
    for tokens in (int(t) for t in args.tokens.split(",")):
        paths = write_inputs(work, words, tokens, rng)
        for what, path in paths.items():
            for code_name, src in codes.items():
                row = {"command": "evaluate" if what == "test split" else "score"}
                row.update(input=what, tokens=tokens, code=code_name)
                needed = tokens * len(words) * OLD_LONG_LINE_BYTES / 2**30
                if code_name == "before" and what == "one line" and needed > args.before_limit_gib:
                    rows.append({**row, "status": f"not run: needs about {needed:.0f} GiB"})
                    continue
                if what == "test split":
                    shutil.copyfile(path, test_split)
                    argv = ["evaluate", "--run", run, "--split", "test", "--no-progress"]
                else:
                    argv = ["score", "--run", run, path]
                print(f"{row['command']} {what}, {tokens:,} tokens, {code_name}", file=sys.stderr)
                code, peak, seconds, err = awd_lstm(argv, src)
                status = "ok" if code == 0 else f"exit {code}: {err.strip()[-200:]}"
                rows.append({**row, "status": status, "peak_mib": peak, "seconds": seconds})
    return rows


def table(rows):
    lines = [
        "| command | input | tokens | code | peak resident (MiB) | seconds |",
        "|---|---|---:|---|---:|---:|",
    ]
    for row in rows:
        if row["status"] != "ok":
            cells = [row["status"], "-"]
        else:
            cells = [f"{row['peak_mib']:,.0f}", f"{row['seconds']:.1f}"]
        lines.append(
            f"| {row['command']} | {row['input']} | {row['tokens']:,} | {row['code']} | "
            + " | ".join(cells)
            + " |"
        )
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", help="also write the rows to this JSON file")
    parser.add_argument("--tokens", default="10000,100000,1000000", help="input lengths")
    parser.add_argument("--before-src", help="also run the package of this src folder")
    parser.add_argument(
        "--before-limit-gib",
        type=float,
        default=4.0,
        help="leave out the old code's long lines that would need more (default 4)",
    )
    args = parser.parse_args()
    if not hasattr(os, "wait4"):
        parser.error("this benchmark reads the children's peak memory with os.wait4 (Unix)")
    with tempfile.TemporaryDirectory(prefix="score-memory-") as work:
        rows = measure(args, work)
    report(rows, table, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
