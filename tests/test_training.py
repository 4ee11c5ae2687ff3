"""The training loop: segment-length learning rates, evaluation, NT-ASGD, outputs."""

import dataclasses
import json
import math

import keras
import numpy as np
import pytest

from awd_lstm.training import TrainingConfig, build_model, copy_weights, evaluate, train
from tests.conftest import to_numpy
from tests.test_language_model import _cross_entropy, _numpy_forward

TINY = TrainingConfig(
    embedding_size=8,
    hidden_size=16,
    num_layers=2,
    embedding_dropout=0.0,
    input_dropout=0.1,
    hidden_dropout=0.1,
    output_dropout=0.1,
    weight_dropout=0.2,
    lr=20.0,
    epochs=3,
    batch_size=4,
    eval_batch_size=2,
    bptt=10,
    length_quantum=5,
    nonmono=1,
    seed=3,
)


def test_evaluation_carries_state_over_the_split_and_weights_by_length(rng, corpus):
    model = build_model(TINY, len(corpus.vocab), batch_size=2)
    ids = corpus.valid[:201]
    short = evaluate(model, ids, bptt=7)
    assert evaluate(model, ids, bptt=100) == pytest.approx(short, rel=1e-5)
    # The same as one pass over each whole stream, in NumPy.
    streams = ids[:200].reshape(2, 100)
    logits, _ = _numpy_forward(model, streams[:, :-1])
    assert short == pytest.approx(_cross_entropy(logits, streams[:, 1:]), rel=1e-5)


def test_learning_rate_follows_the_segment_length(corpus, tmp_path, monkeypatch):
    from awd_lstm.models import AWDLSTMLanguageModel

    seen = []
    original = AWDLSTMLanguageModel.train_on_batch

    def recording(self, x, y, **kwargs):
        seen.append((x.shape[1], float(to_numpy(self.optimizer.learning_rate))))
        return original(self, x, y, **kwargs)

    monkeypatch.setattr(AWDLSTMLanguageModel, "train_on_batch", recording)
    train(
        dataclasses.replace(TINY, epochs=1),
        corpus,
        str(tmp_path),
        log=lambda _: None,
        progress=False,
    )
    assert len({length for length, _ in seen}) > 1
    for length, lr in seen:
        assert lr == pytest.approx(TINY.lr * length / TINY.bptt, rel=1e-6)
        assert length % TINY.length_quantum == 0


def test_training_lowers_the_loss_and_writes_its_outputs(corpus, tmp_path):
    lines = []
    # A step size this tiny model learns with steadily (at TINY's 20 its validation
    # loss wanders by a tenth of a nat from epoch to epoch, whatever the seed).
    config = dataclasses.replace(TINY, lr=5.0)
    model, records = train(config, corpus, str(tmp_path), log=lines.append, progress=False)
    assert [r["epoch"] for r in records] == [1, 2, 3]
    assert records[-1]["val_loss"] < records[0]["val_loss"]
    assert records[0]["val_loss"] < math.log(len(corpus.vocab))
    written = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert written == records
    keys = {
        "epoch",
        "train_loss",
        "train_ppl",
        "val_loss",
        "val_ppl",
        "lr",
        "averaging",
        "tokens_per_sec",
        "seconds",
    }
    assert keys <= set(written[0])
    assert (tmp_path / "best.weights.h5").exists()
    assert not list(tmp_path.glob(".tmp-*"))
    assert (tmp_path / "learning_curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for split in ("train", "validation"):
        assert len(list((tmp_path / "tensorboard" / split).glob("events.out.tfevents.*"))) == 1
    best = min(r["val_loss"] for r in records)
    assert evaluate(model, corpus.valid, TINY.bptt) == pytest.approx(best, rel=1e-5)


def test_nt_asgd_switches_by_the_rule_and_evaluates_the_average(corpus, tmp_path, monkeypatch):
    import awd_lstm.recipe as recipe

    # Scripted validation losses: with nonmono=1 the rule first holds at epoch 4
    # (2.6 > min(3.0, 2.0)); from epoch 5 on, validation uses the averaged weights.
    scripted = iter([3.0, 2.0, 2.5, 2.6, 2.7])
    evaluated_with = []
    real_copy = recipe.copy_weights

    def scripted_evaluate(model, ids, bptt):
        return next(scripted)

    def recording_copy(values, target):
        evaluated_with.append(all(v.path.endswith("_average") for v in values))
        return real_copy(values, target)

    monkeypatch.setattr(recipe, "evaluate", scripted_evaluate)
    monkeypatch.setattr(recipe, "copy_weights", recording_copy)
    lines = []
    _, records = train(
        dataclasses.replace(TINY, epochs=5),
        corpus,
        str(tmp_path),
        log=lines.append,
        progress=False,
        test=False,  # the scripted losses are the validations'
    )
    # `averaging`: whether the epoch itself trained and validated with the average.
    assert [r["averaging"] for r in records] == [False, False, False, False, True]
    assert evaluated_with == [False, False, False, False, True]
    assert any(line.startswith("epoch 4: switching to averaged SGD") for line in lines)


def test_copy_weights_between_batch_sizes(corpus):
    a = build_model(TINY, len(corpus.vocab), batch_size=4)
    b = build_model(dataclasses.replace(TINY, seed=9), len(corpus.vocab), batch_size=1)
    copy_weights(a.trainable_variables, b)
    for x, y in zip(a.trainable_variables, b.trainable_variables):
        np.testing.assert_array_equal(to_numpy(x), to_numpy(y))


class _Killed(Exception):
    """Stands for the process dying at a chosen moment."""


def _comparable(records):
    return [{k: v for k, v in r.items() if k not in ("seconds", "tokens_per_sec")} for r in records]


def _final_weights(run_dir):
    import h5py

    with h5py.File(run_dir / "best.weights.h5") as f:
        arrays = []
        f.visititems(
            lambda name, obj: arrays.append((name, obj[()])) if hasattr(obj, "shape") else None
        )
    return arrays


# The learning rate drops after epoch 2 (`when`): a resumed run must carry it over.
RESUMED = dataclasses.replace(TINY, epochs=3, when=(2,))


def _switch_after_epoch_2(patch):
    # NT-ASGD switches after epoch 2, so the averaging state is part of what resumes.
    import awd_lstm.optimizers as optimizers

    patch.setattr(optimizers, "should_trigger", lambda history, value, n: len(history) == 1)


@pytest.fixture(scope="module")
def uninterrupted(corpus, tmp_path_factory):
    run = tmp_path_factory.mktemp("uninterrupted")
    with pytest.MonkeyPatch.context() as patch:
        _switch_after_epoch_2(patch)
        _, records = train(RESUMED, corpus, str(run), log=lambda _: None, progress=False)
    assert [r["averaging"] for r in records] == [False, False, True]
    assert [r["lr"] for r in records] == pytest.approx([TINY.lr, TINY.lr, TINY.lr / 10])
    return run, records


@pytest.mark.parametrize("kill_at", ["after_epoch", "mid_epoch", "in_checkpoint_write"])
def test_a_resumed_run_ends_exactly_like_an_uninterrupted_one(
    corpus, uninterrupted, tmp_path, monkeypatch, kill_at
):
    import awd_lstm.checkpoints as checkpoints

    config = RESUMED
    _switch_after_epoch_2(monkeypatch)
    expected = uninterrupted[1]

    run = tmp_path / "b"
    with monkeypatch.context() as patch:
        if kill_at == "after_epoch":

            def log(line):
                if line.startswith("epoch 2: train"):
                    raise _Killed

            killer = {"log": log}
        else:
            killer = {"log": lambda _: None}
            if kill_at == "mid_epoch":
                killer = {"log": _kill_steps_after(patch, "epoch 2: train", 3)}
            else:
                original_save = checkpoints.save_checkpoint

                def dying_save(model, state, path):
                    if state["epoch"] == 2:
                        import h5py

                        # Dies half-way: Keras' part written, the resume state not.
                        patch.setattr(h5py.File, "create_group", _raise_killed)
                    return original_save(model, state, path)

                patch.setattr(checkpoints, "save_checkpoint", dying_save)
        with pytest.raises(_Killed):
            train(config, corpus, str(run), progress=False, **killer)
    assert not list(run.glob(".tmp-*")) or kill_at == "in_checkpoint_write"
    # What survives is the checkpoint of a completed epoch.
    with h5py_state(run / "checkpoint.weights.h5") as state:
        assert state["epoch"] == (2 if kill_at != "in_checkpoint_write" else 1)
    lines = []
    _, resumed = train(config, corpus, str(run), log=lines.append, progress=False, resume=True)
    assert lines[0].startswith("resuming after epoch")
    assert _comparable(resumed) == _comparable(expected)
    written = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert _comparable(written) == _comparable(expected)
    for (name_a, a), (name_b, b) in zip(_final_weights(uninterrupted[0]), _final_weights(run)):
        assert name_a == name_b
        np.testing.assert_array_equal(a, b)
    assert not list(run.glob(".tmp-*"))


def _kill_steps_after(patch, prefix, step, poison=False):
    """A `log` function: once it sees a line starting with `prefix`, the `step`-th
    training step after it dies (or, with `poison`, returns a NaN loss)."""
    from awd_lstm.models import AWDLSTMLanguageModel

    seen = {"armed": False, "steps": 0}
    original = AWDLSTMLanguageModel.train_on_batch

    def patched(self, *args, **kwargs):
        if seen["armed"]:
            seen["steps"] += 1
            if seen["steps"] == step and not poison:
                raise _Killed
        result = original(self, *args, **kwargs)
        if poison and seen["armed"] and seen["steps"] >= step:
            return {**result, "ce": float("nan")}
        return result

    def log(line):
        if line.startswith(prefix):
            seen["armed"] = True

    patch.setattr(AWDLSTMLanguageModel, "train_on_batch", patched)
    return log


def _raise_killed(*args, **kwargs):
    raise _Killed


class h5py_state:
    def __init__(self, path):
        import h5py

        self.file = h5py.File(path, "r")

    def __enter__(self):
        return json.loads(self.file["awd_lstm_resume"].attrs["state"])

    def __exit__(self, *exc):
        self.file.close()


def test_finetuning_averages_from_the_start_and_stops_when_the_rule_fires(
    corpus, tmp_path, monkeypatch
):
    import awd_lstm.recipe as recipe
    from awd_lstm.training import finetune

    model = build_model(TINY, len(corpus.vocab), batch_size=4)
    start = [to_numpy(v) for v in model.trainable_variables]
    # The starting weights score 3.0; with nonmono=1 the rule fires at the third
    # epoch (2.9 > min(2.8)); the best stays 2.8.
    scripted = iter([3.0, 2.8, 2.7, 2.9, 1.0])
    monkeypatch.setattr(recipe, "evaluate", lambda *args, **kwargs: next(scripted))
    lines = []
    _, records = finetune(
        dataclasses.replace(TINY, epochs=10, nonmono=1),
        corpus,
        str(tmp_path),
        start,
        log=lines.append,
        progress=False,
    )
    assert [r["val_loss"] for r in records] == [2.8, 2.7, 2.9]
    assert all(r["averaging"] for r in records)
    assert "the non-monotone rule fired" in next(x for x in lines if "stopped after" in x)


def test_finetuning_never_makes_the_checkpoint_worse(corpus, uninterrupted, tmp_path):
    from awd_lstm.training import finetune, load_trained_weights, split_loss

    vocab_size = len(corpus.vocab)
    weights = load_trained_weights(TINY, vocab_size, str(uninterrupted[0] / "best.weights.h5"))
    start = split_loss(TINY, vocab_size, corpus.valid, TINY.eval_batch_size, weights)
    tuned, records = finetune(
        dataclasses.replace(TINY, epochs=1, lr=500.0),  # steps far too large: no improvement
        corpus,
        str(tmp_path),
        weights,
        log=lambda _: None,
        progress=False,
    )
    assert records[0]["val_loss"] > start
    assert evaluate(tuned, corpus.valid, TINY.bptt) == pytest.approx(start, rel=1e-6)


def test_learning_rate_steps_down_after_the_when_epochs(corpus, tmp_path):
    config = dataclasses.replace(TINY, optimizer="adam", lr=2e-3, when=(1, 2), epochs=3)
    assert [config.learning_rate(e) for e in (1, 2, 3, 4)] == pytest.approx(
        [2e-3, 2e-4, 2e-5, 2e-5]
    )
    _, records = train(config, corpus, str(tmp_path), log=lambda _: None, progress=False)
    assert [r["lr"] for r in records] == pytest.approx([2e-3, 2e-4, 2e-5])
    assert records[-1]["val_loss"] < math.log(len(corpus.vocab))
    assert not any(r["averaging"] for r in records)


def test_a_time_limit_stops_at_an_epoch_end(corpus, tmp_path):
    lines = []
    _, records = train(
        dataclasses.replace(TINY, epochs=50),
        corpus,
        str(tmp_path),
        log=lines.append,
        progress=False,
        max_seconds=1e-3,
    )
    assert len(records) == 1
    assert "time limit" in next(x for x in lines if "stopped after" in x)


def test_a_non_finite_loss_stops_with_the_last_checkpoint_kept(corpus, tmp_path, monkeypatch):
    config = dataclasses.replace(TINY, epochs=3)
    log = _kill_steps_after(monkeypatch, "epoch 1: train", 3, poison=True)
    with pytest.raises(FloatingPointError, match="the loss became nan at step 3 of epoch 2; "):
        train(config, corpus, str(tmp_path), log=log, progress=False)
    with h5py_state(tmp_path / "checkpoint.weights.h5") as state:
        assert state["epoch"] == 1
    assert (tmp_path / "best.weights.h5").exists()
    assert len((tmp_path / "metrics.jsonl").read_text().splitlines()) == 1


def test_config_checks_the_optimizer_and_the_decay_epochs():
    with pytest.raises(
        ValueError, match="optimizer must be one of ntasgd, sgd, adam, rmsprop; got 'adagrad'"
    ):
        dataclasses.replace(TINY, optimizer="adagrad")
    for bad in ((0,), "5", 5, (2.5,), (True,)):
        with pytest.raises(ValueError, match="when must be a list of positive epoch numbers"):
            dataclasses.replace(TINY, when=bad)
    # From JSON (a list, any order) to the same frozen config.
    config = TrainingConfig(**{**dataclasses.asdict(TINY), "when": [40, 30]})
    assert config.when == (30, 40) and config == dataclasses.replace(TINY, when=(30, 40))


# -- Keras callbacks in the recipe's loop --------------------------------------------


class _Recorder:
    """A Keras callback that records the hooks it is called with."""

    def __new__(cls):
        import keras

        class Recorder(keras.callbacks.Callback):
            def __init__(self):
                super().__init__()
                self.calls = []

            def on_train_begin(self, logs=None):
                self.calls.append(("train_begin", None, None))

            def on_epoch_begin(self, epoch, logs=None):
                self.calls.append(("epoch_begin", epoch, None))

            def on_epoch_end(self, epoch, logs=None):
                self.calls.append(("epoch_end", epoch, dict(logs)))

            def on_train_batch_end(self, batch, logs=None):
                self.calls.append(("batch_end", batch, dict(logs)))

            def on_train_end(self, logs=None):
                self.calls.append(("train_end", None, dict(logs)))

        return Recorder()


def test_user_callbacks_get_keras_hooks_with_the_epoch_records(corpus, tmp_path):
    import keras

    recorder = _Recorder()
    csv = tmp_path / "log.csv"
    config = dataclasses.replace(TINY, epochs=2)
    _, records = train(
        config,
        corpus,
        str(tmp_path / "run"),
        log=lambda _: None,
        progress=False,
        test=False,
        callbacks=[recorder, keras.callbacks.CSVLogger(str(csv))],
    )
    kinds = [call[0] for call in recorder.calls]
    assert kinds[0] == "train_begin" and kinds[-1] == "train_end"
    assert [c[1] for c in recorder.calls if c[0] == "epoch_begin"] == [0, 1]
    ends = [c for c in recorder.calls if c[0] == "epoch_end"]
    for (_, epoch, logs), record in zip(ends, records):
        assert logs["loss"] == record["train_loss"] and logs["val_loss"] == record["val_loss"]
        assert "epoch" not in logs and record["epoch"] == epoch + 1
    batches = [c for c in recorder.calls if c[0] == "batch_end"]
    assert len(batches) > 2 and all(np.isfinite(c[2]["loss"]) and c[2]["lr"] > 0 for c in batches)
    assert batches[0][1] == 0
    rows = [row.split(",") for row in csv.read_text().splitlines()]
    header = rows[0]
    assert len(rows) == 3 and header.count("epoch") == 1 and header[0] == "epoch"
    assert [int(r[0]) for r in rows[1:]] == [0, 1]  # Keras' 0-based epochs
    for key in ("loss", "val_loss", "val_ppl", "lr"):
        column = header.index(key)
        want = [r["train_loss" if key == "loss" else key] for r in records]
        assert [float(r[column]) for r in rows[1:]] == pytest.approx(want)


def test_early_stopping_ends_the_run_after_its_epoch(corpus, tmp_path, monkeypatch):
    import keras

    from awd_lstm import recipe

    scripted = iter([3.0, 3.5, 4.0, 4.5, 5.0])
    monkeypatch.setattr(recipe, "evaluate", lambda model, ids, bptt, **kw: next(scripted))
    lines = []
    _, records = train(
        dataclasses.replace(TINY, epochs=5, nonmono=5),
        corpus,
        str(tmp_path),
        log=lines.append,
        progress=False,
        test=False,
        callbacks=[keras.callbacks.EarlyStopping(monitor="val_loss", patience=1)],
    )
    assert [r["val_loss"] for r in records] == [3.0, 3.5]  # one epoch without progress
    assert "a callback stopped training" in next(x for x in lines if "stopped after" in x)


def test_a_learning_rate_schedule_sets_the_epochs_base_rate(corpus, tmp_path):
    import keras

    halve_later = keras.callbacks.LearningRateScheduler(
        lambda epoch, lr: lr if epoch == 0 else lr / 2
    )
    steps = []

    class Warmup(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            if batch == 0:
                self.model.optimizer.learning_rate.assign(1e-3)

        def on_train_batch_end(self, batch, logs=None):
            steps.append((batch, logs["lr"]))

    _, records = train(
        dataclasses.replace(TINY, epochs=3, optimizer="sgd", when=(2,)),
        corpus,
        str(tmp_path),
        log=lambda _: None,
        progress=False,
        test=False,
        callbacks=[halve_later, Warmup()],
    )
    # As in Keras' fit, the schedule compounds; `when` divides by 10 after epoch 2.
    assert [r["lr"] for r in records] == pytest.approx([TINY.lr, TINY.lr / 2, TINY.lr / 40])
    assert all(lr == pytest.approx(1e-3) for batch, lr in steps if batch == 0)
    assert all(lr > 1e-2 for batch, lr in steps if batch > 0)


def test_terminate_on_nan_sees_the_bad_step(corpus, tmp_path, monkeypatch, capsys):
    import keras

    from awd_lstm.models import AWDLSTMLanguageModel

    original = AWDLSTMLanguageModel.train_on_batch
    steps = []

    def diverging(self, x, y, **kwargs):
        result = original(self, x, y, **kwargs)
        steps.append(1)
        return {**result, "loss": float("nan"), "ce": float("nan")} if len(steps) > 2 else result

    monkeypatch.setattr(AWDLSTMLanguageModel, "train_on_batch", diverging)
    with pytest.raises(FloatingPointError, match="the loss became nan at step 3 of epoch 1"):
        train(
            TINY,
            corpus,
            str(tmp_path),
            log=lambda _: None,
            progress=False,
            callbacks=[keras.callbacks.TerminateOnNaN()],
        )
    assert "Invalid loss" in capsys.readouterr().out


def test_a_resumed_run_keeps_its_callbacks_state(corpus, tmp_path, monkeypatch):
    import keras

    from awd_lstm import checkpoints, recipe

    class Counter(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.epochs = 0

        def on_epoch_end(self, epoch, logs=None):
            self.epochs += 1

        def get_state(self):
            return {"epochs": self.epochs}

        def set_state(self, state):
            self.epochs = state["epochs"]

    def callbacks():
        return [keras.callbacks.EarlyStopping(monitor="val_loss", patience=2), Counter()]

    config = dataclasses.replace(TINY, epochs=6, nonmono=5)
    # Validation losses: the best after epoch 1, so EarlyStopping(patience=2) stops
    # after epoch 3; one that forgot its count on resuming would stop after epoch 4.
    scripted = iter([3.0, 3.5, 4.0, 4.5, 5.0, 5.5])
    monkeypatch.setattr(recipe, "evaluate", lambda model, ids, bptt, **kw: next(scripted))
    original = checkpoints.save_checkpoint

    def save_then_die(model, state, path):
        original(model, state, path)
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(checkpoints, "save_checkpoint", save_then_die)
        with pytest.raises(KeyboardInterrupt):
            train(
                config,
                corpus,
                str(tmp_path),
                log=lambda _: None,
                progress=False,
                test=False,
                callbacks=callbacks(),
            )
    resumed = callbacks()
    lines = []
    _, records = train(
        config,
        corpus,
        str(tmp_path),
        log=lines.append,
        progress=False,
        test=False,
        resume=True,
        callbacks=resumed,
    )
    assert [r["epoch"] for r in records] == [1, 2, 3]
    assert "a callback stopped training" in lines[-1]
    assert resumed[0].stopped_epoch == 2 and resumed[1].epochs == 3  # 1 before, 2 after


def test_checkpoint_states_are_keyed_by_where_they_sit(corpus, tmp_path):
    import keras

    from awd_lstm.checkpoints import load_checkpoint, save_checkpoint, state_keys

    model = build_model(TINY, len(corpus.vocab), batch_size=4)
    model.optimizer.build(model.trainable_variables)
    keys = state_keys(model)
    assert {"state_variables.0.0", "state_variables.1.1"} <= set(keys)
    assert {
        "encoder.embedding.seed_generator",
        "encoder.lstms.0.cell.seed_generator",
        "encoder.hidden_locked_dropouts.0.seed_generator",
        "output_locked_dropout.seed_generator",
    } <= set(keys)
    assert len(keys) == len(model.non_trainable_variables)
    for variable in keys.values():
        variable.assign(keras.ops.convert_to_numpy(variable) + 7)
    save_checkpoint(model, {"epoch": 1}, tmp_path / "c.weights.h5")
    import h5py

    with h5py.File(tmp_path / "c.weights.h5", "r") as f:
        assert set(f["awd_lstm_resume/variables"]) == set(keys)  # not "0", "1", ...
    # Another model, after other variables were made: Keras numbers its variables
    # (seed_generator_12/...) otherwise, the keys are the same.
    keras.random.SeedGenerator(0)
    other = build_model(TINY, len(corpus.vocab), batch_size=4)
    assert [v.path for v in other.non_trainable_variables] != [
        v.path for v in model.non_trainable_variables
    ]
    assert load_checkpoint(other, tmp_path / "c.weights.h5") == {"epoch": 1}
    for key, variable in state_keys(other).items():
        np.testing.assert_array_equal(to_numpy(variable), to_numpy(keys[key]))


def test_the_segment_rate_needs_the_segment_length(corpus):
    from awd_lstm.callbacks import SegmentScaledLearningRate

    callback = SegmentScaledLearningRate(10)
    callback.set_model(build_model(TINY, len(corpus.vocab), batch_size=4))
    callback.on_epoch_begin(0)
    with pytest.raises(ValueError, match=r"logs\['seq_len'\]"):
        callback.on_train_batch_begin(0, {})
    callback.on_train_batch_begin(0, {"seq_len": 5})
    assert to_numpy(callback.model.optimizer.learning_rate) == pytest.approx(TINY.lr / 2)
    callback.on_epoch_end(0, {})
    assert to_numpy(callback.model.optimizer.learning_rate) == pytest.approx(TINY.lr)
    with pytest.raises(ValueError, match="positive integer"):
        SegmentScaledLearningRate(0)


def test_epoch_records_need_the_validation_loss(corpus):
    from awd_lstm.callbacks import EpochRecords

    records = EpochRecords()
    records.set_model(build_model(TINY, len(corpus.vocab), batch_size=4))
    records.on_epoch_begin(0)
    with pytest.raises(ValueError, match=r"logs\['val_loss'\]"):
        records.on_epoch_end(0, {"loss": 1.0})
    logs = {"loss": 1.0, "val_loss": 2.0}  # as from fit(validation_data=...)
    records.on_epoch_end(0, logs)
    assert records.records[0]["val_ppl"] == pytest.approx(math.exp(2.0))
    assert records.records[0]["tokens_per_sec"] is None and logs["train_ppl"] > 2


def test_dynamic_evaluation_checks_its_settings():
    from awd_lstm.dynamic_eval import DynamicEvaluation, check_dynamic_settings

    check_dynamic_settings(0.0, 1.0)
    with pytest.raises(ValueError, match=r"`decay` must be in \[0, 1\]; Received: decay=2"):
        DynamicEvaluation([np.ones(2)], learning_rate=1e-4, decay=2)
    with pytest.raises(ValueError, match="`learning_rate` must be a finite number >= 0"):
        check_dynamic_settings(float("nan"), 0.1)


@pytest.mark.parametrize("device", ["cpu", "gpu"])
def test_mixed_precision_trains_with_float32_weights_and_logits(rng, device, monkeypatch):
    """`mixed_precision=True`: the LSTMs compute in bfloat16 (on a GPU: float16, the
    loss scaled by 2**10 and the gradients unscaled; checked here on the CPU with
    the policy a GPU gets), the weights stay float32 (checkpoints fit either
    setting), the logits are float32, and the first steps' losses and weights are
    those of float32 training within the low precision's (weight drop on, the other
    dropouts off: their masks need not be drawn alike in another dtype; no clipping,
    which would hide a gradient left scaled)."""
    from awd_lstm import backend, recipe

    monkeypatch.setattr(backend, "has_gpu", lambda: device == "gpu")
    no_dropout = dict.fromkeys(
        ("embedding_dropout", "input_dropout", "hidden_dropout", "output_dropout"), 0.0
    )
    config = TrainingConfig(
        embedding_size=8,
        hidden_size=16,
        num_layers=2,
        batch_size=4,
        seed=3,
        lr=1.0,
        clip=1e9,
        **no_dropout,
    )
    plain = build_model(config, 40, 4)
    mixed_config = dataclasses.replace(config, mixed_precision=True)
    low = {"cpu": "bfloat16", "gpu": "float16"}[device]
    assert mixed_config.dtype_policy == f"mixed_{low}"
    mixed = build_model(mixed_config, 40, 4)
    assert keras.config.dtype_policy().name == "float32"  # put back after the build
    assert mixed.encoder.lstms[0].compute_dtype == low
    assert {v.dtype for v in mixed.trainable_variables} == {"float32"}
    scale = recipe.FLOAT16_LOSS_SCALE if device == "gpu" else None
    assert mixed.optimizer.loss_scale_factor == scale
    assert type(mixed.optimizer) is type(plain.optimizer)  # not wrapped: NT-ASGD's state
    mixed.set_weights(plain.get_weights())
    ids = rng.integers(0, 40, (4, 10)).astype("int32")
    assert str(mixed.predict_on_batch(ids).dtype) == "float32"
    mixed.reset_state()
    start = [to_numpy(v) for v in plain.trainable_variables]
    for step in range(3):
        x, y = ids[:, step : step + 6], ids[:, step + 1 : step + 7]
        a = plain.train_on_batch(x, y, return_dict=True)["ce"]
        b = mixed.train_on_batch(x, y, return_dict=True)["ce"]
        assert b == pytest.approx(a, rel=2e-2)  # the loss shown unscaled
    moved = np.concatenate(
        [(to_numpy(p) - b).ravel() for b, p in zip(start, plain.trainable_variables)]
    )
    mixed_moved = np.concatenate(
        [(to_numpy(m) - b).ravel() for b, m in zip(start, mixed.trainable_variables)]
    )
    # The same update, to the low precision's rounding (a gradient left scaled would
    # move the weights 1024 times as far).
    assert np.linalg.norm(mixed_moved) / np.linalg.norm(moved) == pytest.approx(1.0, abs=0.1)
    assert np.corrcoef(moved, mixed_moved)[0, 1] > 0.95


def test_a_qrnn_run_under_mixed_precision_resumes_to_the_same_end(corpus, tmp_path, monkeypatch):
    """A QRNN run under `mixed_precision` killed after epoch 1 resumes from its
    checkpoint (float32 weights, bfloat16 computation; the QRNN's carried state is
    zeroed at each epoch, its masks drawn from the checkpointed generators) and ends
    where the uninterrupted one does. On a CPU without bfloat16 instructions the run
    says it will be slower."""
    from awd_lstm import resources
    from awd_lstm.runs import Run

    config = dataclasses.replace(
        TINY, epochs=2, cell="qrnn", weight_dropout=0.3, mixed_precision=True
    )
    monkeypatch.setattr(resources, "cpu_has_bfloat16", lambda: False)
    whole_lines = []
    _, whole = train(
        config, corpus, str(tmp_path / "a"), log=whole_lines.append, progress=False, test=False
    )
    assert whole_lines[0].startswith("warning: this CPU has no bfloat16 instructions")
    assert not any("bfloat16" in line for line in whole_lines[1:])
    monkeypatch.setattr(resources, "cpu_has_bfloat16", lambda: True)

    def log(line):
        if line.startswith("epoch 1: train"):
            raise _Killed

    with pytest.raises(_Killed):
        train(config, corpus, str(tmp_path / "b"), log=log, progress=False, test=False)
    lines = []
    _, resumed = train(
        config,
        corpus,
        str(tmp_path / "b"),
        log=lines.append,
        progress=False,
        resume=True,
        test=False,
    )
    assert lines[0] == "resuming after epoch 1"
    assert _comparable(resumed) == _comparable(whole)
    assert Run.open(tmp_path / "b").config.mixed_precision


class _PoisonState(keras.callbacks.Callback):
    """Makes the carried state NaN before the given (epoch, step)s: those steps'
    losses and gradients are NaN."""

    def __init__(self, steps):
        super().__init__()
        self.steps, self.epoch = set(steps), 0

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch + 1

    def on_train_batch_begin(self, batch, logs=None):
        if (self.epoch, batch + 1) in self.steps:
            for pair in self.model.state_variables:
                for variable in pair:
                    variable.assign(np.full(variable.shape, np.nan, "float32"))


def test_skip_batch_skips_the_bad_steps_counts_them_and_stops_past_the_limit(corpus, tmp_path):
    config = dataclasses.replace(TINY, epochs=1, on_nan="skip-batch", max_skips=2)
    options = dict(log=lambda _: None, progress=False, test=False)
    # The state is reset after each skip: had it stayed NaN, every later step would
    # be skipped and the limit passed.
    _, records = train(
        config,
        corpus,
        str(tmp_path / "skips"),
        callbacks=[_PoisonState({(1, 2), (1, 4)})],
        **options,
    )
    assert [r["skipped_steps"] for r in records] == [2]
    assert math.isfinite(records[0]["train_loss"])
    written = json.loads((tmp_path / "skips/metrics.jsonl").read_text())
    assert written["skipped_steps"] == 2

    poisoned = _PoisonState({(1, 1), (1, 2), (1, 3)})
    match = (
        r"3 steps had a non-finite loss or gradient, more than the 2 max_skips allows "
        r"\(the last at step 3 of epoch 1\); no epoch had completed"
    )
    with pytest.raises(FloatingPointError, match=match):
        train(config, corpus, str(tmp_path / "stops"), callbacks=[poisoned], **options)
