"""Data-parallel training (`awd_lstm.distribute`, `awd-lstm train --distribute`).

The equivalence checks run in fresh processes: logical CPU devices must be set before
the backend starts, which it has in the test process.
"""

import json
import os
import socket
import subprocess
import sys

import keras
import numpy as np
import pytest

from awd_lstm import distribute
from awd_lstm.cli import main
from tests.conftest import TINY_FLAGS

BACKEND = keras.backend.backend()
HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def _environment(**extra):
    env = {k: v for k, v in os.environ.items() if k not in ("TF_CONFIG", "XLA_FLAGS")}
    env["PYTHONPATH"] = os.pathsep.join([ROOT, env.get("PYTHONPATH", "")])
    env["TF_CPP_MIN_LOG_LEVEL"] = "3"
    env.update(extra)
    return env


@pytest.mark.parametrize(
    "strategy", [s for s, backend in distribute.STRATEGIES.items() if backend != BACKEND]
)
def test_a_strategy_the_backend_lacks_is_one_line(strategy, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--out", str(out), "--distribute", strategy, *TINY_FLAGS]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and f"--distribute {strategy} needs the" in err, err
    assert BACKEND in err
    assert not out.exists()


def test_check_strategy():
    distribute.check_strategy("mirrored", "tensorflow")
    distribute.check_strategy("data-parallel", "jax")
    with pytest.raises(distribute.DistributionError, match="with tensorflow use mirrored or"):
        distribute.check_strategy("data-parallel", "tensorflow")
    with pytest.raises(distribute.DistributionError, match="torch backend has no"):
        distribute.check_strategy("mirrored", "torch")
    with pytest.raises(distribute.DistributionError, match="unknown distribution strategy"):
        distribute.check_strategy("horovod", "tensorflow")


@pytest.mark.parametrize("devices", ["0", "-2"])
def test_virtual_devices_must_be_positive(devices, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--out", str(out), "--virtual-cpu-devices", devices, *TINY_FLAGS]) == 2
    assert "--virtual-cpu-devices must be an integer in [1, 1024]" in capsys.readouterr().err


@pytest.mark.skipif(BACKEND != "torch", reason="the PyTorch backend has no strategy here")
def test_virtual_devices_need_tensorflow_or_jax(tmp_path, capsys):
    argv = ["train", "--out", str(tmp_path / "r"), "--virtual-cpu-devices", "2", *TINY_FLAGS]
    assert main(argv) == 2
    assert "needs the tensorflow or jax backend" in capsys.readouterr().err


def test_the_batch_must_split_evenly_over_the_replicas():
    distribute.Distribution("mirrored", 2).check_batch(4)
    with pytest.raises(distribute.DistributionError, match="does not split evenly over 3"):
        distribute.Distribution("mirrored", 3).check_batch(4)


@pytest.mark.parametrize(
    "value, message",
    [
        (None, "TF_CONFIG, which is not set"),
        ("{not json", "not a valid cluster description"),
        ('{"cluster": {}, "task": {"type": "worker", "index": 0}}', "names no chief or worker"),
        (
            '{"cluster": {"worker": ["a:1"]}, "task": {"type": "worker", "index": 1}}',
            "task worker:1 is not in its cluster",
        ),
        ('{"cluster": {"worker": ["a:1"]}}', "not a valid cluster description"),
        # Of the wrong types: one address, not a list; the index a string, true.
        ('{"cluster": {"worker": "a:1"}, "task": {"type": "worker", "index": 0}}', "such as"),
        ('{"cluster": {"worker": ["a:1"]}, "task": {"type": "worker", "index": "0"}}', "got"),
        ('{"cluster": {"worker": ["a:1"]}, "task": {"type": "worker", "index": true}}', "got"),
        ("[]", "not a valid cluster description"),
    ],
)
def test_bad_tf_config_is_explained(value, message):
    environ = {} if value is None else {"TF_CONFIG": value}
    with pytest.raises(distribute.DistributionError, match=message):
        distribute.read_tf_config(environ)


def test_the_chief_is_task_chief_or_else_worker_0():
    two = {"worker": ["a:1", "b:1"]}
    assert distribute._is_chief(two, "worker", 0)
    assert not distribute._is_chief(two, "worker", 1)
    with_chief = {"chief": ["c:1"], "worker": ["a:1"]}
    assert distribute._is_chief(with_chief, "chief", 0)
    assert not distribute._is_chief(with_chief, "worker", 0)
    environ = {"TF_CONFIG": json.dumps({"cluster": two, "task": {"type": "worker", "index": 1}})}
    assert distribute.read_tf_config(environ) == (two, "worker", 1)


def test_one_device_distribution_changes_nothing():
    one = distribute.Distribution()
    assert one.replicas == 1 and one.is_chief and one.describe() == "one device"
    with one.scope():
        pass


@pytest.mark.skipif(BACKEND == "torch", reason="no data-parallel strategy on PyTorch here")
@pytest.mark.parametrize(
    "cell",
    [
        "lstm",
        # The QRNN's own part is backend-neutral Keras code: TensorFlow's strategy
        # checks it (the JAX run of this test is the suite's slowest of its kind).
        pytest.param(
            "qrnn", marks=pytest.mark.skipif(BACKEND != "tensorflow", reason="checked on TF")
        ),
    ],
)
def test_two_devices_take_the_same_steps_as_one(cell):
    """With every dropout on, clipping acting and NT-ASGD averaging from step 5, two
    replicas (each with half the streams) give one device's losses, weights and
    carried states (QRNN layers too: their carried state is the last input step and
    the cell)."""
    strategy = "mirrored" if BACKEND == "tensorflow" else "data-parallel"
    script = os.path.join(HERE, "distributed_steps.py")
    done = subprocess.run(
        [sys.executable, script, BACKEND, strategy, cell],
        capture_output=True,
        text=True,
        env=_environment(),
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["replicas"] == 2
    np.testing.assert_allclose(result["losses_two"], result["losses_one"], rtol=1e-5)
    # The losses move: a stuck model would pass the comparison trivially.
    assert np.ptp(result["losses_one"]) > 0.02
    assert result["weights"] < 1e-5 * result["weight_scale"] + 1e-6
    assert result["states"] < 1e-5
    # The first layer's carried h (a QRNN's last input step, of the embedding's width).
    assert result["state_shape"] == ([4, 12] if cell == "lstm" else [4, 8])
    # TensorFlow: Keras' own step on one device, the model's own under the strategy.
    assert result["own_tf_steps"] == ([False, True] if BACKEND == "tensorflow" else [False, False])


def _free_ports(n):
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


@pytest.mark.skipif(BACKEND != "tensorflow", reason="MultiWorkerMirroredStrategy is TensorFlow's")
def test_two_workers_on_localhost_write_one_run(tmp_path):
    """Two processes train one run with MultiWorkerMirroredStrategy; only the chief
    writes, once; the epochs equal a one-process run's."""
    out = tmp_path / "run"
    workers = [f"127.0.0.1:{port}" for port in _free_ports(2)]
    argv = [
        sys.executable, "-m", "awd_lstm", "--backend", "tensorflow", "train",
        "--out", str(out), "--distribute", "multiworker", *TINY_FLAGS,
    ]  # fmt: skip
    temporary = tmp_path / "tmp"
    temporary.mkdir()
    processes = []
    for index in (1, 0):
        config = {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}
        env = _environment(TF_CONFIG=json.dumps(config), TMPDIR=str(temporary))
        processes.append(
            subprocess.Popen(
                argv, env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
            )
        )
    outputs = []
    try:
        for process in processes:
            outputs.append(process.communicate(timeout=300)[0].decode())
    finally:
        for process in processes:
            process.kill()
    for process, output in zip(processes, outputs):
        assert process.returncode == 0, output[-3000:]
    assert "not the chief" in outputs[0] and "test perplexity" in outputs[1]
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted(
        "best.weights.h5 checkpoint.weights.h5 config.json corpus final.json "
        "learning_curves.png metrics.jsonl tensorboard vocab.json".split()
    )
    # The other worker's own folder is gone.
    assert not list(temporary.glob("awd-lstm-worker-*"))
    epochs = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [e["epoch"] for e in epochs] == [1, 2]
    single = tmp_path / "single"
    assert main(["train", "--out", str(single), *TINY_FLAGS]) == 0
    alone = [json.loads(line) for line in (single / "metrics.jsonl").read_text().splitlines()]
    for key in ("train_loss", "val_loss"):
        np.testing.assert_allclose([e[key] for e in epochs], [e[key] for e in alone], rtol=1e-5)


@pytest.mark.skipif(BACKEND == "torch", reason="no data-parallel strategy on PyTorch here")
def test_a_batch_that_does_not_split_is_refused_before_the_run_starts(tmp_path):
    strategy = "mirrored" if BACKEND == "tensorflow" else "data-parallel"
    argv = [
        sys.executable, "-m", "awd_lstm", "--backend", BACKEND, "train", "--out", "run",
        "--distribute", strategy, "--virtual-cpu-devices", "2", "--batch-size", "3",
    ]  # fmt: skip
    done = subprocess.run(
        argv, cwd=tmp_path, env=_environment(), capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 2, done.stderr[-3000:]
    last = done.stderr.strip().splitlines()[-1]
    assert last == (
        f"awd-lstm train: error: the batch of 3 streams does not split evenly over 2 "
        f"replicas ({strategy}); choose a multiple of 2"
    )
    assert not (tmp_path / "run").exists()


@pytest.mark.skipif(BACKEND == "torch", reason="no data-parallel strategy on PyTorch here")
def test_a_distributed_run_resumes_distributed_or_on_one_device(tmp_path):
    strategy = "mirrored" if BACKEND == "tensorflow" else "data-parallel"
    script = os.path.join(HERE, "distributed_steps.py")
    done = subprocess.run(
        [sys.executable, script, BACKEND, strategy, "resume", str(tmp_path)],
        capture_output=True,
        text=True,
        env=_environment(),
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    epochs = json.loads(done.stdout.strip().splitlines()[-1])
    for name in ("again", "alone"):
        assert [e["epoch"] for e in epochs[name]] == [1, 2]
        for key in ("train_loss", "val_loss"):
            np.testing.assert_allclose(
                [e[key] for e in epochs[name]], [e[key] for e in epochs["single"]], rtol=1e-5
            )
