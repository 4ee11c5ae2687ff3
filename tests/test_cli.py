"""The `awd-lstm` command, in process, on small generated corpora."""

import json
import re

import pytest

from awd_lstm.cli import main

TINY_FLAGS = [
    "--epochs",
    "2",
    "--embedding-size",
    "8",
    "--hidden-size",
    "16",
    "--num-layers",
    "2",
    "--batch-size",
    "4",
    "--eval-batch-size",
    "2",
    "--bptt",
    "10",
    "--no-progress",
    "--synthetic-tokens",
    "3000",
]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "synthetic"
    code = main(["train", "--out", str(out), *TINY_FLAGS])
    assert code == 0
    return out


def test_train_on_the_builtin_corpus_writes_a_run(run, capsys):
    for name in ("config.json", "vocab.json", "metrics.jsonl", "best.weights.h5", "final.json"):
        assert (run / name).exists(), name
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
        (["data", "stats", "/nonexistent/corpus"], "does not exist"),
    ],
)
def test_bad_input_is_one_sentence_and_exit_2(argv, message, capsys, tmp_path):
    if argv[0] == "train":
        argv = [*argv, "--out", str(tmp_path / "out")]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert re.search(message, err), err


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
