"""Training and fine-tuning of the language model with the reference recipe.

Merity et al. (2017), sections 3 and 4: contiguous batch streams;
variable-length BPTT segments with the step's learning rate scaled by
`seq_len / bptt`; hidden state carried between segments without gradient and reset at
each epoch; NT-ASGD switched on by the non-monotone rule; validation (batch 10) and test
(batch 1) with the averaged weights, fixed `bptt` segments and the loss weighted by
segment length; the best validated (averaged) weights checkpointed atomically. The
loop runs on Keras callbacks: each part of the recipe is one (`awd_lstm.callbacks`),
and a user's own run beside them.

`train` and `finetune` write a complete run folder (`awd_lstm.runs`): `config.json`
and `vocab.json` first, then after each epoch `best.weights.h5` (the best validated
weights), `checkpoint.weights.h5` (weights, optimizer state, random-generator state
and the run's and callbacks' state after the last completed epoch: what
`resume=True` continues from), `metrics.jsonl`, `tensorboard/` and
`learning_curves.png`, and at the end `final.json` with the test split's perplexity.
Every file is replaced atomically, so a run killed at any moment resumes to the same
result as an uninterrupted one.
"""

import contextlib
import os
import shutil
import tempfile
import time
import types

import keras
import numpy as np

from awd_lstm import callbacks as recipe_callbacks
from awd_lstm import checkpoints, recipe, resources
from awd_lstm._files import (  # noqa: F401 (CheckpointError re-exported)
    CheckpointError,
    WriteError,
    remove_stale_temporaries,
)
from awd_lstm._seeds import derived_seed
from awd_lstm._validation import check_non_negative_int

# The recipe's model, evaluation and weight files, re-exported where earlier versions
# had them.
from awd_lstm.checkpoints import load_checkpoint_weights, load_trained_weights  # noqa: F401
from awd_lstm.config import TrainingConfig, step_decay  # noqa: F401 (re-exported)
from awd_lstm.data import BPTTSchedule, segment
from awd_lstm.distribute import Distribution
from awd_lstm.optimizers import NonMonotoneTrigger
from awd_lstm.progress import Progress
from awd_lstm.recipe import (  # noqa: F401
    build_model,
    build_optimizer,
    check_splits,
    copy_weights,
    evaluate,
    evaluation_weights,
    loss_summary,
    split_loss,
)
from awd_lstm.runs import BEST, CHECKPOINT, CONFIG, FINAL, Run, RunError, run_lock


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
    tensorboard_every=50,
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
    While it runs, `run_dir` is locked (`awd_lstm.runs.run_lock`): another process
    that would write there is refused with `awd_lstm.runs.RunInUseError`, and a
    folder another process writes to refuses this call the same way.
    With a `distribution` (`awd_lstm.distribute.create`) the training steps run data
    parallel, each replica on its share of the batch's streams; every process of a
    multi-worker run calls `train`, only the chief writes to `run_dir` (and locks it;
    the others write to a temporary folder, removed at the end) and evaluation runs
    on one device in each.

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
    A run whose estimated memory is above what the machine has is refused before
    anything is written (`awd_lstm.resources.ResourceError`); one that runs out of
    memory anyway stops with `awd_lstm.resources.RanOutOfMemory`, its last checkpoint
    kept.
    The callbacks' own state is in the checkpoint: that of a callback with
    `get_state()`/`set_state(state)`, and the counters and best value of Keras'
    `EarlyStopping` and `ReduceLROnPlateau` (pass the same callbacks, in the same
    order, to the resumed run), so a resumed run ends where an uninterrupted one
    would. `EarlyStopping(restore_best_weights=...)`
    acts on the training model; the run's best weights are `best.weights.h5` whatever
    the callbacks do.

    `tensorboard_every`: training steps between two per-step TensorBoard points
    (`RUN/tensorboard`, `awd_lstm.callbacks.TensorBoardScalars`; 0: per epoch only).

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
        tensorboard_every,
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
    tensorboard_every=50,
):
    """The reference's fine-tuning stage: from the trained `weights` (a list, one per
    trainable variable) averaging starts at the first step; the run stops when the
    non-monotone rule fires (or after `config.epochs`). The starting weights'
    validation loss is the one to beat, so the best checkpoint never gets worse.
    `run_dir` becomes a complete fine-tuning run, as in `train` (make it with
    `Run.create_finetune` to record the trained run it starts from); `callbacks` and
    `tensorboard_every` as in `train` (the starting weights' validation loss is
    TensorBoard's step 0)."""
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
        tensorboard_every,
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
    test_loss = recipe.split_loss(
        run.config, len(corpus.vocab), corpus.test, 1, model.trainable_variables, progress
    )
    final = recipe.loss_summary("test", test_loss, corpus.vocab.level)
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
def _output_folder(run_dir, distribution, log):
    """Where this process writes: the run folder for the chief (or a single process),
    locked while the block runs; for a multi-worker run's other workers, a temporary
    folder of their own, removed at the end (they read the run folder, to resume, but
    never write there)."""
    if distribution.is_chief:
        with run_lock(run_dir, make=True, log=log):
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
    tensorboard_every=50,
):
    distribution = distribution or Distribution()
    distribution.check_batch(config.batch_size)
    train_data = recipe.check_splits(config, corpus)  # before anything is written
    resources.check_training_memory(config, len(corpus.vocab), distribution.replicas)
    if config.dtype_policy == "mixed_bfloat16" and resources.cpu_has_bfloat16() is False:
        log(
            "warning: this CPU has no bfloat16 instructions (AVX-512 BF16, AMX or Arm's "
            "BF16); under mixed_precision its products convert to and from bfloat16 and "
            "train slower than in float32"
        )
    with (
        _out_of_memory_stops_the_run(run_dir),
        _output_folder(run_dir, distribution, log) as out_dir,
    ):
        run = None
        if distribution.is_chief:
            run = _open_or_create_run(run_dir, config, corpus, stage, resume)
            remove_stale_temporaries(run_dir)  # a killed process's: no other writes here
        vocab_size = len(corpus.vocab)
        with distribution.scope():
            model = recipe.build_model(config, vocab_size, config.batch_size)
            # Built here, inside the strategy's scope: its variables are distributed too.
            model.optimizer.build(model.trainable_variables)
        evaluator = recipe.build_model(config, vocab_size, config.eval_batch_size)
        checkpoints.check_free_space(out_dir, model)
        best_path = os.path.join(out_dir, BEST)
        parts = _recipe_parts(config, corpus, evaluator, stage, out_dir, run_dir, log, max_seconds)
        parts.tensorboard.every = check_non_negative_int("tensorboard_every", tensorboard_every)
        user = list(callbacks or [])
        stateful = {**parts.stateful, **{f"user_{i}": c for i, c in enumerate(user)}}
        checkpoint = recipe_callbacks.RunCheckpoint(
            os.path.join(out_dir, CHECKPOINT), stage, stateful, parts.stop_rules
        )
        hooks = keras.callbacks.CallbackList(
            [*parts.before, *user, parts.stop_rules, checkpoint, parts.run_logs, parts.nan],
            model=model,
            epochs=config.epochs,
            verbose=0,
            steps=None,
        )
        resume_path = os.path.join(run_dir, CHECKPOINT)
        state = None
        if resume and os.path.exists(resume_path):
            state = checkpoint.restore(resume_path)
            log(f"resuming after epoch {state['epoch']}")
        elif stage == "finetune":
            recipe.copy_weights(weights, model)
            model.optimizer.start_averaging()
            parts.validation.keep_if_best(parts.validation.score(weights))
            log(f"fine-tuning from validation perplexity {np.exp(parts.validation.best):.2f}")
        model.stop_training = False
        hooks.on_train_begin()
        if state is not None:
            # After on_train_begin, which resets Keras' own callbacks (EarlyStopping...).
            checkpoint.restore_callbacks(state)
        elif stage == "finetune":
            parts.tensorboard.start_point(parts.validation.best, corpus.vocab.level)
        epoch = state["epoch"] if state else 0
        parts.run_logs.write()
        try:
            while parts.stop_rules.reason is None:
                hooks.on_epoch_begin(epoch)
                try:
                    with distribution.scope():
                        logs = _train_epoch(
                            model, train_data, config, epoch + 1, stage, progress, hooks
                        )
                except FloatingPointError as e:
                    raise FloatingPointError(
                        f"training stopped: {e}; {_what_is_kept(epoch, best_path)} "
                        "(a lower learning rate or clip may help)"
                    ) from None
                try:
                    hooks.on_epoch_end(epoch, logs)
                except WriteError as e:
                    raise _write_failed(e, epoch + 1) from None
                epoch += 1
            log(f"{stage} stopped after epoch {epoch}: {parts.stop_rules.reason}")
            hooks.on_train_end({"stop": parts.stop_rules.reason})
        finally:
            parts.tensorboard.close()  # its files complete however the run ends
        checkpoints.load_weights(evaluator, best_path)
        if run is not None and test:
            final_test(run, evaluator, corpus, log, progress)
        return evaluator, parts.records.records


def _recipe_parts(config, corpus, evaluator, stage, out_dir, run_dir, log, max_seconds):
    level = corpus.vocab.level
    validation = recipe_callbacks.AveragedValidation(
        evaluator, corpus.valid, config.bptt, level, os.path.join(out_dir, BEST)
    )
    trigger = NonMonotoneTrigger(
        nonmono=config.nonmono, stop_on_trigger=stage == "finetune", log=log
    )
    records = recipe_callbacks.EpochRecords(level)
    # Before the checkpoint: a run killed between the two redoes the epoch, and its
    # resumed TensorBoard files hide the epoch's first points (see run_logs).
    tensorboard = recipe_callbacks.TensorBoardScalars(os.path.join(out_dir, "tensorboard"))
    title = f"{stage}: {os.path.basename(os.path.abspath(run_dir))}"
    # The recipe's callbacks of one run (see `awd_lstm.callbacks` for the order).
    return types.SimpleNamespace(
        # The recipe's learning-rate drop (`when`) is a schedule like any user's, and
        # runs first: a user's schedule sees (and may change) the recipe's rate.
        before=[
            keras.callbacks.LearningRateScheduler(step_decay(config.when)),
            recipe_callbacks.SegmentScaledLearningRate(config.bptt),
            validation,
            trigger,
            records,
            tensorboard,
        ],
        validation=validation,
        records=records,
        tensorboard=tensorboard,
        stateful={"validation": validation, "trigger": trigger, "records": records},
        stop_rules=recipe_callbacks.StopRules(config.epochs, records, max_seconds, trigger),
        run_logs=recipe_callbacks.RunLogs(out_dir, records, title, log),
        nan=(
            recipe_callbacks.SkipNonFiniteSteps(config.max_skips)
            if config.on_nan == "skip-batch"
            else recipe_callbacks.StopOnNaN()
        ),
    )


def _out_of_memory_stops_the_run(run_dir):
    """Running out of memory stops the run with one sentence (`RanOutOfMemory`) that
    says which of the run's files are kept."""

    def kept():
        epochs = checkpoints.saved_epoch(os.path.join(run_dir, CHECKPOINT))
        return _what_is_kept(epochs, os.path.join(run_dir, BEST))

    return resources.out_of_memory_stops(kept)


def _what_is_kept(epochs_done, best_path):
    if epochs_done:
        return f"{BEST} and the checkpoint of epoch {epochs_done} are kept"
    if os.path.exists(best_path):
        return f"{BEST} (the starting weights) is kept"
    return "no epoch had completed, so nothing was saved"


def _write_failed(error, epoch):
    kept = (
        f"the checkpoint of epoch {epoch - 1} is intact"
        if epoch > 1
        else "no checkpoint had been written yet"
    )
    return WriteError(
        error.errno, f"training stopped: {error}; {kept}: make room, then resume the run"
    )


def _train_epoch(model, train_data, config, epoch, stage, progress, hooks):
    """One pass over the training streams; returns the epoch's logs: the mean
    training loss, tokens and seconds (and, when steps may be skipped, how many
    were; their losses and tokens do not count)."""
    start_time = time.perf_counter()
    optimizer = model.optimizer
    skips = config.on_nan == "skip-batch"
    skipped = optimizer.skipped if skips else 0
    skipped_at_start = skipped
    model.reset_state()
    schedule = BPTTSchedule(
        train_data.shape[1],
        config.bptt,
        # Fine-tuning draws its own segment lengths, not a replay of training's.
        seed=derived_seed(config.seed, stage, "segment_lengths", epoch),
        length_quantum=config.length_quantum,
    )
    bar = Progress(
        schedule.tokens() * config.batch_size,
        "token",
        progress,
        stateful_metrics=["loss", "tokens/s"],
    )
    loss_sum, tokens = 0.0, 0
    for step, (start, length) in enumerate(schedule):
        # SegmentScaledLearningRate sets the step's rate from the segment length; a
        # later callback's on_train_batch_begin may set another.
        hooks.on_train_batch_begin(step, {"seq_len": length})
        lr = float(keras.ops.convert_to_numpy(optimizer.learning_rate))
        x, y = segment(train_data, start, length)
        result = model.train_on_batch(x, y, return_dict=True)
        logs = {name: float(value) for name, value in result.items()}
        hooks.on_train_batch_end(step, {**logs, "lr": lr})  # StopOnNaN raises here
        if skips and optimizer.skipped > skipped:
            skipped = optimizer.skipped
            continue
        loss_sum += logs["ce"] * length
        tokens += length * config.batch_size
        bar.update(
            tokens,
            [
                ("loss", loss_sum * config.batch_size / tokens),
                ("tokens/s", tokens / max(time.perf_counter() - start_time, 1e-9)),
            ],
        )
    seconds = time.perf_counter() - start_time
    loss = loss_sum * config.batch_size / tokens if tokens else float("nan")
    logs = {"loss": loss, "tokens": tokens}
    logs["train_seconds"] = seconds
    if skips:
        logs["skipped_steps"] = skipped - skipped_at_start
    return logs
