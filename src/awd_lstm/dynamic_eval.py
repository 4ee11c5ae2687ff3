"""Dynamic evaluation (Krause et al. 2017, "Dynamic Evaluation of Neural Sequence
Models"): while evaluating, adapt the weights to the text just seen.

Each evaluation segment is scored with the current weights, then the weights take one
step on that segment's gradient, normalized by the root-mean-square gradient measured
on the training data, and decay back toward the trained weights:

    w ← w + decay · r · (w₀ − w) − lr · g / (rms + epsilon),   r = rms / Σ mean(rms)

(`r` is capped so that `decay · r ≤ 1`: the pull never overshoots `w₀`). Dropout and
AR/TAR are off throughout. Both steps are Keras optimizers, so the whole procedure runs
through each backend's compiled `train_on_batch`.
"""

import dataclasses
import math
import numbers

import keras
import numpy as np
from keras import ops

from awd_lstm.data import BPTTSchedule, batchify, segment
from awd_lstm.presets import DYNAMIC_EVAL
from awd_lstm.recipe import build_model, copy_weights, evaluation_loop


def check_dynamic_settings(learning_rate, decay):
    """Raises `ValueError` (one sentence naming the argument) unless `learning_rate`
    is a finite number >= 0 and `decay` lies in [0, 1] (each step moves the weights
    that fraction of the way back to the trained ones: past 1 overshoots)."""
    for name, value in (("learning_rate", learning_rate), ("decay", decay)):
        if not (
            isinstance(value, numbers.Real)
            and not isinstance(value, bool)
            and math.isfinite(value)
            and value >= 0
        ):
            raise ValueError(f"`{name}` must be a finite number >= 0; Received: {name}={value!r}")
    if decay > 1:
        raise ValueError(f"`decay` must be in [0, 1]; Received: decay={decay!r}")


@keras.saving.register_keras_serializable(package="awd_lstm")
class GradientStatistics(keras.optimizers.Optimizer):
    """An "optimizer" that leaves the weights alone and sums the squared gradients
    (`squared_gradients`, one per variable): the statistics dynamic evaluation
    normalizes by."""

    def __init__(self, name="gradient_statistics", **kwargs):
        super().__init__(learning_rate=0.0, name=name, **kwargs)

    def build(self, variables):
        if self.built:
            return
        super().build(variables)
        self.squared_gradients = [
            self.add_variable_from_reference(v, name="squared_gradient") for v in variables
        ]

    def update_step(self, gradient, variable, learning_rate):
        total = self.squared_gradients[self._get_variable_index(variable)]
        self.assign_add(total, ops.square(ops.cast(gradient, total.dtype)))


@keras.saving.register_keras_serializable(package="awd_lstm")
class DynamicEvaluation(keras.optimizers.Optimizer):
    """The dynamic-evaluation update (RMS-normalized step, decay toward `w₀`).

    Args:
        rms: Root-mean-square gradient per trainable variable (NumPy arrays), from
            `gradient_rms`.
        learning_rate: Step size of the normalized gradient.
        decay: Pull toward the weights the optimizer was built on (`w₀`).
        epsilon: Added to `rms` in the denominator.
    """

    def __init__(
        self,
        rms,
        learning_rate=DYNAMIC_EVAL["learning_rate"],
        decay=DYNAMIC_EVAL["decay"],
        epsilon=1e-3,
        name="dynamic_eval",
    ):
        check_dynamic_settings(learning_rate, decay)
        super().__init__(learning_rate=learning_rate, name=name)
        self._rms_values = [np.asarray(r, dtype="float32") for r in rms]
        self.decay = float(decay)
        self.epsilon = float(epsilon)

    def build(self, variables):
        if self.built:
            return
        super().build(variables)
        if len(variables) != len(self._rms_values):
            raise ValueError(
                f"`rms` holds {len(self._rms_values)} arrays for {len(variables)} variables"
            )
        total = sum(float(r.mean()) for r in self._rms_values) or 1.0
        self.rms, self.decay_rates, self.trained = [], [], []
        for variable, rms in zip(variables, self._rms_values):
            rate = rms / total
            if self.decay > 0:
                rate = np.minimum(rate, 1.0 / self.decay)
            for store, value, name in (
                (self.rms, rms, "rms"),
                (self.decay_rates, rate, "decay_rate"),
                (self.trained, ops.convert_to_numpy(variable), "trained"),
            ):
                slot = self.add_variable_from_reference(variable, name=name)
                slot.assign(np.asarray(value, dtype=slot.dtype))
                store.append(slot)

    def update_step(self, gradient, variable, learning_rate):
        i = self._get_variable_index(variable)
        dtype = variable.dtype
        gradient = ops.cast(gradient, dtype)
        pull = self.decay * self.decay_rates[i] * (self.trained[i] - variable)
        step = ops.cast(learning_rate, dtype) * gradient / (self.rms[i] + self.epsilon)
        self.assign_add(variable, pull - step)


def _adaptation_model(config, vocab_size, weights, batch_size, optimizer):
    """A stateful model with the trained weights, dropout and AR/TAR off, compiled
    with `optimizer`."""
    plain = dataclasses.replace(
        config,
        embedding_dropout=0.0,
        input_dropout=0.0,
        hidden_dropout=0.0,
        output_dropout=0.0,
        weight_dropout=0.0,
        alpha=0.0,
        beta=0.0,
    )
    model = build_model(plain, vocab_size, batch_size, optimizer=optimizer)
    copy_weights(weights, model)
    # Built now, eagerly: DynamicEvaluation copies the trained weights as `w₀`.
    optimizer.build(model.trainable_variables)
    return model


def gradient_rms(config, vocab_size, weights, train_ids, batch_size=100, bptt=5, max_steps=None):
    """Root-mean-square gradient of each trainable variable over (a prefix of) the
    training data, in `bptt`-long segments of `batch_size` streams, state carried."""
    optimizer = GradientStatistics()
    model = _adaptation_model(config, vocab_size, weights, batch_size, optimizer)
    batched = batchify(train_ids, batch_size, split="train")
    steps = 0
    for start, length in BPTTSchedule(batched.shape[1], bptt, variable=False):
        if max_steps is not None and steps >= max_steps:
            break
        x, y = segment(batched, start, length)
        model.train_on_batch(x, y)
        steps += 1
    return [np.sqrt(ops.convert_to_numpy(s) / steps) for s in optimizer.squared_gradients]


def dynamic_evaluate(
    config,
    vocab_size,
    weights,
    ids,
    rms,
    learning_rate=DYNAMIC_EVAL["learning_rate"],
    decay=DYNAMIC_EVAL["decay"],
    epsilon=1e-3,
    bptt=5,
    batch_size=1,
    progress=False,
):
    """Per-token cross-entropy (nats) of `ids` with dynamic evaluation: each segment
    scored, then learned from. `weights` (the trained ones) are not modified."""
    optimizer = DynamicEvaluation(rms, learning_rate, decay, epsilon)
    model = _adaptation_model(config, vocab_size, weights, batch_size, optimizer)

    def segment_loss(x, y):
        # The loss of the forward pass, before this segment's update.
        return float(model.train_on_batch(x, y, return_dict=True)["loss"]) * y.size

    return evaluation_loop(ids, batch_size, bptt, segment_loss, progress)
