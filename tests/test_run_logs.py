"""TensorBoard events and the learning-curve PNG of a run folder."""

import dataclasses
import json
import math
import re
import sys
import types

import keras
import numpy as np
import pytest

from awd_lstm.run_logs import plot_learning_curves

RECORDS = [
    {
        "epoch": e,
        "train_loss": 5.0 - e / 2,
        "val_loss": 5.1 - e / 2,
        "train_ppl": 100.0 / e,
        "val_ppl": 110.0 / e,
        "lr": 30.0,
        "averaging": e > 2,
        "tokens_per_sec": 1000.0 + e,
        "seconds": 10.0,
    }
    for e in (1, 2, 3)
]


def read_scalars(folder):
    """Every scalar of a TensorBoard folder as TensorBoard's own reader gives it (with
    its purges applied): `{tag: [(step, value), ...]}`."""
    if "tensorflow" not in sys.modules:
        # TensorBoard imports TensorFlow if installed unless built without it (its
        # `notf` marker); its reader needs none, and JAX and PyTorch runs stay free of it.
        sys.modules.setdefault("tensorboard.compat.notf", types.ModuleType("notf"))
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    reader = EventAccumulator(str(folder), size_guidance={"scalars": 0})
    reader.Reload()
    return {
        tag: [(e.step, e.value) for e in reader.Scalars(tag)] for tag in reader.Tags()["scalars"]
    }


class _Steps(keras.callbacks.Callback):
    """Counts the training steps; after each epoch, reads the TensorBoard folders
    (while the run goes on) and, at `crash_at` (epoch, step), raises `_Crash`."""

    def __init__(self, folder, crash_at=None):
        super().__init__()
        self.folder, self.crash_at = folder, crash_at
        self.steps, self.epoch_ends, self.seen = 0, [], []

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        self.steps += 1
        if self.crash_at == (self.epoch, batch):
            raise _Crash

    def on_epoch_end(self, epoch, logs=None):
        self.epoch_ends.append(self.steps)
        self.seen.append(
            (read_scalars(self.folder / "train"), read_scalars(self.folder / "validation"), logs)
        )


class _Crash(Exception):
    pass


@pytest.fixture(scope="module")
def tiny():
    from tests.test_training import TINY

    return dataclasses.replace(TINY, epochs=2, lr=5.0)


def _quiet_run(config, corpus, folder, callbacks, every, resume=False):
    from awd_lstm.training import train

    _, records = train(
        config,
        corpus,
        str(folder),
        log=lambda _: None,
        progress=False,
        test=False,
        callbacks=callbacks,
        tensorboard_every=every,
        resume=resume,
    )
    return records


def test_tensorboard_points_are_readable_while_the_run_goes(corpus, tiny, tmp_path):
    pytest.importorskip("tensorboard")
    steps = _Steps(tmp_path / "tensorboard")
    records = _quiet_run(tiny, corpus, tmp_path, [steps], every=10)
    for epoch, (train_points, validation_points, logs) in enumerate(steps.seen):
        ends = steps.epoch_ends[: epoch + 1]
        # Keras' layout: the same tags in train/ and validation/, so the curves overlay.
        for points, split in [(train_points, "train"), (validation_points, "val")]:
            assert [s for s, _ in points["epoch_loss"]] == ends
            values = [v for _, v in points["epoch_loss"]]
            want = [r[f"{split}_loss"] for r in records[: epoch + 1]]
            np.testing.assert_allclose(values, want, rtol=1e-6)
            assert [s for s, _ in points["epoch_perplexity"]] == ends
        batch_steps = [s for s, _ in train_points["batch_loss"]]
        assert batch_steps == list(range(10, ends[-1] + 1, 10))
        assert [s for s, _ in train_points["batch_learning_rate"]] == batch_steps
        assert train_points["epoch_learning_rate"][-1][1] == pytest.approx(logs["lr"])
        assert "batch_loss" not in validation_points
    assert len(list((tmp_path / "tensorboard" / "train").iterdir())) == 1


def test_a_resumed_run_appends_without_repeating_steps(corpus, tiny, tmp_path):
    pytest.importorskip("tensorboard")
    config = dataclasses.replace(tiny, epochs=3)
    folder = tmp_path / "tensorboard"
    crashing = _Steps(folder, crash_at=(1, 24))  # in epoch 2, after the points of step 10s
    with pytest.raises(_Crash):
        _quiet_run(config, corpus, tmp_path, [crashing], every=5)
    first = crashing.epoch_ends[0]
    resumed = _Steps(folder)
    _quiet_run(config, corpus, tmp_path, [resumed], every=5, resume=True)
    train_points, validation_points = (
        read_scalars(folder / "train"),
        read_scalars(folder / "validation"),
    )
    ends = [first, *(first + n for n in resumed.epoch_ends)]  # epochs differ in steps
    assert [s for s, _ in train_points["batch_loss"]] == list(range(5, ends[-1] + 1, 5))
    for points in (train_points, validation_points):
        assert [s for s, _ in points["epoch_loss"]] == ends
    assert len(list((folder / "train").iterdir())) == 2  # one file per process


def test_learning_curves_png(tmp_path):
    path = tmp_path / "curves.png"
    plot_learning_curves(path, RECORDS, "a run")
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
    assert [p.name for p in tmp_path.iterdir()] == ["curves.png"]


def _drawn(figure):
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(figure).draw()
    (axes,) = figure.axes
    ticks = [float(t) for t in axes.get_xticks() if axes.get_xlim()[0] <= t <= axes.get_xlim()[1]]
    labels = [t.get_text() for t in axes.get_yticklabels() if t.get_text()]
    legend = [t.get_text() for t in axes.get_legend().get_texts()]
    return axes, ticks, labels, legend


def _records(epochs, averaging_from):
    return [
        {
            "epoch": e,
            "train_ppl": 60 + 400 * math.exp(-e / 60),
            "val_ppl": 66 + 420 * math.exp(-e / 60),
            "averaging": e >= averaging_from,
        }
        for e in range(1, epochs + 1)
    ]


def test_learning_curves_read_well_after_one_epoch_and_after_500():
    from awd_lstm.run_logs import learning_curves_figure

    axes, ticks, labels, legend = _drawn(learning_curves_figure(_records(1, 9)))
    assert ticks == [1.0]  # integer epochs, not 0.96 ... 1.04
    assert axes.get_yscale() == "linear"  # one point: nothing for a log scale to show
    assert all(re.fullmatch(r"[0-9]+(\.[0-9]+)?", label) for label in labels), labels
    assert legend == [
        "train",
        "validation",
        "best validation 479.06 (epoch 1)",
    ]  # 66 + 420 exp(-1/60)

    axes, ticks, labels, legend = _drawn(learning_curves_figure(_records(500, 300)))
    assert ticks and all(t == int(t) for t in ticks) and len(ticks) <= 12
    assert axes.get_yscale() == "log"
    # Plain numbers on the log scale (no 10^2 or 6 x 10^1), several of them.
    assert len(labels) >= 4 and all(re.fullmatch(r"[0-9]+", label) for label in labels), labels
    assert "averaging (NT-ASGD) from epoch 300" in legend
    (line,) = [line for line in axes.get_lines() if line.get_linestyle() == "--"]
    assert list(line.get_xdata()) == [299.5, 299.5]
    assert axes.get_ylabel() == "Perplexity (log scale)"
    curves = [line for line in axes.get_lines() if line.get_label() == "train"]
    assert curves[0].get_marker() in ("None", "", None)  # no dots on 500 points


def test_plot_compares_runs(run, tmp_path, capsys):
    import shutil

    from awd_lstm.cli import main
    from awd_lstm.run_logs import runs_figure

    copies = []
    for name in ("a", "b"):  # two runs of one name: labelled by their paths
        copies.append(tmp_path / name / "synthetic")
        shutil.copytree(run, copies[-1])
    out = tmp_path / "both.png"
    assert main(["plot", *map(str, copies), "--out", str(out), "--title", "two"]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert capsys.readouterr().out.strip() == f"wrote {out}"
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    _, _, _, legend = _drawn(runs_figure([("a", records), ("b", records)]))
    assert legend[:2] == ["a", "b"]
    (copies[1] / "metrics.jsonl").unlink()
    assert main(["plot", str(copies[1]), "--out", str(out)]) == 2
    assert "has no completed epoch yet" in capsys.readouterr().err
    assert main(["plot", str(copies[0]), "--out", str(tmp_path / "x.jpg")]) == 2
    assert "--out must end with .png" in capsys.readouterr().err


def test_progress_in_a_file_is_plain_lines(capsys):
    import io

    from awd_lstm.progress import Progress

    log = io.StringIO()  # not a terminal
    progress = Progress(1000, "token", stream=log, stateful_metrics=["loss"])
    for done in range(0, 1001, 50):
        progress.update(done, [("loss", 4.25)])
    lines = log.getvalue().splitlines()
    assert len(lines) == 10  # every 10%, the last at the end
    assert lines[0].startswith(" 10% 100/1,000 tokens, loss 4.25, ")
    assert lines[-1].startswith("100% 1,000/1,000 tokens")
    assert "\r" not in log.getvalue() and "\x1b" not in log.getvalue()
    quiet = io.StringIO()
    Progress(10, enabled=False, stream=quiet).update(10)
    assert quiet.getvalue() == "" and capsys.readouterr().out == ""
