"""The reference recipe's model, optimizer and evaluation (Merity et al. 2017).

`build_model` and `build_optimizer` make what a `TrainingConfig` describes;
`evaluate` scores a split the reference's way: contiguous streams, the state reset
once and carried over the split, fixed `bptt` segments, the mean loss weighted by
segment length. Validation uses the weights NT-ASGD would give (`evaluation_weights`:
the averages once it averages), at `eval_batch_size` streams; the test, batch 1.
"""

import contextlib
import math

import keras
import numpy as np

from awd_lstm.data import BPTTSchedule, CorpusError, batchify, max_segment_length, segment
from awd_lstm.log_probs import target_log_probs
from awd_lstm.models import AWDLSTMLanguageModel
from awd_lstm.optimizers import NTASGD, SGD, AdamL2
from awd_lstm.progress import Progress

# The loss scale of float16 training (mixed_float16): the loss is multiplied by it
# before the gradients are taken and the gradients divided by it before the update, so
# that the small gradients of the float16 products do not flush to zero. A fixed
# scale (Keras' `loss_scale_factor`), not Keras' dynamic `LossScaleOptimizer`: that
# wraps the optimizer, hiding NT-ASGD's averaging state and changing the checkpoint's
# optimizer variables, so a run could not resume under another policy. 2**10 keeps a
# mean cross-entropy of up to 60 nats within float16's range (65504).
FLOAT16_LOSS_SCALE = 2.0**10

# The "RMSProp" of Melis et al.'s Mogrifier code (deepmind/lamb): Adam without its
# first moment (beta1 0), beta2 0.999, epsilon 1e-8, bias-corrected as Adam is.
RMSPROP = {"beta_1": 0.0, "beta_2": 0.999, "epsilon": 1e-8}


def build_optimizer(config, loss_scale_factor=None):
    """The optimizer of `config.optimizer`, with the reference's clipping (global norm)
    and weight decay (and Keras' `loss_scale_factor`); with `on_nan="skip-batch"` it
    skips non-finite steps (`optimizers.SkipsNonFiniteUpdates`)."""
    options = dict(global_clipnorm=config.clip, loss_scale_factor=loss_scale_factor)
    options["skip_non_finite"] = config.on_nan == "skip-batch"
    if config.optimizer == "adam":
        return AdamL2(config.lr, l2=config.weight_decay, **options)
    if config.optimizer == "rmsprop":
        return AdamL2(config.lr, l2=config.weight_decay, **RMSPROP, **options)
    if config.optimizer == "sgd":
        return SGD(config.lr, weight_decay=config.weight_decay or None, **options)
    return NTASGD(config.lr, weight_decay=config.weight_decay, **options)


def build_model(config, vocab_size, batch_size, optimizer=None):
    """A stateful language model for `batch_size` streams, compiled for training with
    `optimizer` (default: the one `config` names), under `config.dtype_policy` (with
    float16, the loss scaled by `FLOAT16_LOSS_SCALE`)."""
    policy = config.dtype_policy
    with dtype_policy(policy):
        model = AWDLSTMLanguageModel(
            vocab_size,
            stateful=True,
            batch_size=batch_size,
            seed=config.seed,
            **config.model_kwargs(),
        )
    scale = FLOAT16_LOSS_SCALE if policy == "mixed_float16" else None
    optimizer = optimizer or build_optimizer(config, loss_scale_factor=scale)
    if scale is not None and optimizer.loss_scale_factor is None:
        optimizer.loss_scale_factor = scale
    # auto_scale_loss=False: the fixed scale above, not Keras' LossScaleOptimizer wrapper.
    model.compile(optimizer=optimizer, auto_scale_loss=False, **model.compile_defaults())
    model.build((batch_size, None))
    # JAX pads every training segment to the longest the schedule draws: one
    # compiled step for all of them.
    model.segment_capacity = max_segment_length(config.bptt, config.length_quantum)
    return model


@contextlib.contextmanager
def dtype_policy(name):
    """Keras' global dtype policy set to `name` while the block builds its layers
    (each keeps the policy it was made with), then put back."""
    before = keras.config.dtype_policy()
    keras.config.set_dtype_policy(name)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(before)


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


def evaluation_loop(ids, batch_size, bptt, segment_loss, progress=False):
    """Mean per-token loss of a split scored segment by segment: `batch_size` streams,
    segments of `bptt` (the last may be shorter), `segment_loss(x, y)` returning the
    summed loss (nats) of one segment; the mean is weighted by segment length."""
    segments = EvaluationSegments(ids, batch_size, bptt)
    bar = Progress(segments.tokens() * batch_size, "token", progress)
    total, count = 0.0, 0
    for x, y in segments:
        total += segment_loss(x, y)
        count += y.size
        bar.update(count, [("loss", total / count)])
    return total / count


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
            return float(model.score_on_batch(x, y).astype(np.float64).sum())

    else:

        def segment_loss(x, y):
            # predict_on_batch runs the backend's compiled step (eager calls cost
            # several times more); the carried state is a model variable, updated
            # either way.
            return -float(target_log_probs(model.predict_on_batch(x), y).sum())

    model.reset_state()
    return evaluation_loop(ids, model.batch_size, bptt, segment_loss, progress)


def split_loss(config, vocab_size, ids, batch_size, weight_values, progress=False):
    """Per-token loss of a split, evaluated at `batch_size` streams with the given
    weights (the reference validates with 10 streams and tests with 1)."""
    model = build_model(config, vocab_size, batch_size)
    copy_weights(weight_values, model)
    return evaluate(model, ids, config.bptt, progress=progress)


def loss_summary(split, loss, level="word"):
    """`{split}_loss`, `{split}_ppl` and, at character level, `{split}_bpc` of a mean
    per-token loss in nats."""
    summary = {f"{split}_loss": loss, f"{split}_ppl": math.exp(min(loss, 700))}
    if level == "char":
        summary[f"{split}_bpc"] = loss / math.log(2)
    return summary


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
