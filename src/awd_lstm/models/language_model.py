"""The AWD-LSTM language model (Merity et al. 2017, section 5)."""

import os

import keras
import numpy as np
from keras import ops

from awd_lstm import backend, distribute
from awd_lstm._seeds import derived_seed
from awd_lstm._validation import check_positive_int
from awd_lstm.layers import LockedDropout
from awd_lstm.layers.adaptive_softmax import AdaptiveSoftmax, check_cutoffs
from awd_lstm.layers.mixture_of_softmaxes import MixtureOfSoftmaxes
from awd_lstm.models.encoder import AWDLSTMEncoder
from awd_lstm.regularizers import activation_regularization, temporal_activation_regularization

# The vocabulary's file among a saved model's assets.
VOCAB_ASSET = "vocab.json"


@keras.saving.register_keras_serializable(package="awd_lstm")
class AWDLSTMLanguageModel(keras.Model):
    """Embedding → weight-dropped LSTM stack → locked dropout → (tied) decoder.

    Called on integer tokens `(batch, time)` it returns next-token logits
    `(batch, time, vocab_size)`; compile it with
    `keras.losses.SparseCategoricalCrossentropy(from_logits=True)` and train it with
    `fit` or `train_on_batch`. In training, AR (`alpha`, on the dropped output of the
    last layer) and TAR (`beta`, on its raw output) are added through `add_loss`.

    It takes one input form, the ids: `score(ids, targets)` gives each target's
    negative log-likelihood `(batch, time)` instead, without forming the full
    distribution when `cutoffs` is set, and `hidden_states(ids)` every layer's
    outputs and final states. Compiled with `**model.compile_defaults()`, `fit`,
    `train_on_batch` and `test_on_batch` on `x=ids, y=targets` train and evaluate on
    those per-token losses: that is how a model with an adaptive softmax trains
    (`train_on_batch` and `test_on_batch` reserve its row budgets themselves; before
    `fit`, call `model.reserve_tail_capacity(targets)` on the training targets), and
    the full softmax trains that way too (the cross-entropy computed once for the loss
    and the metric), or with a sparse cross-entropy loss on the logits.

    On JAX (CPU), `train_on_batch` of a model so compiled (full softmax) pads every
    segment along time to `segment_capacity` steps and trains on the padded segment
    with its true length (`{"ids", "targets", "length"}`): the LSTMs and the decoder
    loop over the first `length` steps only, so one compiled step serves every
    segment length of variable-length BPTT instead of one compilation per length.
    The numbers are those of the unpadded step (to float rounding).

    Args:
        vocab_size: Size of the vocabulary.
        embedding_size: Embedding dimension (paper: `emsize`, 400).
        hidden_size: Units of the inner LSTM layers (`nhid`, 1150).
        num_layers: LSTM layers (`nlayers`, 3).
        embedding_dropout: Word-type dropout (`dropoute`, 0.1).
        input_dropout: Locked dropout of the embeddings (`dropouti`, 0.65).
        hidden_dropout: Locked dropout between LSTM layers (`dropouth`, 0.3).
        output_dropout: Locked dropout of the last LSTM output (`dropout`, 0.4).
        weight_dropout: DropConnect rate of the recurrent kernels (`wdrop`, 0.5).
        tie_weights: Use the embedding matrix as the decoder's weight (the last LSTM
            then has `embedding_size` units).
        alpha: AR scale (2). beta: TAR scale (1).
        cutoffs: Word ranks where the head and each tail cluster of a (tied)
            adaptive softmax begin (`AdaptiveSoftmax`), e.g. `[2800, 20000, 76000]`
            for WikiText-103; needs a vocabulary sorted most frequent first. `None`:
            the full softmax. The output is then log-probabilities (which are also
            valid logits).
        tail_capacity: The adaptive softmax's initial row budgets
            (`AdaptiveSoftmax`); `None`: all positions.
        mixture_components: `K` softmaxes mixed by a mixture-of-softmaxes output
            layer over the tied embedding (`MixtureOfSoftmaxes`; Yang et al. 2018,
            `n_experts`, 15 on PTB); `None`: one softmax. The output is then
            log-probabilities (which are also valid logits). Needs `tie_weights` and
            no `cutoffs`.
        mixture_dropout: Locked dropout of the mixture's latent vectors
            (`dropoutl`, 0.29 on PTB).
        cell: The recurrent layers: `"lstm"` (`WeightDropLSTM`), `"mogrifier"`
            (`MogrifierLSTM`, Melis et al. 2020, with the same weight drop) or
            `"qrnn"` (`QRNN`, the reference's AWD-QRNN; see `AWDLSTMEncoder`).
        mogrifier_rounds: The Mogrifier's rounds (5).
        mogrifier_rank: The rank of its factorized matrices; `None`: full.
        last_hidden_size: Units of the last LSTM (`nhidlast`). `None`: the embedding
            size with a tied decoder (which needs it, unless a mixture of softmaxes
            projects the last LSTM's output to the embedding size), `hidden_size`
            untied.
        stateful: Carry the hidden state from one call to the next, without gradient
            (truncated BPTT over contiguous segments); needs `batch_size`.
            `reset_state()` zeroes it.
        batch_size: The fixed batch of a stateful model.
        seed: Integer seed of every random layer.

    Example:

    >>> model = AWDLSTMLanguageModel(50, embedding_size=8, hidden_size=16, num_layers=2)
    >>> tuple(model(np.zeros((2, 7), "int32")).shape)
    (2, 7, 50)
    """

    def __init__(
        self,
        vocab_size,
        embedding_size=400,
        hidden_size=1150,
        num_layers=3,
        embedding_dropout=0.1,
        input_dropout=0.65,
        hidden_dropout=0.3,
        output_dropout=0.4,
        weight_dropout=0.5,
        tie_weights=True,
        alpha=2.0,
        beta=1.0,
        stateful=False,
        batch_size=None,
        seed=None,
        cutoffs=None,
        tail_capacity=None,
        mixture_components=None,
        mixture_dropout=0.0,
        last_hidden_size=None,
        cell="lstm",
        mogrifier_rounds=5,
        mogrifier_rank=None,
        **kwargs,
    ):
        if cutoffs:
            cutoffs = check_cutoffs(cutoffs, vocab_size)
        if mixture_components is not None:
            mixture_components = check_positive_int("mixture_components", mixture_components)
            if cutoffs or not tie_weights:
                raise ValueError(
                    "a mixture of softmaxes scores the tied embedding's rows: it needs "
                    "`tie_weights=True` and no `cutoffs`; Received: "
                    f"tie_weights={tie_weights!r}, cutoffs={cutoffs!r}"
                )
        if last_hidden_size is not None:
            last_hidden_size = check_positive_int("last_hidden_size", last_hidden_size)
            if tie_weights and mixture_components is None and last_hidden_size != embedding_size:
                raise ValueError(
                    "a tied decoder reads the last LSTM's output with the embedding "
                    f"matrix, so `last_hidden_size` must equal `embedding_size` "
                    f"({embedding_size}) unless `mixture_components` projects it; "
                    f"Received: last_hidden_size={last_hidden_size}"
                )
        if last_hidden_size is None:
            last_hidden_size = embedding_size if tie_weights else hidden_size
        if stateful and (
            isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1
        ):
            raise ValueError(
                "a stateful model needs `batch_size`, a positive integer; "
                f"Received: batch_size={batch_size!r}"
            )
        super().__init__(**kwargs)
        self.encoder = AWDLSTMEncoder(
            vocab_size,
            embedding_size=embedding_size,
            hidden_size=hidden_size,
            num_layers=num_layers,
            output_size=last_hidden_size,
            embedding_dropout=embedding_dropout,
            input_dropout=input_dropout,
            hidden_dropout=hidden_dropout,
            weight_dropout=weight_dropout,
            seed=seed,
            cell=cell,
            mogrifier_rounds=mogrifier_rounds,
            mogrifier_rank=mogrifier_rank,
            name="encoder",
        )
        self.output_locked_dropout = LockedDropout(
            output_dropout, seed=derived_seed(seed, "output_dropout"), name="output_dropout"
        )
        self.vocab_size = vocab_size
        self.output_dropout = output_dropout
        self.tie_weights = tie_weights
        self.alpha = float(alpha)
        self.beta = float(beta)
        self.stateful = bool(stateful)
        self.batch_size = batch_size
        self.seed = seed
        # The model's `awd_lstm.data.Vocabulary`, if it has one (a run's model, a loaded
        # `.keras` file): saved inside a `.keras` file as an asset.
        self.vocabulary = None
        if tie_weights:
            self.decoder = None
        else:
            self.decoder = keras.layers.Dense(vocab_size, use_bias=False, name="decoder")
        self.decoder_bias = self.add_weight(
            shape=(vocab_size,), initializer="zeros", name="decoder_bias"
        )
        self.mixture = None
        if mixture_components is not None:
            self.mixture = MixtureOfSoftmaxes(
                vocab_size,
                mixture_components,
                embedding_size=embedding_size,
                latent_dropout=mixture_dropout,
                seed=derived_seed(seed, "mixture"),
                name="mixture",
            )
        self.adaptive_softmax = None
        if cutoffs:
            self.adaptive_softmax = AdaptiveSoftmax(
                vocab_size,
                cutoffs,
                tail_capacity=tail_capacity,
                seed=derived_seed(seed, "adaptive_softmax"),
                name="adaptive_softmax",
            )
        # Replicas of the TensorFlow strategy the model is built under (tf.distribute):
        # each one trains `batch_size / replicas` of the streams.
        self.replicas = backend.strategy_replicas()
        # The model's own TensorFlow step functions serve models built under a
        # strategy; on one device Keras' own step is as fast (benchmarks/RESULTS.md).
        self.own_tf_steps = backend.in_strategy()
        if self.stateful:
            distribute.check_even_split(batch_size, self.replicas)
        # JAX: the time steps `train_on_batch` pads segments to (None: the first
        # segment's); a longer segment grows it (one more compilation).
        self.segment_capacity = None
        self.state_variables = []
        if self.stateful:
            # Non-trainable variables, so every backend's trainer carries them between
            # compiled steps like any other model state.
            # (A QRNN's "h" is its last input step, see AWDLSTMEncoder.state_sizes.)
            for layer, sizes in enumerate(self.encoder.state_sizes):
                self.state_variables.append(
                    [
                        self._state_weight((batch_size, size), f"state_{kind}_{layer}")
                        for kind, size in zip(("h", "c"), sizes)
                    ]
                )

    def _state_weight(self, shape, name):
        if self.replicas == 1:
            return self.add_weight(shape=shape, initializer="zeros", trainable=False, name=name)
        # Under a TensorFlow strategy every replica keeps the states of its own streams:
        # a variable synchronized on read, one copy per replica, in which the replica
        # uses its own streams' rows (the shape stays the model's, so checkpoints fit
        # any number of replicas; outside the replicas the first copy is read, and
        # training zeroes the states when each epoch starts).
        with keras.name_scope(self.name, caller=self):
            variable = keras.Variable(
                initializer="zeros",
                shape=shape,
                dtype=self.variable_dtype,
                trainable=False,
                synchronization="on_read",
                aggregation="only_first_replica",
                name=name,
            )
        backend.track_variable(self, variable)
        return variable

    def build(self, input_shape):
        if isinstance(input_shape, dict):
            input_shape = input_shape["ids"]  # the steps' `{"ids", "targets"}`
        self.encoder.build(input_shape)
        if self.decoder is not None:
            self.decoder.build((*input_shape, self.encoder.output_size))
        if self.adaptive_softmax is not None:
            self.adaptive_softmax.build((*input_shape, self.encoder.output_size))
        if self.mixture is not None:
            self.mixture.build((*input_shape, self.encoder.output_size))

    @property
    def cutoffs(self):
        """The adaptive softmax's cut-offs, or `None` (full softmax)."""
        return None if self.adaptive_softmax is None else self.adaptive_softmax.cutoffs

    @property
    def tail_capacity(self):
        return None if self.adaptive_softmax is None else self.adaptive_softmax.tail_capacity

    @tail_capacity.setter
    def tail_capacity(self, fractions):
        if self.adaptive_softmax is not None:
            grown = tuple(float(f) for f in fractions)
            if grown != self.adaptive_softmax.tail_capacity:
                self.adaptive_softmax.tail_capacity = grown
                self._forget_compiled_functions()

    def reserve_tail_capacity(self, targets):
        """Grows the adaptive softmax's row budgets to fit every step in `targets`
        (one `(batch, time)` array or an iterable of them); the compiled step functions
        are traced again if a budget grew. Nothing to do with a full softmax."""
        if self.adaptive_softmax is not None and self.adaptive_softmax.reserve_capacity(targets):
            self._forget_compiled_functions()

    def _forget_compiled_functions(self):
        # The row budgets are static shapes of the compiled steps.
        self.train_function = None
        self.test_function = None
        self.predict_function = None
        self.__dict__.pop("_tf_step_functions", None)

    def compile(self, optimizer="rmsprop", loss=None, *args, **kwargs):
        """Keras' `compile`; a plain `SparseCategoricalCrossentropy(from_logits=True)`
        loss is swapped for `LogitsCrossEntropy`, the same numbers by the backend's
        fastest route (on PyTorch Keras' own moves the vocabulary axis, which costs a
        sixth of a small model's step)."""
        super().compile(optimizer, _fast_logits_loss(loss), *args, **kwargs)

    def compile_defaults(self):
        """`loss` and `metrics` for `compile`: the mean of the per-token losses of
        the targets (`score`, computed once, for the loss and for the metric `ce`, the
        cross-entropy without AR/TAR); given logits instead, they take the sparse
        cross-entropy of those."""
        return {
            "loss": TokenLoss(),
            "metrics": [keras.metrics.MeanMetricWrapper(token_losses, name="ce")],
        }

    def _reserve(self, x, y):
        # The adaptive softmax's row budgets are static shapes of the compiled steps:
        # grown here, from the NumPy targets, before the step runs.
        if y is not None and not isinstance(x, dict):
            self.reserve_tail_capacity(np.asarray(y))

    def train_on_batch(self, x, y=None, sample_weight=None, class_weight=None, return_dict=False):
        self._reserve(x, y)
        if self._own_tf_steps() and class_weight is None:
            return self._tf_step("train", x, y, sample_weight, return_dict)
        if sample_weight is None and class_weight is None and self._pads_segments(x, y):
            padded, targets = self._padded_segment(x, y)
            return super().train_on_batch(padded, targets, return_dict=return_dict)
        return super().train_on_batch(x, y, sample_weight, class_weight, return_dict)

    def test_on_batch(self, x, y=None, sample_weight=None, return_dict=False):
        self._reserve(x, y)
        if self._own_tf_steps():
            return self._tf_step("test", x, y, sample_weight, return_dict)
        return super().test_on_batch(x, y, sample_weight, return_dict)

    def _pads_segments(self, x, y):
        # JAX without cuDNN, a model compiled for per-token losses (full softmax),
        # plain `(batch, time)` ids with their targets, LSTMs that take `length`.
        return (
            y is not None
            and self.adaptive_softmax is None
            and self.mixture is None
            and isinstance(getattr(self, "loss", None), TokenLoss)
            and not isinstance(x, (tuple, list, dict))
            and len(np.shape(x)) == 2
            and np.shape(x) == np.shape(y)
            and self.encoder.pads_segments()
        )

    def _padded_segment(self, x, y):
        """`({"ids", "targets", "length"}, targets)` of a segment padded to
        `segment_capacity` steps (grown to fit it)."""
        x, y = np.asarray(x), np.asarray(y)
        batch, steps = x.shape
        capacity = backend.padded_steps(max(steps, self.segment_capacity or 0))
        self.segment_capacity = capacity
        ids = np.zeros((batch, capacity), x.dtype)
        targets = np.zeros((batch, capacity), y.dtype)
        ids[:, :steps], targets[:, :steps] = x, y
        length = np.full((batch,), steps, "int32")
        return {"ids": ids, "targets": targets, "length": length}, targets

    def _own_tf_steps(self):
        return (
            self.own_tf_steps
            and backend.name() == "tensorflow"
            and self.compiled
            and not self.run_eagerly
        )

    def _tf_step(self, kind, x, y, sample_weight, return_dict):
        # TensorFlow: the model's own step functions (`StepFunctions` of
        # `awd_lstm.backend.tensorflow`), which reduce scalar logs under every strategy
        # and can trace the first `EXACT_SHAPES` segment lengths each on their own (by
        # default none: one shape-generic trace serves every length). Under a
        # strategy, replica `i` gets rows `i * b` to `(i + 1) * b` of the batch
        # (`b = batch / replicas`), the streams whose states it keeps.
        from awd_lstm.backend import tensorflow as tf_backend

        batch = np.shape(x[0] if isinstance(x, (tuple, list)) else x)[0]
        distribute.check_even_split(batch, self.replicas)
        data = (x, y, sample_weight)
        shape = tuple(np.shape(a) for a in keras.tree.flatten(data) if a is not None)
        strategy = self.distribute_strategy
        if self.replicas > 1:
            backend.symbolic_build(self, distribute.first_replica_rows(data, self.replicas))
            data = tf_backend.split_per_replica(strategy, data)
        functions = self.__dict__.setdefault("_tf_step_functions", {})
        if kind not in functions:
            step = self.train_step if kind == "train" else self.test_step
            functions[kind] = tf_backend.StepFunctions(strategy, step, bool(self.jit_compile))
        self.reset_metrics()
        logs = {k: float(v) for k, v in functions[kind](data, shape).items()}
        return logs if return_dict else backend.flatten_metrics(self, logs)

    def reset_state(self):
        """Zeroes the carried hidden state (a stateful model's)."""
        for pair in self.state_variables:
            for variable in pair:
                variable.assign(ops.zeros(variable.shape, dtype=variable.dtype))

    def _carried_states(self, ids, replica):
        batch = ids.shape[0]
        # Under a TensorFlow strategy each replica sees its own share of the streams.
        expected = self.batch_size // self.replicas
        if batch is not None and batch != expected:
            share = f" ({expected} per replica)" if self.replicas > 1 else ""
            raise ValueError(
                f"this stateful model carries states for batch_size={self.batch_size}"
                f"{share}; Received: inputs with batch {batch}"
            )
        # A copy, not the variable's buffer: the state is overwritten after the call,
        # and PyTorch's autograd must not see an in-place change of a used tensor.
        return [
            [ops.stop_gradient(self._own_rows(ops.copy(v), replica)) for v in pair]
            for pair in self.state_variables
        ]

    def _own_rows(self, value, replica):
        if self.replicas == 1:
            return value
        return distribute.replica_rows(value, replica, self.replicas)

    def _carry(self, states, replica):
        for pair, new in zip(self.state_variables, states):
            for variable, value in zip(pair, new):
                value = ops.stop_gradient(ops.cast(value, variable.dtype))
                if self.replicas > 1:
                    value = distribute.with_replica_rows(
                        variable.value, value, replica, self.replicas
                    )
                variable.assign(value)

    def call(self, ids, training=False):
        """Next-token logits `(batch, time, vocab_size)` of integer `ids`
        `(batch, time)` (log-probabilities with `cutoffs`).

        The model's train, test and scoring steps hand `call` a dict instead,
        `{"ids", "targets"}` (with `"length"` on JAX's padded segments), and get each
        target's negative log-likelihood `(batch, time)`: `score` is the public way in.
        """
        if isinstance(ids, dict):
            return self._step_losses(ids, training)
        if isinstance(ids, (tuple, list)):
            raise TypeError(
                "the language model is called on token ids alone; for the losses of "
                "targets use `score(ids, targets)`; Received: a "
                f"{type(ids).__name__} of {len(ids)}"
            )
        hidden, dropped = self._encode(ids, training)
        self._regularize(hidden["raw_outputs"][-1], dropped, training)
        return self._logits(dropped, training=training)

    def score(self, ids, targets, training=False):
        """Each target's negative log-likelihood `(batch, time)` given `ids`
        (`-log p(targets[b, t] | ids[b, :t + 1])`, nats), without forming the full
        distribution when `cutoffs` is set. In training AR/TAR are added through
        `add_loss`, as with `call`. `score_on_batch` runs it compiled."""
        return self({"ids": ids, "targets": targets}, training=training)

    def hidden_states(self, ids, training=False):
        """Everything the forward pass makes, as a dict: `logits` (as `call`),
        `raw_outputs` (every LSTM layer's output), `dropped_outputs` (each after its
        locked dropout, the last one what the decoder reads) and `states` (each
        layer's final `[h, c]`). A stateful model carries its state as with `call`.
        Adds no losses: AR/TAR of these outputs are
        `awd_lstm.regularizers.activation_regularization(dropped_outputs[-1])` and
        `temporal_activation_regularization(raw_outputs[-1])`."""
        ids = ops.convert_to_tensor(ids)
        if not self.built:
            self.build(tuple(ids.shape))
        hidden, dropped = self._encode(ids, training)
        return {
            "logits": self._logits(dropped, training=training),
            "raw_outputs": hidden["raw_outputs"],
            "dropped_outputs": hidden["dropped_outputs"][:-1] + [dropped],
            "states": hidden["states"],
        }

    def _encode(self, ids, training, length=None):
        replica = backend.replica()[1]
        initial = self._carried_states(ids, replica) if self.stateful else None
        padded = {} if length is None else {"length": length}
        hidden = self.encoder(ids, initial_states=initial, training=training, **padded)
        if self.stateful:
            self._carry(hidden["states"], replica)
        dropped = self.output_locked_dropout(hidden["raw_outputs"][-1], training=training)
        return hidden, dropped

    def _regularize(self, raw, dropped, training, length=None):
        if training and self.alpha > 0:
            self.add_loss(activation_regularization(dropped, self.alpha, length=length))
        if training and self.beta > 0:
            self.add_loss(temporal_activation_regularization(raw, self.beta, length=length))

    def _table(self, dtype):
        if self.decoder is None:
            return ops.cast(self.encoder.embedding.embeddings, dtype)
        return ops.transpose(ops.cast(self.decoder.kernel, dtype))

    def _logits(self, dropped, targets=None, training=False):
        # Logits (a mixture's or an adaptive softmax's log-probabilities), or with
        # `targets` their per-token losses.
        table = self._table(dropped.dtype)
        if self.mixture is not None:
            return self.mixture(
                dropped, table, self.decoder_bias, targets=targets, training=training
            )
        if self.adaptive_softmax is not None:
            return self.adaptive_softmax(dropped, table, self.decoder_bias, targets=targets)
        # float32 logits under a mixed policy too (the softmax and the loss need
        # its precision; the product itself runs in the compute dtype).
        logits = backend.decoder_logits(dropped, table, self.decoder_bias)
        if targets is None:
            return logits
        return backend.target_cross_entropy(logits, targets)

    def _step_losses(self, inputs, training):
        unknown = set(inputs) - {"ids", "targets", "length"}
        if unknown or "ids" not in inputs or inputs.get("targets") is None:
            raise ValueError(
                'the step inputs of the language model are `{"ids", "targets"}` (and '
                f'`"length"` on padded segments); Received: keys {sorted(inputs)}'
            )
        ids, targets = inputs["ids"], inputs["targets"]
        length = None
        if inputs.get("length") is not None:
            length = self._padded_length(inputs["length"])
        hidden, dropped = self._encode(ids, training, length)
        self._regularize(hidden["raw_outputs"][-1], dropped, training, length)
        if length is not None:
            return self._padded_losses(dropped, targets, length)
        return self._logits(dropped, targets, training=training)

    def _padded_length(self, length):
        # Inputs `{"ids", "targets", "length"}`: `ids` and `targets` padded along time,
        # the first `length` steps count (one length for the whole batch).
        if self.adaptive_softmax is not None or self.mixture is not None:
            raise ValueError("padded segments (`length`) need the full softmax")
        if not self.encoder.pads_segments():
            raise ValueError(
                "padded segments (`length`) need the JAX backend on a device without "
                "cuDNN and standard LSTM layers"
            )
        return ops.cast(ops.reshape(length, (-1,))[0], "int32")

    def _padded_losses(self, dropped, targets, length):
        # The per-token losses scaled by `capacity / length` (zero on padded steps), so
        # that their mean over the padded array, what the compiled loss and metric
        # take, is the mean over the segment's tokens.
        # In float32 under a mixed policy too, as the logits of `_logits`.
        dropped = ops.cast(dropped, "float32")
        losses = backend.padded_cross_entropy()(
            ops.transpose(dropped, (1, 0, 2)),
            self._table(dropped.dtype),
            ops.cast(self.decoder_bias, dropped.dtype),
            ops.transpose(ops.cast(targets, "int32")),
            length,
        )
        capacity = targets.shape[1]
        return ops.transpose(losses) * ops.cast(capacity / length, losses.dtype)

    def train_step(self, *args):
        # Keras' own step (JAX passes `(state, data)`, the others `data`), given
        # `{"ids", "targets"}` as inputs when the model is compiled for per-token
        # losses, so that `fit` and `train_on_batch` on `(ids, targets)` train on the
        # targets' losses (the adaptive softmax never forms the full distribution).
        *state, data = args
        return super().train_step(*state, self._step_data(data))

    def test_step(self, *args):
        *state, data = args
        return super().test_step(*state, self._step_data(data))

    def _step_data(self, data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        if (
            y is None
            or isinstance(x, dict)
            or not isinstance(getattr(self, "loss", None), TokenLoss)
        ):
            return data
        return keras.utils.pack_x_y_sample_weight({"ids": x, "targets": y}, y, sample_weight)

    def score_on_batch(self, ids, targets):
        """`score(ids, targets)` of one batch through the backend's compiled predict
        step, as NumPy. A stateful model carries its state as with
        `predict_on_batch`."""
        self.reserve_tail_capacity(np.asarray(targets))
        return np.asarray(self.predict_on_batch({"ids": ids, "targets": targets}))

    def predict_hidden_on_batch(self, ids):
        """`{"logits", "hidden"}` of one batch: the logits and the raw last-layer
        states (what the cache pointer attends over), through the backend's compiled
        predict step. A stateful model carries its state as with `predict_on_batch`."""
        # A model of its own that shares this one's layers and variables (and so its
        # carried state), with a compiled predict function of its own.
        if "_hidden_predictor" not in self.__dict__:
            self.__dict__["_hidden_predictor"] = _HiddenStatesPredictor(self)
        return self.__dict__["_hidden_predictor"].predict_on_batch(ids)

    def layer_groups(self):
        """The layer groups of ULMFiT's discriminative rates and gradual unfreezing,
        first to last: the embedding (the tied decoder's weights too), each LSTM, the
        output layer (the decoder's bias, an untied decoder, an adaptive softmax's
        clusters, a mixture of softmaxes' prior and latent projections)."""
        encoder = self.encoder
        output = [self.decoder_bias]
        layers = (self.decoder, self.adaptive_softmax, self.mixture)
        output += [layer for layer in layers if layer is not None]
        return [[encoder.embedding], *([lstm] for lstm in encoder.lstms), output]

    # -- the vocabulary, inside a `.keras` file ---------------------------------------

    def save_assets(self, dir_path):
        """Keras' saving hook: the vocabulary, if the model has one, goes into the
        `.keras` file (`assets/vocab.json`)."""
        if self.vocabulary is not None:
            self.vocabulary.save(os.path.join(dir_path, VOCAB_ASSET))

    def load_assets(self, dir_path):
        """Keras' loading hook: the vocabulary a `.keras` file carries."""
        path = os.path.join(dir_path, VOCAB_ASSET) if dir_path else None
        if path is None or not os.path.exists(path):
            return
        from awd_lstm.data import CorpusError, Vocabulary

        vocabulary = Vocabulary.load(path)
        if len(vocabulary) != self.vocab_size:
            raise CorpusError(
                f"the vocabulary inside the file has {len(vocabulary)} tokens, the model "
                f"{self.vocab_size}"
            )
        self.vocabulary = vocabulary

    # -- the same model, stateful or not --------------------------------------------

    def as_stateful(self, batch_size=1):
        """This model as a stateful one of `batch_size` streams (generation, streaming
        evaluation): itself if it is one; otherwise a copy with its present weights
        and vocabulary (made once, its weights set again at every call)."""
        if self.stateful and self.batch_size == batch_size:
            return self
        return self._variant(True, batch_size)

    def as_stateless(self):
        """This model for any batch, from a zero state at every call (scoring,
        export): itself if it is not stateful; otherwise a copy, as `as_stateful`."""
        return self if not self.stateful else self._variant(False, None)

    def _variant(self, stateful, batch_size):
        if stateful and (isinstance(batch_size, bool) or not isinstance(batch_size, int)):
            raise ValueError(f"`batch_size` must be a positive integer; Received: {batch_size!r}")
        # Kept in __dict__: the copy is not one of this model's layers.
        variants = self.__dict__.setdefault("_variants", {})
        key = (stateful, batch_size)
        if key not in variants:
            with backend.tensorflow_unimported():  # get_config serializes with Keras
                config = {**self.get_config(), "stateful": stateful, "batch_size": batch_size}
                variant = type(self).from_config(config)
            variant.build((batch_size, None))
            variants[key] = variant
        variant = variants[key]
        for target, source in zip(variant.trainable_variables, self.trainable_variables):
            target.assign(ops.convert_to_numpy(source))
        variant.vocabulary = self.vocabulary
        variant.reset_state()
        return variant

    @classmethod
    def from_run(cls, path, batch_size=1, stateful=True, weights="best"):
        """The language model of a run folder, holding its trained weights (see
        `awd_lstm.runs.Run.load_model`); the run's vocabulary is
        `awd_lstm.load_run(path).vocabulary`."""
        from awd_lstm.runs import Run

        return Run.open(path).load_model(batch_size=batch_size, stateful=stateful, weights=weights)

    def get_config(self):
        encoder = self.encoder
        return {
            **super().get_config(),
            "vocab_size": self.vocab_size,
            "embedding_size": encoder.embedding_size,
            "hidden_size": encoder.hidden_size,
            "num_layers": encoder.num_layers,
            "embedding_dropout": encoder.embedding_dropout,
            "input_dropout": encoder.input_dropout,
            "hidden_dropout": encoder.hidden_dropout,
            "output_dropout": self.output_dropout,
            "weight_dropout": encoder.weight_dropout,
            "tie_weights": self.tie_weights,
            "alpha": self.alpha,
            "beta": self.beta,
            "stateful": self.stateful,
            "batch_size": self.batch_size,
            "seed": self.seed,
            "cutoffs": None if self.cutoffs is None else list(self.cutoffs),
            "tail_capacity": None if self.tail_capacity is None else list(self.tail_capacity),
            "mixture_components": None if self.mixture is None else self.mixture.num_components,
            "mixture_dropout": 0.0 if self.mixture is None else self.mixture.latent_dropout,
            "last_hidden_size": encoder.output_size,
            "cell": encoder.cell,
            "mogrifier_rounds": encoder.mogrifier_rounds,
            "mogrifier_rank": encoder.mogrifier_rank,
        }


@keras.saving.register_keras_serializable(package="awd_lstm")
def token_losses(y_true, y_pred):
    """Per-token losses: `y_pred` itself when the model computed them (same shape
    as the targets), else the sparse cross-entropy of `y_pred` as logits."""
    if len(y_pred.shape) == len(y_true.shape) + 1:
        return backend.target_cross_entropy(y_pred, y_true)
    return y_pred


@keras.saving.register_keras_serializable(package="awd_lstm")
class LogitsCrossEntropy(keras.losses.Loss):
    """`keras.losses.SparseCategoricalCrossentropy(from_logits=True)` over the last
    axis, by the backend's cheapest exact route (`awd_lstm.backend.target_cross_entropy`)."""

    def __init__(self, name="sparse_categorical_crossentropy", **kwargs):
        super().__init__(name=name, **kwargs)

    def call(self, y_true, y_pred):
        return backend.target_cross_entropy(y_pred, y_true)


def _fast_logits_loss(loss):
    if type(loss) is not keras.losses.SparseCategoricalCrossentropy:
        return loss
    config = loss.get_config()
    # (The model's classes are on the last axis, the one `axis` must name.)
    plain = dict(from_logits=True, ignore_class=None, reduction="sum_over_batch_size")
    if any(config.get(key, value) != value for key, value in plain.items()):
        return loss
    return LogitsCrossEntropy(name=loss.name, dtype=config.get("dtype"))


@keras.saving.register_keras_serializable(package="awd_lstm")
class TokenLoss(keras.losses.Loss):
    """The mean of per-token losses a model computed itself (the language model's
    `score`), or of the sparse cross-entropy when `y_pred` are
    logits (`token_losses`)."""

    def __init__(self, name="token_loss", **kwargs):
        super().__init__(name=name, **kwargs)

    def call(self, y_true, y_pred):
        return token_losses(y_true, y_pred)


class _HiddenStatesPredictor(keras.Model):
    """`{"logits", "hidden"}` of a language model, as a model of its own."""

    def __init__(self, language_model):
        super().__init__(name=f"{language_model.name}_hidden")
        self.language_model = language_model

    def call(self, ids):
        outputs = self.language_model.hidden_states(ids)
        return {"logits": outputs["logits"], "hidden": outputs["raw_outputs"][-1]}
