"""Training and evaluation of the language model with the reference recipe.

Merity et al. (2017), sections 3 and 4 (DESIGN.md §2.6-2.7): contiguous batch streams;
variable-length BPTT segments with the step's learning rate scaled by
`seq_len / bptt`; hidden state carried between segments without gradient and reset at
each epoch; NT-ASGD switched on by the non-monotone rule; validation (batch 10) and test
(batch 1) with the averaged weights, fixed `bptt` segments and the loss weighted by
segment length; the best validated (averaged) weights checkpointed atomically.
"""

import json
import math
import os
import time

import keras
import numpy as np

from awd_lstm.config import TrainingConfig  # noqa: F401 (re-exported)
from awd_lstm.data import BPTTSchedule, batchify, segment
from awd_lstm.models import AWDLSTMLanguageModel
from awd_lstm.optimizers import NTASGD, should_trigger


def build_model(config, vocab_size, batch_size):
    """A stateful language model for `batch_size` streams, compiled for training."""
    model = AWDLSTMLanguageModel(
        vocab_size,
        stateful=True,
        batch_size=batch_size,
        seed=config.seed,
        **config.model_kwargs(),
    )
    model.compile(
        optimizer=NTASGD(config.lr, weight_decay=config.weight_decay, global_clipnorm=config.clip),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=[keras.metrics.SparseCategoricalCrossentropy(from_logits=True, name="ce")],
    )
    model.build((batch_size, None))
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


def evaluate(model, ids, bptt):
    """Per-token cross-entropy (nats) of a stateful `model` over a split.

    The state is reset once and carried over the whole split; segments are `bptt`
    long (the last may be shorter) and the mean loss is weighted by segment length.
    """
    batched = batchify(ids, model.batch_size, split="evaluation")
    model.reset_state()
    total, count = 0.0, 0
    for start, length in BPTTSchedule(batched.shape[1], bptt, variable=False):
        x, y = segment(batched, start, length)
        # predict_on_batch runs the backend's compiled step (eager calls cost several
        # times more); the carried state is a model variable, updated either way.
        logits = np.asarray(model.predict_on_batch(x), dtype=np.float64)
        logits -= logits.max(-1, keepdims=True)
        log_norm = np.log(np.exp(logits).sum(-1))
        picked = np.take_along_axis(logits, y[..., None], -1)[..., 0]
        total += float((log_norm - picked).sum())
        count += y.size
    return total / count


def _save_weights_atomic(model, path):
    tmp = path[: -len(".weights.h5")] + ".tmp.weights.h5"
    model.save_weights(tmp, overwrite=True)
    os.replace(tmp, path)


def train(config, corpus, run_dir, log=print, progress=True):
    """Trains a language model on `corpus` with `config`; writes to `run_dir`.

    Writes `metrics.jsonl` (one object per epoch) and `best.weights.h5` (the weights,
    averaged once NT-ASGD averages, of the best validation loss so far). Returns the
    evaluation model holding the best weights and the list of epoch records.
    """
    os.makedirs(run_dir, exist_ok=True)
    vocab_size = len(corpus.vocab)
    train_data = batchify(corpus.train, config.batch_size, split="train")
    model = build_model(config, vocab_size, config.batch_size)
    evaluator = build_model(config, vocab_size, config.eval_batch_size)
    optimizer = model.optimizer
    metrics_path = os.path.join(run_dir, "metrics.jsonl")
    best_path = os.path.join(run_dir, "best.weights.h5")
    history, records, best = [], [], math.inf
    for epoch in range(1, config.epochs + 1):
        start_time = time.perf_counter()
        model.reset_state()
        schedule = BPTTSchedule(
            train_data.shape[1],
            config.bptt,
            seed=config.seed * 100_003 + epoch,
            length_quantum=config.length_quantum,
        )
        bar = keras.utils.Progbar(
            schedule.tokens() * config.batch_size,
            verbose=1 if progress else 0,
            stateful_metrics=["loss", "tokens/s"],
            unit_name="token",
        )
        loss_sum, tokens = 0.0, 0
        for start, length in schedule:
            # The reference scales the step size with the segment length.
            optimizer.learning_rate.assign(config.lr * length / config.bptt)
            x, y = segment(train_data, start, length)
            result = model.train_on_batch(x, y, return_dict=True)
            ce = float(result["ce"])
            if not math.isfinite(ce):
                raise FloatingPointError(
                    f"the training loss became {ce} in epoch {epoch}; the last good weights "
                    f"are in {best_path}"
                )
            loss_sum += ce * length
            tokens += length * config.batch_size
            seconds = time.perf_counter() - start_time
            bar.update(
                tokens,
                [
                    ("loss", loss_sum * config.batch_size / tokens),
                    ("tokens/s", tokens / max(seconds, 1e-9)),
                ],
            )
        optimizer.learning_rate.assign(config.lr)
        copy_weights(evaluation_weights(model), evaluator)
        val_loss = evaluate(evaluator, corpus.valid, config.bptt)
        if val_loss < best:
            best = val_loss
            _save_weights_atomic(evaluator, best_path)
        if not optimizer.averaging and should_trigger(history, val_loss, config.nonmono):
            optimizer.start_averaging()
            log(f"epoch {epoch}: switching to averaged SGD (NT-ASGD)")
        history.append(val_loss)
        train_loss = loss_sum * config.batch_size / tokens
        seconds = time.perf_counter() - start_time
        record = {
            "epoch": epoch,
            "train_loss": train_loss,
            "train_ppl": math.exp(min(train_loss, 700)),
            "val_loss": val_loss,
            "val_ppl": math.exp(min(val_loss, 700)),
            "lr": config.lr,
            "averaging": optimizer.averaging,
            "tokens_per_sec": tokens / seconds,
            "seconds": seconds,
        }
        records.append(record)
        with open(metrics_path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
        log(
            f"epoch {epoch}: train ppl {record['train_ppl']:.2f}, valid ppl "
            f"{record['val_ppl']:.2f}, {record['tokens_per_sec']:,.0f} tokens/s"
        )
    evaluator.load_weights(best_path)
    return evaluator, records
