"""Keras' private code that the package uses, each with the reason.

1. `keras.src.backend.lstm`: the fused LSTM kernel of the backend (cuDNN on GPU), the
   function `keras.layers.LSTM` calls with its own weights. No public function takes
   other kernels (the weight-dropped ones); `keras.layers.LSTM` reads its variables.
2. `keras.src.backend.rnn`: Keras' step loop, which `keras.layers.RNN` runs over a
   cell. The weight-dropped layer runs it over a step that multiplies only the hidden
   state (the input projections of all steps done before it); `keras.ops` has no
   loop with Keras' masking, `go_backwards` and `unroll` semantics. (The Mogrifier's
   loops run on it time-major; see `backend_rnn` for the step count it is given.)
3. The call context's `training` flag (`global_state`'s `current_call_ctx`):
   `keras.layers.RNN` does not pass `training` to a cell's pre-loop hook, and the
   flag decides whether masks are drawn for the sequence; there is no public reader.
4. `stateless_scope.in_stateless_scope`: whether Keras' stateless scope (jit-compiled
   steps) collects variable updates, which decides whether a seed generator may
   advance inside a trace; no public reader.
5. `Layer._track_variable`: the language model's carried states are variables made
   by hand (with distribution settings `add_weight` does not take); tracking makes
   them part of `non_trainable_variables` and of saved weights.
6. `Trainer._flatten_metrics_in_order`: the language model's TensorFlow step returns
   Keras' logs dict; `train_on_batch(return_dict=False)` must return the same list
   Keras' own would, in Keras' order.
7. PyTorch: `keras.src.backend.torch.core.get_device` and
   `keras.src.backend.torch.random.torch_seed_generator`: the device Keras computes
   on, and the `torch.Generator` a `SeedGenerator`'s state stands for, for the
   weight masks drawn with `torch.Tensor.random_` (`keras.random` has no raw bits).
8. `Trainer._maybe_symbolic_build`: the language model's own TensorFlow step under a
   strategy builds the model's metrics and optimizer on one replica's rows before the
   first step, as Keras' `train_on_batch` does; no public method builds them.
9. `Optimizer._backend_apply_gradients` and `_all_reduce_sum_gradients`: under a
   TensorFlow strategy the replicas' gradients are summed before global-norm
   clipping (Keras clips each replica's share); no public hook sits between the
   gradients and the clipping.
10. `Optimizer._update_model_variables_moving_average` and
   `_model_variables_moving_average`: NT-ASGD's uniform average rides on Keras' EMA
   machinery (updated after every step on every backend, swapped in by
   `SwapEMAWeights`); the averaging rule has no public hook.
11. `global_state`'s global seed attributes (`rng_utils.GLOBAL_RANDOM_SEED`,
   `seed_generator.GLOBAL_SEED_GENERATOR`): `keras.utils.set_random_seed` imports
   TensorFlow whenever it is installed (to seed `tf.random` for `tf.data`), which on
   JAX and PyTorch costs seconds and prints TensorFlow's start-up lines; on those
   backends the package sets what it sets without that import. No public function
   seeds Keras alone.
12. `module_utils.tensorflow._available`: Keras' saving asks whether TensorFlow is
   installed, importing it, for every object it serializes (to recognise
   `tf.TensorShape` and the like). While TensorFlow has not been imported, no object
   can be one of its types; the package's saving and loading on JAX and PyTorch tell
   Keras it is absent for that time, so that it is not imported. Keras' saving has no
   setting for this.
13. `Optimizer._trainable_variables`: the variables an optimizer was built for, which
   its `apply(grads)` updates when given none (as `stateless_apply` calls it on JAX);
   skipping a non-finite update keeps their values, and no public property lists
   them.
"""

import contextlib
import sys

import keras


def fused_lstm(*args, **kwargs):
    """1. `keras.src.backend.lstm` (raises `NotImplementedError` where none runs)."""
    return keras.src.backend.lstm(*args, **kwargs)


def backend_rnn(step_function, inputs, initial_states, **kwargs):
    """2. `keras.src.backend.rnn`.

    With `time_major=True` and no `input_length`, Keras' TensorFlow loop bounds its
    iterations by axis 1, the batch (`input_length or inputs.shape[1]`), and stops
    early when the batch is smaller than the number of steps: the steps of axis 0
    are passed instead, and where a shape-generic trace does not know them (the
    loop cannot take them as a tensor) the inputs go in batch-major and the outputs
    come back time-major."""
    if kwargs.get("time_major") and kwargs.get("input_length") is None:
        steps = keras.tree.flatten(inputs)[0].shape[0]
        if steps is None:

            def swap(tensor):
                return keras.ops.swapaxes(tensor, 0, 1)

            kwargs["time_major"] = False
            last, outputs, states = keras.src.backend.rnn(
                step_function, keras.tree.map_structure(swap, inputs), initial_states, **kwargs
            )
            return last, keras.tree.map_structure(swap, outputs), states
        kwargs["input_length"] = steps
    return keras.src.backend.rnn(step_function, inputs, initial_states, **kwargs)


def training_of_current_call():
    """3. The `training` flag of the Keras layer call under way (True if unknown)."""
    from keras.src.backend.common import global_state

    context = global_state.get_global_attribute("current_call_ctx")
    training = context.get_value("training") if context is not None else None
    return training if isinstance(training, bool) else True


def in_stateless_scope():
    """4. Whether Keras' stateless scope is active."""
    from keras.src.backend.common.stateless_scope import in_stateless_scope as active

    return active()


def track_variable(layer, variable):
    """5. Makes a hand-made variable one of `layer`'s."""
    layer._track_variable(variable)


def flatten_metrics(model, logs):
    """6. `logs` as the list `train_on_batch(return_dict=False)` returns."""
    return model._flatten_metrics_in_order(logs)


def torch_device():
    """7. The device Keras' PyTorch backend computes on."""
    from keras.src.backend.torch.core import get_device

    return get_device()


def torch_generator(seed_generator):
    """7. The `torch.Generator` of a `SeedGenerator`'s present state (advancing it)."""
    from keras.src.backend.torch.random import torch_seed_generator

    return torch_seed_generator(seed_generator)


def symbolic_build(model, data_batch):
    """8. Builds `model`'s metrics and optimizer from one batch, as `fit` would."""
    model._maybe_symbolic_build(data_batch=data_batch)


def set_keras_seed(seed):
    """11. Keras' global seed and its global `SeedGenerator` (made again from it), as
    `keras.utils.set_random_seed` sets them."""
    from keras.src.backend.common import global_state
    from keras.src.random import seed_generator
    from keras.src.utils import rng_utils

    global_state.set_global_attribute(rng_utils.GLOBAL_RANDOM_SEED, seed)
    global_state.set_global_attribute(seed_generator.GLOBAL_SEED_GENERATOR, None)


@contextlib.contextmanager
def tensorflow_unimported():
    """12. While the block runs, Keras sees TensorFlow as absent if no one has imported
    it (nothing changes if it is imported, or if Keras has imported it already)."""
    from keras.src.utils import module_utils

    lazy = module_utils.tensorflow
    if "tensorflow" in sys.modules or lazy._available is not None:
        yield
        return
    lazy._available = False
    try:
        yield
    finally:
        lazy._available = None


def optimizer_targets(optimizer):
    """13. The trainable variables `optimizer` was built for."""
    return list(optimizer._trainable_variables)


class SumOverReplicasFirst:
    """9. An optimizer mixin: under a TensorFlow strategy, sums the replicas'
    gradients before clipping.

    Keras' TensorFlow optimizers clip each replica's share of the gradient and sum
    after: with global-norm clipping that is not the step one device would take on the
    whole batch. These optimizers sum first, then clip, decay and update as on one
    device. Elsewhere (one device, JAX, PyTorch) nothing changes.
    """

    def _backend_apply_gradients(self, grads, trainable_variables):
        from awd_lstm import backend

        super()._backend_apply_gradients(backend.sum_over_replicas(grads), trainable_variables)

    def _all_reduce_sum_gradients(self, grads_and_vars):
        # TensorFlow's update step would sum again: the gradients are summed already.
        return list(grads_and_vars)


class AverageUpdateHook:
    """10. An optimizer mixin (with `use_ema=True`): after every step Keras calls
    `self.update_averages(trainable_variables, averages)` instead of its exponential
    update; `moving_averages()` lists the averages."""

    def _update_model_variables_moving_average(self, trainable_variables):
        self.update_averages(trainable_variables, self._model_variables_moving_average)

    def moving_averages(self):
        return list(self._model_variables_moving_average)
