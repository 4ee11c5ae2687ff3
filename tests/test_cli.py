"""The `awd-lstm` command, in process, on small generated corpora."""

import io
import json
import math
import os
import subprocess
import sys
import threading

import keras
import numpy as np
import pytest

from awd_lstm.cli import main
from awd_lstm.runs import Run
from tests.conftest import TINY_FLAGS, one_error_line


def test_train_on_the_builtin_corpus_writes_a_run(run, capsys):
    names = (
        "config.json vocab.json metrics.jsonl best.weights.h5 checkpoint.weights.h5 "
        "final.json learning_curves.png"
    ).split()
    for name in names:
        assert (run / name).exists(), name
    for split in ("train", "validation"):
        assert list((run / "tensorboard" / split).glob("events.out.tfevents.*"))
    assert not list(run.glob(".tmp-*"))
    final = json.loads((run / "final.json").read_text())
    assert {"test_loss", "test_ppl", "optimal_ppl", "unigram_ppl"} <= set(final)
    assert final["optimal_ppl"] < final["unigram_ppl"]
    assert 1.0 < final["test_ppl"] < 1000
    config = json.loads((run / "config.json").read_text())
    assert config["preset"] == "synthetic" and config["config"]["hidden_size"] == 16
    epochs = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [e["epoch"] for e in epochs] == [1, 2]


def test_evaluate_a_run(run, capsys):
    assert main(["evaluate", "--run", str(run), "--split", "test"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    final = json.loads((run / "final.json").read_text())
    assert result["ppl"] == pytest.approx(final["test_ppl"], rel=1e-5)


def test_data_stats(run, capsys):
    assert main(["data", "stats", str(run / "corpus")]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["layout"] == "plain" and stats["train"]["tokens"] == 3000


@pytest.mark.parametrize(
    "argv,message",
    [
        (["train", "--preset", "nope"], "unknown preset 'nope'"),
        (["train", "--weight-dropout", "1.5"], r"weight_dropout must be in \[0, 1\); got 1.5"),
        (["train", "--bptt", "0"], "bptt must be a positive integer; got 0"),
        (["train", "--data", "/nonexistent/corpus"], "data folder /nonexistent/corpus does not"),
        (["evaluate", "--run", "/nonexistent/run"], "is not a run folder"),
        (["train", "--resume", "/nonexistent/run"], "is not a run folder"),
        (["finetune", "--run", "/nonexistent/run"], "is not a run folder"),
        (["train", "--max-minutes", "0"], r"--max-minutes must be a number > 0; got 0"),
        (["train", "--tensorboard-every", "-1"], r"--tensorboard-every must be an integer >= 0"),
        (["train", "--when", "0"], "when must be a list of positive epoch numbers"),
        (["train", "--lr", "nan"], "lr must be a finite number > 0; got nan"),
        (["data", "stats", "/nonexistent/corpus"], "does not exist"),
        (["train", "--cutoffs", "10", "5"], r"cutoffs must be strictly increasing"),
        (
            ["train", *TINY_FLAGS, "--cutoffs", "100", "5000"],
            "last cut-off 5000 must be below the vocabulary size 1000",
        ),
        (
            ["train", *TINY_FLAGS, "--batch-size", "2000"],
            "the train split has 3000 tokens, too few for 2000 streams",
        ),
        (
            ["train", *TINY_FLAGS, "--eval-batch-size", "200"],
            "the validation split has 300 tokens, too few for 200 streams",
        ),
    ],
)
def test_bad_input_is_one_sentence_and_exit_2(argv, message, capsys, tmp_path):
    if argv[0] == "train" and "--resume" not in argv:
        argv = [*argv, "--out", str(tmp_path / "out")]
    assert main(argv) == 2
    one_error_line(capsys, message)
    assert not (tmp_path / "out").exists()  # nothing half-written


def test_refuses_to_overwrite_a_run(run, capsys):
    assert main(["train", "--out", str(run), *TINY_FLAGS]) == 2
    assert "already holds a run" in capsys.readouterr().err


def test_backend_flag_before_or_after_the_subcommand():
    from awd_lstm.cli import build_parser

    parser = build_parser()
    assert parser.parse_args(["--backend", "jax", "data", "stats", "d"]).backend == "jax"
    assert parser.parse_args(["train", "--backend", "torch"]).backend == "torch"
    assert parser.parse_args(["--backend", "jax", "train"]).backend == "jax"
    with pytest.raises(SystemExit):
        parser.parse_args(["train", "--backend", "theano"])


@pytest.mark.parametrize(
    "argv, line",
    [
        (["--verbose"], "awd-lstm: error: the following arguments are required: command"),
        (
            ["train", "--epochs", "x"],
            "awd-lstm train: error: argument --epochs: invalid int value: 'x'",
        ),
        (["classify", "predict"], "awd-lstm classify predict: error: the following arguments are"),
        (
            ["data", "stats", "a\nb", "c\nd"],
            "awd-lstm data stats: error: unrecognized arguments: c\\nd",
        ),
    ],
)
def test_argument_errors_are_one_line(argv, line, capsys):
    with pytest.raises(SystemExit) as stopped:
        main(argv)
    assert stopped.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(line) and err.count("\n") == 1, err
    command = line.split(":")[0]
    assert err.endswith(f"; see {command} --help\n"), err


def _epochs(run_dir):
    return [
        {k: v for k, v in json.loads(line).items() if k not in ("seconds", "tokens_per_sec")}
        for line in (run_dir / "metrics.jsonl").read_text().splitlines()
    ]


def test_interrupted_then_resumed_equals_the_uninterrupted_run(run, tmp_path, monkeypatch, capsys):
    import awd_lstm.checkpoints as checkpoints

    out = tmp_path / "interrupted"
    original = checkpoints.save_checkpoint

    def save_then_die(model, state, path):
        original(model, state, path)
        raise KeyboardInterrupt  # Ctrl-C right after the first epoch's checkpoint

    with monkeypatch.context() as patch:
        patch.setattr(checkpoints, "save_checkpoint", save_then_die)
        assert main(["train", "--out", str(out), *TINY_FLAGS]) == 130
    assert "interrupted" in capsys.readouterr().err
    # Killed between the checkpoint and metrics.jsonl: resuming rewrites the metrics
    # from the checkpoint's history.
    assert _epochs(out) == [] and not (out / "final.json").exists()
    # The settings come from the run; giving them again is an error.
    assert main(["train", "--resume", str(out), "--lr", "1"]) == 2
    assert "drop --lr" in capsys.readouterr().err
    assert main(["train", "--resume", str(out), "--no-progress"]) == 0
    assert _epochs(out) == _epochs(run)
    final = json.loads((out / "final.json").read_text())
    assert final == json.loads((run / "final.json").read_text())
    assert main(["train", "--resume", str(out)]) == 2
    assert "has finished; nothing to resume" in capsys.readouterr().err


@pytest.fixture(scope="module")
def tuned(run):
    assert main(["finetune", "--run", str(run), "--epochs", "2", "--no-progress"]) == 0
    return run / "finetune"


def test_finetune_a_run_then_evaluate_it(run, tuned, capsys):
    saved = json.loads((tuned / "config.json").read_text())
    assert saved["stage"] == "finetune" and saved["config"]["epochs"] == 2
    epochs = _epochs(tuned)
    assert len(epochs) == 2 and all(e["averaging"] for e in epochs)
    final = json.loads((tuned / "final.json").read_text())
    assert {"test_ppl", "optimal_ppl"} <= set(final)
    capsys.readouterr()
    assert main(["evaluate", "--run", str(tuned)]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["ppl"] == pytest.approx(final["test_ppl"], rel=1e-5)
    # Fine-tuning never leaves weights worse than the trained run's on validation.
    assert main(["evaluate", "--run", str(run), "--split", "valid"]) == 0
    trained_valid = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["loss"]
    assert main(["evaluate", "--run", str(tuned), "--split", "valid"]) == 0
    tuned_valid = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["loss"]
    assert tuned_valid <= trained_valid + 1e-6
    assert main(["finetune", "--run", str(run)]) == 2
    assert "already holds a fine-tuning" in capsys.readouterr().err


def test_an_interrupted_finetuning_resumes_to_the_same_end(run, tuned, tmp_path, monkeypatch):
    import awd_lstm.checkpoints as checkpoints

    out = tmp_path / "tuning"
    original = checkpoints.save_checkpoint

    def save_then_die(model, state, path):
        original(model, state, path)
        raise KeyboardInterrupt

    argv = ["finetune", "--run", str(run), "--out", str(out), "--no-progress"]
    with monkeypatch.context() as patch:
        patch.setattr(checkpoints, "save_checkpoint", save_then_die)
        assert main([*argv, "--epochs", "2"]) == 130
    assert main([*argv, "--resume"]) == 0
    assert _epochs(out) == _epochs(tuned)
    assert json.loads((out / "final.json").read_text()) == json.loads(
        (tuned / "final.json").read_text()
    )


def _copy_run(run, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(run, copy)
    return copy


def test_a_damaged_config_is_one_line(run, tmp_path, capsys):
    copy = _copy_run(run, tmp_path)
    (copy / "config.json").write_text('{"config": {"hidden_size": ')
    assert main(["evaluate", "--run", str(copy)]) == 2
    one_error_line(capsys, "config.json is not a valid run configuration")
    (copy / "config.json").write_text('{"config": {"hidden_size": -3}}')
    assert main(["evaluate", "--run", str(copy)]) == 2
    one_error_line(capsys, "hidden_size must be a positive integer; got -3")


def test_a_run_with_another_vocabulary_is_refused(run, tmp_path, capsys):
    from awd_lstm.data import Vocabulary

    copy = _copy_run(run, tmp_path)
    vocab = Vocabulary.load(copy / "vocab.json")
    Vocabulary(list(reversed(vocab.tokens))).save(copy / "vocab.json")
    assert main(["evaluate", "--run", str(copy)]) == 2
    one_error_line(capsys, "is not the vocabulary this run was trained with")
    # Without the fingerprint, the weights' shapes give it away.
    saved = json.loads((copy / "config.json").read_text())
    del saved["vocab_fingerprint"], saved["vocab_size"]
    (copy / "config.json").write_text(json.dumps(saved))
    Vocabulary(vocab.tokens + ["extra"]).save(copy / "vocab.json")
    assert main(["evaluate", "--run", str(copy)]) == 2
    one_error_line(capsys, "does not fit this model")


def test_damaged_weights_are_one_line(run, tmp_path, capsys):
    copy = _copy_run(run, tmp_path)
    (copy / "best.weights.h5").write_bytes(b"not an HDF5 file")
    assert main(["evaluate", "--run", str(copy)]) == 2
    one_error_line(capsys, r"best.weights.h5 is not a weights file \(HDF5\): ")


def test_a_diverging_run_stops_with_one_line(tmp_path, capsys):
    flags = [f for f in TINY_FLAGS]
    flags[flags.index("--epochs") + 1] = "1"
    out = tmp_path / "diverged"
    assert main(["train", "--out", str(out), *flags, "--lr", "1e30", "--clip", "1e30"]) == 1
    one_error_line(capsys, r"training stopped: the loss became (nan|inf) at step \d+ of epoch 1")
    assert not (out / "best.weights.h5").exists() and not list(out.glob(".tmp-*"))
    # A run that never completed an epoch starts again with --resume (its settings
    # diverge again here: the same one line, status 1).
    assert main(["train", "--resume", str(out), "--no-progress"]) == 1
    assert "awd-lstm train: resuming" in capsys.readouterr().out


def test_character_level_preset_reports_bits_per_character(tmp_path, capsys):
    corpus = tmp_path / "chars"
    corpus.mkdir()
    text = "the cat sat on the mat\nthe dog sat on the log\n"
    for split, repeat in (("train", 60), ("valid", 10), ("test", 10)):
        (corpus / f"{split}.txt").write_text(text * repeat)
    out = tmp_path / "run"
    tiny = [f for f in TINY_FLAGS if f not in ("--synthetic-tokens", "3000")]
    tiny[tiny.index("--epochs") + 1] = "1"
    argv = ["train", "--data", str(corpus), "--preset", "ptb-char", "--out", str(out), *tiny]
    assert main(argv) == 0
    saved = json.loads((out / "config.json").read_text())
    assert saved["level"] == "char" and saved["config"]["optimizer"] == "adam"
    assert saved["config"]["when"] == [300, 400]
    final = json.loads((out / "final.json").read_text())
    assert final["test_bpc"] == pytest.approx(final["test_loss"] / math.log(2))
    [epoch] = _epochs(out)
    assert epoch["val_bpc"] == pytest.approx(epoch["val_loss"] / math.log(2))
    assert "bpc" in capsys.readouterr().out
    assert main(["finetune", "--run", str(out)]) == 2
    one_error_line(capsys, "trained with Adam .* give its learning rate with --lr")


def test_evaluate_with_the_cache_pointer(run, capsys):
    capsys.readouterr()
    assert main(["evaluate", "--run", str(run), "--cache-pointer", "--lambda", "0"]) == 0
    without = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    final = json.loads((run / "final.json").read_text())
    assert without["ppl"] == pytest.approx(final["test_ppl"], rel=1e-5)
    assert without["cache_pointer"] == {"window": 500, "theta": 1.0, "lambda": 0.0}
    assert main(["evaluate", "--run", str(run), "--cache-pointer", "--window", "50"]) == 0
    with_cache = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert with_cache["cache_pointer"]["window"] == 50 and with_cache["ppl"] != without["ppl"]
    assert main(["evaluate", "--run", str(run), "--window", "50"]) == 2
    one_error_line(capsys, "--window needs --cache-pointer")
    assert main(["evaluate", "--run", str(run), "--cache-pointer", "--lambda", "2"]) == 2
    one_error_line(capsys, r"--lambda must be in \[0, 1\]; got 2.0")


def test_generate_prints_words_of_the_vocabulary(run, capsys):
    from awd_lstm.data import Vocabulary

    vocab = Vocabulary.load(run / "vocab.json")
    first = vocab.tokens[5]
    capsys.readouterr()
    argv = ["generate", "--run", str(run), "--prompt", first, "--tokens", "40", "--seed", "7"]
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert text.split()[0] == first and "<eos>" not in text
    assert set(text.split()) <= set(vocab.tokens)
    assert main(argv) == 0
    assert capsys.readouterr().out == text  # same seed, same text
    for flags, message in [
        (["--temperature", "0"], r"--temperature must be > 0; got 0.0"),
        (["--top-k", "0"], "--top-k must be at least 1; got 0"),
        (["--prompt", "nowhere"], "the prompt has words outside the vocabulary"),
    ]:
        assert main(["generate", "--run", str(run), *flags]) == 2
        one_error_line(capsys, message)


def test_score_prints_one_line_per_sentence(run, tmp_path, capsys):
    lines = (run / "corpus" / "test.txt").read_text().splitlines()[:5]
    text = tmp_path / "sentences.txt"
    text.write_text("\n".join(lines) + "\n")
    capsys.readouterr()
    assert main(["score", "--run", str(run), str(text), "--batch-size", "2"]) == 0
    rows = [row.split("\t") for row in capsys.readouterr().out.strip().splitlines()]
    assert len(rows) == 5
    for line, (log_prob, tokens, ppl) in zip(lines, rows):
        assert int(tokens) == len(line.split()) + 1
        assert float(ppl) == pytest.approx(math.exp(-float(log_prob) / int(tokens)), rel=1e-5)
    for content, message in [
        (b"\xff\xfe bad", r"is not valid UTF-8 \(byte 0, line 1\)"),
        (b" \n\n", "is empty"),
    ]:
        text.write_bytes(content)
        assert main(["score", "--run", str(run), str(text)]) == 2
        one_error_line(capsys, message)
    assert main(["score", "--run", str(run), str(tmp_path / "missing.txt")]) == 2
    one_error_line(capsys, "missing.txt cannot be read")


class _Output(io.StringIO):
    """A stand-in for standard output: records each write; `error` raised by write
    number `fail_at` (as Ctrl-C or a reader that went away would)."""

    def __init__(self, fail_at=None, error=None):
        super().__init__()
        self.writes, self.fail_at, self.error = [], fail_at, error
        self.scored = threading.Event()  # a result of score was written

    def write(self, text):
        if len(self.writes) + 1 == self.fail_at:
            self.fail_at = None
            raise self.error
        self.writes.append(text)
        if "\t" in text:
            self.scored.set()
        return super().write(text)


def test_generate_writes_as_it_draws_and_stops_cleanly(run, monkeypatch, capsys):
    argv = ["generate", "--run", str(run), "--tokens", "40", "--seed", "5"]
    monkeypatch.setattr(sys, "stdout", _Output())
    assert main(argv) == 0
    pieces = sys.stdout.writes
    assert len(pieces) == 41  # each token's text as it was drawn, then the line end
    # Ctrl-C during the sixth token: the text so far, its line ended; status 130.
    monkeypatch.setattr(sys, "stdout", _Output(fail_at=6, error=KeyboardInterrupt))
    assert main(argv) == 130
    assert sys.stdout.getvalue() == "".join(pieces[:5]) + "\n"
    assert capsys.readouterr().err == "awd-lstm generate: interrupted\n"
    # A reader that went away (`| head`): generation stops there, quietly.
    monkeypatch.setattr(sys, "stdout", _Output(fail_at=6, error=BrokenPipeError))
    assert main(argv) == 141
    assert sys.stdout.writes == pieces[:5] and capsys.readouterr().err == ""


def test_score_answers_a_line_before_the_input_ends(run, monkeypatch):
    from awd_lstm.data import Vocabulary

    word = Vocabulary.load(run / "vocab.json").tokens[5]
    read_end, write_end = os.pipe()
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(open(read_end, "rb")))
    monkeypatch.setattr(sys, "stdout", _Output())
    answered = []

    def user():  # types a line, waits for its answer, then types the next
        with open(write_end, "wb", buffering=0) as pipe:
            pipe.write(f"{word} {word}\n".encode())
            answered.append(sys.stdout.scored.wait(timeout=60))
            pipe.write(f"{word}\n".encode())

    typing = threading.Thread(target=user)
    typing.start()
    assert main(["score", "--run", str(run), "-"]) == 0
    typing.join()
    assert answered == [True]
    assert [row.split("\t")[1] for row in sys.stdout.getvalue().splitlines()] == ["3", "2"]


@pytest.mark.skipif(
    keras.backend.backend() != "tensorflow", reason="the command's output is the same everywhere"
)
def test_output_to_a_reader_that_went_away_ends_quietly():
    read_end, write_end = os.pipe()
    os.close(read_end)  # like `| head` done reading
    # Output buffered as usual, so that it is written when the command is done.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    command = [sys.executable, "-m", "awd_lstm", "presets"]
    done = subprocess.run(command, stdout=write_end, stderr=subprocess.PIPE, env=env, timeout=120)
    os.close(write_end)
    assert done.returncode == 141 and done.stderr == b""


def test_generate_and_score_an_exported_model_as_its_run(run, tmp_path, capsys):
    from awd_lstm.data import Vocabulary

    exported = tmp_path / "m.keras"
    assert main(["export", "--run", str(run), "--out", str(exported)]) == 0
    first = Vocabulary.load(run / "vocab.json").tokens[5]
    lines = (run / "corpus" / "test.txt").read_text().splitlines()[:3]
    text = tmp_path / "sentences.txt"
    text.write_text("\n".join(lines) + "\n")
    outputs = {}
    for source in (["--run", str(run)], ["--model", str(exported)]):
        capsys.readouterr()
        assert main(["generate", *source, "--prompt", first, "--tokens", "12", "--seed", "3"]) == 0
        generated = capsys.readouterr().out
        assert main(["score", *source, str(text)]) == 0
        outputs[source[0]] = generated, capsys.readouterr().out
    assert outputs["--model"][0] == outputs["--run"][0]  # the same draws
    for ours, theirs in zip(*(o[1].split() for o in outputs.values())):
        assert float(ours) == pytest.approx(float(theirs), rel=1e-5)
    assert main(["generate", "--model", str(tmp_path / "missing.keras")]) == 2
    one_error_line(capsys, "missing.keras cannot be loaded")
    with pytest.raises(SystemExit):  # one source, not both (argparse's usage error)
        main(["generate", "--run", str(run), "--model", str(exported)])


def test_evaluate_with_dynamic_evaluation_leaves_the_run_alone(run, capsys):
    weights = (run / "best.weights.h5").read_bytes()
    capsys.readouterr()
    argv = ["evaluate", "--run", str(run), "--split", "valid", "--dynamic-eval"]
    assert main([*argv, "--learning-rate", "0", "--decay", "0"]) == 0
    still = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert main(["evaluate", "--run", str(run), "--split", "valid"]) == 0
    static = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert still["ppl"] == pytest.approx(static["ppl"], rel=1e-5)
    assert still["dynamic_eval"] == {"learning_rate": 0.0, "decay": 0.0}
    assert (run / "best.weights.h5").read_bytes() == weights
    for flags, message in [
        (["--decay", "0.1"], "--decay needs --dynamic-eval"),
        (["--dynamic-eval", "--learning-rate", "-1"], "--learning-rate must be a finite number"),
        (["--dynamic-eval", "--cache-pointer"], "cannot be combined"),
    ]:
        assert main(["evaluate", "--run", str(run), *flags]) == 2
        one_error_line(capsys, message)


def test_export_a_run(run, tmp_path, capsys):
    import keras

    out = tmp_path / "model.keras"
    assert main(["export", "--run", str(run), "--out", str(out)]) == 0
    assert [p.name for p in tmp_path.iterdir()] == ["model.keras"]  # the vocabulary inside
    reloaded = keras.saving.load_model(out)
    ids = np.arange(12, dtype="int32").reshape(2, 6)
    from awd_lstm import load_run

    model = load_run(run).load_model(stateful=False)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(reloaded(ids)), keras.ops.convert_to_numpy(model(ids)), atol=1e-6
    )
    saved = tmp_path / "saved"
    code = main(["export", "--run", str(run), "--format", "savedmodel", "--out", str(saved)])
    if keras.backend.backend() == "tensorflow":
        assert code == 0 and (saved / "saved_model.pb").exists() and (saved / "vocab.json").exists()
        assert (
            main(["export", "--run", str(run), "--format", "savedmodel", "--out", str(saved)]) == 2
        )
        one_error_line(capsys, "already exists")
    else:
        assert code == 2
        one_error_line(capsys, "a SavedModel is a TensorFlow graph")
    assert main(["export", "--run", str(run), "--out", str(tmp_path / "model.h5")]) == 2
    one_error_line(capsys, "--out must end with .keras")


def test_adaptive_softmax_run_trains_evaluates_and_scores(tmp_path, capsys):
    out = tmp_path / "adaptive"
    assert (
        main(
            [
                "train",
                "--out",
                str(out),
                *TINY_FLAGS,
                "--epochs",
                "1",
                "--cutoffs",
                "100",
                "400",
                "--optimizer",
                "adam",
                "--lr",
                "0.01",
            ]
        )
        == 0
    )
    config = json.loads((out / "config.json").read_text())
    assert config["config"]["cutoffs"] == [100, 400]
    final = json.loads((out / "final.json").read_text())
    assert 1.0 < final["test_ppl"] < final["unigram_ppl"] * 1.5
    capsys.readouterr()
    assert main(["evaluate", "--run", str(out), "--split", "test"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["ppl"] == pytest.approx(final["test_ppl"], rel=1e-5)
    sentence = " ".join((out / "corpus" / "test.txt").read_text().split()[:6])
    (tmp_path / "s.txt").write_text(sentence + "\n")
    assert main(["score", "--run", str(out), str(tmp_path / "s.txt")]) == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert math.isfinite(float(line.split("\t")[0])) and float(line.split("\t")[0]) < 0


def test_version_flag_prints_the_installed_version(capsys):
    import importlib.metadata

    with pytest.raises(SystemExit) as stopped:
        main(["--version"])
    assert stopped.value.code == 0
    assert capsys.readouterr().out.strip() == f"awd-lstm {importlib.metadata.version('awd-lstm')}"


def test_presets_and_show_config_print_the_resolved_settings(tmp_path, capsys, run):
    import dataclasses

    from awd_lstm.presets import PRESETS

    assert main(["presets"]) == 0
    listed = capsys.readouterr().out.splitlines()
    assert [line.split(":")[0] for line in listed] == list(PRESETS)
    assert main(["presets", "ptb-char"]) == 0
    shown = json.loads(capsys.readouterr().out)
    want = dataclasses.asdict(PRESETS["ptb-char"])
    assert shown == {
        "level": "char",
        **{k: list(v) if isinstance(v, tuple) else v for k, v in want.items()},
    }
    assert main(["presets", "nope"]) == 2
    assert "unknown preset 'nope'" in capsys.readouterr().err
    out = tmp_path / "never"
    argv = ["train", "--preset", "small", "--hidden-size", "64", "--show-config", "--out", str(out)]
    assert main(argv) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["preset"] == "small" and shown["hidden_size"] == 64
    assert shown["embedding_size"] == PRESETS["small"].embedding_size and shown["level"] == "word"
    assert not out.exists()
    assert main(["train", "--resume", str(run), "--show-config"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["seed"] == Run.open(run).config.seed


# The metavars of the flags' values: numbers, and what a path or text names.
METAVARS = {int: {"N", "EPOCH", "RANK"}, float: {"X"}}
NAMED = {"DIR", "FILE", "PATH", "RUN", "NAME", "TEXT", "URL", "HEX"}


def _actions(parser, command="awd-lstm"):
    import argparse

    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _actions(sub, f"{command} {name}")
        elif not isinstance(action, (argparse._HelpAction, argparse._VersionAction)):
            yield command, action


def test_every_flag_has_help_and_a_consistent_metavar():
    from awd_lstm.cli import build_parser

    for command, action in _actions(build_parser()):
        where = f"{command} {'/'.join(action.option_strings) or action.dest}"
        assert action.help, f"{where} has no help text"
        if action.nargs == 0 or action.choices:
            continue  # a switch, or its choices shown
        if action.metavar == "true|false":
            continue
        allowed = METAVARS.get(action.type, NAMED)
        assert action.metavar in allowed, f"{where}: metavar {action.metavar!r}"


def test_help_shows_flags_with_their_metavars(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["train", "--help"])
    assert exit_.value.code == 0
    text = capsys.readouterr().out
    for shown in ["--data DIR", "--bptt N", "--lr X", "--when [EPOCH ...]", "--verbose"]:
        assert shown in text, shown
    assert "(default: the preset's)" in text


# Runs commands in a fresh process, as a user would, then says whether TensorFlow
# was imported.
_FRESH = """
import sys
from awd_lstm.cli import main
for argv in sys.argv[1:]:
    code = main(argv.split("\\t"))
    assert code == 0, (argv, code)
print("tensorflow imported:", "tensorflow" in sys.modules)
"""


def test_commands_are_quiet_and_jax_and_torch_never_import_tensorflow(run, tmp_path):
    import os
    import subprocess
    import sys

    import keras

    backend = keras.backend.backend()
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    env["KERAS_BACKEND"] = backend
    commands = [
        ["train", "--out", str(tmp_path / "run"), *TINY_FLAGS, "--epochs", "1"],
        ["evaluate", "--run", str(run)],
        ["generate", "--run", str(run), "--tokens", "3"],
        ["export", "--run", str(run), "--out", str(tmp_path / "m.keras")],
        ["generate", "--model", str(tmp_path / "m.keras"), "--tokens", "3"],
    ]
    argv = [sys.executable, "-c", _FRESH, *("\t".join(c) for c in commands)]
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert f"tensorflow imported: {backend == 'tensorflow'}" in done.stdout
    for noise in ["absl::InitializeLog", "oneDNN custom operations", "cpu_feature_guard"]:
        assert noise not in done.stderr, done.stderr


def test_native_start_up_lines_are_dropped_and_the_rest_kept():
    from awd_lstm._quiet import kept_lines

    captured = (
        b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n"
        b"I0000 00:00:1796149686.039530    6029 port.cc:153] oneDNN custom operations are on.\n"
        b"I0000 00:00:1796149686.399297    6029 cpu_feature_guard.cc:227] This TensorFlow "
        b"binary is optimized\n"
        b"To enable the following instructions: AVX2 FMA, in other operations, rebuild\n"
        b"W0000 00:00:1796149687.1 6029 gpu_device.cc:2341] Cannot dlopen some GPU libraries.\n"
        b"E0000 00:00:1796149687.2 6029 cuda_dnn.cc:8310] Unable to register cuDNN factory\n"
        b"/x/y.py:3: UserWarning: something the user should see\n"
    )
    assert kept_lines(captured) == (
        b"E0000 00:00:1796149687.2 6029 cuda_dnn.cc:8310] Unable to register cuDNN factory\n"
        b"/x/y.py:3: UserWarning: something the user should see\n"
    )
