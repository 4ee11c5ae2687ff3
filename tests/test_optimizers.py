"""NT-ASGD: the trigger rule, the uniform average, the swap for evaluation."""

import keras
import numpy as np
import pytest

from awd_lstm.optimizers import NTASGD, NonMonotoneTrigger, should_trigger, step_decay
from tests.conftest import to_numpy


def test_trigger_fires_exactly_by_the_rule():
    # Scripted history: a long improvement, then a plateau above the old best.
    losses = [5.0, 4.0, 3.0, 2.5, 2.4, 2.6, 2.7, 2.45, 2.41, 2.42, 2.43, 2.44]
    nonmono = 5
    fired = []
    history = []
    for epoch, value in enumerate(losses):
        if should_trigger(history, value, nonmono):
            fired.append(epoch)
        history.append(value)
    # Epoch 5 (2.6): history has 5 entries, not more than nonmono: no.
    # Epoch 6 (2.7): best of history[:-5] = [5.0] is 5.0: no. Epoch 7: min([5,4]) = 4: no.
    # Epoch 8 (2.41): min([5, 4, 3]) = 3: no. Epoch 9: min(..., 2.5) = 2.5: no.
    # Epoch 10 (2.43): min(..., 2.4) = 2.4 and 2.43 > 2.4: fires.
    assert fired == [10, 11]
    assert not should_trigger([1.0] * 5, 9.0, 5)
    assert should_trigger([1.0] * 6, 1.01, 5)
    assert not should_trigger([1.0] * 6, 1.0, 5)


def _model():
    model = keras.Sequential(
        [keras.Input((3,)), keras.layers.Dense(2, kernel_initializer="ones", use_bias=False)]
    )
    return model


def test_average_is_the_mean_of_the_iterates_since_the_switch(rng):
    model = _model()
    optimizer = NTASGD(learning_rate=0.1, weight_decay=0.0, global_clipnorm=None)
    model.compile(optimizer, "mse")
    x = rng.standard_normal((8, 3)).astype("float32")
    y = rng.standard_normal((8, 2)).astype("float32")
    model.train_on_batch(x, y)
    kernel = model.trainable_variables[0]
    average = optimizer.average_values()[0]
    np.testing.assert_allclose(to_numpy(average), to_numpy(kernel), rtol=1e-6)  # tracks
    assert not optimizer.averaging
    optimizer.start_averaging()
    assert optimizer.averaging
    iterates = []
    for _ in range(4):
        model.train_on_batch(x, y)
        iterates.append(to_numpy(kernel).copy())
    np.testing.assert_allclose(to_numpy(average), np.mean(iterates, axis=0), rtol=1e-5)
    # The averaged weights differ from the last iterate, which training keeps.
    assert not np.allclose(to_numpy(average), iterates[-1])


def test_plain_sgd_step_with_weight_decay_and_global_clipping():
    model = _model()
    optimizer = NTASGD(learning_rate=0.5, weight_decay=0.1, global_clipnorm=0.25)
    model.compile(optimizer, "mse")
    x = np.ones((1, 3), "float32")
    y = np.zeros((1, 2), "float32")
    model.train_on_batch(x, y)
    # Gradient of mean((x W)^2) with W = 1: d/dW = 2 * 3 / 2 = 3 everywhere (norm
    # 3 * sqrt(6)), clipped to global norm 0.25; then w -= lr * (g + wd * w).
    grad = 3.0 * 0.25 / (3.0 * np.sqrt(6.0))
    want = 1.0 - 0.5 * 0.1 * 1.0 - 0.5 * grad
    np.testing.assert_allclose(to_numpy(model.trainable_variables[0]), want, rtol=1e-5)


def test_trigger_callback_in_fit_and_averaged_evaluation(rng):
    """fit() with a validation set that stops improving: the callback switches the
    optimizer, and SwapEMAWeights evaluates with the averaged weights."""
    model = _model()
    optimizer = NTASGD(learning_rate=0.05, weight_decay=0.0, global_clipnorm=None)
    model.compile(optimizer, "mse")
    x = rng.standard_normal((16, 3)).astype("float32")
    y = x[:, :2] * 0.5
    trigger = NonMonotoneTrigger(nonmono=2)
    # A scripted past: a best of 0.0 that no later loss can match, so the rule fires
    # at the end of the second epoch (the log then holds more than 2 entries).
    trigger.history = [0.0, 9.0]
    swap = keras.callbacks.SwapEMAWeights()  # swaps the average in around validation
    model.fit(
        x, y, validation_data=(x, y), epochs=2, batch_size=4, verbose=0, callbacks=[trigger, swap]
    )
    assert trigger.triggered_epoch == 1
    assert optimizer.averaging
    assert int(to_numpy(optimizer.averaging_start)) == 8  # after two epochs of 4 steps
    kernel = model.trainable_variables[0]
    iterates = []
    for start in range(0, 16, 4):
        model.train_on_batch(x[start : start + 4], y[start : start + 4])
        iterates.append(to_numpy(kernel).copy())
    # Evaluation through SwapEMAWeights sees the average; training keeps its iterate.
    last = to_numpy(kernel).copy()
    averaged = to_numpy(optimizer.average_values()[0])
    want = np.mean((x @ averaged - y) ** 2)
    swap.set_model(model)
    swap.on_test_begin()
    got = model.evaluate(x, y, verbose=0)
    swap.on_test_end()
    assert got == pytest.approx(want, rel=1e-4)
    # (TensorFlow swaps by adding and subtracting: equal up to rounding.)
    np.testing.assert_allclose(to_numpy(kernel), last, rtol=1e-6)
    assert len(trigger.history) == 4


def test_trigger_can_stop_training_and_needs_the_metric(rng):
    model = _model()
    model.compile(NTASGD(learning_rate=0.01), "mse")
    x = rng.standard_normal((8, 3)).astype("float32")
    y = rng.standard_normal((8, 2)).astype("float32")
    trigger = NonMonotoneTrigger(nonmono=1, stop_on_trigger=True)
    trigger.history = [0.0, 0.0]  # any loss is worse: fires after the first epoch
    history = model.fit(x, y, validation_data=(x, y), epochs=5, verbose=0, callbacks=[trigger])
    assert len(history.history["loss"]) == 1
    with pytest.raises(ValueError, match="which the epoch's logs lack"):
        model.fit(x, y, epochs=1, verbose=0, callbacks=[NonMonotoneTrigger()])
    with pytest.raises(ValueError, match="`nonmono` must be a positive integer"):
        NonMonotoneTrigger(nonmono=0)


def test_step_decay_with_keras_scheduler(rng):
    model = _model()
    model.compile(keras.optimizers.Adam(1e-2), "mse")
    x = rng.standard_normal((4, 3)).astype("float32")
    model.fit(
        x,
        x[:, :2],
        epochs=4,
        verbose=0,
        callbacks=[keras.callbacks.LearningRateScheduler(step_decay([1, 3]))],
    )
    assert float(to_numpy(model.optimizer.learning_rate)) == pytest.approx(1e-4, rel=1e-5)


def test_config_round_trip():
    optimizer = NTASGD(learning_rate=7.0, weight_decay=1e-5)
    restored = NTASGD.from_config(optimizer.get_config())
    assert restored.get_config() == optimizer.get_config()
    assert restored.use_ema


def test_adam_l2_matches_torch_adam_with_weight_decay_after_clipping(rng):
    torch = pytest.importorskip("torch")
    from awd_lstm.optimizers import AdamL2

    w0 = rng.normal(size=(4, 3)).astype("float32")
    grads = [rng.normal(size=(4, 3)).astype("float32") * s for s in (0.1, 3.0, 0.5, 2.0)]
    lr, l2, clip = 0.01, 0.3, 1.0

    variable = keras.Variable(w0)
    optimizer = AdamL2(lr, l2=l2, global_clipnorm=clip)
    for g in grads:
        optimizer.apply_gradients([(keras.ops.convert_to_tensor(g), variable)])

    # The reference: clip_grad_norm_, then torch.optim.Adam(weight_decay=l2), whose
    # decay is added to the (clipped) gradient.
    param = torch.nn.Parameter(torch.tensor(w0))
    reference = torch.optim.Adam([param], lr=lr, weight_decay=l2, eps=1e-7)
    for g in grads:
        param.grad = torch.tensor(g)
        torch.nn.utils.clip_grad_norm_([param], clip)
        reference.step()
    np.testing.assert_allclose(to_numpy(variable), param.detach().numpy(), rtol=1e-5, atol=1e-6)
    # Not Keras' decoupled decay: AdamW's update is measurably different.
    other = keras.Variable(w0)
    decoupled = keras.optimizers.Adam(lr, weight_decay=l2, global_clipnorm=clip)
    for g in grads:
        decoupled.apply_gradients([(keras.ops.convert_to_tensor(g), other)])
    assert np.abs(to_numpy(other) - to_numpy(variable)).max() > 1e-4


def test_rmsprop_is_adam_without_momentum_as_in_the_mogrifier_code(rng):
    """`optimizer="rmsprop"`: the update of TF1's AdamOptimizer(beta1=0, beta2=0.999,
    epsilon=1e-8), the L2 term added to the clipped gradient, computed in float64."""
    from awd_lstm.config import TrainingConfig
    from awd_lstm.recipe import build_optimizer

    w0 = rng.normal(size=(4, 3))
    grads = [rng.normal(size=(4, 3)) * s for s in (0.1, 3.0, 0.5, 2.0)]
    config = TrainingConfig(optimizer="rmsprop", lr=0.01, weight_decay=0.3, clip=1.0)
    variable = keras.Variable(w0.astype("float32"))
    optimizer = build_optimizer(config)
    for g in grads:
        optimizer.apply_gradients([(keras.ops.convert_to_tensor(g.astype("float32")), variable)])

    w, v = w0.copy(), np.zeros_like(w0)
    for t, g in enumerate(grads, start=1):
        g = g * min(1.0, 1.0 / np.sqrt((g**2).sum())) + 0.3 * w
        v = 0.999 * v + 0.001 * g**2
        w = w - 0.01 * np.sqrt(1 - 0.999**t) * g / (np.sqrt(v) + 1e-8)
    np.testing.assert_allclose(to_numpy(variable), w, rtol=1e-5, atol=1e-6)


def test_adam_l2_round_trips_through_its_config():
    from awd_lstm.optimizers import AdamL2

    optimizer = AdamL2(2e-3, l2=1.2e-6, global_clipnorm=0.25)
    again = keras.optimizers.deserialize(keras.optimizers.serialize(optimizer))
    assert isinstance(again, AdamL2) and again.l2 == 1.2e-6 and again.global_clipnorm == 0.25
    with pytest.raises(ValueError, match="`l2` must be a number >= 0"):
        AdamL2(l2=-1.0)


def _state(model):
    variables = [*model.trainable_variables, *model.optimizer.variables]
    return {v.path: to_numpy(v).copy() for v in variables}


@pytest.mark.parametrize("optimizer", ["ntasgd", "adam"])
def test_a_non_finite_step_changes_nothing_and_is_counted(optimizer, rng):
    import dataclasses

    from awd_lstm import recipe
    from tests.test_training import TINY

    config = dataclasses.replace(TINY, optimizer=optimizer, lr=1.0, on_nan="skip-batch")
    model = recipe.build_model(config, 30, config.batch_size)
    ids = rng.integers(0, 30, (config.batch_size, 11))
    x, y = ids[:, :-1], ids[:, 1:]
    model.train_on_batch(x, y)
    if optimizer == "ntasgd":
        model.optimizer.start_averaging()  # the averages must stay too
    model.train_on_batch(x, y)
    before = _state(model)
    for pair in model.state_variables:  # a carried state gone bad: the loss is NaN
        for variable in pair:
            variable.assign(np.full(variable.shape, np.nan, "float32"))
    logs = model.train_on_batch(x, y, return_dict=True)
    assert np.isnan(logs["loss"])
    after = _state(model)
    counter = next(path for path in after if path.endswith("skipped_updates"))
    assert (before[counter], after[counter]) == (0, 1)
    for path, value in before.items():
        if path != counter:
            np.testing.assert_array_equal(after[path], value, err_msg=path)
    model.reset_state()
    model.train_on_batch(x, y)
    assert model.optimizer.skipped == 1
    changed = _state(model)
    assert not np.array_equal(
        changed[model.trainable_variables[0].path], before[model.trainable_variables[0].path]
    )


def test_a_non_finite_loss_with_finite_gradients_is_skipped_too(rng):
    from awd_lstm.optimizers import SGD

    def loss(y_true, y_pred):  # gradient 1/n everywhere, value -inf
        return keras.ops.mean(y_pred) + keras.ops.log(keras.ops.zeros(()))

    x = rng.normal(size=(4, 3)).astype("float32")
    for skip in (False, True):
        model = _model()
        model.compile(optimizer=SGD(0.1, skip_non_finite=skip), loss=loss)
        model.train_on_batch(x, np.zeros((4, 2), "float32"))
        kernel = to_numpy(model.trainable_variables[0])
        assert np.all(np.isfinite(kernel))
        assert np.array_equal(kernel, np.ones((3, 2))) == skip
        assert model.optimizer.skipped == int(skip)
        assert int(to_numpy(model.optimizer.iterations)) == int(not skip)
    restored = SGD.from_config(model.optimizer.get_config())
    assert restored.skip_non_finite
