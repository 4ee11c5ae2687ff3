"""The TF1 pattern "variational dropout inside a loop", in Keras 3.

The TensorFlow 1.x code applied one `VariationalDropout` mask to the hidden state at
every step of a hand-written recurrent loop and redrew it per batch with
`sess.run(vd.get_update_mask_op())`. Here the same loop is a Keras cell whose step
multiplies its output by the kept mask; the mask is redrawn before every batch.
`awd_lstm.layers.LockedDropout` is the per-call form of the same idea for sequences.

    python examples/variational_dropout_loop.py [--epochs 3]
"""

import argparse

import keras
import numpy as np

from awd_lstm.compat import VariationalDropout


class DroppedStateCell(keras.layers.Layer):
    """An LSTM cell whose output (and so its next state's h) passes through a kept
    variational-dropout mask at every step."""

    def __init__(self, units, dropout, **kwargs):
        super().__init__(**kwargs)
        self.lstm = keras.layers.LSTMCell(units)
        self.dropout = dropout
        self.state_size = self.lstm.state_size
        self.output_size = units

    def build(self, input_shape):
        self.lstm.build(input_shape)

    def call(self, inputs, states, training=False):
        h, (h_next, c_next) = self.lstm(inputs, states)
        if training:
            h = self.dropout(h)  # the same mask at every step of the loop
            h_next = h
        return h, [h_next, c_next]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    x = rng.standard_normal((640, 20, 8)).astype("float32")
    y = np.cumsum(x[..., :1], axis=1) / 5.0

    vd = VariationalDropout(input_shape=[32], keep_prob=0.7, seed=0)
    rnn = keras.layers.RNN(DroppedStateCell(32, vd), return_sequences=True)
    model = keras.Sequential([keras.Input((20, 8)), rnn, keras.layers.Dense(1)])
    model.compile(keras.optimizers.Adam(1e-2), "mse")

    batch = 32
    for epoch in range(args.epochs):
        losses = []
        for start in range(0, len(x), batch):
            vd.get_update_mask_op()  # was: sess.run(vd.get_update_mask_op())
            losses.append(
                float(model.train_on_batch(x[start : start + batch], y[start : start + batch]))
            )
        kept = float(np.mean(keras.ops.convert_to_numpy(vd.mask) > 0))
        print(
            f"epoch {epoch + 1}: training loss {np.mean(losses):.4f} "
            f"(last mask keeps {kept:.0%} of the units)"
        )
    print(f"inference loss (no dropout): {model.evaluate(x, y, verbose=0):.4f}")


if __name__ == "__main__":
    main()
