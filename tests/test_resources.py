"""Sizes checked before anything is built, and running out of memory (docs/RELIABILITY.md,
"Resources")."""

import dataclasses
import json
import re

import h5py
import keras
import numpy as np
import pytest

from awd_lstm import resources
from awd_lstm.cli import main
from awd_lstm.config import TrainingConfig
from tests.conftest import TINY_FLAGS, one_error_line

TENSORFLOW_ONLY = pytest.mark.skipif(
    keras.backend.backend() != "tensorflow", reason="arithmetic and files, the same everywhere"
)
FAKE_MIB = 64


@pytest.fixture
def little_memory(monkeypatch):
    """64 MiB of memory: what `available_memory` reports."""
    monkeypatch.delenv(resources.SKIP_VARIABLE, raising=False)
    monkeypatch.setattr(
        resources, "available_memory", lambda: (FAKE_MIB * 2**20, "available (faked)")
    )


@TENSORFLOW_ONLY
@pytest.mark.parametrize(
    "settings",
    [
        dict(),
        dict(tie_weights=False, num_layers=3),
        dict(cell="mogrifier", mogrifier_rounds=3),
        dict(cell="mogrifier", mogrifier_rounds=4, mogrifier_rank=3),
        dict(cell="qrnn", num_layers=3),
        dict(mixture_components=3, last_hidden_size=12),
        dict(cutoffs=(5, 20)),
    ],
    ids=["lstm", "untied", "mogrifier", "mogrifier-rank", "qrnn", "mos", "adaptive"],
)
def test_the_parameter_count_is_the_built_models(settings):
    """`count_parameters`, from the config alone, is what `build_model` builds."""
    from awd_lstm.recipe import build_model

    config = TrainingConfig(**{"embedding_size": 8, "hidden_size": 10, "num_layers": 2, **settings})
    model = build_model(config, 50, 2)
    built = sum(int(np.prod(v.shape)) for v in model.trainable_variables)
    assert resources.count_parameters(config, 50) == built


@TENSORFLOW_ONLY
def test_a_model_too_large_is_refused_before_anything_is_written(
    little_memory, corpus, tmp_path, capsys
):
    """One sentence with the estimate and the memory available, status 2, no folder;
    the library's `train` and `finetune` refuse it too, and the variable lets it
    through."""
    out = tmp_path / "run"
    code = main(["train", "--out", str(out), *TINY_FLAGS, "--hidden-size", "1500"])
    err = one_error_line(capsys)
    assert code == 2
    pattern = (
        r"awd-lstm train: error: estimated [\d.,]+ (GiB|MiB) for training [\d.]+M parameters "
        rf"with ntasgd on 4 x 30 tokens a step \(.*\); {FAKE_MIB} MiB available \(faked\): "
        rf"lower the batch, bptt or the model's sizes, or set {resources.SKIP_VARIABLE}=1"
    )
    assert re.match(pattern, err), err
    assert not out.exists()

    from awd_lstm.training import train

    config = TrainingConfig(embedding_size=8, hidden_size=1500, num_layers=2, batch_size=4)
    with pytest.raises(resources.ResourceError, match=f"; {FAKE_MIB} MiB available"):
        train(config, corpus, str(out), progress=False)
    assert not out.exists()
    small = dataclasses.replace(config, hidden_size=16)
    resources.check_training_memory(small, len(corpus.vocab))  # fits
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(resources.SKIP_VARIABLE, "1")
        resources.check_training_memory(config, len(corpus.vocab))


@TENSORFLOW_ONLY
@pytest.mark.parametrize("on_gpu", [False, True], ids=["cpu", "gpu"])
def test_the_check_before_the_folder_is_made_counts_the_replicas(
    on_gpu, run, tmp_path, monkeypatch
):
    """`create_training_run` and `open_finetune` check the memory for the replicas the
    run will have: on GPUs each holds a share of the batch (so a run too large for one
    device is made when split over four), on a CPU host every replica's weights are in
    the one memory (so it is refused there)."""
    from awd_lstm.data import load_corpus
    from awd_lstm.runs import CORPUS, Run, create_training_run, open_finetune

    trained = Run.open(run)
    monkeypatch.delenv(resources.SKIP_VARIABLE, raising=False)
    monkeypatch.setattr(resources, "_on_gpu", lambda: on_gpu)
    fits, refused = (4, 1) if on_gpu else (1, 4)

    def memory_between(config, vocab):
        one, four = (resources.training_memory(config, vocab, r, on_gpu).total for r in (1, 4))
        assert (four < one) == on_gpu and one != four
        between = (one + four) / 2 / resources.TOLERANCE
        monkeypatch.setattr(resources, "available_memory", lambda: (between, "faked"))

    data = str(run / CORPUS)
    memory_between(trained.config, len(load_corpus(data).vocab))  # its own vocabulary
    for replicas, out in [(refused, tmp_path / "refused"), (fits, tmp_path / "made")]:
        if replicas == refused:
            with pytest.raises(resources.ResourceError, match="; .* faked: lower"):
                create_training_run(out, trained.config, data=data, replicas=replicas)
            assert not out.exists()
        else:
            create_training_run(out, trained.config, data=data, replicas=replicas)
            assert (out / "config.json").exists()

    memory_between(trained.finetune_config(), len(trained.vocabulary))
    with pytest.raises(resources.ResourceError, match="; .* faked: lower"):
        open_finetune(run, tmp_path / "ft-refused", replicas=refused)
    assert not (tmp_path / "ft-refused").exists()
    finetune, _, _ = open_finetune(run, tmp_path / "ft", replicas=fits)
    assert finetune.stage == "finetune"


@TENSORFLOW_ONLY
@pytest.mark.parametrize(
    "flag, value, message",
    [
        ("--num-layers", "100000", "num_layers must be at most 100 "),
        ("--mogrifier-rounds", "1000", "mogrifier_rounds must be at most 100 "),
        ("--hidden-size", str(2**31), f"hidden_size must be below 2\\*\\*31; got {2**31}"),
        ("--batch-size", "10" * 40, "batch_size must be below 2\\*\\*31"),
    ],
)
def test_absurd_sizes_are_refused_at_once(flag, value, message, tmp_path, capsys, monkeypatch):
    """Refused from the numbers alone: no layer is made, nothing is allocated."""

    def no_layers(*args, **kwargs):
        raise AssertionError("a layer was made for an absurd size")

    out = tmp_path / "run"
    monkeypatch.setattr(keras.layers.Layer, "__init__", no_layers)
    code = main(["train", "--out", str(out), *TINY_FLAGS, flag, value])
    err = one_error_line(capsys)
    assert code == 2
    assert re.search(message, err), err
    assert not out.exists()


@TENSORFLOW_ONLY
def test_a_classifier_too_large_is_refused_before_anything_is_written(
    little_memory, tmp_path, capsys
):
    out = tmp_path / "classifier"
    argv = ["classify", "train", "--out", str(out), "--train-documents", "200", "--no-progress"]
    code = main([*argv, "--batch-size", "4096"])
    err = one_error_line(capsys)
    assert code == 2
    assert re.search(
        rf"estimated [\d.,]+ GiB for training [\d.]+M parameters on 4096 documents of up to "
        rf"1400 tokens a step \(.*\); {FAKE_MIB} MiB available \(faked\)",
        err,
    ), err
    assert not out.exists()


@TENSORFLOW_ONLY
def test_the_machines_memory_is_the_lowest_limit(tmp_path, monkeypatch):
    """cgroup v2: the tightest limit of the process's cgroup and those above it, less
    what each uses (its reclaimable page cache not counted), and MemAvailable."""
    proc, mount = tmp_path / "proc", tmp_path / "cgroup"
    (proc / "self").mkdir(parents=True)
    (proc / "self" / "cgroup").write_text("0::/jobs/train\n")
    (proc / "meminfo").write_text("MemTotal: 8000000 kB\nMemAvailable: 4194304 kB\n")
    mib = 2**20
    for folder, limit, used, cache in (
        (mount, "max", 900 * mib, 0),
        (mount / "jobs", str(3072 * mib), 1024 * mib, 0),
        (mount / "jobs" / "train", str(2048 * mib), 768 * mib, 256 * mib),
    ):
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "memory.max").write_text(limit + "\n")
        (folder / "memory.current").write_text(f"{used}\n")
        (folder / "memory.stat").write_text(f"anon 1\ninactive_file {cache}\n")
    monkeypatch.setattr(resources, "PROC", str(proc))
    monkeypatch.setattr(resources, "CGROUP_MOUNT", str(mount))
    # train's cgroup: 2048 - (768 - 256) = 1536 MiB; jobs': 3072 - 1024 = 2048 MiB.
    assert resources.host_memory() == (1536 * mib, "under the cgroup's memory limit")
    (mount / "jobs" / "train" / "memory.max").write_text("max\n")
    assert resources.host_memory() == (2048 * mib, "under the cgroup's memory limit")
    (mount / "jobs" / "memory.max").write_text("max\n")
    assert resources.host_memory() == (4 * 2**30, "available (MemAvailable)")


@TENSORFLOW_ONLY
@pytest.mark.parametrize(
    "cpuinfo, model, expected",
    [
        (
            "model name\t: AMD EPYC\nflags\t\t: fpu avx2 fma\n\nflags\t: avx512_bf16\n",
            "AMD EPYC",
            False,
        ),
        (
            "processor\t: 0\nmodel name\t: Intel(R) Xeon(R) Platinum 8488C\n"
            "flags\t\t: avx2 avx512f avx512_bf16 amx_bf16 amx_tile\n",
            "Intel(R) Xeon(R) Platinum 8488C",
            True,
        ),
        ("processor\t: 0\nmodel name\t: AMD EPYC\nflags\t: avx2 amx_bf16\n", "AMD EPYC", True),
        ("processor\t: 0\nFeatures\t: fp asimd bf16 i8mm\n", "unknown", True),
        ("processor\t: 0\nFeatures\t: fp asimd\n", "unknown", False),
        ("processor\t: 0\n", "unknown", None),
        (None, None, None),
    ],
    ids=["avx2", "avx512-amx", "amx", "arm-bf16", "arm", "no-flags", "no-file"],
)
def test_bfloat16_instructions_are_read_from_the_first_cpu(
    cpuinfo, model, expected, tmp_path, monkeypatch
):
    """`cpu_info` reads the first CPU's model and flags (x86 `flags`, Arm `Features`);
    `cpu_has_bfloat16` is None where nothing is known."""
    if cpuinfo is not None:
        (tmp_path / "cpuinfo").write_text(cpuinfo)
    monkeypatch.setattr(resources, "PROC", str(tmp_path))
    assert resources.cpu_info()[0] == model
    assert resources.cpu_has_bfloat16() is expected


def _out_of_memory_errors(message):
    """The errors the backend raises when an allocation fails."""
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        return [tf.errors.ResourceExhaustedError(None, None, message)]
    if keras.backend.backend() == "jax":
        import jax

        return [jax.errors.JaxRuntimeError(f"RESOURCE_EXHAUSTED: {message}")]
    import torch

    return [
        RuntimeError(f"[enforce fail] DefaultCPUAllocator: can't allocate memory: {message}"),
        torch.cuda.OutOfMemoryError(f"CUDA out of memory. {message}"),
    ]


def test_the_backends_out_of_memory_errors_read_as_such():
    for error in _out_of_memory_errors("Tried to allocate 8.00 GiB"):
        reason = resources.out_of_memory_reason(error)
        assert re.fullmatch(r"out of memory \(.*Tried to allocate 8.00 GiB\)", reason), reason
    assert resources.out_of_memory_reason(MemoryError()) == "out of memory"
    assert resources.out_of_memory_reason(ValueError("RESOURCE_EXHAUSTED")) is None
    assert resources.out_of_memory_reason(RuntimeError("a bug")) is None


@TENSORFLOW_ONLY
def test_running_out_of_memory_stops_with_the_last_checkpoint_kept(tmp_path, monkeypatch, capsys):
    """The backend's out-of-memory error in the second epoch's first step: one
    sentence, status 1, the first epoch's checkpoint kept. (About 10 s: an epoch must
    complete; the other backends' errors are recognized above.)"""
    from awd_lstm.models import AWDLSTMLanguageModel

    original = AWDLSTMLanguageModel.train_on_batch
    out = tmp_path / "run"

    def failing(self, *args, **kwargs):
        if (out / "checkpoint.weights.h5").exists():
            raise _out_of_memory_errors("OOM when allocating tensor with shape[4,30,1000]")[0]
        return original(self, *args, **kwargs)

    monkeypatch.setattr(AWDLSTMLanguageModel, "train_on_batch", failing)
    code = main(["train", "--out", str(out), *TINY_FLAGS, "--synthetic-tokens", "1000"])
    err = one_error_line(capsys)
    assert code == 1
    assert re.fullmatch(
        r"awd-lstm train: error: training stopped: out of memory \(.*OOM when allocating "
        r"tensor with shape\[4,30,1000\]\); best.weights.h5 and the checkpoint of epoch 1 are "
        r"kept \(a smaller batch, bptt or model needs less\)",
        err,
    ), err
    with h5py.File(out / "checkpoint.weights.h5", "r") as f:
        assert json.loads(f["awd_lstm_resume"].attrs["state"])["epoch"] == 1
    assert not list(out.glob(".tmp-*"))
