"""Gradients of a layer's output, one branch per backend.

Tests need gradients with respect to the inputs and the trainable variables; each
backend computes them its own way (GradientTape, jax.grad, autograd), so this is the
one place in the tests that branches on the backend.
"""

import keras
import numpy as np
from keras import ops


def layer_grads(layer, x, upstream, training=True):
    """Returns `(outputs, {"inputs": dx, variable.name: dv, ...})` for
    `loss = sum(layer(x, training) * upstream)`."""
    backend = keras.backend.backend()
    variables = layer.trainable_variables
    names = [v.name for v in variables]
    upstream = np.asarray(upstream, dtype="float32")
    if backend == "tensorflow":
        import tensorflow as tf

        x_t = tf.constant(x)
        with tf.GradientTape() as tape:
            tape.watch(x_t)
            out = layer(x_t, training=training)
            loss = tf.reduce_sum(out * upstream)
        grads = tape.gradient(loss, [x_t] + [v.value for v in variables])
    elif backend == "jax":
        import jax

        non_trainable = [v.value for v in layer.non_trainable_variables]

        def loss_fn(x_j, trainable):
            out, _ = layer.stateless_call(trainable, non_trainable, x_j, training=training)
            return (out * upstream).sum(), out

        (_, out), grads = jax.value_and_grad(loss_fn, argnums=(0, 1), has_aux=True)(
            jax.numpy.asarray(x), [v.value for v in variables]
        )
        grads = [grads[0]] + list(grads[1])
    elif backend == "torch":
        import torch

        x_t = torch.tensor(np.asarray(x), requires_grad=True)
        out = layer(x_t, training=training)
        loss = (out * torch.tensor(upstream)).sum()
        grads = torch.autograd.grad(loss, [x_t] + [v.value for v in variables])
    else:
        raise NotImplementedError(backend)
    grads = [ops.convert_to_numpy(g) for g in grads]
    return ops.convert_to_numpy(out), dict(zip(["inputs"] + names, grads))


def layer_state_grads(layer, x, h0, c0, upstreams, training=True, **call_kwargs):
    """For a layer called as `layer(x, initial_state=[h0, c0], **call_kwargs)` that
    returns `(outputs, h, c)`: returns those three and the gradients of
    `sum(outputs * u_out) + sum(h * u_h) + sum(c * u_c)` with respect to x, h0, c0
    and the trainable variables (by name), for `upstreams = (u_out, u_h, u_c)`."""
    backend = keras.backend.backend()
    variables = layer.trainable_variables
    names = ["inputs", "h0", "c0"] + [v.name for v in variables]
    upstreams = [np.asarray(u, dtype="float32") for u in upstreams]

    def loss_of(results):
        return sum(ops.sum(r * ops.convert_to_tensor(u)) for r, u in zip(results, upstreams))

    if backend == "tensorflow":
        import tensorflow as tf

        inputs = [tf.constant(a) for a in (x, h0, c0)]
        with tf.GradientTape() as tape:
            tape.watch(inputs)
            results = layer(inputs[0], initial_state=inputs[1:], training=training, **call_kwargs)
            loss = loss_of(results)
        # Zeros for what the results do not depend on (a QRNN of window 1 does not
        # read its initial x_last), as JAX gives.
        grads = tape.gradient(
            loss,
            inputs + [v.value for v in variables],
            unconnected_gradients=tf.UnconnectedGradients.ZERO,
        )
    elif backend == "jax":
        import jax

        non_trainable = [v.value for v in layer.non_trainable_variables]

        def loss_fn(arrays, trainable):
            results, _ = layer.stateless_call(
                trainable,
                non_trainable,
                arrays[0],
                initial_state=arrays[1:],
                training=training,
                **call_kwargs,
            )
            return loss_of(results), results

        arrays = [jax.numpy.asarray(a) for a in (x, h0, c0)]
        (_, results), (d_arrays, d_vars) = jax.value_and_grad(
            loss_fn, argnums=(0, 1), has_aux=True
        )(arrays, [v.value for v in variables])
        grads = list(d_arrays) + list(d_vars)
    elif backend == "torch":
        import torch

        inputs = [torch.tensor(np.asarray(a), requires_grad=True) for a in (x, h0, c0)]
        results = layer(inputs[0], initial_state=inputs[1:], training=training, **call_kwargs)
        grads = torch.autograd.grad(
            loss_of(results),
            inputs + [v.value for v in variables],
            allow_unused=True,
            materialize_grads=True,
        )
        results = [r.detach() for r in results]
    else:
        raise NotImplementedError(backend)
    results = [ops.convert_to_numpy(r) for r in results]
    return results, dict(zip(names, [ops.convert_to_numpy(g) for g in grads]))
