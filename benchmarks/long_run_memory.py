"""Resident memory and compiled functions over a long run, epoch by epoch.

Trains the built-in corpus (the `synthetic` preset: E=64, H=128, 2 layers, batch 32,
variable-length BPTT around 35) for `--epochs` epochs (50) with the pipeline's
`training.train`, in one child process per backend, and records after every epoch
(validation and checkpoint included):

- the process's resident memory (`VmRSS`), and its peak so far (`VmHWM`);
- the compiled functions so far:
  - TensorFlow: traces of the training model's step functions and of the
    evaluation model's predict function (`tf.function` tracing counts);
  - JAX: XLA compilations (`jax.monitoring`'s compile events, whatever compiled);
  - PyTorch: none, it runs eagerly.

The target: memory flat after epoch 3 (at most 5% growth from the end of epoch 3 to
the last), and the count of compiled functions fixed after the first epoch (every
segment length the schedule draws is met in the first epoch, the shapes being
bounded: see `length_quantum` and JAX's padded segments). Usage:

    python benchmarks/long_run_memory.py [--epochs 50] [--backends tensorflow,jax,torch] \\
        [--json benchmarks/results/long_run_memory.json]
"""

import argparse
import dataclasses
import json
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import argument_parser, memory_status, report, run_backends  # noqa: E402

GROWTH_FROM = 3  # the epoch after which memory must be flat
LIMIT = 0.05


def compile_counter():
    """A function returning the number of compiled functions so far (see above)."""
    import keras

    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        count = {"compiles": 0}

        def listen(event, duration, **kwargs):
            if event == "/jax/core/compile/backend_compile_duration":
                count["compiles"] += 1

        jax.monitoring.register_event_duration_secs_listener(listen)
        return lambda models: count["compiles"]
    if backend == "tensorflow":

        def traces(models):
            total = 0
            for model in models:
                for steps in model.__dict__.get("_tf_step_functions", {}).values():
                    total += steps.exact.experimental_get_tracing_count()
                    total += steps.generic.experimental_get_tracing_count()
                predict = getattr(model, "predict_function", None)
                if hasattr(predict, "experimental_get_tracing_count"):
                    total += predict.experimental_get_tracing_count()
            return total

        return traces
    return lambda models: 0


def child(args):
    import keras

    from awd_lstm import recipe, runs, training
    from awd_lstm.presets import PRESETS

    counter = compile_counter()
    config = dataclasses.replace(PRESETS["synthetic"], epochs=args.epochs)
    work = tempfile.mkdtemp(prefix="long-run-")
    run_dir = os.path.join(work, "run")
    corpus = runs.write_builtin_corpus(os.path.join(run_dir, "corpus"), args.seed)
    runs.Run.create(run_dir, config, corpus.vocab, data=None)
    epochs = []
    models = []

    class Record(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            models.append(self.model)

        def on_epoch_end(self, epoch, logs=None):
            epochs.append(
                {
                    "epoch": epoch + 1,
                    "rss": memory_status("VmRSS"),
                    "peak": memory_status("VmHWM"),
                    "compiled": counter(models),
                    "val_ppl": logs["val_ppl"],
                }
            )

    build = recipe.build_model

    def recorded_build(*a, **k):  # the evaluation model too: its predict function
        model = build(*a, **k)
        models.append(model)
        return model

    recipe.build_model = recorded_build
    training.train(
        config,
        corpus,
        run_dir,
        log=lambda line: print(line, file=sys.stderr, flush=True),
        progress=False,
        callbacks=[Record()],
        test=False,
    )
    after = epochs[GROWTH_FROM - 1]["rss"]
    return [
        {
            "backend": keras.backend.backend(),
            "epochs": epochs,
            "growth_after_epoch_3": epochs[-1]["rss"] / after - 1,
            "compiled_after_epoch_1": epochs[0]["compiled"],
            "compiled_at_end": epochs[-1]["compiled"],
        }
    ]


def table(rows):
    lines = [
        f"| backend | RSS after epoch 1 / {GROWTH_FROM} / 10 / last (MiB) | growth after epoch "
        f"{GROWTH_FROM} | peak (MiB) | compiled after epoch 1 / at the end | target met |",
        "|---|---|---:|---:|---|---|",
    ]
    for row in rows:
        epochs = row["epochs"]
        marks = [epochs[i]["rss"] / 2**20 for i in (0, GROWTH_FROM - 1, min(9, len(epochs) - 1))]
        marks.append(epochs[-1]["rss"] / 2**20)
        compiled = (row["compiled_after_epoch_1"], row["compiled_at_end"])
        met = row["growth_after_epoch_3"] <= LIMIT and compiled[0] == compiled[1]
        lines.append(
            f"| {row['backend']} | {' / '.join(f'{m:,.0f}' for m in marks)} | "
            f"{row['growth_after_epoch_3']:+.1%} | {epochs[-1]['peak'] / 2**20:,.0f} | "
            f"{compiled[0]} / {compiled[1]} | {'yes' if met else 'no'} |"
        )
    return "\n".join(lines)


def main():
    parser = argument_parser(__doc__)
    parser.add_argument("--epochs", type=int, default=50)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args)))
        return
    arguments = ["--epochs", args.epochs, "--seed", args.seed]
    report(run_backends(__file__, args.backends, arguments), table, args.json)


if __name__ == "__main__":
    main()
