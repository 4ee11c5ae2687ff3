"""Trains the same small model on one device and data parallel over two logical CPU
devices, in a fresh process (devices are set before the backend starts), and prints
what both did as JSON. Run by tests/test_distribute.py:

    python tests/distributed_steps.py tensorflow mirrored
    python tests/distributed_steps.py jax data-parallel
    python tests/distributed_steps.py tensorflow mirrored qrnn     # QRNN layers
    python tests/distributed_steps.py jax data-parallel resume FOLDER
"""

import json
import os
import sys


def main(backend, strategy, cell="lstm"):
    os.environ["KERAS_BACKEND"] = backend
    from awd_lstm import distribute

    distribute.set_virtual_cpu_devices(2, backend)
    import keras
    import numpy as np

    from awd_lstm import training
    from awd_lstm.config import TrainingConfig

    # Every regularizer on, and a step large enough for the clipping to act.
    config = TrainingConfig(
        embedding_size=8,
        hidden_size=12,
        num_layers=2,
        batch_size=4,
        bptt=5,
        lr=5.0,
        seed=3,
        cell=cell,
    )
    data = np.random.default_rng(0).integers(0, 30, size=(4, 41)).astype("int32")

    def run(distribution):
        keras.utils.set_random_seed(3)
        with distribution.scope():
            model = training.build_model(config, 30, 4)
            model.optimizer.build(model.trainable_variables)
        losses = []
        for step, start in enumerate(range(0, 40, 5)):
            if step == 4:
                model.optimizer.start_averaging()
            with distribution.scope():
                logs = model.train_on_batch(
                    data[:, start : start + 5], data[:, start + 1 : start + 6], return_dict=True
                )
            losses.append(logs["ce"])
        weights = [keras.ops.convert_to_numpy(v) for v in training.evaluation_weights(model)]
        states = []
        for pair in model.state_variables:
            for variable in pair:
                value = variable.value
                if distribution.strategy is not None:
                    # Each replica's copy: its own streams' rows.
                    parts = distribution.strategy.experimental_local_results(value)
                    rows = [
                        keras.ops.convert_to_numpy(p)[2 * i : 2 * i + 2]
                        for i, p in enumerate(parts)
                    ]
                    states.append(np.concatenate(rows))
                else:
                    states.append(keras.ops.convert_to_numpy(value))
        return losses, weights, states, model.own_tf_steps

    one = run(distribute.Distribution())
    distribution = distribute.create(strategy, backend)
    two = run(distribution)
    print(
        json.dumps(
            {
                "replicas": distribution.replicas,
                "losses_one": one[0],
                "losses_two": two[0],
                "weights": max(float(np.abs(a - b).max()) for a, b in zip(one[1], two[1])),
                "weight_scale": max(float(np.abs(a).max()) for a in one[1]),
                "states": max(float(np.abs(a - b).max()) for a, b in zip(one[2], two[2])),
                "state_shape": list(two[2][0].shape),
                "own_tf_steps": [one[3], two[3]],
            }
        )
    )


def resume(backend, strategy, folder):
    """`awd-lstm train --distribute` stopped right after the first epoch's checkpoint,
    resumed (distributed again, then, for a second run, on one device), against one
    device's uninterrupted run; prints the three runs' epochs."""
    import shutil

    os.environ["KERAS_BACKEND"] = backend
    from awd_lstm import checkpoints
    from awd_lstm.cli import main as cli
    from tests.conftest import TINY_FLAGS

    distributed = ["--distribute", strategy, "--virtual-cpu-devices", "2"]
    original = checkpoints.save_checkpoint

    def save_then_stop(model, state, path):
        original(model, state, path)
        raise KeyboardInterrupt

    checkpoints.save_checkpoint = save_then_stop
    runs = {name: os.path.join(folder, name) for name in ("again", "alone", "single")}
    assert (
        cli(["--backend", backend, "train", "--out", runs["again"], *distributed, *TINY_FLAGS])
        == 130
    )
    checkpoints.save_checkpoint = original
    # A copy of the interrupted run, resumed on one device.
    shutil.copytree(runs["again"], runs["alone"])
    assert cli(["train", "--resume", runs["again"], "--no-progress", *distributed]) == 0
    assert cli(["train", "--resume", runs["alone"], "--no-progress"]) == 0
    assert cli(["train", "--out", runs["single"], *TINY_FLAGS]) == 0
    epochs = {}
    for name, run in runs.items():
        with open(os.path.join(run, "metrics.jsonl")) as f:
            epochs[name] = [json.loads(line) for line in f]
    print(json.dumps(epochs))


if __name__ == "__main__":
    if sys.argv[3:4] == ["resume"]:
        resume(sys.argv[1], sys.argv[2], sys.argv[4])
    else:
        main(*sys.argv[1:])
