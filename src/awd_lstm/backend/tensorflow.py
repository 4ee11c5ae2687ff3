"""TensorFlow: the tied decoder's product, the LSTM recurrence with its hand-written
gradient, and what runs under a `tf.distribute` strategy: the replica's place, the
gradients summed over replicas, the model's own step functions."""

import tensorflow as tf

from awd_lstm.backend._lstm_gradient import backward_factors, backward_step
from awd_lstm.distribute import rows_of_replica


def matmul_transposed(inputs, table, bias=None):
    """One `MatMul(transpose_b=True)` on the flattened inputs; with `bias`, added by
    `BiasAdd` to the flat product, the pair TensorFlow's graph optimizer fuses into
    one oneDNN product."""
    flat = tf.reshape(inputs, [-1, tf.shape(inputs)[-1]])
    logits = tf.matmul(flat, table, transpose_b=True)
    if bias is not None:
        logits = tf.nn.bias_add(logits, bias)
    logits = tf.reshape(logits, tf.concat([tf.shape(inputs)[:-1], tf.shape(table)[:1]], 0))
    logits.set_shape(inputs.shape[:-1] + table.shape[:1])
    return logits


def decoder_logits(inputs, table, bias):
    return matmul_transposed(inputs, table, bias)


def associative_scan(f, elems, axis):
    """`keras.ops.associative_scan`, its results given the static shapes of `elems`
    (those of an `f` whose results have the shapes of its arguments): Keras'
    TensorFlow scan, a graph of slices, interleavings and conditionals, loses even
    their rank, and what follows it (a transpose) needs it."""
    from keras import ops

    scanned = ops.associative_scan(f, elems, axis=axis)
    for result, elem in zip(tf.nest.flatten(scanned), tf.nest.flatten(elems), strict=True):
        result.set_shape(elem.shape)
    return scanned


def recurrence_with_gradient():
    """`f(zx, h0, c0, recurrent_kernel) -> (outputs, h_T, c_T)`, the LSTM recurrence
    with the hand-written gradient (`_lstm_gradient`): the forward loop keeps the
    gates and cells in TensorArrays, which the backward loop reads step by step."""

    def arrays(steps, dtype, *values):
        """One TensorArray of `steps` entries per value (each unstacked along time),
        or a single empty one without values. Entries may be read more than once (the
        backward loop reads every cell state twice)."""
        if not values:
            return tf.TensorArray(dtype, size=steps, clear_after_read=False)
        return [arrays(steps, dtype).unstack(v) for v in values]

    def forward(zx, h0, c0, kernel):
        steps = tf.shape(zx)[0]
        (inputs,) = arrays(steps, zx.dtype, zx)

        def body(t, h, c, hs, cs, gates):
            z = inputs.read(t) + tf.matmul(h, kernel)
            i, f, g, o = tf.split(z, 4, axis=-1)
            i, f, g, o = tf.sigmoid(i), tf.sigmoid(f), tf.tanh(g), tf.sigmoid(o)
            c = f * c + i * g
            h = o * tf.tanh(c)
            gates = gates.write(t, tf.concat([i, f, g, o], axis=-1))
            return t + 1, h, c, hs.write(t, h), cs.write(t, c), gates

        empty = [arrays(steps, zx.dtype) for _ in range(3)]
        _, h, c, hs, cs, gates = tf.while_loop(
            lambda t, *_: t < steps, body, (tf.constant(0), h0, c0, *empty)
        )
        # The cells and gates stay TensorArrays: the backward loop reads them step by
        # step (no whole-sequence copies).
        return hs.stack(), h, c, cs, gates

    @tf.custom_gradient
    def recurrence(zx, h0, c0, kernel):
        outputs, h, c, cells, gates = forward(zx, h0, c0, kernel)

        def grad(d_outputs, d_h, d_c):
            d_outputs = _zeros_if_none(d_outputs, outputs)
            d_h = _zeros_if_none(d_h, h)
            d_c = _zeros_if_none(d_c, c)
            steps = tf.shape(zx)[0]
            (d_outs,) = arrays(steps, zx.dtype, d_outputs)
            # Transposed once: TensorFlow's CPU matmul with transpose_b=True runs at
            # half the rate of a plain one at these shapes.
            kernel_t = tf.transpose(kernel)

            def body(t, dh, dc, dzs):
                # The factors of one step, from its cached gates and cells: small
                # arrays that stay in cache (whole-sequence factors cost more).
                c_prev = tf.where(t > 0, cells.read(tf.maximum(t - 1, 0)), c0)
                factor, forget, cell_factor = backward_factors(
                    tf, c_prev, cells.read(t), gates.read(t)
                )
                dz, dc = backward_step(tf, dh, dc, d_outs.read(t), factor, cell_factor)
                return t - 1, tf.matmul(dz, kernel_t), dc * forget, dzs.write(t, dz)

            _, dh0, dc0, dzs = tf.while_loop(
                lambda t, *_: t >= 0,
                body,
                (steps - 1, d_h, d_c, arrays(steps, zx.dtype)),
            )
            dz = dzs.stack()
            previous = tf.concat([h0[None], outputs[:-1]], axis=0)
            units = tf.shape(h0)[-1]
            d_kernel = tf.matmul(
                tf.reshape(previous, [-1, units]),
                tf.reshape(dz, [-1, 4 * units]),
                transpose_a=True,
            )
            return dz, dh0, dc0, d_kernel

        return (outputs, h, c), grad

    return recurrence


def _zeros_if_none(gradient, like):
    return tf.zeros_like(like) if gradient is None else gradient


def set_virtual_cpu_devices(n):
    """Splits the CPU into `n` logical devices; False where TensorFlow has already
    started with another number."""
    cpu = tf.config.list_physical_devices("CPU")[0]
    try:
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration() for _ in range(n)]
        )
    except RuntimeError:
        return len(tf.config.list_logical_devices("CPU")) == n
    return True


def mirrored_strategy():
    """`tf.distribute.MirroredStrategy` over the GPUs, or else the (logical) CPUs."""
    devices = tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("CPU")
    return tf.distribute.MirroredStrategy([d.name for d in devices])


def multiworker_strategy():
    """`tf.distribute.MultiWorkerMirroredStrategy` of the cluster in `TF_CONFIG`."""
    communication = tf.distribute.experimental.CommunicationOptions(
        implementation=tf.distribute.experimental.CommunicationImplementation.AUTO
    )
    return tf.distribute.MultiWorkerMirroredStrategy(communication_options=communication)


def has_gpu():
    """Whether TensorFlow sees a GPU (where its fused LSTM is cuDNN's)."""
    return bool(tf.config.list_logical_devices("GPU"))


def device_memory():
    # `tf.config.experimental.get_memory_info` reports what TensorFlow holds on a GPU,
    # not the GPU's size or what is free on it.
    return None


def is_out_of_memory(error):
    return isinstance(error, tf.errors.ResourceExhaustedError)


def replica():
    """`(replicas, replica_id)` inside a replica function of a strategy with more than
    one replica (the id a Python int or a scalar tensor), else `(1, 0)`."""
    context = tf.distribute.get_replica_context()
    if context is not None and context.num_replicas_in_sync > 1:
        return context.num_replicas_in_sync, context.replica_id_in_sync_group
    return 1, 0


def in_strategy():
    """Whether a strategy's scope is active."""
    return tf.distribute.has_strategy()


def strategy_replicas():
    """Replicas of the strategy whose scope is active (1 outside one)."""
    if not tf.distribute.has_strategy():
        return 1
    return tf.distribute.get_strategy().num_replicas_in_sync


def sum_over_replicas(grads):
    """Inside a replica function of several replicas, every gradient summed over the
    replicas (None entries kept); else `grads` as they are."""
    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return grads
    present = [i for i, g in enumerate(grads) if g is not None]
    summed = context.all_reduce(tf.distribute.ReduceOp.SUM, [grads[i] for i in present])
    grads = list(grads)
    for i, g in zip(present, summed):
        grads[i] = g
    return grads


def split_per_replica(strategy, data):
    """Distributed values giving each replica its rows of every `(batch, ...)` array in
    the structure `data` (replica `i` of `R`: rows `i * batch / R` to
    `(i + 1) * batch / R`; `None` stays `None`)."""
    replicas = strategy.num_replicas_in_sync

    def rows(context):
        return rows_of_replica(data, context.replica_id_in_sync_group, replicas)

    return strategy.experimental_distribute_values_from_function(rows)


# Input shapes a TensorFlow step is traced for exactly; later ones share one
# shape-generic trace. 0: every shape after the first shares the generic trace. Since
# the LSTM recurrence has its own gradient (`backend.recurrence_with_gradient`), the generic graph
# trains as fast as per-length ones, and a trace per length (about 2 s each for the
# `small` model) cost 20% of a first 100,000-token epoch (benchmarks/RESULTS.md).
EXACT_SHAPES = 0


class StepFunctions:
    """TensorFlow functions running `step` (a Keras `train_step` or `test_step`) on
    every replica of `strategy` and averaging the replicas' logs (the replicas hold
    equal shares of the batch). The first `EXACT_SHAPES` input shapes get a trace
    each; any further shape runs one shape-generic trace (`reduce_retracing`: traced
    for the first shape it sees, then once more for any shape)."""

    def __init__(self, strategy, step, jit_compile=False):
        from keras import tree

        def run(data):
            logs = strategy.run(step, args=(data,))
            return tree.map_structure(lambda v: strategy.reduce("MEAN", v, axis=None), logs)

        self.exact = tf.function(run, jit_compile=jit_compile)
        self.generic = tf.function(run, jit_compile=jit_compile, reduce_retracing=True)
        self.shapes = set()

    def __call__(self, data, shape):
        """Runs the step on `data`, whose arrays have the shapes `shape` (a key)."""
        if shape in self.shapes or len(self.shapes) < EXACT_SHAPES:
            self.shapes.add(shape)
            return self.exact(data)
        return self.generic(data)


def serving_archive(model):
    """A `keras.export.ExportArchive` of `model` with one endpoint, `serve(ids)`: int32
    ids `(batch, time)` in, `{"log_probs": (batch, time, vocab)}` out."""
    import keras

    archive = keras.export.ExportArchive()
    archive.track(model)

    def serve(ids):
        return {"log_probs": tf.nn.log_softmax(model(ids, training=False), axis=-1)}

    archive.add_endpoint(
        name="serve",
        fn=serve,
        input_signature=[tf.TensorSpec((None, None), tf.int32, name="ids")],
    )
    return archive
