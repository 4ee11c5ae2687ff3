"""What the benchmark scripts share: one child process per backend (Keras fixes its
backend at import), package versions, and Linux's resident-memory counters."""

import argparse
import json
import os
import subprocess
import sys
import time

# Before Keras and TensorFlow, as in a user's program: the package's TensorFlow
# settings (its oneDNN default, see awd_lstm/__init__.py) then hold in every child.
import awd_lstm  # noqa: F401


def argument_parser(doc, timing=None):
    """The flags every benchmark takes (`--backends`, `--seed`, `--json`, the hidden
    `--child`); with `timing` (what one repeat is), `--repeats` and `--min-seconds`."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    parser.add_argument("--backends", default="tensorflow,jax,torch")
    if timing:
        parser.add_argument("--repeats", type=int, default=5, help=f"minimum {timing}")
        parser.add_argument(
            "--min-seconds", type=float, default=20.0, help="minimum timed seconds per variant"
        )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", help="also write the rows to this JSON file")
    return parser


def versions():
    """Versions of the packages the numbers depend on."""
    import importlib.metadata as metadata

    found = {}
    for package in ("keras", "tensorflow-cpu", "tensorflow", "jax", "jaxlib", "torch", "numpy"):
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            pass
    return found


# The instruction-set flags the matrix products depend on, as /proc/cpuinfo names them.
CPU_FLAGS = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "amx_tile", "amx_bf16")


def cpu():
    """`{"model", "flags", "cpus", "threads"}`: the CPU's model name and which of
    `CPU_FLAGS` it has (Linux's /proc/cpuinfo, as `lscpu` shows them), the logical
    CPUs and the thread settings the frameworks read from the environment."""
    from awd_lstm.resources import cpu_info

    model, flags = cpu_info()
    threads = {
        name: os.environ[name]
        for name in ("OMP_NUM_THREADS", "TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS")
        if name in os.environ
    }
    return {
        "model": model or "unknown",
        "flags": [flag for flag in CPU_FLAGS if flag in flags],
        "cpus": os.cpu_count(),
        "threads": threads or "framework defaults (one per logical CPU)",
    }


def run_child(script, backend, arguments, label=None):
    """Runs `script --child ARGUMENTS` with `KERAS_BACKEND=backend`; returns the JSON
    the child printed on its last line. Exits the benchmark with the child's stderr
    if it fails."""
    env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="3")
    print(f"measuring {label or backend} ...", file=sys.stderr, flush=True)
    command = [sys.executable, script, "--child", *[str(a) for a in arguments]]
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        print(done.stderr, file=sys.stderr)
        sys.exit(done.returncode)
    return json.loads(done.stdout.strip().splitlines()[-1])


def run_variants(script, backends, variants, arguments, label=str):
    """`run_child` for each backend of the comma-separated `backends` and each of
    `variants` (its first argument, before `arguments`): one row each, in order.
    `label(variant)` names it in the progress line."""
    rows = []
    for backend in backends.split(","):
        for variant in variants:
            tag = f"{backend}, {label(variant)}"
            rows.append(run_child(script, backend, [variant, *arguments], label=tag))
    return rows


def require_peak_memory(parser):
    """Stops with a usage error where Linux's /proc/self memory counters are missing."""
    if not os.path.exists("/proc/self/clear_refs"):
        parser.error("this benchmark reads peak memory from Linux's /proc/self")


def run_backends(script, backends, arguments):
    """`run_child` once per backend of the comma-separated `backends`; the rows of
    all of them, in order."""
    rows = []
    for backend in backends.split(","):
        rows.extend(run_child(script, backend, arguments))
    return rows


def report(rows, table, json_path=None):
    """Prints the machine line and the table; writes the rows to `json_path`."""
    onednn = os.environ.get("TF_ENABLE_ONEDNN_OPTS")
    machine = cpu()
    print(f"versions: {json.dumps(versions())}; TF_ENABLE_ONEDNN_OPTS={onednn}")
    print(
        f"cpu: {machine['model']}; flags: {', '.join(machine['flags']) or 'none of note'}; "
        f"{machine['cpus']} logical CPUs; threads: {machine['threads']}"
    )
    print(table(rows))
    if json_path:
        with open(json_path, "w") as f:
            record = {"versions": versions(), "TF_ENABLE_ONEDNN_OPTS": onednn, "cpu": machine}
            json.dump({**record, "rows": rows}, f, indent=1)


def memory_status(field):
    """`VmRSS` (resident now) or `VmHWM` (resident peak) in bytes, from Linux's
    /proc/self/status; 0 where it is not available."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def reset_memory_peak():
    """Resets `VmHWM` to the current resident size (Linux >= 4.0: clear_refs 5)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def turn_order(variants, round_index):
    """The order in which the variants step in round `round_index`: rotated by one
    each round, so that each follows every other equally often. (In a fixed order
    the variant that runs right after the PyTorch recipe pays for the memory that
    PyTorch returned to the system: on JAX at the PTB size about 13% of a step.)"""
    shift = round_index % len(variants)
    return tuple(variants[shift:]) + tuple(variants[:shift])


def interleaved_times(functions, repeats, min_seconds):
    """The seconds of every timed call of each of `functions` (a dict of callables
    without arguments), `{name: [seconds, ...]}`. Each is called twice first, untimed
    (compilation, first allocations); then they take turns (`turn_order`) for at
    least `repeats` rounds, and more until every one has been timed for `min_seconds`
    (short calls need many rounds to average out the noise)."""
    names = list(functions)
    for function in functions.values():
        function()
        function()
    times = {name: [] for name in names}
    while len(times[names[0]]) < repeats or min(sum(t) for t in times.values()) < min_seconds:
        for name in turn_order(names, len(times[names[0]])):
            start = time.perf_counter()
            functions[name]()
            times[name].append(time.perf_counter() - start)
    return times
