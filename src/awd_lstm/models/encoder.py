"""The AWD-LSTM encoder: embedding and weight-dropped LSTM stack with their dropouts.

Merity et al. (2017), section 5: embedding (with embedding dropout and locked input
dropout), `num_layers` weight-dropped LSTMs with locked dropout between them. The
language model is one task on this backbone; a classifier or tagger can reuse it.
"""

import math

import keras

from awd_lstm._seeds import derived_seed
from awd_lstm._validation import check_choice, check_non_negative_int, check_positive_int
from awd_lstm.config import CELLS
from awd_lstm.layers import QRNN, EmbeddingDropout, LockedDropout, MogrifierLSTM, WeightDropLSTM


@keras.saving.register_keras_serializable(package="awd_lstm")
class AWDLSTMEncoder(keras.layers.Layer):
    """Embedding → locked dropout → `num_layers` weight-dropped LSTMs.

    Args:
        vocab_size: Size of the vocabulary.
        embedding_size: Embedding dimension (paper: `emsize`, 400).
        hidden_size: Units of every LSTM but the last (paper: `nhid`, 1150).
        num_layers: Number of LSTM layers (paper: `nlayers`, 3).
        output_size: Units of the last LSTM; defaults to `embedding_size` so a
            decoder can be tied to the embedding.
        embedding_dropout: Word-type dropout of the embedding (`dropoute`).
        input_dropout: Locked dropout of the embedded inputs (`dropouti`).
        hidden_dropout: Locked dropout between LSTM layers (`dropouth`).
        weight_dropout: DropConnect rate of the recurrent kernels (`wdrop`).
        cell: The recurrent layers: `"lstm"` (`WeightDropLSTM`), `"mogrifier"`
            (`MogrifierLSTM`, Melis et al. 2020, with the same weight drop) or
            `"qrnn"` (`QRNN`, Bradbury et al. 2017, as the reference's AWD-QRNN: a
            window of 2 steps in the first layer, 1 in the others, the output gate,
            `weight_dropout` on the gate weights, no zoneout).
        mogrifier_rounds: The Mogrifier's rounds (5).
        mogrifier_rank: The rank of its factorized matrices; `None`: full.
        seed: Integer seed; every random layer derives its own from it.

    Weights are initialized as the reference does: embedding `U(-0.1, 0.1)`, LSTM
    kernels and bias `U(-1/sqrt(units), 1/sqrt(units))` (PyTorch's `nn.LSTM` default),
    a QRNN's `U(-1/sqrt(fan_in), 1/sqrt(fan_in))` (its `nn.Linear`'s).

    Call arguments:
        ids: Integer tokens `(batch, time)`.
        initial_states: Optional list of `[h, c]` per layer (a QRNN's `[x_last, c]`:
            its last input step and its cell, `state_sizes`).
        training: Whether the dropouts apply.
        length: JAX only (where `pads_segments()`): `ids` are padded along time to a
            multiple of 5 steps of which the first `length` (an integer scalar) count;
            the LSTM outputs are zero after them and `states` those after step
            `length`.

    Returns:
        A dict with `raw_outputs` (each LSTM's output), `dropped_outputs` (after the
        locked dropout that follows it; the last layer's is its raw output, the task
        applies its own dropout) and `states` (`[h, c]` per layer, a QRNN's
        `[x_last, c]`).
    """

    def __init__(
        self,
        vocab_size,
        embedding_size=400,
        hidden_size=1150,
        num_layers=3,
        output_size=None,
        embedding_dropout=0.1,
        input_dropout=0.65,
        hidden_dropout=0.3,
        weight_dropout=0.5,
        seed=None,
        cell="lstm",
        mogrifier_rounds=5,
        mogrifier_rank=None,
        **kwargs,
    ):
        check_choice("cell", cell, CELLS)
        for name, value in (
            ("vocab_size", vocab_size),
            ("embedding_size", embedding_size),
            ("hidden_size", hidden_size),
            ("num_layers", num_layers),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"`{name}` must be a positive integer; Received: {name}={value!r}")
        super().__init__(**kwargs)
        self.vocab_size = vocab_size
        self.embedding_size = embedding_size
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.output_size = output_size or embedding_size
        self.embedding_dropout = embedding_dropout
        self.input_dropout = input_dropout
        self.hidden_dropout = hidden_dropout
        self.weight_dropout = weight_dropout
        self.seed = seed
        self.cell = cell
        self.mogrifier_rounds = check_non_negative_int("mogrifier_rounds", mogrifier_rounds)
        self.mogrifier_rank = (
            None if mogrifier_rank is None else check_positive_int("mogrifier_rank", mogrifier_rank)
        )
        self.embedding = EmbeddingDropout(
            vocab_size,
            embedding_size,
            embedding_dropout=embedding_dropout,
            seed=derived_seed(seed, "embedding", "dropout"),
            embeddings_initializer=keras.initializers.RandomUniform(
                -0.1, 0.1, seed=derived_seed(seed, "embedding", "initializer")
            ),
            name="embedding",
        )
        self.input_locked_dropout = LockedDropout(
            input_dropout, seed=derived_seed(seed, "input_dropout"), name="input_dropout"
        )
        self.lstms = []
        self.hidden_locked_dropouts = []
        for layer in range(num_layers):
            units = self.output_size if layer == num_layers - 1 else hidden_size
            self.lstms.append(self._recurrent_layer(layer, units))
            if layer < num_layers - 1:
                self.hidden_locked_dropouts.append(
                    LockedDropout(
                        hidden_dropout,
                        seed=derived_seed(seed, "hidden_dropout", layer),
                        name=f"hidden_dropout_{layer}",
                    )
                )

    def _recurrent_layer(self, layer, units):
        """The recurrent layer number `layer` (of `units` units) of `self.cell`."""
        features = self._input_width(layer)
        window = 2 if layer == 0 else 1  # the reference's AWD-QRNN
        fan_in = window * features if self.cell == "qrnn" else units
        bound = 1.0 / math.sqrt(fan_in)
        init = keras.initializers.RandomUniform(
            -bound, bound, seed=derived_seed(self.seed, "lstm", layer, "initializer")
        )
        common = dict(
            weight_dropout=self.weight_dropout,
            return_sequences=True,
            return_state=True,
            kernel_initializer=init,
            bias_initializer=init,
            seed=derived_seed(self.seed, "lstm", layer, "weight_dropout"),
            name=f"lstm_{layer}",
        )
        if self.cell == "qrnn":
            return QRNN(units, window=window, output_gate=True, **common)
        options = {}
        recurrent = WeightDropLSTM
        if self.cell == "mogrifier":
            recurrent = MogrifierLSTM
            options = dict(rounds=self.mogrifier_rounds, rank=self.mogrifier_rank)
        return recurrent(
            units, **options, **common, recurrent_initializer=init, unit_forget_bias=False
        )

    def _input_width(self, layer):
        """The width of the inputs of layer number `layer`: the embedding's, then the
        hidden size."""
        return self.embedding_size if layer == 0 else self.hidden_size

    @property
    def layer_units(self):
        return [lstm.units for lstm in self.lstms]

    @property
    def state_sizes(self):
        """The widths of each layer's carried state pair: `(units, units)` for
        `[h, c]`, a QRNN's `(features, units)` for `[x_last, c]`."""
        return [
            (self._input_width(layer) if self.cell == "qrnn" else lstm.units, lstm.units)
            for layer, lstm in enumerate(self.lstms)
        ]

    def build(self, input_shape):
        self.embedding.build(input_shape)
        for layer, lstm in enumerate(self.lstms):
            lstm.build((*input_shape, self._input_width(layer)))

    def pads_segments(self):
        """Whether `call` takes padded `ids` with a `length` (JAX; see
        `WeightDropLSTM.pads_segments`)."""
        return all(lstm.pads_segments() for lstm in self.lstms)

    def call(self, ids, initial_states=None, training=False, length=None):
        x = self.embedding(ids, training=training)
        x = self.input_locked_dropout(x, training=training)
        raw_outputs, dropped_outputs, states = [], [], []
        padded = {} if length is None else {"length": length}
        for layer, lstm in enumerate(self.lstms):
            initial = None if initial_states is None else list(initial_states[layer])
            x, h, c = lstm(x, initial_state=initial, training=training, **padded)
            raw_outputs.append(x)
            states.append([h, c])
            if layer < self.num_layers - 1:
                x = self.hidden_locked_dropouts[layer](x, training=training)
            dropped_outputs.append(x)
        return {"raw_outputs": raw_outputs, "dropped_outputs": dropped_outputs, "states": states}

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "vocab_size": self.vocab_size,
                "embedding_size": self.embedding_size,
                "hidden_size": self.hidden_size,
                "num_layers": self.num_layers,
                "output_size": self.output_size,
                "embedding_dropout": self.embedding_dropout,
                "input_dropout": self.input_dropout,
                "hidden_dropout": self.hidden_dropout,
                "weight_dropout": self.weight_dropout,
                "seed": self.seed,
                "cell": self.cell,
                "mogrifier_rounds": self.mogrifier_rounds,
                "mogrifier_rank": self.mogrifier_rank,
            }
        )
        return config
