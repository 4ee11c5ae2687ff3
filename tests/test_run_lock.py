"""One writer per run folder (`awd_lstm.runs.run_lock`), with real concurrent
processes: a real `awd-lstm train`, stopped while it holds its folder, then a second
command, the library and, once it is killed, a resumed run."""

import errno
import fcntl
import hashlib
import os
import re
import signal
import subprocess
import sys
import time

import keras
import pytest

from awd_lstm.cli import main
from awd_lstm.runs import Run, RunInUseError, check_not_in_use, resume_run, run_lock
from tests.conftest import TINY_FLAGS

pytestmark = pytest.mark.skipif(
    keras.backend.backend() != "tensorflow", reason="the lock is the same on every backend"
)


def _snapshot(folder):
    """Every file and folder under `folder` (itself included): name, size, content
    hash and modification time."""
    entries = {}
    for root, folders, files in os.walk(folder):
        for name in [".", *folders, *files]:
            path = os.path.join(root, name)
            stat = os.stat(path)
            digest = None
            if os.path.isfile(path):
                with open(path, "rb") as f:
                    digest = hashlib.sha256(f.read()).hexdigest()
            entries[os.path.relpath(path, folder)] = (stat.st_size, stat.st_mtime_ns, digest)
    return entries


def _locked(folder):
    """Whether some open lock file holds `folder`'s lock: asked of the kernel with a
    descriptor of its own, which conflicts even with this process's."""
    try:
        fd = os.open(os.path.join(folder, ".lock"), os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def _refusal(folder, pid):
    """The one sentence that refuses a second writer of `folder`, held by `pid`."""
    return (
        rf"{re.escape(str(folder))} is in use by process {pid} \(python -m awd_lstm .*train "
        rf"--out {re.escape(str(folder))} .*\) on host \S+ since \d{{4}}-\d\d-\d\d "
        r"\d\d:\d\d:\d\d; wait for it to end, or use another folder"
    )


@pytest.fixture(scope="module")
def trainer(tmp_path_factory):
    """A real `awd-lstm train` of the built-in corpus, stopped (SIGSTOP) as soon as its
    folder holds a run: it holds the folder's lock and writes nothing meanwhile.
    Yields `(process, folder, snapshot)`; the last test kills it."""
    base = tmp_path_factory.mktemp("held")
    folder = base / "run"
    flags = list(TINY_FLAGS)
    flags[flags.index("--epochs") + 1] = "1"  # for the run that takes it over
    argv = [sys.executable, "-m", "awd_lstm", "--backend", "tensorflow", "train"]
    argv += ["--out", str(folder), *flags]
    with open(base / "trainer.log", "wb") as log:
        process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while not (folder / "config.json").exists():
            assert process.poll() is None, (base / "trainer.log").read_text()
            assert time.monotonic() < deadline, "the trainer made no run in 120 s"
            time.sleep(0.02)
        os.kill(process.pid, signal.SIGSTOP)
        yield process, folder, _snapshot(folder)
    finally:
        process.kill()
        process.wait()


@pytest.mark.parametrize("when", ["at once", "by the lock"])
@pytest.mark.parametrize(
    "command",
    [
        "train --out",
        "train --resume",
        "finetune --run",
        "classify train --out",
        "classify train --encoder",
    ],
)
def test_a_second_writer_is_refused_and_changes_nothing(
    trainer, command, when, tmp_path, monkeypatch, capsys
):
    """Refused at once, before Keras is imported, and, without that check, by the
    lock the command takes before it writes."""
    from awd_lstm import cli

    if when == "by the lock":
        monkeypatch.setattr(cli, "_check_folders_free", lambda args: None)
    process, folder, before = trainer
    held, out = str(folder), tmp_path / "new"
    argv = {
        "train --out": ["train", "--out", held, *TINY_FLAGS],
        "train --resume": ["train", "--resume", held, "--no-progress"],
        "finetune --run": ["finetune", "--run", held, "--no-progress"],
        "classify train --out": ["classify", "train", "--out", held, "--no-progress"],
        "classify train --encoder": ["classify", "train", "--encoder", held, "--out", str(out)],
    }[command]
    assert main(argv) == 1
    err = capsys.readouterr().err.strip()
    assert re.fullmatch(rf"awd-lstm {argv[0]}: error: {_refusal(folder, process.pid)}", err), err
    assert _snapshot(folder) == before
    assert not out.exists()  # the classifier's folder, made for it, is removed again


def test_a_second_awd_lstm_process_exits_1_with_one_line(trainer):
    """As a process of its own: the exit status and the one line on stderr."""
    process, folder, before = trainer
    argv = [sys.executable, "-m", "awd_lstm", "train", "--out", str(folder), *TINY_FLAGS]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1, done.stderr
    assert re.fullmatch(f"awd-lstm train: error: {_refusal(folder, process.pid)}\n", done.stderr)
    assert _snapshot(folder) == before


def test_the_library_is_refused_with_the_same_sentence(trainer):
    from awd_lstm import training

    process, folder, before = trainer
    run = Run.open(folder)  # reading a run that trains is allowed
    sentence = rf"^{_refusal(folder, process.pid)}$"
    with pytest.raises(RunInUseError, match=sentence):
        training.train(run.config, run.corpus(), folder, progress=False)
    with pytest.raises(RunInUseError, match=sentence):
        resume_run(folder)
    with pytest.raises(RunInUseError, match=sentence):
        check_not_in_use(folder)
    with pytest.raises(RunInUseError, match=sentence), run_lock(folder):
        pass
    assert _snapshot(folder) == before


def test_a_killed_trainers_lock_is_taken_over(trainer, monkeypatch, capsys):
    """Last: kills the trainer. The next `train --resume` takes its lock over, holds it
    while it trains (the command's and the library's, one lock) and completes."""
    from awd_lstm import training

    process, folder, _ = trainer
    process.kill()
    process.wait()
    assert (folder / ".lock").exists() and not _locked(folder)  # left behind, no one's
    held_while_training = []
    train_epoch = training._train_epoch

    def train_epoch_probed(*args, **kwargs):
        held_while_training.append(_locked(folder))
        return train_epoch(*args, **kwargs)

    monkeypatch.setattr(training, "_train_epoch", train_epoch_probed)
    assert main(["train", "--resume", str(folder), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert f"was left locked by process {process.pid} (python -m awd_lstm" in out, out
    assert "which no longer holds it; taken over" in out
    assert held_while_training and all(held_while_training)
    assert Run.open(folder).finished and not (folder / ".lock").exists()


def test_the_lock_is_reentrant_and_leaves_nothing_behind(tmp_path):
    folder = tmp_path / "parent" / "run"
    with run_lock(folder, make=True) as lock:
        assert lock.made and _locked(folder)
        with run_lock(str(folder)) as again:
            assert again is lock
            check_not_in_use(folder)  # this process's own lock
        assert _locked(folder)  # the outer block still holds it
    assert not (tmp_path / "parent").exists()  # made for it and left empty: removed
    with run_lock(folder, make=True):
        (folder / "kept.txt").write_text("written while locked")
    assert os.listdir(folder) == ["kept.txt"]  # the lock file is gone with its holder


def test_a_file_system_without_locks_is_used_with_a_warning(tmp_path, monkeypatch):
    def no_locks(fd, operation):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "flock", no_locks)
    lines = []
    with run_lock(tmp_path, log=lines.append):
        (tmp_path / "kept.txt").write_text("written unlocked")
    assert lines == [
        f"{tmp_path} cannot be locked (No locks available): this file system keeps no "
        "locks, so another process could write to it at the same time"
    ]
    assert os.listdir(tmp_path) == ["kept.txt"]
