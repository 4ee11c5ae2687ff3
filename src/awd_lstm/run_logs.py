"""What a run folder shows a person: TensorBoard scalars and a PNG of the learning curves.

TensorBoard: `ScalarWriter` writes with tensorboardX (a maintained writer of
TensorBoard's event files that needs neither TensorFlow nor PyTorch), in Keras'
layout: `RUN/tensorboard/train` and `RUN/tensorboard/validation`, the same tag in
both (`epoch_loss`, `epoch_perplexity`) so that the two curves overlay. Every
scalar's step is the training step (the optimizer's update count), the epoch's at the
step it ended on, so one axis serves the per-step and the per-epoch points. Each
process appends a file of its own to each folder, written and flushed as each point
comes (tensorboardX's synchronous `EventsWriter`: its `SummaryWriter` queues events
for a thread and its `flush` does not wait for them), so a running
`tensorboard --logdir RUN/tensorboard` shows every point at once. A resumed run
starts its files with TensorBoard's restart marker at the step after its checkpoint,
which hides the points a killed run logged past it, so no step is shown twice.

The PNG is redrawn whole from the epoch records after every epoch (atomically).
"""

import glob
import math
import os
import time

from awd_lstm._files import atomic_path

TRAIN, VALIDATION = "train", "validation"


class ScalarWriter:
    """The TensorBoard scalars of a run folder's `tensorboard/` (`folder`).

    Args:
        folder: `RUN/tensorboard`; its `train/` and `validation/` are made.
        purge_step: Points at this step and later, written before (by a run that was
            killed and is now resumed), are hidden (None: none).
    """

    def __init__(self, folder, purge_step=None):
        from tensorboardX.event_file_writer import EventsWriter
        from tensorboardX.proto.event_pb2 import Event, SessionLog

        self._event = Event
        self.writers = {}
        for split in (TRAIN, VALIDATION):
            path = os.path.join(folder, split)
            os.makedirs(path, exist_ok=True)
            # A numbered file per process: two opened in the same second (a quick
            # resume) would otherwise get the same name, and TensorBoard reads the
            # files in name order, which this keeps the order they were written in.
            number = len(glob.glob(os.path.join(path, "events.out.tfevents.*"))) + 1
            writer = EventsWriter(os.path.join(path, "events"), f".{number:04d}")
            if purge_step is not None:
                start = SessionLog(status=SessionLog.START)
                writer.write_event(Event(wall_time=time.time(), step=purge_step, session_log=start))
            writer.flush()
            self.writers[split] = writer

    def add(self, split, scalars, step):
        """Writes `scalars` (`{tag: value}`; non-finite and None values skipped) to
        `split` (`"train"` or `"validation"`) at `step`, and flushes."""
        from tensorboardX.proto.summary_pb2 import Summary
        from tensorboardX.summary import scalar

        values = [
            value
            for tag, number in scalars.items()
            if number is not None and math.isfinite(number)
            for value in scalar(tag, float(number)).value
        ]
        if values:
            event = self._event(wall_time=time.time(), step=step, summary=Summary(value=values))
            self.writers[split].write_event(event)
            self.writers[split].flush()

    def close(self):
        for writer in self.writers.values():
            writer.close()
        self.writers = {}


def plot_learning_curves(path, records, title=""):
    """A PNG of training and validation perplexity per epoch, with the epoch where
    NT-ASGD started averaging and the best validation marked: integer epoch ticks,
    a log scale with plain labels where the perplexities span a factor of 3 or more
    (a linear one below), markers while there are few epochs. It reads well after
    one epoch and after hundreds."""
    _save(learning_curves_figure(records, title), path)


def learning_curves_figure(records, title=""):
    """The `matplotlib.figure.Figure` `plot_learning_curves` draws."""
    figure, axes = _figure(title)
    epochs = [r["epoch"] for r in records]
    style = _line_style(len(epochs))
    axes.plot(epochs, [r["train_ppl"] for r in records], style, ms=3, label="train")
    validation = [r["val_ppl"] for r in records]
    axes.plot(epochs, validation, style, ms=3, label="validation")
    best = min(range(len(validation)), key=validation.__getitem__) if validation else None
    if best is not None:
        axes.plot(
            epochs[best],
            validation[best],
            "*",
            ms=11,
            color="C1",
            mec="black",
            mew=0.5,
            label=f"best validation {validation[best]:.2f} (epoch {epochs[best]})",
        )
    switched = [r["epoch"] for r in records if r.get("averaging")]
    if switched and switched[0] > epochs[0]:
        axes.axvline(
            switched[0] - 0.5,
            color="gray",
            ls="--",
            lw=1,
            label=f"averaging (NT-ASGD) from epoch {switched[0]}",
        )
    _finish(axes, epochs, [r["train_ppl"] for r in records] + validation)
    return figure


def plot_runs(path, runs, metric="val_ppl", title=""):
    """A PNG comparing runs: `metric` (`"val_ppl"` or `"train_ppl"`) per epoch of each
    of `runs` (`(label, records)` pairs), each run's switch to averaging marked on its
    curve."""
    _save(runs_figure(runs, metric, title), path)


def runs_figure(runs, metric="val_ppl", title=""):
    """The `matplotlib.figure.Figure` `plot_runs` draws."""
    figure, axes = _figure(title)
    everything, all_epochs = [], []
    for index, (label, records) in enumerate(runs):
        epochs = [r["epoch"] for r in records]
        values = [r[metric] for r in records]
        color = f"C{index % 10}"
        axes.plot(epochs, values, _line_style(len(epochs)), ms=3, color=color, label=label)
        switched = [i for i, r in enumerate(records) if r.get("averaging")]
        if switched and switched[0] > 0:
            i = switched[0]
            axes.plot(epochs[i], values[i], "D", ms=5, color=color, mec="black", mew=0.5)
        everything += values
        all_epochs += epochs
    if any(r.get("averaging") for _, records in runs for r in records):
        axes.plot([], [], "D", ms=5, color="gray", mec="black", mew=0.5, label="averaging starts")
    _finish(axes, all_epochs, everything, "validation" if metric == "val_ppl" else "training")
    return figure


def _figure(title):
    # A bare Figure renders with Agg and leaves pyplot's global backend alone.
    from matplotlib.figure import Figure

    figure = Figure(figsize=(7, 4.2), dpi=100)
    axes = figure.add_subplot()
    if title:
        axes.set_title(title)
    return figure, axes


def _line_style(epochs):
    return "o-" if epochs <= 40 else "-"


def _finish(axes, epochs, values, which=""):
    from matplotlib import ticker

    axes.set_xlabel("epoch")
    axes.xaxis.set_major_locator(ticker.MaxNLocator(integer=True, min_n_ticks=1))
    if epochs:
        low, high = min(epochs), max(epochs)
        pad = max(0.5, 0.03 * (high - low))
        axes.set_xlim(low - pad, high + pad)
    values = [v for v in values if v is not None and math.isfinite(v) and v > 0]
    label = f"{which} perplexity".strip()
    if values and max(values) / min(values) >= 3:
        axes.set_yscale("log")
        # Plain numbers (60, 100, 200, 500), not powers of ten.
        subs = (1.0, 1.5, 2.0, 3.0, 5.0, 7.0) if max(values) / min(values) < 10 else (1.0, 2.0, 5.0)
        axes.yaxis.set_major_locator(ticker.LogLocator(subs=subs))
        axes.yaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))
        axes.yaxis.set_minor_formatter(ticker.NullFormatter())
        label += " (log scale)"
    else:
        axes.yaxis.set_major_formatter(ticker.ScalarFormatter(useOffset=False))
    axes.set_ylabel(label[0].upper() + label[1:])
    axes.grid(True, which="major", alpha=0.3)
    axes.legend(fontsize="small")


def _save(figure, path):
    figure.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        figure.savefig(tmp, format="png")
