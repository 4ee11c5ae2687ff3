"""NT-ASGD: non-monotonically triggered averaged SGD (Merity et al. 2017, section 3).

Plain SGD until the validation loss stops improving by the non-monotone rule, then SGD
that also keeps the uniform average of the iterates since the switch; the averaged
weights are the ones evaluated, checkpointed and tested. The average rides on Keras'
EMA machinery (`use_ema`): the optimizer keeps one average per variable, updated after
every step on every backend, and `keras.callbacks.SwapEMAWeights()` swaps it in around
each evaluation. Only the averaging rule differs: uniform since the switch, not
exponential. (Use the callback's default mode: `swap_on_epoch=True` leaves the average
in the model after the last epoch, and training that continues would start from it.)
"""

import keras
from keras import ops

from awd_lstm import backend
from awd_lstm._validation import check_positive_int
from awd_lstm.config import step_decay  # noqa: F401 (the recipe's `when`, re-exported)

_SumOverReplicasFirst = backend.SumOverReplicasFirst


class SkipsNonFiniteUpdates:
    """An optimizer mixin: with `skip_non_finite=True`, a step whose loss or
    gradients are not all finite changes nothing (weights, optimizer state,
    averages, `iterations`) and adds one to `skipped_updates`.

    The loss takes part through `scale_loss`, which every backend's training step
    applies before differentiating: a non-finite loss is multiplied by NaN, so its
    gradients are NaN even where they would otherwise be finite. `apply` then keeps
    each variable's value from before the update wherever a gradient is not finite:
    a select, not a branch, so that it runs alike eagerly, in TensorFlow graphs and
    inside JAX's stateless steps (it costs a copy of the weights and the optimizer
    state per step, hence off by default).
    """

    def __init__(self, *args, skip_non_finite=False, **kwargs):
        super().__init__(*args, **kwargs)
        if not isinstance(skip_non_finite, bool):
            raise ValueError(
                "`skip_non_finite` must be True or False; "
                f"Received: skip_non_finite={skip_non_finite!r}"
            )
        self.skip_non_finite = skip_non_finite

    def build(self, var_list):
        if self.built:
            return
        super().build(var_list)
        if self.skip_non_finite:
            self.skipped_updates = self.add_variable(
                shape=(),
                dtype=self.iterations.dtype,
                initializer="zeros",
                aggregation="only_first_replica",
                name="skipped_updates",
            )

    def scale_loss(self, loss):
        loss = super().scale_loss(loss)
        if not self.skip_non_finite:
            return loss
        finite = ops.isfinite(ops.stop_gradient(loss))
        return loss * ops.cast(ops.where(finite, 1.0, float("nan")), loss.dtype)

    def apply(self, grads, trainable_variables=None):
        if not self.skip_non_finite:
            return super().apply(grads, trainable_variables)
        if not self.built:
            with keras.name_scope(self.name, caller=self):
                self.build(list(trainable_variables))
        targets = backend.optimizer_targets(self)
        if trainable_variables is not None:
            targets = list(trainable_variables)
        kept = [*targets, *self.variables]
        before = [ops.copy(variable.value) for variable in kept]
        finite = ops.all(ops.stack([ops.all(ops.isfinite(g)) for g in grads if g is not None]))
        super().apply(grads, trainable_variables)
        for variable, value in zip(kept, before):
            variable.assign(ops.where(finite, variable.value, value))
        self.skipped_updates.assign_add(ops.cast(ops.logical_not(finite), self.iterations.dtype))

    @property
    def skipped(self):
        """The number of steps skipped so far (0 without `skip_non_finite`)."""
        if not (self.skip_non_finite and self.built):
            return 0
        return int(ops.convert_to_numpy(self.skipped_updates))

    def get_config(self):
        return {**super().get_config(), "skip_non_finite": self.skip_non_finite}


@keras.saving.register_keras_serializable(package="awd_lstm")
class SGD(SkipsNonFiniteUpdates, _SumOverReplicasFirst, keras.optimizers.SGD):
    """Keras' SGD, with the gradients summed over replicas before clipping (the same
    step as on one device under `tf.distribute`), and non-finite steps skipped on
    request (`SkipsNonFiniteUpdates`)."""


@keras.saving.register_keras_serializable(package="awd_lstm")
class NTASGD(
    SkipsNonFiniteUpdates, _SumOverReplicasFirst, backend.AverageUpdateHook, keras.optimizers.SGD
):
    """SGD that switches to iterate averaging when `start_averaging()` is called.

    Before the switch, `average == weights` after every step; from the switch on, the
    average is the uniform mean of the iterates produced since (the first step after
    the switch gives `average = weights`). `NonMonotoneTrigger` calls
    `start_averaging()` by the paper's rule.

    Args:
        learning_rate: Step size (paper: 30 for word-level models).
        weight_decay: L2 penalty (1.2e-6); for SGD without momentum Keras' decoupled
            decay `w -= lr * wd * w` is the same update as adding `wd * w` to the
            gradient, as the reference does.
        global_clipnorm: Gradients are scaled down so their global norm is at most
            this (0.25), as `torch.nn.utils.clip_grad_norm_` does.
        skip_non_finite: Skip steps whose loss or gradients are not finite
            (`SkipsNonFiniteUpdates`).
        **kwargs: Other `keras.optimizers.SGD` arguments except momentum and EMA.

    Example:

    >>> optimizer = NTASGD(learning_rate=30.0)
    >>> optimizer.averaging
    False
    """

    def __init__(
        self,
        learning_rate=30.0,
        weight_decay=1.2e-6,
        global_clipnorm=0.25,
        name="ntasgd",
        **kwargs,
    ):
        for key in ("momentum", "nesterov", "use_ema", "ema_momentum", "ema_overwrite_frequency"):
            kwargs.pop(key, None)
        super().__init__(
            learning_rate=learning_rate,
            momentum=0.0,
            weight_decay=weight_decay,
            global_clipnorm=global_clipnorm,
            use_ema=True,
            ema_momentum=0.0,
            ema_overwrite_frequency=None,
            name=name,
            **kwargs,
        )

    def build(self, var_list):
        if self.built:
            return
        super().build(var_list)
        # The iteration at which averaging started; -1 while plain SGD.
        self.averaging_start = self.add_variable(
            shape=(),
            dtype=self.iterations.dtype,
            initializer=keras.initializers.Constant(-1),
            aggregation="only_first_replica",
            name="averaging_start",
        )

    @property
    def averaging(self):
        """Whether the optimizer averages its iterates."""
        if not self.built:
            return False
        return int(ops.convert_to_numpy(self.averaging_start)) >= 0

    def start_averaging(self):
        """Starts the uniform average with the next step."""
        if not self.built:
            raise ValueError("start_averaging() needs a built optimizer: train one step first")
        # A fresh value, not the `iterations` array itself: on JAX two variables
        # holding one buffer would be donated twice to the compiled step.
        self.averaging_start.assign(int(ops.convert_to_numpy(self.iterations)))

    def update_averages(self, trainable_variables, averages):
        # Called by every backend after each step, before `iterations` grows: the step
        # under way is number `iterations - averaging_start + 1` since the switch.
        started = ops.greater_equal(self.averaging_start, 0)
        count = ops.maximum(self.iterations - self.averaging_start + 1, 1)
        weight = ops.where(started, 1.0 / ops.cast(count, "float32"), 1.0)
        pairs = [(a, v) for v, a in zip(trainable_variables, averages) if a is not None]
        backend.move_averages([a for a, _ in pairs], [v for _, v in pairs], weight)

    def average_values(self):
        """The averaged weights, in the order of the trainable variables."""
        return self.moving_averages()

    def finalize_variable_values(self, var_list):
        # Keras calls this at the end of fit() to overwrite the weights with the EMA.
        # Training runs here span many fit() calls, so the averaged weights are swapped
        # in explicitly (SwapEMAWeights, checkpoints) instead.
        return None

    def get_config(self):
        config = super().get_config()
        for key in ("momentum", "nesterov", "use_ema", "ema_momentum", "ema_overwrite_frequency"):
            config.pop(key, None)
        return config


def should_trigger(history, value, nonmono):
    """The non-monotone rule: `value` is worse than the best of all past validation
    losses but the last `nonmono`, and there are more than `nonmono` of them."""
    return len(history) > nonmono and value > min(history[:-nonmono])


class NonMonotoneTrigger(keras.callbacks.Callback):
    """Switches an `NTASGD` optimizer to averaging by the non-monotone rule.

    After each epoch's validation, compares the monitored value with the log of the
    earlier ones (`should_trigger`), starts averaging when the rule fires, then
    appends the value to the log. `triggered_epoch` is the (0-based) epoch after
    which averaging started, `stopped_epoch` the one after which it stopped training.
    Its state (the log) is what `get_state()` gives and `set_state()` takes back, as
    the training loop's checkpoints keep it.

    Args:
        monitor: The validation metric (`"val_loss"`).
        nonmono: The non-monotone interval (5).
        stop_on_trigger: Stop training when the rule fires (the fine-tuning stage,
            which averages from its first step, stops there).
        log: Called with one line when averaging starts (default: silent).
    """

    def __init__(self, monitor="val_loss", nonmono=5, stop_on_trigger=False, log=None):
        super().__init__()
        self.monitor = monitor
        self.nonmono = check_positive_int("nonmono", nonmono)
        self.stop_on_trigger = stop_on_trigger
        self.log = log
        self.history = []
        self.triggered_epoch = None
        self.stopped_epoch = None

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        if self.monitor not in logs:
            raise ValueError(
                f"NonMonotoneTrigger monitors {self.monitor!r}, which the epoch's logs lack "
                f"(they have {sorted(logs)}); pass validation data to fit()"
            )
        value = float(logs[self.monitor])
        if should_trigger(self.history, value, self.nonmono):
            optimizer = self.model.optimizer
            if not getattr(optimizer, "averaging", True):
                optimizer.start_averaging()
                self.triggered_epoch = epoch
                if self.log is not None:
                    self.log(f"epoch {epoch + 1}: switching to averaged SGD (NT-ASGD)")
            if self.stop_on_trigger:
                self.model.stop_training = True
                self.stopped_epoch = epoch
        self.history.append(value)

    def get_state(self):
        return {
            "history": list(self.history),
            "triggered_epoch": self.triggered_epoch,
            "stopped_epoch": self.stopped_epoch,
        }

    def set_state(self, state):
        self.history = list(state["history"])
        self.triggered_epoch = state.get("triggered_epoch")
        self.stopped_epoch = state.get("stopped_epoch")


@keras.saving.register_keras_serializable(package="awd_lstm")
class AdamL2(SkipsNonFiniteUpdates, _SumOverReplicasFirst, keras.optimizers.Adam):
    """Adam with an L2 penalty added to the gradient (after clipping), as
    `torch.optim.Adam(weight_decay=...)` and the reference's character-level runs do.
    Keras' own `Adam(weight_decay=...)` decays the weights directly (AdamW), which is
    a different update.

    Args:
        learning_rate: Step size (2e-3 for PTB characters, 1e-3 for enwik8).
        l2: The penalty's coefficient (1.2e-6).
        **kwargs: Other `keras.optimizers.Adam` arguments (`global_clipnorm`, ...).

    Example:

    >>> AdamL2(2e-3, l2=1.2e-6, global_clipnorm=0.25).l2
    1.2e-06
    """

    def __init__(self, learning_rate=0.001, l2=0.0, name="adam_l2", **kwargs):
        kwargs.pop("weight_decay", None)
        super().__init__(learning_rate=learning_rate, name=name, **kwargs)
        if not (isinstance(l2, (int, float)) and l2 >= 0):
            raise ValueError(f"`l2` must be a number >= 0; Received: l2={l2!r}")
        self.l2 = float(l2)

    def update_step(self, gradient, variable, learning_rate):
        if self.l2:
            gradient = gradient + ops.cast(self.l2, variable.dtype) * variable
        super().update_step(gradient, variable, learning_rate)

    def get_config(self):
        return {**super().get_config(), "l2": self.l2}
