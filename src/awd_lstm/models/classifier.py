"""A text classifier on the AWD-LSTM encoder, the ULMFiT way (Howard & Ruder 2018)."""

import keras
from keras import ops

from awd_lstm._seeds import derived_seed
from awd_lstm._validation import check_positive_int, check_rate
from awd_lstm.models.encoder import AWDLSTMEncoder


@keras.saving.register_keras_serializable(package="awd_lstm")
class AWDLSTMClassifier(keras.Model):
    """The encoder's last-layer outputs, concat-pooled, through the ULMFiT head.

    Called on `{"ids": (batch, time), "lengths": (batch,)}` (or on the ids alone: every
    row then counts whole), documents padded after their `lengths` tokens, it returns
    class logits `(batch, num_classes)`; compile it with
    `keras.losses.SparseCategoricalCrossentropy(from_logits=True)`.

    - **Concat pooling** (section 3.3): `[h_T, max_t h_t, mean_t h_t]` over each
      document's own tokens, `h_T` its last one; padding takes no part (it comes
      after the document, which the recurrence, LSTM or QRNN, reads before it).
    - **The head**: per block batch normalization, dropout and a dense layer (ReLU
      between blocks): `3 * units → head_sizes... → num_classes`, `head_dropout` one
      rate per block (fastai's text classifier: one hidden layer of 50, dropout 0.2
      and 0.1).
    - **BPT3C** (section 3.3): a document is read in segments of `bptt` tokens, the
      encoder's state (`[h, c]` per LSTM, `[x_last, c]` per QRNN) carried from each
      to the next, so its length is not bounded by memory; the pooling covers the
      whole document, and the gradient reaches the segments of its last `max_len`
      tokens (of the batch's longest document) only. `max_len=None`: every segment.
    - The encoder's layer groups, for discriminative rates and gradual unfreezing
      (`layer_groups()`): the embedding, each recurrent layer, the head.

    Args:
        encoder: An `AWDLSTMEncoder` (a trained language model's: `from_run`).
        num_classes: Classes, at least 2.
        head_sizes: Units of the head's hidden layers.
        head_dropout: Dropout before each of the head's dense layers
            (`len(head_sizes) + 1` rates).
        bptt: Tokens per segment.
        max_len: Tokens at the end whose segments the gradient reaches (None: all).
        seed: Integer seed of the head's initializers and dropout.
    """

    def __init__(
        self,
        encoder,
        num_classes,
        head_sizes=(50,),
        head_dropout=(0.2, 0.1),
        bptt=70,
        max_len=1400,
        seed=None,
        **kwargs,
    ):
        if isinstance(encoder, dict):
            encoder = keras.saving.deserialize_keras_object(encoder)
        if not isinstance(encoder, AWDLSTMEncoder):
            raise TypeError(f"`encoder` must be an AWDLSTMEncoder; got {type(encoder).__name__}")
        if check_positive_int("num_classes", num_classes) < 2:
            raise ValueError(
                f"`num_classes` must be at least 2; Received: num_classes={num_classes}"
            )
        head_sizes = tuple(check_positive_int("head_sizes", size) for size in head_sizes)
        head_dropout = tuple(check_rate("head_dropout", rate) for rate in head_dropout)
        if len(head_dropout) != len(head_sizes) + 1:
            raise ValueError(
                f"`head_dropout` needs one rate per dense layer ({len(head_sizes) + 1}); "
                f"Received: head_dropout={head_dropout}"
            )
        self.bptt = check_positive_int("bptt", bptt)
        self.max_len = None if max_len is None else check_positive_int("max_len", max_len)
        super().__init__(**kwargs)
        self.encoder = encoder
        self.num_classes = num_classes
        self.head_sizes = head_sizes
        self.head_dropout = head_dropout
        self.seed = seed
        self.head = []
        sizes = [*head_sizes, num_classes]
        for block, (size, rate) in enumerate(zip(sizes, head_dropout)):
            last = block == len(sizes) - 1
            self.head.append(
                [
                    # PyTorch's (fastai's) statistics: Keras' default momentum of
                    # 0.99 leaves the moving statistics of a short fine-tuning (a
                    # few hundred steps) near their start, and inference with them
                    # predicts one class.
                    keras.layers.BatchNormalization(
                        momentum=0.9, epsilon=1e-5, name=f"head_norm_{block}"
                    ),
                    keras.layers.Dropout(
                        rate,
                        seed=derived_seed(seed, "head", block, "dropout"),
                        name=f"head_dropout_{block}",
                    ),
                    keras.layers.Dense(
                        size,
                        activation=None if last else "relu",
                        kernel_initializer=keras.initializers.GlorotUniform(
                            seed=derived_seed(seed, "head", block, "initializer")
                        ),
                        name=f"head_dense_{block}",
                    ),
                ]
            )
        # The classifier's vocabulary and labels, where known (`from_run`, a run's
        # model); not part of the config.
        self.vocabulary = None
        self.labels = None

    def build(self, input_shape):
        if isinstance(input_shape, dict):
            input_shape = input_shape["ids"]
        self.encoder.build(input_shape)
        size = 3 * self.encoder.layer_units[-1]
        for norm, _, dense in self.head:
            norm.build((None, size))
            dense.build((None, size))
            size = dense.units

    def layer_groups(self):
        """The layer groups of ULMFiT's discriminative rates and gradual unfreezing,
        first to last: the embedding, each recurrent layer (LSTM or QRNN), the head."""
        encoder = self.encoder
        return [[encoder.embedding], *([lstm] for lstm in encoder.lstms), [*sum(self.head, [])]]

    def pool(self, ids, lengths=None, training=False):
        """The concat pooling `[h_T, max_t h_t, mean_t h_t]` `(batch, 3 * units)` of the
        documents `ids` (each of `lengths` tokens), read in segments of `bptt`."""
        if lengths is None:
            lengths = ops.sum(ops.ones_like(ids, dtype="int32"), axis=1)
        lengths = ops.cast(lengths, "int32")
        steps = ids.shape[1]
        if steps is None:
            # A shape-generic trace (TensorFlow's `fit` relaxes the time axis after
            # its second shape): the same segments in a loop of the graph.
            return self._pool_in_a_loop(ids, lengths, training)
        first_trained = 0 if self.max_len is None else max(0, steps - self.max_len)
        states, pooled = None, None
        for start in range(0, steps, self.bptt):
            segment = ids[:, start : start + self.bptt]
            frozen = start + segment.shape[1] <= first_trained
            states, pooled = self._segment(
                segment, start, states, lengths, frozen, pooled, training
            )
        return self._concat(pooled, lengths)

    def _pool_in_a_loop(self, ids, lengths, training):
        bptt = self.bptt
        batch, steps = ops.shape(ids)[0], ops.shape(ids)[1]
        segments = (steps + bptt - 1) // bptt
        ids = ops.pad(ids, [[0, 0], [0, segments * bptt - steps]])  # padding: past `lengths`
        first_trained = 0 if self.max_len is None else ops.maximum(0, steps - self.max_len)
        # Each layer's carried pair: an LSTM's `[h, c]`, a QRNN's `[x_last, c]`.
        states = [[ops.zeros((batch, size)) for size in pair] for pair in self.encoder.state_sizes]
        width = self.encoder.layer_units[-1]
        pooled = (
            ops.zeros((batch, width)),
            ops.full((batch, width), -1e30),
            ops.zeros((batch, width)),
        )

        def body(i, states, pooled):
            start = i * bptt
            segment = ops.slice(ids, [0, start], [batch, bptt])
            frozen = start + bptt <= first_trained
            states, pooled = self._segment(
                segment, start, states, lengths, frozen, pooled, training
            )
            return i + 1, states, pooled

        _, _, pooled = ops.while_loop(
            lambda i, states, pooled: i < segments, body, (ops.convert_to_tensor(0), states, pooled)
        )
        return self._concat(pooled, lengths)

    def _segment(self, segment, start, states, lengths, frozen, pooled, training):
        """One BPT3C segment: the encoder from `states`, its outputs added to
        `pooled` (the running `(last, max, sum)`); out of the gradient's reach where
        `frozen` (a bool, or a scalar tensor in a graph loop)."""
        out = self.encoder(segment, initial_states=states, training=training)
        h, states = out["raw_outputs"][-1], [list(pair) for pair in out["states"]]
        if isinstance(frozen, bool):
            if frozen:
                h = ops.stop_gradient(h)
                states = [[ops.stop_gradient(s) for s in pair] for pair in states]
        else:
            # A blend, not a branch: the gradient of `stop_gradient(x) * 1 + x * 0` is 0.
            keep = ops.cast(frozen, h.dtype)
            h = keep * ops.stop_gradient(h) + (1 - keep) * h
            states = [
                [
                    ops.cast(keep, s.dtype) * ops.stop_gradient(s)
                    + (1 - ops.cast(keep, s.dtype)) * s
                    for s in pair
                ]
                for pair in states
            ]
        h = ops.cast(h, "float32")
        positions = start + ops.arange(ops.shape(segment)[1], dtype="int32")[None, :]
        real = ops.expand_dims(positions < lengths[:, None], -1)  # (batch, segment, 1)
        at_end = ops.expand_dims(positions == lengths[:, None] - 1, -1)
        last = ops.sum(ops.where(at_end, h, 0.0), axis=1)
        maximum = ops.max(ops.where(real, h, -1e30), axis=1)
        total = ops.sum(ops.where(real, h, 0.0), axis=1)
        if pooled is not None:
            last = pooled[0] + last
            maximum = ops.maximum(pooled[1], maximum)
            total = pooled[2] + total
        return states, (last, maximum, total)

    @staticmethod
    def _concat(pooled, lengths):
        last, maximum, total = pooled
        count = ops.cast(ops.maximum(lengths, 1), "float32")[:, None]
        return ops.concatenate([last, maximum, total / count], axis=-1)

    def call(self, inputs, training=False):
        if isinstance(inputs, dict):
            ids, lengths = inputs["ids"], inputs.get("lengths")
        else:
            ids, lengths = inputs, None
        x = self.pool(ids, lengths, training=training)
        for norm, dropout, dense in self.head:
            x = dense(dropout(norm(x, training=training), training=training))
        return x

    @classmethod
    def from_run(cls, path, num_classes, weights="best", **kwargs):
        """A classifier on the encoder of the language-model run in `path` (its
        `weights`, `"best"` or `"last"`), with the run's vocabulary as `.vocabulary`;
        `kwargs` as the constructor's (`bptt` defaults to the run's)."""
        from awd_lstm.runs import Run

        run = Run.open(path)
        language_model = run.load_model(stateful=False, weights=weights)
        encoder = AWDLSTMEncoder.from_config(language_model.encoder.get_config())
        kwargs.setdefault("bptt", run.config.bptt)
        kwargs.setdefault("seed", run.config.seed)
        model = cls(encoder, num_classes, **kwargs)
        model.build((None, None))
        for target, source in zip(encoder.weights, language_model.encoder.weights, strict=True):
            target.assign(ops.convert_to_numpy(source))
        model.vocabulary = run.vocabulary
        return model

    def get_config(self):
        return {
            **super().get_config(),
            "encoder": keras.saving.serialize_keras_object(self.encoder),
            "num_classes": self.num_classes,
            "head_sizes": list(self.head_sizes),
            "head_dropout": list(self.head_dropout),
            "bptt": self.bptt,
            "max_len": self.max_len,
            "seed": self.seed,
        }
