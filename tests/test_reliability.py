"""Faults, bad input and determinism, tested the hard way (docs/RELIABILITY.md)."""

import errno
import json
import os
import re

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from awd_lstm.cli import main
from awd_lstm.data import EOS, CorpusError, Vocabulary, read_tokens
from awd_lstm.presets import config_fields
from tests.conftest import TINY_FLAGS, check_error_line, one_error_line
from tests.test_cli import _epochs

# -- every flag validated ----------------------------------------------------------


# Integer settings whose 0 is a choice: no mogrifier rounds (the LSTM), full rank, no
# mixture, the default last layer size, no skipped step allowed.
ZERO_MEANS_DEFAULT = {
    "mogrifier_rounds",
    "mogrifier_rank",
    "mixture_components",
    "last_hidden_size",
    "max_skips",
}


def _bad_values(field):
    """Values each training flag must refuse, by the field's kind."""
    if field.name == "seed":
        return ["-1", str(2**32)]
    if field.name in ZERO_MEANS_DEFAULT:
        return ["-3", "1.5"]
    if field.type is int:
        return ["0", "-3"]
    if field.type is bool:
        return ["maybe"]
    if field.type is tuple:
        return ["0", "-1"]
    if field.type is str:
        return ["nope"]
    if "dropout" in field.name:
        return ["-0.1", "1", "nan"]
    if field.name in ("lr", "clip"):
        return ["0", "-1", "inf", "nan"]
    return ["-1", "inf", "nan"]  # alpha, beta, weight_decay: >= 0


TRAINING_FLAG_CASES = [
    ("--" + field.name.replace("_", "-"), value)
    for field in config_fields()
    for value in _bad_values(field)
]


def test_every_training_flag_has_bad_values_here():
    flags = {flag for flag, _ in TRAINING_FLAG_CASES}
    assert flags == {"--" + f.name.replace("_", "-") for f in config_fields()}


def _one_line_exit_2(argv, capsys):
    """Runs the command; it must end with status 2 and a one-sentence error (argparse's
    own errors too)."""
    try:
        code = main(argv)
    except SystemExit as e:  # argparse
        code = e.code
    err = check_error_line(capsys.readouterr().err)
    assert code == 2, err
    return err


@pytest.mark.parametrize("flag, value", TRAINING_FLAG_CASES)
def test_bad_training_flags_end_in_one_sentence(flag, value, tmp_path, capsys):
    out = tmp_path / "run"
    err = _one_line_exit_2(["train", "--out", str(out), flag, value], capsys)
    name = flag[2:].replace("-", "_")
    assert name in err or flag in err, err
    assert not out.exists()


@pytest.mark.parametrize(
    "argv, message",
    [
        (["train", "--synthetic-tokens", "10"], "--synthetic-tokens must be at least 1000"),
        (["train", "--max-minutes", "-1"], "--max-minutes must be a number > 0"),
        (["train", "--virtual-cpu-devices", "0"], "--virtual-cpu-devices must be an integer"),
        (["train", "--virtual-cpu-devices", "2000"], "must be an integer in [1, 1024]; got 2000"),
        (
            ["train", "--synthetic-tokens", str(10**12)],
            "--synthetic-tokens must be at most 10,000,000",
        ),
        (["train", "--distribute", "ring"], "invalid choice: 'ring'"),
        (["train", "--level", "bytes"], "invalid choice: 'bytes'"),
        (["--backend", "mxnet", "train"], "invalid choice: 'mxnet'"),
        (["train", *TINY_FLAGS, "--batch-size", "400"], "too few for 400 streams of at least 11"),
    ],
)
def test_other_training_flags(argv, message, tmp_path, capsys):
    out = tmp_path / "run"
    if "train" in argv:
        argv = [*argv, "--out", str(out)]
    err = _one_line_exit_2(argv, capsys)
    assert re.search(re.escape(message), err), err
    assert not out.exists()


@pytest.mark.parametrize(
    "argv, message",
    [
        (["evaluate", "--cache-pointer", "--window", "0"], "--window must be a positive integer"),
        (["evaluate", "--cache-pointer", "--theta", "-1"], "--theta must be a finite number >= 0"),
        (["evaluate", "--cache-pointer", "--lambda", "1.5"], "--lambda must be in [0, 1]"),
        (["evaluate", "--window", "5"], "--window needs --cache-pointer"),
        (["evaluate", "--dynamic-eval", "--learning-rate", "nan"], "--learning-rate must be a"),
        (["evaluate", "--dynamic-eval", "--decay", "2"], "--decay must be in [0, 1]"),
        (["evaluate", "--split", "train"], "invalid choice: 'train'"),
        (["generate", "--temperature", "0"], "--temperature must be > 0"),
        (["generate", "--top-k", "0"], "--top-k must be at least 1"),
        (["generate", "--tokens", "-1"], "--tokens must be at least 0"),
        (["generate", "--seed", "-1"], "--seed must be an integer in [0, 2**32)"),
        (["score", "-", "--segment-length", "0"], "--segment-length must be a positive integer"),
        (["score", "-", "--batch-size", "0"], "--batch-size must be a positive integer"),
        (["finetune", "--epochs", "0"], "epochs must be a positive integer"),
        (["finetune", "--seed", "-1"], "seed must be an integer in [0, 2**32)"),
        (["finetune", "--max-minutes", "0"], "--max-minutes must be a number > 0"),
        (["finetune", "--resume", "--lr", "1"], "continues a fine-tuning with its own settings"),
        (["export", "--out", "model.h5"], "--out must end with .keras"),
        (["export", "--out", "/nonexistent/folder/m.keras"], "/nonexistent/folder, does not exist"),
        (["train", "--resume"], "--resume continues a run with its own settings; drop --seed"),
    ],
)
def test_flags_of_the_other_commands(run, argv, message, capsys, tmp_path):
    command, rest = argv[0], argv[1:]
    if command == "train":
        argv = ["train", "--resume", str(run), "--seed", "3"]
    else:
        argv = [command, "--run", str(run), *rest]
    if command == "finetune":
        # Not the run's own RUN/finetune, which another test may have made.
        argv += ["--out", str(tmp_path / "finetune")]
    err = _one_line_exit_2(argv, capsys)
    assert message in err, err


def test_a_resume_folder_that_is_not_a_run(tmp_path, capsys):
    (tmp_path / "config.json").write_text('{"config": {"bptt": 0}}')
    err = _one_line_exit_2(["train", "--resume", str(tmp_path)], capsys)
    assert "is not a valid run configuration" in err


# -- resources ---------------------------------------------------------------------


def test_an_out_folder_that_cannot_be_made_is_reported_before_training(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    err = _one_line_exit_2(["train", "--out", str(blocker / "run"), *TINY_FLAGS], capsys)
    assert "is not writable" in err


def test_too_little_disk_is_reported_before_training(tmp_path, monkeypatch, capsys):
    import shutil

    from awd_lstm import checkpoints

    real = shutil.disk_usage

    def almost_full(path):
        return real(path)._replace(free=4096)

    monkeypatch.setattr(checkpoints.shutil, "disk_usage", almost_full)
    out = tmp_path / "run"
    assert main(["train", "--out", str(out), *TINY_FLAGS]) == 1
    one_error_line(capsys, r"has 0 MiB free; this model's checkpoints need about \d+ MiB")
    assert not (out / "metrics.jsonl").exists() or not (out / "metrics.jsonl").read_text()
    assert not (out / "checkpoint.weights.h5").exists()


def test_a_full_disk_at_a_checkpoint_keeps_the_previous_one(
    run,
    tmp_path,
    monkeypatch,
    capsys,
):
    """The second epoch's checkpoint cannot be written: one sentence, exit 1, the first
    epoch's checkpoint intact; after making room the run resumes to the uninterrupted
    run's end."""
    out = tmp_path / "run"
    real_replace = os.replace

    def disk_full_at_second_checkpoint(src, dst):
        if str(dst).endswith("checkpoint.weights.h5") and os.path.exists(dst):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_replace(src, dst)

    with monkeypatch.context() as patch:
        patch.setattr(os, "replace", disk_full_at_second_checkpoint)
        assert main(["train", "--out", str(out), *TINY_FLAGS]) == 1
    err = one_error_line(capsys, "No space left on device")
    assert "the checkpoint of epoch 1 is intact" in err
    assert not list(out.glob(".tmp-*"))
    import h5py

    with h5py.File(out / "checkpoint.weights.h5", "r") as f:
        assert json.loads(f["awd_lstm_resume"].attrs["state"])["epoch"] == 1
    assert main(["train", "--resume", str(out), "--no-progress"]) == 0
    assert _epochs(out) == _epochs(run)
    assert json.loads((out / "final.json").read_text()) == json.loads(
        (run / "final.json").read_text()
    )


# -- determinism -------------------------------------------------------------------


def test_the_same_seed_gives_the_same_metrics(run, tmp_path):
    """Two runs with one seed on one backend: identical metrics.jsonl (but for the
    timings) and final.json."""
    again = tmp_path / "again"
    assert main(["train", "--out", str(again), *TINY_FLAGS]) == 0
    assert _epochs(again) == _epochs(run)
    assert (again / "final.json").read_text() == (run / "final.json").read_text()


# -- bad files ---------------------------------------------------------------------

LINE_ENDS = st.sampled_from(["\n", "\r\n", "\r"])
WORDS = st.lists(
    st.text(
        st.characters(blacklist_categories=("Cs", "Zs", "Zl", "Zp", "Cc")), min_size=1, max_size=6
    ),
    max_size=5,
)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    lines=st.lists(WORDS, min_size=1, max_size=8),
    end=LINE_ENDS,
    bom=st.booleans(),
    last_end=st.booleans(),
)
def test_line_ends_boms_and_empty_lines_parse_as_the_rule_says(
    tmp_path_factory, lines, end, bom, last_end
):
    """LF, CRLF or CR line ends, a byte-order mark, empty lines, a last line with or
    without its line end: the tokens are each line's words then `<eos>` (an empty line
    is `<eos>` alone)."""
    while not last_end and lines and not lines[-1]:
        lines = lines[:-1]  # an empty last line without its end is no line
    lines = lines or [["w"]]
    text = ""
    for i, words in enumerate(lines):
        text += " ".join(words)
        if i < len(lines) - 1 or last_end:
            text += end
    raw = ("\ufeff" if bom else "").encode() + text.encode("utf-8")
    path = tmp_path_factory.mktemp("lines") / "a.txt"
    path.write_bytes(raw)
    if not text.strip():
        with pytest.raises(CorpusError, match="is empty"):
            read_tokens(path)
        return
    expected = [token for words in lines for token in [*words, EOS]]
    assert read_tokens(path) == expected


def test_one_enormous_line(tmp_path):
    path = tmp_path / "a.txt"
    path.write_text(" ".join(["w"] * 2_000_000))
    tokens = read_tokens(path)
    assert len(tokens) == 2_000_001 and tokens[-1] == EOS


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    st.one_of(
        st.binary(max_size=120),
        st.recursive(
            st.none() | st.booleans() | st.integers() | st.text(max_size=5),
            lambda inner: (
                st.lists(inner, max_size=4)
                | st.dictionaries(st.sampled_from(["tokens", "counts", "level", "x"]), inner)
            ),
            max_leaves=8,
        ).map(lambda v: json.dumps(v).encode()),
    )
)
@example(raw=b'{"tokens": [null, []]}')  # None first among the odd tokens
@example(raw=b'{"tokens": ["a"], "counts": [null]}')
def test_a_vocabulary_file_loads_or_fails_in_one_sentence(tmp_path_factory, raw):
    path = tmp_path_factory.mktemp("vocab") / "vocab.json"
    path.write_bytes(raw)
    try:
        vocab = Vocabulary.load(path)
    except CorpusError as e:
        assert "\n" not in str(e)
        return
    assert len(vocab) >= 1 and len(set(vocab.tokens)) == len(vocab)
