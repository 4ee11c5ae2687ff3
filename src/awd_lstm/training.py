"""Training, fine-tuning and evaluation of the language model with the reference recipe.

Merity et al. (2017), sections 3 and 4: contiguous batch streams;
variable-length BPTT segments with the step's learning rate scaled by
`seq_len / bptt`; hidden state carried between segments without gradient and reset at
each epoch; NT-ASGD switched on by the non-monotone rule; validation (batch 10) and test
(batch 1) with the averaged weights, fixed `bptt` segments and the loss weighted by
segment length; the best validated (averaged) weights checkpointed atomically.

`train` and `finetune` write a complete run folder (`awd_lstm.runs`): `config.json`
and `vocab.json` first, then after each epoch `best.weights.h5` (the best validated
weights), `checkpoint.weights.h5` (weights, optimizer state, random-generator state
and the run's history after the last completed epoch: what `resume=True` continues
from), `metrics.jsonl`, `tensorboard/` and `learning_curves.png`, and at the end
`final.json` with the test split's perplexity. Every file is replaced atomically, so
a run killed at any moment resumes to the same result as an uninterrupted one.
"""

import contextlib
import errno
import json
import math
import os
import shutil
import tempfile
import time

import h5py
import keras
import numpy as np

from awd_lstm._files import (  # noqa: F401 (CheckpointError re-exported)
    CheckpointError,
    WriteError,
    atomic_path,
    remove_stale_temporaries,
    write_text_atomic,
)
from awd_lstm._seeds import derived_seed
from awd_lstm.config import TrainingConfig, step_decay  # noqa: F401 (re-exported)
from awd_lstm.data import BPTTSchedule, CorpusError, batchify, max_segment_length, segment
from awd_lstm.distribute import Distribution
from awd_lstm.log_probs import target_log_probs
from awd_lstm.models import AWDLSTMLanguageModel
from awd_lstm.optimizers import NTASGD, SGD, AdamL2, should_trigger
from awd_lstm.run_logs import plot_learning_curves, write_tensorboard
from awd_lstm.runs import BEST, CHECKPOINT, CONFIG, CURVES, FINAL, METRICS, Run, RunError

_RESUME_GROUP = "awd_lstm_resume"


def build_optimizer(config):
    """The optimizer of `config.optimizer`, with the reference's clipping (global norm)
    and weight decay."""
    if config.optimizer == "adam":
        return AdamL2(config.lr, l2=config.weight_decay, global_clipnorm=config.clip)
    if config.optimizer == "sgd":
        return SGD(config.lr, weight_decay=config.weight_decay or None, global_clipnorm=config.clip)
    return NTASGD(config.lr, weight_decay=config.weight_decay, global_clipnorm=config.clip)


def build_model(config, vocab_size, batch_size, optimizer=None):
    """A stateful language model for `batch_size` streams, compiled for training with
    `optimizer` (default: the one `config` names)."""
    model = AWDLSTMLanguageModel(
        vocab_size,
        stateful=True,
        batch_size=batch_size,
        seed=config.seed,
        **config.model_kwargs(),
    )
    model.compile(optimizer=optimizer or build_optimizer(config), **model.compile_defaults())
    model.build((batch_size, None))
    # JAX pads every training segment to the longest the schedule draws: one
    # compiled step for all of them.
    model.segment_capacity = max_segment_length(config.bptt, config.length_quantum)
    return model


def copy_weights(source_values, target):
    """Assigns `source_values` (one per trainable variable) to `target`'s trainable
    variables: from a training model to an evaluation model of another batch size."""
    for variable, value in zip(target.trainable_variables, source_values, strict=True):
        # A copy: on JAX two models' variables must not share a buffer, which a
        # compiled step of either may donate.
        variable.assign(keras.ops.convert_to_numpy(value))


def evaluation_weights(model):
    """The weights to evaluate and checkpoint: the optimizer's averages once NT-ASGD
    averages, the model's own weights before."""
    optimizer = model.optimizer
    if isinstance(optimizer, NTASGD) and optimizer.averaging:
        return optimizer.average_values()
    return list(model.trainable_variables)


def evaluation_loop(ids, batch_size, bptt, segment_loss, progress=False):
    """Mean per-token loss of a split scored segment by segment: `batch_size` streams,
    segments of `bptt` (the last may be shorter), `segment_loss(x, y)` returning the
    summed loss (nats) of one segment; the mean is weighted by segment length."""
    segments = EvaluationSegments(ids, batch_size, bptt)
    bar = keras.utils.Progbar(
        segments.tokens() * batch_size, verbose=1 if progress else 0, unit_name="token"
    )
    total, count = 0.0, 0
    for x, y in segments:
        total += segment_loss(x, y)
        count += y.size
        bar.update(count, [("loss", total / count)])
    return total / count


class EvaluationSegments:
    """The `(x, y)` segments an evaluation scores, in order; iterable more than once."""

    def __init__(self, ids, batch_size, bptt):
        self.batched = batchify(ids, batch_size, split="evaluation")
        self.schedule = BPTTSchedule(self.batched.shape[1], bptt, variable=False)

    def tokens(self):
        return self.schedule.tokens()

    def __iter__(self):
        for start, length in self.schedule:
            yield segment(self.batched, start, length)


def evaluate(model, ids, bptt, progress=False):
    """Per-token cross-entropy (nats) of a stateful `model` over a split.

    The state is reset once and carried over the whole split; segments are `bptt`
    long (the last may be shorter) and the mean loss is weighted by segment length.
    """

    if model.cutoffs:
        # An adaptive softmax scores the targets without the full distribution. Row
        # budgets for the whole split at once: the same compiled shapes every time.
        model.reserve_tail_capacity(y for _, y in EvaluationSegments(ids, model.batch_size, bptt))

        def segment_loss(x, y):
            losses = model.predict_on_batch((x, y))
            return float(np.asarray(losses, dtype=np.float64).sum())

        model.reset_state()
        return evaluation_loop(ids, model.batch_size, bptt, segment_loss, progress)

    def segment_loss(x, y):
        # predict_on_batch runs the backend's compiled step (eager calls cost several
        # times more); the carried state is a model variable, updated either way.
        return -float(target_log_probs(model.predict_on_batch(x), y).sum())

    model.reset_state()
    return evaluation_loop(ids, model.batch_size, bptt, segment_loss, progress)


def split_loss(config, vocab_size, ids, batch_size, weight_values, progress=False):
    """Per-token loss of a split, evaluated at `batch_size` streams with the given
    weights (the reference validates with 10 streams and tests with 1)."""
    model = build_model(config, vocab_size, batch_size)
    copy_weights(weight_values, model)
    return evaluate(model, ids, config.bptt, progress=progress)


def load_trained_weights(config, vocab_size, path):
    """The trainable weights stored in `path` (a run's `best.weights.h5`), checked
    against the model `config` and `vocab_size` describe."""
    model = build_model(config, vocab_size, config.eval_batch_size)
    _load_keras_weights(model, path)
    return [keras.ops.convert_to_numpy(v) for v in model.trainable_variables]


def load_checkpoint_weights(config, vocab_size, path):
    """The weights a run's checkpoint evaluates with (the averages once NT-ASGD
    averages), as `load_trained_weights` gives them."""
    model = build_model(config, vocab_size, config.batch_size)
    load_checkpoint(model, path)
    return [keras.ops.convert_to_numpy(v) for v in evaluation_weights(model)]


def loss_summary(split, loss, level="word"):
    """`{split}_loss`, `{split}_ppl` and, at character level, `{split}_bpc` of a mean
    per-token loss in nats."""
    summary = {f"{split}_loss": loss, f"{split}_ppl": math.exp(min(loss, 700))}
    if level == "char":
        summary[f"{split}_bpc"] = loss / math.log(2)
    return summary


def _load_keras_weights(model, path):
    try:
        model.load_weights(path)
    except (OSError, ValueError, KeyError) as e:
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(
            f"{path} does not fit this model (another vocabulary or model size?) "
            f"or is damaged: {reason}"
        ) from None


def _save_weights(model, path):
    with atomic_path(path, suffix=".weights.h5") as tmp:
        model.save_weights(tmp, overwrite=True)


def save_checkpoint(model, state, path):
    """Writes the model's weights and optimizer state (Keras' `.weights.h5` format)
    plus the random-generator states and the JSON `state` of the run, atomically."""
    with atomic_path(path, suffix=".weights.h5") as tmp:
        model.save_weights(tmp, overwrite=True)
        # Keras' weights file leaves out the seed generators' states: without them a
        # resumed run would draw other dropout masks than an uninterrupted one.
        if model.cutoffs:
            # The row budgets grown so far: static shapes, kept so a resumed run
            # computes with the same ones as an uninterrupted run.
            state = {**state, "tail_capacity": list(model.tail_capacity)}
        with h5py.File(tmp, "a") as f:
            group = f.create_group(_RESUME_GROUP)
            group.attrs["state"] = json.dumps(state)
            for i, variable in enumerate(model.non_trainable_variables):
                group.create_dataset(str(i), data=keras.ops.convert_to_numpy(variable))


def load_checkpoint(model, path):
    """Restores what `save_checkpoint` wrote into `model` (compiled, built) and
    returns the run's state."""
    model.optimizer.build(model.trainable_variables)
    _load_keras_weights(model, path)
    try:
        with h5py.File(path, "r") as f:
            group = f[_RESUME_GROUP]
            state = json.loads(group.attrs["state"])
            for i, variable in enumerate(model.non_trainable_variables):
                variable.assign(group[str(i)][()])
    except (OSError, KeyError, ValueError) as e:
        raise CheckpointError(f"{path} is not a resumable checkpoint: {e}") from None
    if model.cutoffs and "tail_capacity" in state:
        model.tail_capacity = state.pop("tail_capacity")
    return state


def checkpoint_bytes(model):
    """About the bytes a run's files take at most: the checkpoint (weights, optimizer
    state) and the best weights, each with its temporary copy while it is replaced."""

    def size(variables):
        return sum(int(np.prod(v.shape)) * np.dtype(v.dtype).itemsize for v in variables)

    checkpoint = size(model.variables) + size(model.optimizer.variables)
    best = size(model.trainable_variables)
    return 2 * (checkpoint + best) + (1 << 20)


def check_free_space(folder, model):
    """Raises `WriteError` before training if `folder`'s disk cannot hold the run's
    checkpoints."""
    needed = checkpoint_bytes(model)
    free = shutil.disk_usage(folder).free
    if free < needed:
        raise WriteError(
            errno.ENOSPC,
            f"{folder} has {free / 2**20:,.0f} MiB free; this model's checkpoints need "
            f"about {needed / 2**20:,.0f} MiB",
        )


def write_run_logs(run_dir, records, start_time=None, title=""):
    """Rewrites `metrics.jsonl`, the TensorBoard events and the learning-curve PNG
    from the epoch records."""
    text = "".join(json.dumps(record) + "\n" for record in records)
    write_text_atomic(os.path.join(run_dir, METRICS), text)
    if records:
        write_tensorboard(os.path.join(run_dir, "tensorboard"), records, start_time or time.time())
        plot_learning_curves(os.path.join(run_dir, CURVES), records, title)


def check_splits(config, corpus):
    """Raises `CorpusError` if a split is too short for its batch (training: the
    config's, validation: `eval_batch_size`, test: 1) or the vocabulary is too small
    for the adaptive softmax's cut-offs; returns the training streams."""
    if config.cutoffs and config.cutoffs[-1] >= len(corpus.vocab):
        raise CorpusError(
            f"the adaptive softmax's last cut-off {config.cutoffs[-1]} must be below the "
            f"vocabulary size {len(corpus.vocab)}"
        )
    train_data = batchify(corpus.train, config.batch_size, split="train")
    if train_data.shape[1] - 1 < config.length_quantum:
        # Segment lengths are multiples of length_quantum: a shorter stream has none.
        raise CorpusError(
            f"the train split has {len(corpus.train)} tokens, too few for "
            f"{config.batch_size} streams of at least {config.length_quantum + 1} tokens "
            f"(length_quantum {config.length_quantum})"
        )
    batchify(corpus.valid, config.eval_batch_size, split="validation")
    batchify(corpus.test, 1, split="test")
    return train_data


def train(
    config,
    corpus,
    run_dir,
    log=print,
    progress=True,
    max_seconds=None,
    resume=False,
    distribution=None,
    test=True,
    callbacks=None,
):
    """Trains a language model on `corpus` with `config`; writes the run to `run_dir`.

    The folder becomes a complete run (`awd_lstm.runs.Run`): made here if it holds
    none yet (the corpus is read again from the files `corpus` was read from), its
    settings and vocabulary checked if it does. (For the built-in corpus, make the
    run first, as the command does: `runs.write_builtin_corpus(RUN/corpus, seed)`,
    then `Run.create(RUN, config, corpus.vocab, data=None, synthetic={"tokens": N,
    "seed": seed})`, so that `final.json` also gets the exact optimum.) Training
    stops after `config.epochs` epochs, or at the end of the epoch after which
    another one would pass `max_seconds` of training; then, with `test=True`, the
    best weights are tested with batch 1 and `final.json` is written. With
    `resume=True` it continues from the folder's checkpoint (if any) and ends
    exactly as an uninterrupted run would.
    With a `distribution` (`awd_lstm.distribute.create`) the training steps run data
    parallel, each replica on its share of the batch's streams; every process of a
    multi-worker run calls `train`, only the chief writes to `run_dir` (the others
    write to a temporary folder, removed at the end) and evaluation runs on one
    device in each.

    `callbacks`: Keras callbacks (`keras.callbacks.Callback`: `CSVLogger`,
    `EarlyStopping`, `TerminateOnNaN`, `LearningRateScheduler`, your own), called
    with the training model and Keras' usual hooks: `on_train_begin`/`end`,
    `on_epoch_begin`/`end` (0-based epochs; the end's `logs` hold the epoch's
    record, with `loss` the training loss and `val_loss` the validation loss) and
    `on_train_batch_begin`/`end` (`logs`: the step's `loss`, `ce` and learning rate
    `lr`). A learning rate set in `on_epoch_begin` is the epoch's base rate (kept in
    the checkpoint, and the next epoch's starting point), scaled by each segment's
    length; one set in `on_train_batch_begin` is that step's. `model.stop_training =
    True` ends the run after the epoch. A non-finite loss still stops the run with
    `FloatingPointError` (after `on_train_batch_end`, so `TerminateOnNaN` reports it).
    The callbacks' own state (an `EarlyStopping`'s patience count...) is not in the
    checkpoint: a resumed run starts them afresh, so a run resumed with callbacks need
    not end where an uninterrupted one would. `EarlyStopping(restore_best_weights=...)`
    acts on the training model; the run's best weights are `best.weights.h5` whatever
    the callbacks do.

    Returns an evaluation model holding the best weights and the list of epoch
    records.
    """
    return _run(
        config,
        corpus,
        run_dir,
        "train",
        log,
        progress,
        max_seconds,
        resume,
        None,
        distribution,
        test,
        callbacks,
    )


def finetune(
    config,
    corpus,
    run_dir,
    weights,
    log=print,
    progress=True,
    max_seconds=None,
    resume=False,
    test=True,
    callbacks=None,
):
    """The reference's fine-tuning stage: from the trained `weights` (a list, one per
    trainable variable) averaging starts at the first step; the run stops when the
    non-monotone rule fires (or after `config.epochs`). The starting weights'
    validation loss is the one to beat, so the best checkpoint never gets worse.
    `run_dir` becomes a complete fine-tuning run, as in `train` (make it with
    `Run.create_finetune` to record the trained run it starts from); `callbacks` as in
    `train`."""
    return _run(
        config,
        corpus,
        run_dir,
        "finetune",
        log,
        progress,
        max_seconds,
        resume,
        weights,
        None,
        test,
        callbacks,
    )


def _open_or_create_run(run_dir, config, corpus, stage, resume):
    """The run in `run_dir`, made if the folder holds none; checked against the
    settings and the vocabulary of this call."""
    if not os.path.exists(os.path.join(run_dir, CONFIG)):
        return Run.create(run_dir, config, corpus.vocab, data=corpus, stage=stage)
    run = Run.open(run_dir)
    if run.stage != stage:
        raise RunError(f"{run_dir} holds a {run.stage!r} run, not a {stage!r} one")
    if run.config != config:
        raise RunError(
            f"{run_dir} holds a run with other settings; continue it with its own "
            "config (Run.open(path).config) or choose another folder"
        )
    if run.vocabulary.fingerprint() != corpus.vocab.fingerprint():
        raise RunError(f"{run_dir} holds a run of another vocabulary than this corpus's")
    started = any(os.path.exists(os.path.join(run_dir, f)) for f in (CHECKPOINT, FINAL))
    if started and not resume:
        raise RunError(
            f"{run_dir} already holds a run that has trained; resume it (resume=True) "
            "or choose another folder"
        )
    if resume and run.finished:
        raise RunError(f"the run in {run_dir} has finished; nothing to resume")
    return run


def final_test(run, model, corpus, log=print, progress=False):
    """Tests `model`'s weights on the test split with batch 1 (as the reference) and
    writes the run's `final.json`; returns its contents."""
    log("testing with batch 1")
    test_loss = split_loss(
        run.config, len(corpus.vocab), corpus.test, 1, model.trainable_variables, progress
    )
    final = loss_summary("test", test_loss, corpus.vocab.level)
    line = f"test perplexity {final['test_ppl']:.2f}"
    if "test_bpc" in final:
        line += f" ({final['test_bpc']:.3f} bpc)"
    source = run.synthetic_source()
    if source is not None:
        final["optimal_ppl"] = source.optimal_perplexity(np.asarray(corpus.test))
        final["unigram_ppl"] = source.unigram_perplexity(corpus.train, corpus.test)
        gap = final["test_ppl"] / final["optimal_ppl"] - 1
        line += (
            f" (optimum {final['optimal_ppl']:.2f}, {gap:+.1%}; unigram {final['unigram_ppl']:.2f})"
        )
    run.write_final(final)
    log(line)
    return final


@contextlib.contextmanager
def _output_folder(run_dir, distribution):
    """Where this process writes: the run folder for the chief (or a single process);
    for a multi-worker run's other workers, a temporary folder of their own, removed
    at the end (they read the run folder, to resume, but never write there)."""
    if distribution.is_chief:
        os.makedirs(run_dir, exist_ok=True)
        remove_stale_temporaries(run_dir)
        yield run_dir
        return
    out_dir = tempfile.mkdtemp(prefix="awd-lstm-worker-")
    try:
        yield out_dir
    finally:
        shutil.rmtree(out_dir, ignore_errors=True)


def _run(
    config,
    corpus,
    run_dir,
    stage,
    log,
    progress,
    max_seconds,
    resume,
    weights=None,
    distribution=None,
    test=True,
    callbacks=None,
):
    distribution = distribution or Distribution()
    distribution.check_batch(config.batch_size)
    train_data = check_splits(config, corpus)  # before anything is written
    run = None
    if distribution.is_chief:
        run = _open_or_create_run(run_dir, config, corpus, stage, resume)
    with _output_folder(run_dir, distribution) as out_dir:
        vocab_size = len(corpus.vocab)
        char_level = corpus.vocab.level == "char"
        with distribution.scope():
            model = build_model(config, vocab_size, config.batch_size)
            # Built here, inside the strategy's scope: its variables are distributed too.
            model.optimizer.build(model.trainable_variables)
        evaluator = build_model(config, vocab_size, config.eval_batch_size)
        optimizer = model.optimizer
        check_free_space(out_dir, model)
        best_path = os.path.join(out_dir, BEST)
        checkpoint_path = os.path.join(out_dir, CHECKPOINT)
        resume_path = os.path.join(run_dir, CHECKPOINT)
        if resume and os.path.exists(resume_path):
            state = load_checkpoint(model, resume_path)
            if state.get("stage") != stage:
                raise CheckpointError(
                    f"{checkpoint_path} is a {state.get('stage')!r} checkpoint, not {stage!r}"
                )
            log(f"resuming after epoch {state['epoch']}")
        else:
            state = {
                "stage": stage,
                "epoch": 0,
                "history": [],
                "best": None,
                "records": [],
                "seconds": 0.0,
                "start_time": time.time(),
                "stop": None,
            }
            if stage == "finetune":
                copy_weights(weights, model)
                optimizer.build(model.trainable_variables)
                optimizer.start_averaging()
                copy_weights(weights, evaluator)
                state["best"] = evaluate(evaluator, corpus.valid, config.bptt)
                _save_weights(evaluator, best_path)
                log(f"fine-tuning from validation perplexity {math.exp(state['best']):.2f}")
        title = f"{stage}: {os.path.basename(os.path.abspath(run_dir))}"
        write_run_logs(out_dir, state["records"], state["start_time"], title)
        # The recipe's learning-rate drop (`when`) is a schedule like any user's, and
        # runs first: a user's schedule sees (and may change) the recipe's rate.
        when = keras.callbacks.LearningRateScheduler(step_decay(config.when))
        hooks = keras.callbacks.CallbackList(
            [when, *(callbacks or [])], model=model, epochs=config.epochs, verbose=0, steps=None
        )
        model.stop_training = False
        hooks.on_train_begin()
        while state["stop"] is None:
            epoch = state["epoch"] + 1
            # The epoch's base rate: the last epoch's (as the schedules set it; from a
            # checkpoint without it, the recipe's), then what `on_epoch_begin` sets.
            last_rate = state.get("base_lr", config.learning_rate(epoch - 1))
            optimizer.learning_rate.assign(last_rate)
            hooks.on_epoch_begin(epoch - 1)
            base_lr = float(keras.ops.convert_to_numpy(optimizer.learning_rate))
            state["base_lr"] = base_lr
            averaging = bool(getattr(optimizer, "averaging", False))
            try:
                with distribution.scope():
                    train_loss, tokens, started = _train_epoch(
                        model, train_data, config, epoch, base_lr, stage, progress, hooks
                    )
            except FloatingPointError as e:
                if state["epoch"]:
                    kept = f"{BEST} and the checkpoint of epoch {state['epoch']} are kept"
                elif os.path.exists(best_path):
                    kept = f"{BEST} (the starting weights) is kept"
                else:
                    kept = "no epoch had completed, so nothing was saved"
                raise FloatingPointError(
                    f"training stopped: {e}; {kept} (a lower learning rate or clip may help)"
                ) from None
            copy_weights(evaluation_weights(model), evaluator)
            val_loss = evaluate(evaluator, corpus.valid, config.bptt)
            if state["best"] is None or val_loss < state["best"]:
                state["best"] = val_loss
                try:
                    _save_weights(evaluator, best_path)
                except WriteError as e:
                    raise _write_failed(e, epoch) from None
            triggered = should_trigger(state["history"], val_loss, config.nonmono)
            if triggered and stage == "train" and isinstance(optimizer, NTASGD) and not averaging:
                optimizer.start_averaging()
                log(f"epoch {epoch}: switching to averaged SGD (NT-ASGD)")
            state["history"].append(val_loss)
            seconds = time.perf_counter() - started
            level = corpus.vocab.level
            record = {
                "epoch": epoch,
                **loss_summary("train", train_loss, level),
                **loss_summary("val", val_loss, level),
                "lr": base_lr,
                "averaging": averaging,
                "tokens_per_sec": tokens / seconds,
                "seconds": seconds,
            }
            state["records"].append(record)
            state["epoch"] = epoch
            state["seconds"] += seconds
            logs = {k: v for k, v in record.items() if k != "epoch"}  # Keras passes it apart
            hooks.on_epoch_end(epoch - 1, {**logs, "loss": train_loss})
            if stage == "finetune" and triggered:
                state["stop"] = "the non-monotone rule fired"
            elif model.stop_training:
                state["stop"] = "a callback stopped training"
            elif epoch >= config.epochs:
                state["stop"] = f"{config.epochs} epochs done"
            elif max_seconds is not None and state["seconds"] + seconds > max_seconds:
                state["stop"] = f"another epoch would pass the time limit of {max_seconds:.0f} s"
            try:
                save_checkpoint(model, state, checkpoint_path)
                write_run_logs(out_dir, state["records"], state["start_time"], title)
            except WriteError as e:
                raise _write_failed(e, epoch) from None
            line = (
                f"epoch {epoch}: train ppl {record['train_ppl']:.2f}, "
                f"valid ppl {record['val_ppl']:.2f}"
            )
            if char_level:
                line += f" ({record['val_bpc']:.3f} bpc)"
            log(f"{line}, {record['tokens_per_sec']:,.0f} tokens/s")
        log(f"{stage} stopped after epoch {state['epoch']}: {state['stop']}")
        hooks.on_train_end({"stop": state["stop"]})
        _load_keras_weights(evaluator, best_path)
        if run is not None and test:
            final_test(run, evaluator, corpus, log, progress)
        return evaluator, state["records"]


def _write_failed(error, epoch):
    kept = (
        f"the checkpoint of epoch {epoch - 1} is intact"
        if epoch > 1
        else "no checkpoint had been written yet"
    )
    return WriteError(
        error.errno, f"training stopped: {error}; {kept}: make room, then resume the run"
    )


def _train_epoch(model, train_data, config, epoch, base_lr, stage, progress, hooks):
    """One pass over the training streams; returns (mean loss, tokens, start time)."""
    start_time = time.perf_counter()
    optimizer = model.optimizer
    model.reset_state()
    schedule = BPTTSchedule(
        train_data.shape[1],
        config.bptt,
        # Fine-tuning draws its own segment lengths, not a replay of training's.
        seed=derived_seed(config.seed, stage, "segment_lengths", epoch),
        length_quantum=config.length_quantum,
    )
    bar = keras.utils.Progbar(
        schedule.tokens() * config.batch_size,
        verbose=1 if progress else 0,
        stateful_metrics=["loss", "tokens/s"],
        unit_name="token",
    )
    loss_sum, tokens = 0.0, 0
    for step, (start, length) in enumerate(schedule, 1):
        # The reference scales the step size with the segment length; a callback's
        # on_train_batch_begin may set this step's rate after it.
        optimizer.learning_rate.assign(base_lr * length / config.bptt)
        hooks.on_train_batch_begin(step - 1)
        lr = float(keras.ops.convert_to_numpy(optimizer.learning_rate))
        x, y = segment(train_data, start, length)
        result = model.train_on_batch(x, y, return_dict=True)
        logs = {name: float(value) for name, value in result.items()}
        hooks.on_train_batch_end(step - 1, {**logs, "lr": lr})
        ce = logs["ce"]
        if not math.isfinite(ce):
            raise FloatingPointError(f"the loss became {ce} at step {step} of epoch {epoch}")
        loss_sum += ce * length
        tokens += length * config.batch_size
        bar.update(
            tokens,
            [
                ("loss", loss_sum * config.batch_size / tokens),
                ("tokens/s", tokens / max(time.perf_counter() - start_time, 1e-9)),
            ],
        )
    optimizer.learning_rate.assign(base_lr)
    return loss_sum * config.batch_size / tokens, tokens, start_time
