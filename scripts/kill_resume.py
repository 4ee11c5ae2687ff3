"""Kills `awd-lstm train` with SIGKILL at random moments and resumes it, again and again.

    python scripts/kill_resume.py [--backend torch] [--kills 10] [--seed 0] [--work DIR]

First an uninterrupted reference run of the built-in corpus (small settings, 3
epochs). Then the same run is started and killed `--kills` times: at a random moment
(within the time the rest of the run would take), or, every third kill, the moment a
new temporary weights file appears in the run folder (a checkpoint or the best
weights being written at an epoch's end) if one does within that time. After each
kill the script checks that the run folder holds no broken file: `config.json` is
JSON (or absent: killed before the run existed, which starts it again),
`checkpoint.weights.h5` (when present) opens and holds the resume state,
`metrics.jsonl` parses; then it resumes with `--resume`. When the kills are done, the
last resume runs to the end, and its `metrics.jsonl` (timings left out) and
`final.json` must equal the reference run's. Prints one line per kill and
exits 0 when everything held, 1 otherwise.
"""

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time

FLAGS = [
    "--epochs", "3", "--embedding-size", "16", "--hidden-size", "32", "--num-layers", "2",
    "--batch-size", "8", "--eval-batch-size", "4", "--bptt", "10", "--length-quantum", "5",
    "--synthetic-tokens", "4000", "--no-progress", "--seed", "7",
]  # fmt: skip
TIMING = ("seconds", "tokens_per_sec")


def command(backend, *args):
    return [sys.executable, "-m", "awd_lstm", "--backend", backend, *args]


def epochs(run):
    path = os.path.join(run, "metrics.jsonl")
    if not os.path.exists(path):
        return []
    with open(path, encoding="utf-8") as f:
        return [
            {k: v for k, v in json.loads(line).items() if k not in TIMING}
            for line in f
            if line.strip()
        ]


def check_folder(run):
    """Problems with the files a killed run left (empty: none)."""
    import h5py

    problems = []
    config = os.path.join(run, "config.json")
    if os.path.exists(config):
        try:
            with open(config, encoding="utf-8") as f:
                json.load(f)
        except ValueError as e:
            problems.append(f"config.json: {e}")
    checkpoint = os.path.join(run, "checkpoint.weights.h5")
    if os.path.exists(checkpoint):
        try:
            with h5py.File(checkpoint, "r") as f:
                json.loads(f["awd_lstm_resume"].attrs["state"])
        except (OSError, KeyError, ValueError) as e:
            problems.append(f"checkpoint.weights.h5: {e}")
    try:
        if epochs(run) and not os.path.exists(checkpoint):
            # metrics.jsonl is written after the checkpoint of its last epoch.
            problems.append("metrics.jsonl lists epochs but checkpoint.weights.h5 is missing")
    except ValueError as e:
        problems.append(f"metrics.jsonl: {e}")
    return problems


def finished(run):
    return os.path.exists(os.path.join(run, "final.json"))


def start(backend, run):
    if os.path.exists(os.path.join(run, "config.json")):
        args = command(backend, "train", "--resume", run, "--no-progress")
    else:
        args = command(backend, "train", "--out", run, *FLAGS)
    return subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def temporaries(run, suffix=""):
    if not os.path.isdir(run):
        return set()
    return {n for n in os.listdir(run) if n.startswith(".tmp-") and n.endswith(suffix)}


def kill_at_random(process, run, rng, during_write, max_seconds):
    """Kills `process` at a random moment of its first `max_seconds`, or, with
    `during_write`, when a new temporary file shows up (a file being written) within
    them; returns what the moment was, or None if the process ended first."""
    # The weights files written at an epoch's end (a checkpoint, the best weights),
    # not the run's first files: the process has trained when it is killed.
    suffix = ".h5" if during_write else ""
    stale = temporaries(run, suffix)  # left by an earlier kill; the resume removes them
    wait = max(max_seconds, 1.0) if during_write else rng.uniform(0.5, max(max_seconds, 1.0))
    deadline = time.monotonic() + wait
    while process.poll() is None:
        writing = bool(temporaries(run, suffix) - stale)
        if (during_write and writing) or time.monotonic() > deadline:
            process.send_signal(signal.SIGKILL)
            process.wait()
            return "while writing" if writing else "at random"
        time.sleep(0.001 if during_write else 0.02)
    return None


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", default="torch", choices=("tensorflow", "jax", "torch"))
    parser.add_argument("--kills", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", help="folder for the runs (default: a temporary one)")
    args = parser.parse_args(argv)
    work = args.work or tempfile.mkdtemp(prefix="kill-resume-")
    rng = random.Random(args.seed)
    reference = os.path.join(work, "reference")
    errors = tempfile.TemporaryFile()  # not a pipe: nobody reads it while it runs
    started = time.monotonic()
    done = subprocess.Popen(command(args.backend, "train", "--out", reference, *FLAGS),
                            stdout=subprocess.DEVNULL, stderr=errors)  # fmt: skip
    ended = [0.0]  # when each epoch's line appeared, from the start
    while done.poll() is None:
        if len(epochs(reference)) >= len(ended):
            ended.append(time.monotonic() - started)
        time.sleep(0.02)
    total = time.monotonic() - started
    if done.returncode != 0:
        errors.seek(0)
        print(f"the reference run failed:\n{errors.read().decode()[-2000:]}")
        return 1
    # Start-up: the first epoch's time less a later epoch's.
    startup = max(ended[1] - (ended[2] - ended[1]), 0.0) if len(ended) > 2 else 0.0

    def window(run):
        # A kill falls anywhere in the time the resumed run would take: its start-up
        # and the rest of its epochs, the final test included.
        return startup + total - ended[min(len(epochs(run)), len(ended) - 1)]

    run = os.path.join(work, "killed")
    kills, restarts, failures = 0, 0, []
    while kills < args.kills:
        if finished(run):  # killed after it wrote its end: over again for the kills due
            print(f"the run had ended at kill {kills}; starting it over")
            restarts += 1
            os.rename(run, f"{run}-finished-{restarts}")
        process = start(args.backend, run)
        during_write = kills % 3 == 2
        moment = kill_at_random(process, run, rng, during_write, window(run))
        if moment is None:
            if process.returncode != 0:
                failures.append(f"a resume failed: {process.stderr.read().decode()[-500:]}")
                break
            # The run ended before the kill: start it over for the kills still due.
            print(f"the run ended before kill {kills + 1}; starting it over")
            restarts += 1
            os.rename(run, f"{run}-finished-{restarts}")
            continue
        kills += 1
        problems = check_folder(run)
        failures += problems
        print(
            f"kill {kills:2d} {moment:13s}: {len(epochs(run))} epochs done, "
            f"{'problems: ' + '; '.join(problems) if problems else 'files intact'}",
            flush=True,
        )
    if not failures:
        process = start(args.backend, run) if not finished(run) else None
        _, err = process.communicate() if process else (None, b"")
        if process and process.returncode != 0:
            failures.append(f"the last resume failed: {err.decode()[-2000:]}")
        elif epochs(run) != epochs(reference):
            failures.append("metrics.jsonl differs from the uninterrupted run's")
        else:
            with open(os.path.join(run, "final.json")) as a:
                with open(os.path.join(reference, "final.json")) as b:
                    if json.load(a) != json.load(b):
                        failures.append("final.json differs from the uninterrupted run's")
    for failure in failures:
        print(f"FAILED: {failure}")
    if not failures:
        print(f"{kills} kills: the resumed run ended exactly as the uninterrupted one")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
