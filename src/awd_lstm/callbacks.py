"""The reference recipe's training loop, part by part, as Keras callbacks.

`awd_lstm.training.train` runs its epochs with these, in this order, around the
callbacks a user passes:

1. `keras.callbacks.LearningRateScheduler(step_decay(when))`: the learning-rate drop;
2. `SegmentScaledLearningRate`: each step's rate scaled by its segment's length;
3. `AveragedValidation`: the validation loss of the weights NT-ASGD gives, and the
   best of them kept;
4. `awd_lstm.optimizers.NonMonotoneTrigger`: averaging switched on (training) or the
   run stopped (fine-tuning) by the non-monotone rule;
5. `EpochRecords`: the epoch's record (perplexities, rate, speed), into the logs;
6. `TensorBoardScalars`: the TensorBoard scalars, every few steps and per epoch;
7. the user's callbacks, which see those logs;
8. `StopRules`: the epoch limit and the time limit;
9. `RunCheckpoint`: what a resumed run continues from;
10. `RunLogs`: `metrics.jsonl`, the learning curves, the epoch's line;
11. `StopOnNaN`: a non-finite loss ends the run with `FloatingPointError`.

The loop gives each `on_train_batch_begin` the step's segment length as
`logs["seq_len"]`, and each `on_epoch_end` the training loss as `logs["loss"]`.
A callback with `get_state()` and `set_state(state)` (JSON values) has its state
kept in the run's checkpoint; so do Keras' `EarlyStopping` and `ReduceLROnPlateau`
(their counters and best value; not `EarlyStopping`'s best weights), so a resumed
run stops where an uninterrupted one would.
"""

import json
import math
import os
import time

import keras

from awd_lstm import checkpoints, recipe
from awd_lstm._files import write_text_atomic
from awd_lstm._validation import check_non_negative_int, check_positive_int
from awd_lstm.run_logs import TRAIN, VALIDATION, ScalarWriter, plot_learning_curves
from awd_lstm.runs import CURVES, METRICS


def _current_rate(model):
    return float(keras.ops.convert_to_numpy(model.optimizer.learning_rate))


class SegmentScaledLearningRate(keras.callbacks.Callback):
    """Variable-length BPTT's step size (Merity et al. 2017, section 4.1): each step's
    learning rate is the epoch's base rate times `seq_len / bptt`, `seq_len` the
    step's segment length (`logs["seq_len"]` of `on_train_batch_begin`). The base
    rate is the one the epoch starts with (after every `on_epoch_begin`); it is put
    back, and into the logs as `lr`, at the epoch's end.

    Args:
        bptt: The base segment length (70).
    """

    def __init__(self, bptt):
        super().__init__()
        self.bptt = check_positive_int("bptt", bptt)
        self.base_lr = None

    def on_epoch_begin(self, epoch, logs=None):
        self.base_lr = None

    def on_train_batch_begin(self, batch, logs=None):
        length = (logs or {}).get("seq_len")
        if length is None:
            raise ValueError(
                "SegmentScaledLearningRate needs each step's segment length as "
                "logs['seq_len'] in on_train_batch_begin, which awd_lstm.training.train gives"
            )
        if self.base_lr is None:
            self.base_lr = _current_rate(self.model)
        self.model.optimizer.learning_rate.assign(self.base_lr * length / self.bptt)

    def on_epoch_end(self, epoch, logs=None):
        if self.base_lr is not None:
            self.model.optimizer.learning_rate.assign(self.base_lr)
            if logs is not None:
                logs["lr"] = self.base_lr


class AveragedValidation(keras.callbacks.Callback):
    """After each epoch, the validation loss of the weights NT-ASGD gives (the
    averages once it averages, `recipe.evaluation_weights`), scored by `evaluator`
    (a stateful model of the validation batch size) the reference's way; adds
    `val_loss`, `val_ppl` (and `val_bpc`) to the logs and writes the weights to
    `best_path` whenever they are the best so far.

    Args:
        evaluator: The evaluation model (`recipe.build_model(config, V, 10)`).
        ids: The validation split's token ids.
        bptt: Segment length of the evaluation.
        level: `"word"` or `"char"` (which adds bits per character).
        best_path: Where the best weights go (`best.weights.h5`); `None`: nowhere.
    """

    def __init__(self, evaluator, ids, bptt, level="word", best_path=None):
        super().__init__()
        self.evaluator = evaluator
        self.ids = ids
        self.bptt = bptt
        self.level = level
        self.best_path = best_path
        self.best = None

    def score(self, weight_values):
        """The validation loss of `weight_values` (one per trainable variable)."""
        recipe.copy_weights(weight_values, self.evaluator)
        return recipe.evaluate(self.evaluator, self.ids, self.bptt)

    def keep_if_best(self, loss):
        """Writes the evaluator's weights to `best_path` if `loss` is the lowest yet."""
        if self.best is None or loss < self.best:
            self.best = loss
            if self.best_path is not None:
                checkpoints.save_weights(self.evaluator, self.best_path)

    def on_epoch_end(self, epoch, logs=None):
        loss = self.score(recipe.evaluation_weights(self.model))
        if logs is not None:
            logs.update(recipe.loss_summary("val", loss, self.level))
        self.keep_if_best(loss)

    def get_state(self):
        return {"best": self.best}

    def set_state(self, state):
        self.best = state["best"]


class EpochRecords(keras.callbacks.Callback):
    """The run's epoch records: after each epoch, `{"epoch" (1-based), "train_loss",
    "train_ppl", "val_loss", "val_ppl" (and `_bpc` at character level), "lr" (the
    base rate), "averaging" (whether NT-ASGD averaged during the epoch),
    "tokens_per_sec", "seconds"}`, appended to `records` and merged into the logs.
    `tokens_per_sec` is the training speed: the tokens trained on
    (`logs["tokens"]`) over the time of the training steps (`logs["train_seconds"]`;
    without it, the epoch's); `seconds`, the epoch's time, from its `on_epoch_begin`
    to this callback, validation included. Both are taken out of the logs.
    """

    def __init__(self, level="word"):
        super().__init__()
        self.level = level
        self.records = []
        self.seconds = 0.0
        self.start_time = time.time()
        self._started = None
        self._averaging = False

    def on_epoch_begin(self, epoch, logs=None):
        self._started = time.perf_counter()
        self._averaging = bool(getattr(self.model.optimizer, "averaging", False))

    def on_epoch_end(self, epoch, logs=None):
        logs = logs if logs is not None else {}
        seconds = time.perf_counter() - self._started
        tokens = logs.pop("tokens", None)  # the recipe's loop gives it; `fit` does not
        skipped = logs.pop("skipped_steps", None)  # the loop's, with on_nan="skip-batch"
        train_seconds = logs.pop("train_seconds", seconds)
        if "val_loss" not in logs:
            raise ValueError(
                "EpochRecords needs the epoch's validation loss, logs['val_loss'] (from an "
                "AveragedValidation before it, or fit's validation_data)"
            )
        record = {
            "epoch": epoch + 1,
            **recipe.loss_summary("train", logs["loss"], self.level),
            **(
                recipe.loss_summary("val", logs["val_loss"], self.level)
                if "val_loss" in logs
                else {}
            ),
            "lr": logs["lr"] if "lr" in logs else _current_rate(self.model),
            "averaging": self._averaging,
            "tokens_per_sec": tokens / train_seconds if tokens is not None else None,
            "seconds": seconds,
        }
        if skipped is not None:
            record["skipped_steps"] = skipped
        self.records.append(record)
        self.seconds += seconds
        logs.update({k: v for k, v in record.items() if k != "epoch"})  # Keras passes it apart

    def get_state(self):
        return {"records": self.records, "seconds": self.seconds, "start_time": self.start_time}

    def set_state(self, state):
        self.records = list(state["records"])
        self.seconds = state["seconds"]
        self.start_time = state["start_time"]


class StopRules(keras.callbacks.Callback):
    """Ends the run after `epochs` epochs, or after the epoch after which another one
    (as long as the last) would pass `max_seconds` of training (`records`: the
    `EpochRecords` whose times count); `reason` says why it stopped (also when a
    callback before it stopped training, or the `trigger` did)."""

    def __init__(self, epochs, records, max_seconds=None, trigger=None):
        super().__init__()
        self.epochs = epochs
        self.records = records
        self.max_seconds = max_seconds
        self.trigger = trigger
        self.reason = None

    def on_epoch_end(self, epoch, logs=None):
        last = self.records.records[-1]["seconds"] if self.records.records else 0.0
        if self.trigger is not None and self.trigger.stopped_epoch == epoch:
            self.reason = "the non-monotone rule fired"
        elif self.model.stop_training:
            self.reason = "a callback stopped training"
        elif epoch + 1 >= self.epochs:
            self.reason = f"{self.epochs} epoch{'s' if self.epochs != 1 else ''} done"
        elif self.max_seconds is not None and self.records.seconds + last > self.max_seconds:
            self.reason = f"another epoch would pass the time limit of {self.max_seconds:.0f} s"
        if self.reason is not None:
            self.model.stop_training = True


_KERAS_CALLBACK_STATE = {
    keras.callbacks.EarlyStopping: ("wait", "stopped_epoch", "best", "best_epoch"),
    keras.callbacks.ReduceLROnPlateau: ("wait", "cooldown_counter", "best"),
}


def _plain(value):
    return float(value) if hasattr(value, "dtype") else value


def callback_state(callback):
    """The JSON state of `callback` a checkpoint keeps, or `None` if it has none."""
    if hasattr(callback, "get_state") and hasattr(callback, "set_state"):
        return callback.get_state()
    for kind, names in _KERAS_CALLBACK_STATE.items():
        if isinstance(callback, kind):
            return {name: _plain(getattr(callback, name, None)) for name in names}
    return None


def set_callback_state(callback, state):
    """Gives `callback` back the state `callback_state` took."""
    if hasattr(callback, "get_state") and hasattr(callback, "set_state"):
        callback.set_state(state)
        return
    for name, value in state.items():
        setattr(callback, name, value)


class RunCheckpoint(keras.callbacks.Callback):
    """Writes the resumable checkpoint after each epoch: the model's weights, the
    optimizer's state, the seed generators' and carried states
    (`checkpoints.save_checkpoint`), and the run's state: `stage`, the number of
    completed epochs, why it stopped (`stop_rules.reason`) and the state of each of
    `stateful` (`{key: callback}`; see `callback_state`)."""

    def __init__(self, path, stage, stateful, stop_rules):
        super().__init__()
        self.path = path
        self.stage = stage
        self.stateful = stateful
        self.stop_rules = stop_rules

    def state(self, epochs_done):
        states = {}
        for key, callback in self.stateful.items():
            state = callback_state(callback)
            if state is not None:
                states[key] = state
        return {
            "stage": self.stage,
            "epoch": epochs_done,
            "stop": self.stop_rules.reason,
            "callbacks": states,
        }

    def on_epoch_end(self, epoch, logs=None):
        checkpoints.save_checkpoint(self.model, self.state(epoch + 1), self.path)

    def restore(self, path):
        """Loads a checkpoint into the model; returns its run state. Call
        `restore_callbacks` with it once `on_train_begin` has run."""
        state = checkpoints.load_checkpoint(self.model, path)
        if state.get("stage") != self.stage:
            raise checkpoints.CheckpointError(
                f"{path} is a {state.get('stage')!r} checkpoint, not {self.stage!r}"
            )
        if "callbacks" not in state:
            # Checkpoints of earlier versions kept the recipe's state at the top.
            try:
                state["callbacks"] = {
                    "validation": {"best": state["best"]},
                    "trigger": {"history": state["history"]},
                    "records": {k: state[k] for k in ("records", "seconds", "start_time")},
                }
            except KeyError as e:
                raise checkpoints.CheckpointError(
                    f"{path} holds a damaged run state: it has no {e}"
                ) from None
        callbacks, stop = state["callbacks"], state.get("stop")
        if not isinstance(callbacks, dict) or not all(
            isinstance(v, dict) for v in callbacks.values()
        ):
            raise checkpoints.CheckpointError(
                f"{path} holds a damaged run state: its callbacks' states must be an object of "
                "objects"
            )
        if stop is not None and not isinstance(stop, str):
            raise checkpoints.CheckpointError(
                f"{path} holds a damaged run state: its stop reason must be a string or null; "
                f"got {stop!r}"
            )
        self.stop_rules.reason = stop
        return state

    def restore_callbacks(self, state):
        for key, callback_state_ in state["callbacks"].items():
            if key in self.stateful:
                try:
                    set_callback_state(self.stateful[key], callback_state_)
                except (KeyError, TypeError, ValueError) as e:
                    raise checkpoints.CheckpointError(
                        f"{self.path} holds a damaged run state: the state of {key!r} does not "
                        f"fit ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})"
                    ) from None


class TensorBoardScalars(keras.callbacks.Callback):
    """The run's TensorBoard scalars (`awd_lstm.run_logs.ScalarWriter`) in `folder`:
    every `every` training steps the step's training loss (`batch_loss`, the
    cross-entropy) and learning rate (`batch_learning_rate`); after each epoch (its
    record in the logs, from `EpochRecords`) `epoch_loss` and `epoch_perplexity` (and
    `epoch_bpc`) of training and validation, the epoch's base learning rate and its
    training tokens per second. Steps count the optimizer's updates, from where a
    resumed run's checkpoint left them; a resumed run hides what a killed one logged
    past its checkpoint.

    Args:
        folder: `RUN/tensorboard`.
        every: Steps between two per-step points (0: per-epoch points only).
    """

    def __init__(self, folder, every=50):
        super().__init__()
        self.folder = folder
        self.every = check_non_negative_int("every", every)
        self.step = 0
        self.writer = None

    def on_train_begin(self, logs=None):
        self.step = int(keras.ops.convert_to_numpy(self.model.optimizer.iterations))
        # After a checkpoint at step S the points up to S stand; from scratch, none do.
        self.writer = ScalarWriter(self.folder, purge_step=self.step + 1 if self.step else 0)

    def start_point(self, val_loss, level="word"):
        """Writes the validation loss of the weights a fine-tuning starts from, at step 0."""
        self.writer.add(
            VALIDATION, _epoch_scalars("val", recipe.loss_summary("val", val_loss, level)), 0
        )

    def on_train_batch_end(self, batch, logs=None):
        self.step += 1
        if self.every and self.step % self.every == 0 and logs:
            loss = logs.get("ce", logs.get("loss"))
            scalars = {"batch_loss": loss, "batch_learning_rate": logs.get("lr")}
            self.writer.add(TRAIN, scalars, self.step)

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        train = {
            **_epoch_scalars("train", logs),
            "epoch_learning_rate": logs.get("lr"),
            "epoch_tokens_per_second": logs.get("tokens_per_sec"),
        }
        self.writer.add(TRAIN, train, self.step)
        self.writer.add(VALIDATION, _epoch_scalars("val", logs), self.step)

    def on_train_end(self, logs=None):
        self.close()

    def close(self):
        if self.writer is not None:
            self.writer.close()
            self.writer = None


def _epoch_scalars(prefix, record):
    names = {"loss": "epoch_loss", "ppl": "epoch_perplexity", "bpc": "epoch_bpc"}
    return {tag: record.get(f"{prefix}_{key}") for key, tag in names.items()}


class RunLogs(keras.callbacks.Callback):
    """After each epoch, rewrites the run's `metrics.jsonl` and learning-curve PNG in
    `folder` from `records` (an `EpochRecords`), then calls `log` with the epoch's
    line."""

    def __init__(self, folder, records, title="", log=print):
        super().__init__()
        self.folder = folder
        self.records = records
        self.title = title
        self.log = log

    def write(self):
        records = self.records.records
        text = "".join(json.dumps(record) + "\n" for record in records)
        write_text_atomic(os.path.join(self.folder, METRICS), text)
        if records:
            plot_learning_curves(os.path.join(self.folder, CURVES), records, self.title)

    def on_epoch_end(self, epoch, logs=None):
        self.write()
        record = self.records.records[-1]
        line = (
            f"epoch {epoch + 1}: train ppl {record['train_ppl']:.2f}, "
            f"valid ppl {record['val_ppl']:.2f}"
        )
        if "val_bpc" in record:
            line += f" ({record['val_bpc']:.3f} bpc)"
        speed = record["tokens_per_sec"]
        if speed is not None:
            line += f"; training {speed:,.0f} tokens/s"
        self.log(f"{line}; {record['seconds']:.0f} s with validation")


class StopOnNaN(keras.callbacks.Callback):
    """Raises `FloatingPointError` when a step's loss (`logs["ce"]`, else
    `logs["loss"]`) is not finite. Keras' `TerminateOnNaN` stops after the step; this
    stops at once, before the weights it produced are validated or saved."""

    def __init__(self):
        super().__init__()
        self.epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        logs = logs or {}
        loss = logs.get("ce", logs.get("loss"))
        if loss is not None and not math.isfinite(loss):
            raise FloatingPointError(
                f"the loss became {loss} at step {batch + 1} of epoch {self.epoch + 1}"
            )


class SkipNonFiniteSteps(keras.callbacks.Callback):
    """For a model whose optimizer skips non-finite steps (`skip_non_finite=True`,
    `awd_lstm.optimizers.SkipsNonFiniteUpdates`): after a skipped step, zeroes the
    model's carried state (the step may have left it NaN), and once more than
    `max_skips` steps of the run have been skipped, raises `FloatingPointError` as
    `StopOnNaN` does. The count is the optimizer's `skipped_updates`, a variable of
    its state, so a resumed run goes on counting."""

    def __init__(self, max_skips):
        super().__init__()
        self.max_skips = max_skips
        self.epoch = 0
        self._seen = 0

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch
        self._seen = self.model.optimizer.skipped

    def on_train_batch_end(self, batch, logs=None):
        skipped = self.model.optimizer.skipped
        if skipped == self._seen:
            return
        self._seen = skipped
        self.model.reset_state()
        if skipped > self.max_skips:
            raise FloatingPointError(
                f"{skipped} steps had a non-finite loss or gradient, more than the "
                f"{self.max_skips} max_skips allows (the last at step {batch + 1} of epoch "
                f"{self.epoch + 1})"
            )
