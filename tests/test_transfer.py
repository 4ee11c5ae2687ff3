"""ULMFiT's training parts: STLR, discriminative rates, gradual unfreezing, and the
vocabulary remapping of the embeddings."""

import json
import math

import keras
import numpy as np
import pytest
from keras import ops

from awd_lstm import backend
from awd_lstm.transfer import (
    DiscriminativeAdam,
    DiscriminativeSGD,
    GradualUnfreezing,
    SlantedTriangular,
    discriminative_multipliers,
    remap_embeddings,
)
from tests.conftest import to_numpy

VOCAB, CLASSES = 7, 3


class Tiny(keras.Model):
    """An embedding, a hidden layer and a head: three layer groups."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.embedding = keras.layers.Embedding(
            VOCAB,
            4,
            embeddings_initializer=keras.initializers.RandomNormal(seed=1),
            name="embedding",
        )
        self.hidden = keras.layers.Dense(
            5,
            activation="tanh",
            kernel_initializer=keras.initializers.GlorotUniform(seed=2),
            bias_initializer=keras.initializers.RandomNormal(stddev=0.1, seed=3),
            name="hidden",
        )
        self.head = keras.layers.Dense(
            CLASSES,
            kernel_initializer=keras.initializers.GlorotUniform(seed=4),
            bias_initializer=keras.initializers.RandomNormal(stddev=0.1, seed=5),
            name="head",
        )

    def call(self, ids):
        return self.head(self.hidden(ops.mean(self.embedding(ids), axis=1)))

    def layer_groups(self):
        return [[self.embedding], [self.hidden], [self.head]]


def _data(seed=0, rows=8):
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, VOCAB, size=(rows, 5)).astype("int32")
    labels = rng.integers(0, CLASSES, size=(rows,)).astype("int32")
    return ids, labels


def _model(optimizer):
    model = Tiny()
    model.compile(optimizer, keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model(_data()[0][:1])  # built: the same initial weights for every model
    return model


def _values(model):
    return [to_numpy(v).copy() for v in model.weights]


def _one_step(model, ids, labels):
    model.fit(ids, labels, batch_size=len(ids), epochs=1, shuffle=False, verbose=0)


def _gradients(ids, labels):
    """The loss gradient at the initial weights, as the change of one plain SGD step
    at rate 1, by variable path (the paths match: every model is a fresh `Tiny`)."""
    model = _model(keras.optimizers.SGD(learning_rate=1.0))
    before = _values(model)
    _one_step(model, ids, labels)
    return {_local(v.path): b - a for v, b, a in zip(model.weights, before, _values(model))}


def _local(path):
    return path.split("/", 1)[1]  # without the model's own (numbered) name


# -- STLR ---------------------------------------------------------------------------


def _stlr(t, lr_max, total, cut_frac, ratio):
    cut = math.floor(total * cut_frac)
    p = t / cut if t < cut else 1 - (t - cut) / (cut * (1 / cut_frac - 1))
    return lr_max * (1 + max(p, 0.0) * (ratio - 1)) / ratio


@pytest.mark.parametrize(
    "total, cut_frac, ratio", [(20, 0.1, 32), (25, 0.1, 32), (13, 0.3, 8), (9, 0.5, 1)]
)
def test_slanted_triangular_is_eq_3_at_every_step(total, cut_frac, ratio):
    schedule = SlantedTriangular(0.01, total_steps=total, cut_frac=cut_frac, ratio=ratio)
    steps = np.arange(total + 4)  # and past the end, where it stays at lr_max / ratio
    got = [float(to_numpy(schedule(ops.convert_to_tensor(t, "int32")))) for t in steps]
    expected = [_stlr(int(t), 0.01, total, cut_frac, ratio) for t in steps]
    np.testing.assert_allclose(got, expected, rtol=1e-6)
    assert max(got) == pytest.approx(0.01)
    assert min(got) == pytest.approx(0.01 / ratio)


def test_staged_slanted_triangular_starts_a_triangle_per_stage():
    from awd_lstm.transfer import StagedSlantedTriangular

    stages = [7, 7, 20]
    schedule = StagedSlantedTriangular(0.01, stages, cut_frac=0.1, ratio=32)
    got = [float(to_numpy(schedule(ops.convert_to_tensor(t, "int32")))) for t in range(40)]

    def within(t, n):  # eq. 3 with T = n, the rise over at least one step
        cut = max(1, int(n * 0.1))
        p = t / cut if t < cut else max(1 - (t - cut) / (n - cut), 0.0)
        return 0.01 * (1 + p * 31) / 32

    expected = [within(t, 7) for t in range(7)] + [within(t, 7) for t in range(7)]
    expected += [within(t, 20) for t in range(20)] + [0.01 / 32] * 6
    np.testing.assert_allclose(got, expected, rtol=1e-6)
    assert got[1] == got[8] == pytest.approx(0.01)  # each stage peaks
    again = StagedSlantedTriangular.from_config(schedule.get_config())
    assert float(to_numpy(again(ops.convert_to_tensor(21, "int32")))) == pytest.approx(got[21])
    with pytest.raises(ValueError, match="at least one stage"):
        StagedSlantedTriangular(0.01, [])


def test_slanted_triangular_paper_defaults_peak_and_ends():
    schedule = SlantedTriangular(total_steps=1000)
    assert (schedule.max_learning_rate, schedule.cut_frac, schedule.ratio) == (0.01, 0.1, 32.0)
    assert schedule.cut == 100
    values = [float(to_numpy(schedule(t))) for t in (0, 50, 100, 550, 1000)]
    np.testing.assert_allclose(
        values, [0.01 / 32, 0.01 * 16.5 / 32, 0.01, 0.01 * 16.5 / 32, 0.01 / 32], rtol=1e-6
    )


class _Rates(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.rates = []

    def on_epoch_end(self, epoch, logs=None):
        optimizer = self.model.optimizer
        steps = int(to_numpy(optimizer.iterations))
        self.rates.append((steps, float(to_numpy(optimizer.learning_rate))))


def test_optimizer_with_slanted_triangular_trains_at_its_rates():
    schedule = SlantedTriangular(0.05, total_steps=10, cut_frac=0.2, ratio=4)
    model = _model(keras.optimizers.SGD(learning_rate=schedule))
    ids, labels = _data(rows=12)
    rates = _Rates()
    history = model.fit(
        ids, labels, batch_size=4, epochs=3, shuffle=False, verbose=0, callbacks=[rates]
    )
    assert [steps for steps, _ in rates.rates] == [3, 6, 9]
    np.testing.assert_allclose(
        [rate for _, rate in rates.rates],
        [_stlr(steps, 0.05, 10, 0.2, 4) for steps, _ in rates.rates],
        rtol=1e-6,
    )
    losses = history.history["loss"]
    assert losses[-1] < losses[0]


def test_slanted_triangular_config_round_trip():
    schedule = SlantedTriangular(0.02, total_steps=50, cut_frac=0.2, ratio=16)
    with backend.tensorflow_unimported():  # (Keras' serializing would import it: slow)
        config = json.loads(json.dumps(keras.optimizers.schedules.serialize(schedule)))
        restored = keras.optimizers.schedules.deserialize(config)
    assert isinstance(restored, SlantedTriangular)
    assert restored.get_config() == schedule.get_config()


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"total_steps": None}, "`total_steps` must be a positive integer"),
        ({"total_steps": 0}, "`total_steps` must be a positive integer"),
        ({"total_steps": 100, "max_learning_rate": 0.0}, "`max_learning_rate` must be"),
        ({"total_steps": 100, "cut_frac": 1.0}, r"`cut_frac` must be a number in \(0, 1\)"),
        ({"total_steps": 100, "cut_frac": 0.0}, r"`cut_frac` must be a number in \(0, 1\)"),
        ({"total_steps": 100, "ratio": 0.5}, "`ratio` must be a number >= 1"),
        ({"total_steps": 5, "cut_frac": 0.1}, r"`total_steps \* cut_frac` must be at least 1"),
    ],
)
def test_slanted_triangular_rejects_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SlantedTriangular(**kwargs)


# -- Discriminative rates -----------------------------------------------------------


def test_multipliers_divide_by_the_factor_group_by_group():
    model = _model("sgd")
    multipliers = discriminative_multipliers(model)
    by_layer = {_local(path): value for path, value in multipliers.items()}
    assert by_layer == {
        "embedding/embeddings": 1 / 2.6**2,
        "hidden/kernel": 1 / 2.6,
        "hidden/bias": 1 / 2.6,
        "head/kernel": 1.0,
        "head/bias": 1.0,
    }
    # Variables as well as layers; another factor; a frozen layer's weights count.
    model.hidden.trainable = False
    mixed = discriminative_multipliers(
        [[model.embedding.embeddings], [model.hidden], [model.head.kernel]], factor=2.0
    )
    assert {_local(path): value for path, value in mixed.items()} == {
        "embedding/embeddings": 0.25,
        "hidden/kernel": 0.5,
        "hidden/bias": 0.5,
        "head/kernel": 1.0,
    }
    # A variable shared by two groups takes the later group's rate.
    shared = discriminative_multipliers([[model.head.kernel], [model.head.kernel]])
    assert list(shared.values()) == [1.0]


def test_multipliers_reject_bad_groups():
    model = _model("sgd")
    with pytest.raises(ValueError, match="`factor` must be a number > 0"):
        discriminative_multipliers(model, factor=0)
    with pytest.raises(ValueError, match="at least one layer group"):
        discriminative_multipliers([])
    with pytest.raises(TypeError, match="Keras layers and variables only"):
        discriminative_multipliers([[model.head, "head"]])
    with pytest.raises(TypeError, match="variable paths"):
        DiscriminativeSGD(0.1, multipliers={1: 0.5})
    with pytest.raises(ValueError, match="must be a finite number >= 0"):
        DiscriminativeSGD(0.1, multipliers={"head/kernel": -1.0})


def test_each_groups_sgd_update_is_its_own_rate_times_its_gradient():
    """On every backend, through `fit`'s compiled step (JAX: its stateless step)."""
    ids, labels = _data()
    gradients = _gradients(ids, labels)
    optimizer = DiscriminativeSGD(learning_rate=0.1)
    model = _model(optimizer)
    multipliers = discriminative_multipliers(model)
    optimizer.multipliers = multipliers
    before = _values(model)
    _one_step(model, ids, labels)
    seen = set()
    for variable, old, new in zip(model.weights, before, _values(model)):
        rate = 0.1 * multipliers[variable.path]
        gradient = gradients[_local(variable.path)]
        assert np.abs(gradient).max() > 1e-3  # every variable has a gradient to scale
        np.testing.assert_allclose(new, old - rate * gradient, rtol=0, atol=1e-6)
        seen.add(multipliers[variable.path])
    assert seen == {1 / 2.6**2, 1 / 2.6, 1.0}


def test_each_groups_adam_step_is_keras_adam_at_its_own_rate():
    rng = np.random.default_rng(5)
    optimizer = DiscriminativeAdam(learning_rate=0.01, beta_1=0.7, beta_2=0.99)
    model = _model(optimizer)
    optimizer.multipliers = discriminative_multipliers(model)
    variables = model.trainable_variables
    # Keras' own Adam at the multiplied rate, on a copy of each variable alone.
    references = []
    for variable in variables:
        copy = keras.Variable(to_numpy(variable), name="copy")
        rate = 0.01 * optimizer.multipliers[variable.path]
        references.append((copy, keras.optimizers.Adam(rate, beta_1=0.7, beta_2=0.99)))
    for _ in range(3):
        grads = [ops.convert_to_tensor(rng.standard_normal(v.shape), "float32") for v in variables]
        optimizer.apply(grads, variables)
        for (copy, reference), grad in zip(references, grads):
            reference.apply([grad], [copy])
    for variable, (copy, _) in zip(variables, references):
        np.testing.assert_allclose(to_numpy(variable), to_numpy(copy), rtol=0, atol=1e-7)
    assert optimizer.multipliers[variables[0].path] == 1 / 2.6**2  # the embedding's


def test_discriminative_optimizers_serialize_with_their_multipliers():
    schedule = SlantedTriangular(0.01, total_steps=100)
    for cls in (DiscriminativeSGD, DiscriminativeAdam):
        optimizer = cls(schedule, multipliers={"a/kernel": 0.5, "b/kernel": 1.0})
        with backend.tensorflow_unimported():
            config = json.loads(json.dumps(keras.optimizers.serialize(optimizer)))
            restored = keras.optimizers.deserialize(config)
            learning_rate = restored.get_config()["learning_rate"]
        assert type(restored) is cls
        assert restored.multipliers == {"a/kernel": 0.5, "b/kernel": 1.0}
        assert learning_rate["class_name"] == "SlantedTriangular"
        assert learning_rate["config"] == schedule.get_config()


# -- Gradual unfreezing -------------------------------------------------------------


class _Changes(keras.callbacks.Callback):
    """After the unfreezing callback: which variables each epoch changed."""

    def __init__(self):
        super().__init__()
        self.changed = []
        self.trainable = []

    def on_epoch_begin(self, epoch, logs=None):
        self.before = {v.path: to_numpy(v).copy() for v in self.model.weights}
        self.trainable.append(len(self.model.trainable_variables))

    def on_epoch_end(self, epoch, logs=None):
        changed = set()
        for v in self.model.weights:
            if not np.array_equal(to_numpy(v), self.before[v.path]):  # bit for bit
                changed.add(_local(v.path).split("/")[0])
        self.changed.append(changed)


EACH_EPOCH = [{"head"}, {"hidden", "head"}, {"embedding", "hidden", "head"}]


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_frozen_groups_stay_bit_identical_while_unfrozen_ones_train(optimizer):
    if optimizer == "sgd":
        optimizer = DiscriminativeSGD(0.5, momentum=0.9)
    else:
        optimizer = DiscriminativeAdam(0.01)
    model = _model(optimizer)
    optimizer.multipliers = discriminative_multipliers(model)
    ids, labels = _data(rows=12)
    unfreezing, changes = GradualUnfreezing(), _Changes()
    model.fit(ids, labels, batch_size=4, epochs=3, verbose=0, callbacks=[unfreezing, changes])
    assert changes.changed == EACH_EPOCH
    assert changes.trainable == [2, 4, 5]
    assert unfreezing.get_state() == {"epochs_trained": 3}
    assert int(to_numpy(model.optimizer.iterations)) == 9


def test_unfreezing_resumes_where_it_left_off_and_takes_its_epochs_per_group():
    ids, labels = _data(rows=8)
    model = _model(DiscriminativeSGD(0.5))
    first = GradualUnfreezing(epochs_per_group=2)
    changes = _Changes()
    model.fit(ids, labels, batch_size=4, epochs=3, verbose=0, callbacks=[first, changes])
    assert changes.changed == [{"head"}, {"head"}, {"hidden", "head"}]
    state = json.loads(json.dumps(first.get_state()))
    assert state == {"epochs_trained": 3}

    # A resumed run: a new callback (and model) given the state.
    resumed = _model(DiscriminativeSGD(0.5))
    unfreezing = GradualUnfreezing(epochs_per_group=2)
    unfreezing.set_state(state)
    changes = _Changes()
    resumed.fit(ids, labels, batch_size=4, epochs=2, verbose=0, callbacks=[unfreezing, changes])
    assert changes.changed == [{"hidden", "head"}, EACH_EPOCH[2]]
    assert unfreezing.unfrozen_groups() == 3


def test_unfreezing_with_groups_given_and_keras_own_optimizers():
    ids, labels = _data(rows=8)
    model = _model(keras.optimizers.Adam(0.01))
    groups = [[model.embedding, model.hidden], [model.head.kernel, model.head.bias]]
    changes = _Changes()
    callbacks = [GradualUnfreezing(groups), changes]
    if backend.name() == "jax":
        with pytest.raises(ValueError, match="needs an optimizer that skips frozen variables"):
            model.fit(ids, labels, batch_size=4, epochs=2, verbose=0, callbacks=callbacks)
        return
    model.fit(ids, labels, batch_size=4, epochs=2, verbose=0, callbacks=callbacks)
    assert changes.changed == [{"head"}, EACH_EPOCH[2]]


def test_unfreezing_needs_groups():
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(DiscriminativeSGD(0.1), "mse")
    with pytest.raises(ValueError, match="needs `groups` or a model with `layer_groups"):
        model.fit(
            np.ones((2, 2)), np.ones((2, 1)), epochs=1, verbose=0, callbacks=[GradualUnfreezing()]
        )
    with pytest.raises(ValueError, match="`epochs_per_group` must be a positive integer"):
        GradualUnfreezing(epochs_per_group=0)


# -- Vocabulary remapping -----------------------------------------------------------


def test_remap_keeps_known_rows_and_gives_new_words_the_mean():
    old = ["the", "cat", "sat", "on"]
    new = ["on", "dog", "the", "mat", "cat"]
    matrix = np.arange(12, dtype="float32").reshape(4, 3) ** 2
    remapped = remap_embeddings(old, new, matrix)
    mean = matrix.mean(axis=0)
    expected = np.stack([matrix[3], mean, matrix[0], mean, matrix[1]])
    np.testing.assert_array_equal(remapped, expected)
    assert remapped.dtype == np.float32
    # A decoder bias: new entries get the mean bias.
    bias = np.array([0.5, -1.0, 2.0, 0.25])
    np.testing.assert_array_equal(
        remap_embeddings(old, new, bias), [0.25, 0.4375, 0.5, 0.4375, -1.0]
    )
    # A Keras variable, and vocabularies with `.tokens`.
    from awd_lstm.data.corpus import Vocabulary

    variable = keras.Variable(matrix)
    np.testing.assert_array_equal(
        remap_embeddings(Vocabulary(old), Vocabulary(new), to_numpy(variable)), expected
    )


def test_remap_rejects_mismatched_rows_and_repeated_tokens():
    with pytest.raises(ValueError, match=r"one row per old token \(3\); Received: matrix.shape"):
        remap_embeddings(["a", "b", "c"], ["a"], np.zeros((2, 4)))
    with pytest.raises(ValueError, match="`old_tokens` must hold distinct tokens"):
        remap_embeddings(["a", "a"], ["a"], np.zeros((2, 4)))
    with pytest.raises(ValueError, match="`new_tokens` must hold distinct tokens"):
        remap_embeddings(["a", "b"], ["b", "b"], np.zeros((2, 4)))
