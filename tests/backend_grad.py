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
