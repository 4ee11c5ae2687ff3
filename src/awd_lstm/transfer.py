"""ULMFiT's fine-tuning parts (Howard & Ruder 2018) as Keras objects.

Universal Language Model Fine-tuning adapts a language model pretrained on a general
corpus to a target task in two stages, the target-domain language model, then the
classifier; these are the training parts the paper's section 3 adds to plain SGD:

- `SlantedTriangular`: slanted triangular learning rates (STLR, eq. 3), a short
  linear warm-up to `lr_max` and a long linear decay, as a Keras learning-rate
  schedule;
- `discriminative_multipliers` and the `DiscriminativeSGD` / `DiscriminativeAdam`
  optimizers: discriminative fine-tuning (eq. 2), each layer group its own rate, the
  group before having the next one's divided by 2.6;
- `GradualUnfreezing`: the classifier's gradual unfreezing (section 3.3), one
  layer group more each epoch, from the last, as a Keras callback;
- `remap_embeddings`: the target-domain vocabulary's embedding rows (and decoder
  biases) made from the pretrained ones.

Layer groups come from the model: `model.layer_groups()` returns a list of groups,
first (the embedding) to last (the head), each group a list of Keras layers or
variables (`AWDLSTMClassifier` has one: the embedding, each LSTM, the head).

A classifier's fine-tuning, the paper's way:

    groups = model.layer_groups()
    steps = epochs * steps_per_epoch
    optimizer = DiscriminativeAdam(
        SlantedTriangular(0.01, total_steps=steps),
        multipliers=discriminative_multipliers(groups),
        beta_1=0.7, beta_2=0.99,
    )
    model.compile(optimizer, loss)
    model.fit(x, y, epochs=epochs, callbacks=[GradualUnfreezing()])
"""

import math
import numbers
import warnings

import keras
import numpy as np
from keras import ops

from awd_lstm import backend
from awd_lstm._validation import (
    check_non_negative,
    check_non_negative_int,
    check_positive_int,
    check_positive_number,
)

_SumOverReplicasFirst = backend.SumOverReplicasFirst

# The paper's choices (section 3.2).
FACTOR = 2.6
CUT_FRAC = 0.1
RATIO = 32
MAX_LEARNING_RATE = 0.01


@keras.saving.register_keras_serializable(package="awd_lstm")
class SlantedTriangular(keras.optimizers.schedules.LearningRateSchedule):
    """Slanted triangular learning rates (STLR; section 3.2, eq. 3).

    With `T = total_steps` and `cut = floor(T * cut_frac)`, the rate of step `t`
    (the optimizer's `iterations`, from 0) is

        p = t / cut                                        if t < cut
        p = 1 - (t - cut) / (cut * (1 / cut_frac - 1))     otherwise
        lr_t = lr_max * (1 + p * (ratio - 1)) / ratio

    a linear rise from `lr_max / ratio` to `lr_max` over the first `cut` steps, then a
    linear fall back to `lr_max / ratio` at step `T`. `p` is kept at 0 or above: after
    `T` steps (and where the floor makes the fall overshoot before `T`) the rate
    stays at `lr_max / ratio`, never below.

    Args:
        max_learning_rate: `lr_max`, the peak rate (the paper: 0.01).
        total_steps: `T`, the training steps in all: `epochs * steps_per_epoch` for
            a `fit` of `epochs` epochs.
        cut_frac: The fraction of the steps the rate rises (0.1).
        ratio: How much smaller the lowest rate is than `lr_max` (32).

    Use it as any Keras schedule, the optimizer's `learning_rate`:
    `keras.optimizers.Adam(SlantedTriangular(0.01, total_steps=epochs * steps))`.

    Example:

    >>> schedule = SlantedTriangular(0.01, total_steps=1000)
    >>> schedule.cut
    100
    >>> [round(float(schedule(t)), 7) for t in (0, 100, 1000)]
    [0.0003125, 0.01, 0.0003125]
    """

    def __init__(
        self,
        max_learning_rate=MAX_LEARNING_RATE,
        total_steps=None,
        cut_frac=CUT_FRAC,
        ratio=RATIO,
    ):
        self.max_learning_rate = check_positive_number("max_learning_rate", max_learning_rate)
        self.total_steps = check_positive_int("total_steps", total_steps)
        if (
            isinstance(cut_frac, bool)
            or not isinstance(cut_frac, numbers.Real)
            or not 0.0 < cut_frac < 1.0  # also false for NaN
        ):
            raise ValueError(
                f"`cut_frac` must be a number in (0, 1); Received: cut_frac={cut_frac!r}"
            )
        self.cut_frac = float(cut_frac)
        if check_positive_number("ratio", ratio) < 1:
            raise ValueError(f"`ratio` must be a number >= 1; Received: ratio={ratio!r}")
        self.ratio = float(ratio)
        self.cut = math.floor(self.total_steps * self.cut_frac)
        if self.cut < 1:
            raise ValueError(
                "`total_steps * cut_frac` must be at least 1 for the rate to rise over a "
                f"step; Received: total_steps={self.total_steps}, cut_frac={self.cut_frac}"
            )
        # The fall's length, `cut * (1 / cut_frac - 1)` (about `T - cut`).
        self.decay_steps = self.cut * (1.0 / self.cut_frac - 1.0)

    def __call__(self, step):
        step = ops.cast(step, "float32")
        cut = float(self.cut)
        rising = step / cut
        falling = ops.maximum(1.0 - (step - cut) / self.decay_steps, 0.0)
        p = ops.where(step < cut, rising, falling)
        return self.max_learning_rate * (1.0 + p * (self.ratio - 1.0)) / self.ratio

    def get_config(self):
        return {
            "max_learning_rate": self.max_learning_rate,
            "total_steps": self.total_steps,
            "cut_frac": self.cut_frac,
            "ratio": self.ratio,
        }


@keras.saving.register_keras_serializable(package="awd_lstm")
class StagedSlantedTriangular(keras.optimizers.schedules.LearningRateSchedule):
    """A slanted triangle per stage: the schedule of `SlantedTriangular` started
    again at each stage of `stage_steps`, as fastai runs one cycle per stage of
    gradual unfreezing. Without it a single triangle over the whole run spends its
    high rates on the first stages, while most of the model is frozen.

    Within a stage of `n` steps the rate follows eq. 3 with `T = n` (a rise over
    `max(1, floor(n * cut_frac))` steps); after the last stage the rate stays at
    `max_learning_rate / ratio`.

    Args:
        max_learning_rate: The peak of every triangle.
        stage_steps: The steps of each stage, in order (e.g. an epoch per unfrozen
            group, then the remaining epochs).
        cut_frac, ratio: As `SlantedTriangular`'s.
    """

    def __init__(
        self, max_learning_rate=MAX_LEARNING_RATE, stage_steps=(), cut_frac=CUT_FRAC, ratio=RATIO
    ):
        self.max_learning_rate = check_positive_number("max_learning_rate", max_learning_rate)
        self.stage_steps = [check_positive_int("stage_steps", n) for n in stage_steps]
        if not self.stage_steps:
            raise ValueError("`stage_steps` must list at least one stage")
        if not 0.0 < cut_frac < 1.0:
            raise ValueError(
                f"`cut_frac` must be a number in (0, 1); Received: cut_frac={cut_frac!r}"
            )
        if check_positive_number("ratio", ratio) < 1:
            raise ValueError(f"`ratio` must be a number >= 1; Received: ratio={ratio!r}")
        self.cut_frac, self.ratio = float(cut_frac), float(ratio)

    def __call__(self, step):
        step = ops.cast(step, "float32")
        rate = ops.zeros_like(step) + self.max_learning_rate / self.ratio  # after the stages
        starts = [sum(self.stage_steps[:i]) for i in range(len(self.stage_steps))]
        for begin, n in zip(starts, self.stage_steps):
            cut = float(max(1, math.floor(n * self.cut_frac)))
            local = step - float(begin)
            falling = ops.maximum(1.0 - (local - cut) / max(n - cut, 1.0), 0.0)
            p = ops.where(local < cut, local / cut, falling)
            value = self.max_learning_rate * (1.0 + p * (self.ratio - 1.0)) / self.ratio
            inside = ops.logical_and(step >= float(begin), step < float(begin + n))
            rate = ops.where(inside, value, rate)
        return rate

    def get_config(self):
        return {
            "max_learning_rate": self.max_learning_rate,
            "stage_steps": list(self.stage_steps),
            "cut_frac": self.cut_frac,
            "ratio": self.ratio,
        }


def _group_list(groups):
    """`groups` (a list of groups, or a model with `layer_groups()`) as a list of lists."""
    if hasattr(groups, "layer_groups"):
        groups = groups.layer_groups()
    if isinstance(groups, (keras.layers.Layer, keras.Variable)) or not isinstance(
        groups, (list, tuple)
    ):
        raise TypeError(
            "`groups` must be a list of layer groups (each a list of Keras layers or "
            f"variables) or a model with `layer_groups()`; got {type(groups).__name__}"
        )
    if not groups:
        raise ValueError("`groups` must hold at least one layer group; Received: groups=[]")
    result = []
    for group in groups:
        if isinstance(group, (keras.layers.Layer, keras.Variable)):
            group = [group]
        if not isinstance(group, (list, tuple)):
            raise TypeError(
                "each layer group must be a list of Keras layers or variables; "
                f"got {type(group).__name__}"
            )
        for item in group:
            if not isinstance(item, (keras.layers.Layer, keras.Variable)):
                raise TypeError(
                    "a layer group may hold Keras layers and variables only; "
                    f"got {type(item).__name__}"
                )
        result.append(list(group))
    return result


def _variables_of(group):
    """The Keras variables of a group's layers (all their weights, trainable now or
    not) and the variables listed in it."""
    variables = []
    for item in group:
        variables.extend(item.weights if isinstance(item, keras.layers.Layer) else [item])
    return variables


def discriminative_multipliers(groups, factor=FACTOR):
    """The learning-rate multiplier of every variable of the layer groups, for
    discriminative fine-tuning (section 3.2, eq. 2).

    Each group's rate is the next (later) group's divided by `factor`: the last group
    trains at the base rate (multiplier 1), the one before at `lr / factor`, then
    `lr / factor**2`, and so on to the first.

    Args:
        groups: The layer groups, first (embedding) to last (head), each a list of
            Keras layers (all their weights count) or variables; or a model with
            `layer_groups()`, which gives them.
        factor: The rate's ratio between a group and the one before it (2.6).

    Returns:
        A dict `{variable.path: multiplier}`, the `multipliers` argument of
        `DiscriminativeSGD` and `DiscriminativeAdam`. A variable two groups share
        (tied weights) takes the later group's multiplier.

    Example:

    >>> import keras
    >>> first, last = keras.Variable([1.0], name="first"), keras.Variable([1.0], name="last")
    >>> rates = discriminative_multipliers([[first], [last]])
    >>> rates["first"], rates["last"]
    (0.3846153846153846, 1.0)
    """
    factor = check_positive_number("factor", factor)
    groups = _group_list(groups)
    multipliers = {}
    owners = {}
    for index, group in enumerate(groups):
        multiplier = 1.0 / factor ** (len(groups) - 1 - index)
        for variable in _variables_of(group):
            path = variable.path
            owner = owners.setdefault(path, variable)
            if owner is not variable and multipliers[path] != multiplier:
                raise ValueError(
                    f"two different variables of the layer groups have the path {path!r}; "
                    "give their layers distinct names"
                )
            multipliers[path] = multiplier
    return multipliers


class _Untracked:
    """A holder for what an optimizer keeps of its model's variables: Keras adds any
    variable found in a list, tuple or dict attribute of an optimizer to the
    optimizer's own variables, and leaves other objects alone."""

    def __init__(self, value):
        self.value = value


def _check_multipliers(multipliers):
    if multipliers is None:
        return {}
    if not isinstance(multipliers, dict):
        raise TypeError(
            "`multipliers` must be a dict {variable.path: multiplier} "
            f"(discriminative_multipliers); got {type(multipliers).__name__}"
        )
    checked = {}
    for path, multiplier in multipliers.items():
        if not isinstance(path, str):
            raise TypeError(
                f"the keys of `multipliers` must be variable paths (strings); got {path!r}"
            )
        checked[path] = check_non_negative(f"multipliers[{path!r}]", multiplier)
    return checked


class SkipsFrozenVariables:
    """An optimizer mixin: `stateless_apply` (the step of JAX's `fit`) takes the
    values and gradients of a subset of the variables the optimizer was built with,
    those still trainable (`variable.trainable`), in the order it was built with.

    Keras' own `stateless_apply` wants all of them, so on JAX a layer frozen after
    the optimizer was built stops `fit`; `GradualUnfreezing` freezes layers so. The
    frozen variables' slots (momenta) stay as they were, as on the other backends,
    where `apply` takes any subset already. Not with `use_ema=True` on JAX (the
    averages of frozen variables would be lost).
    """

    def build(self, var_list):
        if self.built:
            return
        super().build(var_list)
        self._built_variables = _Untracked(list(var_list))

    def stateless_apply(self, optimizer_variables, grads, trainable_variables):
        built = getattr(self, "_built_variables", None)
        if built is None or len(trainable_variables) == len(built.value):
            return super().stateless_apply(optimizer_variables, grads, trainable_variables)
        built = built.value
        trained = [i for i, variable in enumerate(built) if variable.trainable]
        if len(trained) != len(trainable_variables):
            raise ValueError(
                f"{type(self).__name__}.stateless_apply got {len(trainable_variables)} "
                f"variables, not the {len(trained)} trainable ones of the {len(built)} it "
                "was built with"
            )
        if self.use_ema:
            raise ValueError(
                f"{type(self).__name__} with `use_ema=True` cannot skip frozen variables "
                "in `stateless_apply` (JAX); freeze no layer, or train without the EMA"
            )
        # The frozen variables get no gradient (Keras leaves them and their slots
        # alone) and a placeholder value, which nothing reads.
        all_grads = [None] * len(built)
        all_values = [ops.zeros(variable.shape, variable.dtype) for variable in built]
        for i, grad, value in zip(trained, grads, trainable_variables):
            all_grads[i] = grad
            all_values[i] = value
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Gradients do not exist for variables")
            new_values, new_optimizer_variables = super().stateless_apply(
                optimizer_variables, all_grads, all_values
            )
        return [new_values[i] for i in trained], new_optimizer_variables


class DiscriminativeRates:
    """An optimizer mixin for discriminative fine-tuning (section 3.2, eq. 2): each
    variable's step takes the learning rate times its multiplier.

    `update_step(gradient, variable, learning_rate)`, the public hook of Keras'
    optimizers, gets `learning_rate * multipliers[variable.path]` (1.0 for a variable
    not in `multipliers`). Keras calls it once per variable and step on every
    backend: with the Keras variable itself on PyTorch and on JAX (also in the
    stateless step of JAX's `fit`, where `variable.path` still reads), and with the
    `tf.Variable` under it on TensorFlow (a replica's part of it under a strategy),
    which has no path; those are recognised by identity among the variables the
    optimizer was built with.

    Keras' decoupled weight decay (`weight_decay=`) is applied outside
    `update_step`, at the base rate, to every variable.

    Args:
        multipliers: `{variable.path: multiplier}` (`discriminative_multipliers`);
            part of the config, so the optimizer serializes with it.
    """

    def __init__(self, *args, multipliers=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.multipliers = multipliers

    @property
    def multipliers(self):
        """`{variable.path: multiplier}`; set before the first step (a compiled step
        reads it when traced)."""
        return self._multipliers

    @multipliers.setter
    def multipliers(self, multipliers):
        self._multipliers = _check_multipliers(multipliers)

    def build(self, var_list):
        if self.built:
            return
        super().build(var_list)
        paths = {}
        if backend.name() == "tensorflow":
            import tensorflow as tf

            for variable in var_list:
                value = variable.value
                paths[id(value)] = variable.path
                if isinstance(value, tf.distribute.DistributedValues):
                    for component in value.values:
                        paths[id(component)] = variable.path
        self._paths_by_identity = _Untracked(paths)

    def multiplier_of(self, variable):
        """The learning-rate multiplier of `variable` (a Keras variable, or on
        TensorFlow the `tf.Variable` under one the optimizer was built with)."""
        path = getattr(variable, "path", None)
        if not isinstance(path, str):
            known = getattr(self, "_paths_by_identity", None)
            path = None if known is None else known.value.get(id(variable))
            if path is None:
                raise ValueError(
                    f"{type(self).__name__} cannot tell which of its variables "
                    f"{getattr(variable, 'name', variable)!r} is; it updates only the "
                    "variables it was built with"
                )
        return self.multipliers.get(path, 1.0)

    def update_step(self, gradient, variable, learning_rate):
        multiplier = self.multiplier_of(variable)
        if multiplier != 1.0:
            learning_rate = learning_rate * multiplier
        super().update_step(gradient, variable, learning_rate)

    def get_config(self):
        return {**super().get_config(), "multipliers": dict(self.multipliers)}


@keras.saving.register_keras_serializable(package="awd_lstm")
class DiscriminativeSGD(
    DiscriminativeRates, SkipsFrozenVariables, _SumOverReplicasFirst, keras.optimizers.SGD
):
    """Keras' SGD with a learning rate per variable, ULMFiT's discriminative
    fine-tuning (section 3.2, eq. 2): `w -= lr * multiplier * gradient`.

    Args:
        learning_rate: The base rate, the last layer group's: a number or a schedule
            (`SlantedTriangular`).
        multipliers: `{variable.path: multiplier}`, from `discriminative_multipliers`
            (a rate of `lr / 2.6**k` for the group `k` before the last).
        **kwargs: Other `keras.optimizers.SGD` arguments (`momentum`, ...).

    It also takes the frozen layers of `GradualUnfreezing` on JAX
    (`SkipsFrozenVariables`), and sums the replicas' gradients before clipping under
    a TensorFlow strategy, as `awd_lstm.optimizers.SGD` does.

    Example:

    >>> optimizer = DiscriminativeSGD(0.01, multipliers={"head/kernel": 1.0})
    >>> optimizer.get_config()["multipliers"]
    {'head/kernel': 1.0}
    """

    def __init__(self, learning_rate=0.01, multipliers=None, name="discriminative_sgd", **kwargs):
        super().__init__(learning_rate=learning_rate, multipliers=multipliers, name=name, **kwargs)


@keras.saving.register_keras_serializable(package="awd_lstm")
class DiscriminativeAdam(
    DiscriminativeRates, SkipsFrozenVariables, _SumOverReplicasFirst, keras.optimizers.Adam
):
    """Keras' Adam with a learning rate per variable (discriminative fine-tuning,
    section 3.2): each variable's Adam step is the one of Keras' Adam at the rate
    `lr * multiplier`. (The paper fine-tunes with Adam, `beta_1=0.7, beta_2=0.99`.)

    Args:
        learning_rate: The base rate, the last layer group's: a number or a schedule
            (`SlantedTriangular`).
        multipliers: `{variable.path: multiplier}`, from `discriminative_multipliers`.
        **kwargs: Other `keras.optimizers.Adam` arguments.

    As `DiscriminativeSGD`, it takes `GradualUnfreezing`'s frozen layers on JAX;
    without `multipliers` it is Adam that does.
    """

    def __init__(self, learning_rate=0.001, multipliers=None, name="discriminative_adam", **kwargs):
        super().__init__(learning_rate=learning_rate, multipliers=multipliers, name=name, **kwargs)


def _set_trainable(group, value):
    for item in group:
        item.trainable = value


class GradualUnfreezing(keras.callbacks.Callback):
    """Gradual unfreezing (section 3.3): training starts with only the last layer
    group trainable, and each following epoch one more group, from the end, becomes
    trainable, until all are (then all train to the end).

    At each epoch's start (`on_epoch_begin`) the callback sets `trainable` of the
    frozen groups' layers (or variables) to False and of the others to True. A
    compiled step fixes the variables it updates when it is traced: TensorFlow's
    `tf.function` would go on training the first set (JAX retraces its step anyway,
    the variable list it is given having changed; PyTorch steps eagerly). So when the
    set changes the callback remakes the train function,
    `model.make_train_function(force=True)`, as Keras documents for
    `Layer.trainable`; `fit` looks up `model.train_function` for every step, so the
    new set trains from that epoch's first step, on every backend.

    The optimizer must hold slots for every group's variables: at the start of
    training, if it is not built yet (TensorFlow builds it in its first step), the
    callback builds it on all the model's trainable variables before freezing any,
    so leave every group trainable until `fit` starts. On JAX the optimizer must
    also take a subset of its variables in its stateless step: use
    `DiscriminativeSGD` or `DiscriminativeAdam` (without `multipliers` they are SGD
    and Adam), or mix `SkipsFrozenVariables` into another; the callback raises
    otherwise. A frozen `BatchNormalization` runs in inference mode, as Keras runs
    any layer whose `trainable` is False.

    The count of epochs trained is the state: `get_state()` gives it (JSON) and
    `set_state(state)` takes it back, so that a resumed run, or a later `fit` with
    the same callback, unfreezes where the last one left off.

    Args:
        groups: The layer groups, first (embedding) to last (head), each a list of
            Keras layers or variables; `None`: `self.model.layer_groups()`.
        epochs_per_group: Epochs between one unfreezing and the next (1, the
            paper's: one group more each epoch).

    Example, ULMFiT's classifier fine-tuning:

        model.compile(DiscriminativeAdam(...), loss)
        model.fit(x, y, epochs=len(model.layer_groups()) + 2,
                  callbacks=[GradualUnfreezing()])
    """

    def __init__(self, groups=None, epochs_per_group=1):
        super().__init__()
        self.groups = None if groups is None else _group_list(groups)
        self.epochs_per_group = check_positive_int("epochs_per_group", epochs_per_group)
        self.epochs_trained = 0

    def layer_groups(self):
        """The groups: those given, else the model's `layer_groups()`."""
        if self.groups is not None:
            return self.groups
        if not hasattr(self.model, "layer_groups"):
            raise ValueError(
                "GradualUnfreezing needs `groups` or a model with `layer_groups()`; "
                f"{type(self.model).__name__} has none"
            )
        return _group_list(self.model.layer_groups())

    def unfrozen_groups(self, epochs_trained=None):
        """How many groups (from the last) train in the epoch after `epochs_trained`
        epochs (default: the epochs trained so far)."""
        if epochs_trained is None:
            epochs_trained = self.epochs_trained
        groups = self.layer_groups()
        return min(len(groups), 1 + epochs_trained // self.epochs_per_group)

    def on_train_begin(self, logs=None):
        groups = self.layer_groups()
        optimizer = getattr(self.model, "optimizer", None)
        if optimizer is None:
            return
        # (A mixed-precision `LossScaleOptimizer` hands the step to its inner one.)
        inner = getattr(optimizer, "inner_optimizer", optimizer)
        if backend.name() == "jax" and not isinstance(inner, SkipsFrozenVariables):
            raise ValueError(
                "GradualUnfreezing on JAX needs an optimizer that skips frozen variables "
                "(DiscriminativeSGD, DiscriminativeAdam or one with SkipsFrozenVariables); "
                f"Received: {type(optimizer).__name__}"
            )
        if not optimizer.built:
            for group in groups:
                _set_trainable(group, True)
            optimizer.build(self.model.trainable_variables)

    def on_epoch_begin(self, epoch, logs=None):
        groups = self.layer_groups()
        unfrozen = self.unfrozen_groups()
        before = [id(v) for v in self.model.trainable_variables]
        # Frozen first: a variable shared with a trainable group ends up trainable.
        for group in groups[: len(groups) - unfrozen]:
            _set_trainable(group, False)
        for group in groups[len(groups) - unfrozen :]:
            _set_trainable(group, True)
        if [id(v) for v in self.model.trainable_variables] != before:
            self.model.make_train_function(force=True)

    def on_epoch_end(self, epoch, logs=None):
        self.epochs_trained += 1

    def get_state(self):
        return {"epochs_trained": self.epochs_trained}

    def set_state(self, state):
        self.epochs_trained = check_non_negative_int("epochs_trained", state["epochs_trained"])


def remap_embeddings(old_tokens, new_tokens, matrix):
    """The embedding matrix (or decoder bias) of a new vocabulary, from a pretrained
    one: the target-domain vocabulary of ULMFiT's language-model fine-tuning.

    A token of both vocabularies keeps its pretrained row, at its new place; a new
    token gets the mean of all the pretrained rows (for a bias vector, the mean
    bias), as ULMFiT's released fine-tuning code does.

    Args:
        old_tokens: The pretrained vocabulary's tokens, in id order (or a
            `Vocabulary`).
        new_tokens: The new vocabulary's tokens, in id order (or a `Vocabulary`).
        matrix: The pretrained rows, `(len(old_tokens), ...)`: an embedding matrix
            `(tokens, size)` or a bias vector `(tokens,)` (NumPy or a Keras
            variable).

    Returns:
        A NumPy array `(len(new_tokens), ...)` of the matrix's dtype, to assign to the
        new model's variable before fine-tuning.

    Example:

    >>> import numpy as np
    >>> remap_embeddings(["a", "b"], ["b", "new"], np.array([[1.0, 2.0], [3.0, 6.0]]))
    array([[3., 6.],
           [2., 4.]])
    """
    old_tokens = _tokens("old_tokens", old_tokens)
    new_tokens = _tokens("new_tokens", new_tokens)
    matrix = np.asarray(matrix)
    if matrix.ndim < 1 or matrix.shape[0] != len(old_tokens):
        raise ValueError(
            f"`matrix` must have one row per old token ({len(old_tokens)}); "
            f"Received: matrix.shape={matrix.shape}"
        )
    old_index = {token: i for i, token in enumerate(old_tokens)}
    rows = np.array([old_index.get(token, -1) for token in new_tokens], dtype=np.int64)
    result = np.empty((len(new_tokens), *matrix.shape[1:]), dtype=matrix.dtype)
    known = rows >= 0
    result[known] = matrix[rows[known]]
    if not known.all():
        if len(old_tokens) == 0:
            raise ValueError("`matrix` has no rows to average for the new tokens")
        result[~known] = matrix.mean(axis=0, dtype=np.float64)
    return result


def _tokens(name, tokens):
    tokens = list(getattr(tokens, "tokens", tokens))
    if len(set(tokens)) != len(tokens):
        raise ValueError(f"`{name}` must hold distinct tokens; some appear more than once")
    return tokens
