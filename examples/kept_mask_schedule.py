"""The TF1 pattern "kept mask, updated on a schedule", in Keras 3.

The TensorFlow 1.x code ran `sess.run(cell.get_vd_update_op())` every few batches, so
that one DropConnect mask served several updates. In Keras 3 the mask lives in the
layer's non-trainable variables ("manual" mode) and `resample_weight_masks()` redraws
it; here every `--every` batches of a plain training loop. Runs on every backend.

    python examples/kept_mask_schedule.py [--every 5] [--epochs 3]
"""

import argparse

import keras
import numpy as np

from awd_lstm.layers import WeightDropLSTM


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--every", type=int, default=5, help="batches per mask")
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    x = rng.standard_normal((640, 20, 8)).astype("float32")
    y = np.cumsum(x[..., :1], axis=1) / 5.0  # running sum: needs the recurrence

    lstm = WeightDropLSTM(
        32, weight_dropout=0.5, weight_dropout_mode="manual", return_sequences=True, seed=0
    )
    model = keras.Sequential([keras.Input((20, 8)), lstm, keras.layers.Dense(1)])
    model.compile(keras.optimizers.Adam(1e-2), "mse")

    batch, step = 32, 0
    for epoch in range(args.epochs):
        losses, masks_used = [], 0
        for start in range(0, len(x), batch):
            if step % args.every == 0:
                lstm.resample_weight_masks()  # was: sess.run(cell.get_vd_update_op())
                masks_used += 1
            losses.append(
                float(model.train_on_batch(x[start : start + batch], y[start : start + batch]))
            )
            step += 1
        print(
            f"epoch {epoch + 1}: training loss {np.mean(losses):.4f} "
            f"({masks_used} masks, {args.every} batches each)"
        )
    print(f"inference loss (full weights): {model.evaluate(x, y, verbose=0):.4f}")


if __name__ == "__main__":
    main()
