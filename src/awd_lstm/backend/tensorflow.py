"""TensorFlow: the tied decoder's product."""

import tensorflow as tf


def matmul_transposed(inputs, table):
    """One `MatMul(transpose_b=True)` on the flattened inputs."""
    flat = tf.reshape(inputs, [-1, tf.shape(inputs)[-1]])
    logits = tf.matmul(flat, table, transpose_b=True)
    logits = tf.reshape(logits, tf.concat([tf.shape(inputs)[:-1], tf.shape(table)[:1]], 0))
    logits.set_shape(inputs.shape[:-1] + table.shape[:1])
    return logits
