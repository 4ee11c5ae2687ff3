"""Classifier runs and `awd-lstm classify`, on a tiny task of the built-in kind."""

import json
import re

import keras
import numpy as np
import pytest

from awd_lstm.cli import main
from tests.conftest import one_error_line, to_numpy

# Short documents: few padded widths, so few compiled steps on every backend.
FLAGS = ["--epochs", "2", "--batch-size", "8", "--no-progress", "--seed", "3"]


@pytest.fixture(scope="module")
def task(tmp_path_factory):
    from awd_lstm.data.synthetic import ClassSources

    folder = tmp_path_factory.mktemp("task")
    sources = ClassSources(seed=5, separation=0.3, num_states=4, vocab_size=30)
    sources.write_task(folder, train=48, valid=16, test=16, min_length=4, max_length=14)
    return folder


@pytest.fixture(scope="module")
def classifier_run(task, tmp_path_factory):
    out = tmp_path_factory.mktemp("classifier") / "run"
    assert main(["classify", "train", "--data", str(task), "--out", str(out), *FLAGS]) == 0
    return out


def test_a_classifier_run_holds_its_files_and_results(classifier_run):
    for name in [
        "config.json vocab.json labels.json metrics.jsonl best.weights.h5 "
        "checkpoint.weights.h5 final.json"
    ][0].split():
        assert (classifier_run / name).exists(), name
    records = [
        json.loads(line) for line in (classifier_run / "metrics.jsonl").read_text().splitlines()
    ]
    assert [r["epoch"] for r in records] == [1, 2]
    assert {"train_loss", "val_loss", "val_accuracy", "tokens_per_sec"} <= set(records[0])
    final = json.loads((classifier_run / "final.json").read_text())
    assert final["test_error"] == pytest.approx(1 - final["test_accuracy"])
    assert json.loads((classifier_run / "labels.json").read_text()) == {
        "labels": ["class0", "class1"]
    }
    for split in ("train", "validation"):
        assert list((classifier_run / "tensorboard" / split).glob("events.out.tfevents.*"))
    # A new encoder: every group trains from the start, at one rate.
    config = json.loads((classifier_run / "config.json").read_text())["config"]
    assert (config["unfreeze"], config["factor"], config["epochs"]) == ("all", 1.0, 2)


def test_evaluate_reports_per_class_scores_and_draws_the_confusion(classifier_run, capsys):
    capsys.readouterr()
    assert main(["classify", "evaluate", "--run", str(classifier_run)]) == 0
    report = json.loads(capsys.readouterr().out)
    final = json.loads((classifier_run / "final.json").read_text())
    assert report["accuracy"] == pytest.approx(final["test_accuracy"])
    confusion = np.array(report["confusion"])
    assert confusion.sum() == report["documents"] == 16
    assert np.trace(confusion) / 16 == pytest.approx(report["accuracy"])
    for label, scores in report["per_class"].items():
        i = report["labels"].index(label)
        assert scores["support"] == confusion[i].sum()
        if confusion[:, i].sum():
            assert scores["precision"] == pytest.approx(confusion[i, i] / confusion[:, i].sum())
    assert (classifier_run / "confusion_test.png").read_bytes()[:4] == b"\x89PNG"


def test_predict_gives_a_label_and_probabilities_per_line(classifier_run, task, tmp_path, capsys):
    from awd_lstm.data.labelled import read_labelled_table

    lines = [text.replace("\n", " ") for text, _ in read_labelled_table(task / "test.tsv")[:3]]
    documents = tmp_path / "documents.txt"
    documents.write_text("\n".join(lines) + "\n")
    capsys.readouterr()
    assert main(["classify", "predict", "--run", str(classifier_run), str(documents)]) == 0
    rows = [row.split("\t") for row in capsys.readouterr().out.strip().splitlines()]
    assert len(rows) == 3
    for label, *p in rows:
        assert label in ("class0", "class1")
        assert sum(map(float, p)) == pytest.approx(1.0, abs=1e-5)
        assert label == ("class0", "class1")[int(np.argmax([float(x) for x in p]))]
    argv = [
        "classify",
        "predict",
        "--run",
        str(classifier_run),
        str(documents),
        "--format",
        "jsonl",
    ]
    assert main(argv) == 0
    objects = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [o["label"] for o in objects] == [r[0] for r in rows]


def test_predictions_stream_window_by_window(classifier_run, task):
    """`iter_predict` gives `predict`'s probabilities, in input order, reading its
    input a window at a time: the first result comes after one window is read."""
    from awd_lstm.classification import ClassifierRun
    from awd_lstm.data.labelled import read_labelled_table

    run = ClassifierRun.open(classifier_run)
    texts = [text for text, _ in read_labelled_table(task / "test.tsv")[:7]]
    whole = run.predict(texts)
    read = []

    def lines():
        for text in texts:
            read.append(text)
            yield text

    stream = run.iter_predict(lines(), window=3)
    first = next(stream)
    assert len(read) == 3
    streamed = np.stack([first, *stream])
    np.testing.assert_allclose(streamed, whole, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="`window` must be a positive integer"):
        run.iter_predict(texts, window=0)  # at the call, before any text is read


def test_a_resumed_classifier_run_ends_as_an_uninterrupted_one(task, classifier_run, tmp_path):
    from awd_lstm import classification

    run = classification.ClassifierRun.open(classifier_run)
    again = classification.create_classifier_run(tmp_path / "again", run.config, str(task))

    class Killed(Exception):
        pass

    def killed_after_epoch_1(line):
        if line.startswith("epoch 1:"):
            raise Killed  # after the epoch's checkpoint, as a kill would leave it

    with pytest.raises(Killed):
        classification.train_classifier(again, log=killed_after_epoch_1, progress=False)
    classification.train_classifier(again, log=lambda _: None, progress=False, resume=True)
    ours = [
        json.loads(line) for line in (tmp_path / "again" / "metrics.jsonl").read_text().splitlines()
    ]
    whole = run.history
    for mine, theirs in zip(ours, whole, strict=True):
        assert mine["val_loss"] == pytest.approx(theirs["val_loss"], rel=1e-5)
        assert mine["train_loss"] == pytest.approx(theirs["train_loss"], rel=1e-5)
    assert again.final == pytest.approx(run.final, rel=1e-5)


# The QRNN encoder's classifier runs in-process on every backend (tests/test_classifier.py);
# the command adds TensorFlow's shape-generic training steps (a graph loop over segments).
QRNN_ON_TENSORFLOW = pytest.mark.skipif(
    keras.backend.backend() != "tensorflow",
    reason="the command's QRNN path beyond tests/test_classifier.py is TensorFlow's",
)


@pytest.mark.parametrize("lm", ["run", pytest.param("qrnn_run", marks=QRNN_ON_TENSORFLOW)])
def test_a_frozen_encoder_keeps_the_language_models_weights(lm, request, tmp_path):
    """`--unfreeze none` with `--encoder`: the encoder (LSTMs, or QRNNs) starts from
    the language model's weights and stays on them; the vocabulary is the language
    model's."""
    from awd_lstm import classification, load_run

    run = request.getfixturevalue(lm)

    out = tmp_path / "frozen"
    argv = ["classify", "train", "--encoder", str(run), "--out", str(out), "--unfreeze", "none"]
    assert main([*argv, "--train-documents", "30", "--epochs", "1", "--no-progress"]) == 0
    model = classification.ClassifierRun.open(out).load_model()
    language_model = load_run(run).load_model(stateful=False)
    assert model.encoder.cell == language_model.encoder.cell
    for ours, theirs in zip(model.encoder.weights, language_model.encoder.weights, strict=True):
        np.testing.assert_array_equal(to_numpy(ours), to_numpy(theirs))
    assert model.vocabulary.tokens == load_run(run).vocabulary.tokens
    final = json.loads((out / "final.json").read_text())
    assert {"bayes_error", "bag_of_words_error"} <= set(final)
    config = json.loads((out / "config.json").read_text())["config"]
    assert (config["factor"], config["epochs"]) == (2.6, 1)  # ULMFiT's rates on an encoder


def test_a_new_encoders_vocabulary_reads_raw_text_as_told(tmp_path, capsys):
    """`classify train --lowercase --min-count 2`: the vocabulary is built from the
    training documents read that way, and predict reads new text the same way; with
    `--encoder` the flags are refused (the language model's tokenization reads)."""
    from awd_lstm import classification

    table = tmp_path / "raw.tsv"
    rows = ["label\ttext"]
    for i in range(24):
        rows.append(f"{'ab'[i % 2]}\t{'Good' if i % 2 else 'BAD'} Movie number{i} good bad")
    table.write_text("\n".join(rows) + "\n")
    out = tmp_path / "run"
    argv = ["classify", "train", "--data", str(table), "--out", str(out), "--lowercase"]
    assert main([*argv, "--min-count", "2", "--epochs", "1", "--no-progress"]) == 0
    run = classification.ClassifierRun.open(out)
    assert run.vocabulary.tokenization.lowercase
    assert {"good", "bad", "movie"} <= set(run.vocabulary.tokens)
    assert not {"Good", "BAD", "number3"} & set(run.vocabulary.tokens)  # lower-cased, rare
    assert run.vocabulary.tokenize("GOOD Movie") == ["good", "movie", "<eos>"]
    capsys.readouterr()
    refused = ["classify", "train", "--encoder", str(out), "--out", str(tmp_path / "x")]
    assert main([*refused, "--lowercase"]) == 2
    one_error_line(capsys, "drop --lowercase")
    assert not (tmp_path / "x").exists()


def test_gradual_unfreezing_runs_a_slanted_triangle_per_stage(run, tmp_path):
    """End to end: with gradual unfreezing on an encoder of 4 layer groups and 3
    epochs, the rate of every step (TensorBoard's `batch_learning_rate`) is
    `StagedSlantedTriangular` over stages of one epoch, one epoch, the rest: each
    stage starts again at its lowest rate."""
    from awd_lstm.transfer import StagedSlantedTriangular
    from tests.test_run_logs import read_scalars

    out = tmp_path / "staged"
    argv = ["classify", "train", "--encoder", str(run), "--out", str(out), "--epochs", "3"]
    argv += ["--train-documents", "30", "--batch-size", "8", "--tensorboard-every", "1"]
    assert main([*argv, "--no-progress"]) == 0
    rates = read_scalars(out / "tensorboard" / "train")["batch_learning_rate"]
    steps = 4  # ceil(30 / 8) per epoch
    assert [step for step, _ in rates] == list(range(1, 3 * steps + 1))
    schedule = StagedSlantedTriangular(0.01, [steps, steps, steps], cut_frac=0.1, ratio=32)
    expected = [float(to_numpy(schedule(i))) for i in range(3 * steps)]
    np.testing.assert_allclose([rate for _, rate in rates], expected, rtol=1e-6)
    assert rates[steps][1] == pytest.approx(0.01 / 32) == rates[2 * steps][1]


def test_bad_input_is_one_sentence(run, classifier_run, tmp_path, capsys):
    table = tmp_path / "one.tsv"
    table.write_text("label\ttext\na\tsome words\na\tmore words\n")
    bad = [
        (["classify", "train", "--data", str(table)], "has only one class"),
        (["classify", "predict", "--run", str(run), str(table)], "is not a classifier run"),
        (["classify", "evaluate", "--run", str(tmp_path)], "is not a run folder"),
        (["classify", "train", "--data", str(table), "--text-column", "body"], "body"),
        (["classify", "train", "--epochs", "0"], "--epochs must be a positive integer"),
        (["classify", "train", "--train-documents", str(10**12)], "must be at most 100,000"),
        (["classify", "train", "--out", str(classifier_run)], "already holds a run"),
    ]
    for argv, message in bad:
        out = ["--out", str(tmp_path / "new")] if "--out" not in argv and argv[1] == "train" else []
        assert main([*argv, *out]) == 2, argv
        one_error_line(capsys, re.escape(message))
    assert not (tmp_path / "new" / "config.json").exists()
    empty = tmp_path / "empty.tsv"
    empty.write_text("label\ttext\na\tsome words\nb\t\n")
    assert main(["classify", "train", "--data", str(empty), "--out", str(tmp_path / "e")]) == 2
    one_error_line(capsys, "empty")
