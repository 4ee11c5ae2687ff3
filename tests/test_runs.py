"""Run folders as objects (awd_lstm.runs): a run made from Python opens with every
command, a run made by the command opens from Python, and bad folders are refused in
one sentence."""

import dataclasses
import json
import os
import shutil

import keras
import numpy as np
import pytest

import awd_lstm
from awd_lstm.cli import main
from awd_lstm.models import AWDLSTMLanguageModel
from awd_lstm.runs import FINAL, Run, RunError
from awd_lstm.training import train
from tests.conftest import to_numpy


def _copy_run(run, folder):
    """A copy of the shared run without the fine-tunings other tests made in it."""
    shutil.copytree(run, folder, ignore=shutil.ignore_patterns("finetune*"))


@pytest.fixture(scope="module")
def notebook_run(run, tmp_path_factory):
    """A run trained from Python with `training.train`, on the command's corpus files
    (the built-in corpus of the shared `run`), one epoch."""
    source = Run.open(run)
    config = dataclasses.replace(source.config, epochs=1, seed=5)
    folder = tmp_path_factory.mktemp("notebook") / "run"
    lines = []
    train(config, source.corpus(), str(folder), log=lines.append, progress=False)
    return folder, lines


def test_a_run_from_python_is_complete_and_opens_with_every_command(notebook_run, tmp_path, capsys):
    folder, lines = notebook_run
    run = awd_lstm.load_run(folder)
    assert run.stage == "train" and run.finished
    assert run.final["test_ppl"] > 1 and len(run.history) == 1
    assert any(line.startswith("test perplexity") for line in lines)
    assert run.info["data_paths"]["train"].endswith("train.txt")
    assert main(["evaluate", "--run", str(folder), "--split", "valid", "--no-progress"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["ppl"] == pytest.approx(run.history[-1]["val_ppl"], rel=1e-4)
    assert main(["generate", "--run", str(folder), "--tokens", "5"]) == 0
    text = tmp_path / "text.txt"
    text.write_text("w0661 w0164\n")
    assert main(["score", "--run", str(folder), str(text), "--no-progress"]) == 0
    assert main(["export", "--run", str(folder), "--out", str(tmp_path / "m.keras")]) == 0
    assert main(["train", "--resume", str(folder)]) == 2
    assert "has finished; nothing to resume" in capsys.readouterr().err


def test_a_command_run_opens_from_python(run):
    opened = Run.open(run)
    assert opened.finished and opened.stage == "train"
    assert opened.final["test_ppl"] == pytest.approx(
        json.loads((run / FINAL).read_text())["test_ppl"]
    )
    assert [r["epoch"] for r in opened.history] == [1, 2]
    assert len(opened.vocabulary) == opened.info["vocab_size"]
    assert opened.synthetic_source() is not None
    corpus = opened.corpus()
    assert corpus.vocab.fingerprint() == opened.vocabulary.fingerprint()
    stateful = opened.load_model(batch_size=2)
    assert stateful.stateful and stateful.batch_size == 2
    same = AWDLSTMLanguageModel.from_run(run, batch_size=2)
    free = opened.load_model(stateful=False)
    last = opened.load_model(stateful=False, weights="last")
    ids = np.arange(12, dtype="int32").reshape(2, 6) % len(opened.vocabulary)
    best_logits = to_numpy(free(ids))
    for model in (stateful, same):
        model.reset_state()
        np.testing.assert_allclose(to_numpy(model(ids)), best_logits, atol=1e-5)
    # The shared run's last epoch is its best: the last checkpoint evaluates with the
    # best weights.
    history = opened.history
    assert history[-1]["val_loss"] == min(r["val_loss"] for r in history)
    np.testing.assert_allclose(to_numpy(last(ids)), best_logits, atol=1e-5)


def test_last_weights_are_the_checkpoints_not_the_best(notebook_run, tmp_path):
    """A run whose last epoch was not its best: "last" gives the checkpoint's
    evaluation weights, "best" the best validated ones."""
    import h5py

    folder = tmp_path / "run"
    shutil.copytree(notebook_run[0], folder)
    opened = Run.open(folder)
    best = opened.trained_weights("best")
    # Another model's weights in best.weights.h5: "last" must not read that file.
    with h5py.File(folder / "best.weights.h5", "a") as f:
        f.visititems(
            lambda name, obj: obj.__setitem__((), obj[()] * 0) if hasattr(obj, "shape") else None
        )
    zeros = opened.trained_weights("best")
    assert all(not np.any(z) for z in zeros)
    last = opened.trained_weights("last")
    for a, b in zip(best, last):
        np.testing.assert_allclose(a, b, atol=1e-6)


@pytest.mark.parametrize(
    "damage, message",
    [
        ("no-config", r"is not a run folder \(it has no config.json\)"),
        ("bad-json", r"config.json is not a valid run configuration"),
        ("bad-value", r"config.json is not a valid run configuration: .*positive integer"),
        ("other-vocab", r"vocab.json is not the vocabulary this run was trained with"),
        ("no-vocab", r"vocabulary file .*vocab.json does not exist"),
    ],
)
def test_open_refuses_a_damaged_run_in_one_sentence(run, tmp_path, damage, message):
    folder = tmp_path / "run"
    shutil.copytree(run, folder)
    config = folder / "config.json"
    info = json.loads(config.read_text())
    if damage == "no-config":
        config.unlink()
    elif damage == "bad-json":
        config.write_text("{not json")
    elif damage == "bad-value":
        info["config"]["num_layers"] = 0
        config.write_text(json.dumps(info))
    elif damage == "other-vocab":
        info["vocab_fingerprint"] = "0" * 16
        config.write_text(json.dumps(info))
    else:
        (folder / "vocab.json").unlink()
    with pytest.raises(RunError, match=message) as caught:
        Run.open(folder)
    assert "\n" not in str(caught.value)


def test_weights_that_do_not_exist_are_named(run, tmp_path):
    folder = tmp_path / "run"
    shutil.copytree(run, folder)
    (folder / "best.weights.h5").unlink()
    with pytest.raises(RunError, match="has no best.weights.h5: its training did not finish"):
        Run.open(folder).load_model()
    with pytest.raises(RunError, match="weights must be 'best' or 'last'; got 'middle'"):
        Run.open(folder).weights_path("middle")


def test_train_checks_a_folder_that_holds_a_run(run, notebook_run, tmp_path):
    folder, _ = notebook_run
    trained = Run.open(folder)
    corpus = trained.corpus()
    with pytest.raises(RunError, match="already holds a run that has trained; resume it"):
        train(trained.config, corpus, str(folder), log=lambda _: None, progress=False)
    other = dataclasses.replace(trained.config, hidden_size=7)
    with pytest.raises(RunError, match="holds a run with other settings"):
        train(other, corpus, str(folder), log=lambda _: None, progress=False, resume=True)
    with pytest.raises(RunError, match="already holds a run"):
        Run.create(folder, trained.config, trained.vocabulary)
    assert Run.open(folder).final == trained.final  # nothing changed


def test_finetune_config_changes_only_the_finetuning_fields(run):
    opened = Run.open(run)
    config = opened.finetune_config(epochs=3, lr=None)
    assert config.optimizer == "ntasgd" and config.epochs == 3 and config.lr == opened.config.lr
    with pytest.raises(RunError, match="a fine-tuning can change only epochs, lr, nonmono, seed"):
        opened.finetune_config(hidden_size=3)
    adam = Run(opened.path, opened.info, dataclasses.replace(opened.config, optimizer="adam"), None)
    with pytest.raises(RunError, match="trained with Adam .* give its learning rate"):
        adam.finetune_config()
    assert adam.finetune_config(lr=5.0).lr == 5.0


def test_create_needs_a_corpus_it_can_read_again(run, tmp_path):
    from awd_lstm.data import Corpus

    opened = Run.open(run)
    corpus = opened.corpus()
    in_memory = Corpus(corpus.vocab, corpus.train, corpus.valid, corpus.test)
    with pytest.raises(RunError, match="the corpus was not read from files"):
        Run.create(tmp_path / "run", opened.config, corpus.vocab, data=in_memory)
    assert not (tmp_path / "run" / "config.json").exists()


def test_keras_is_not_needed_to_read_the_backend(run):
    from awd_lstm.runs import saved_backend

    assert saved_backend(run) == keras.backend.backend()
    assert saved_backend("/nonexistent") is None


def test_damaged_history_or_final_is_named(run, tmp_path):
    folder = tmp_path / "run"
    shutil.copytree(run, folder)
    (folder / "metrics.jsonl").write_text('{"epoch": 1}\n{broken\n')
    (folder / "final.json").write_text("[")
    opened = Run.open(folder)
    with pytest.raises(RunError, match=r"metrics.jsonl cannot be read"):
        _ = opened.history
    with pytest.raises(RunError, match=r"final.json cannot be read"):
        _ = opened.final


def test_a_moved_run_tree_still_finds_its_corpus_and_parent(run, tmp_path, capsys):
    """Paths inside the tree are also recorded relative to the run: a fine-tuning
    moved with its trained run (and the built-in corpus) still opens."""
    tree = tmp_path / "tree"
    _copy_run(run, tree / "run")
    assert main(["finetune", "--run", str(tree / "run"), "--epochs", "1", "--no-progress"]) == 0
    moved = tmp_path / "moved"
    shutil.move(str(tree), str(moved))
    finetuned = Run.open(moved / "run" / "finetune")
    assert os.path.samefile(finetuned.trained_from(), moved / "run")
    assert len(finetuned.corpus().test) == len(Run.open(run).corpus().test)
    capsys.readouterr()
    assert main(["evaluate", "--run", str(moved / "run" / "finetune"), "--no-progress"]) == 0


def test_create_without_a_corpus_location_needs_the_builtin_folder(run, tmp_path):
    opened = Run.open(run)
    with pytest.raises(RunError, match=r"give the corpus's location \(data=\)"):
        Run.create(tmp_path / "new", opened.config, opened.vocabulary)


@pytest.mark.parametrize("damage", ["no-best", "damaged-best", "no-valid-split"])
def test_finetune_writes_nothing_when_its_parent_cannot_serve(run, tmp_path, capsys, damage):
    parent = tmp_path / "run"
    _copy_run(run, parent)
    if damage == "no-best":
        (parent / "best.weights.h5").unlink()
    elif damage == "damaged-best":
        (parent / "best.weights.h5").write_bytes(b"not hdf5")
    else:
        (parent / "corpus" / "valid.txt").unlink()
    assert main(["finetune", "--run", str(parent), "--no-progress"]) == 2
    assert capsys.readouterr().err.count("\n") == 1
    assert not (parent / "finetune").exists()


def test_a_character_preset_needs_a_corpus(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--preset", "ptb-char", "--out", str(out)]) == 2
    assert "built-in synthetic corpus is word level" in capsys.readouterr().err
    assert not out.exists()


def test_evaluate_from_python_is_the_commands(run, capsys):
    opened = Run.open(run)
    plain = opened.evaluate("valid")
    assert plain["ppl"] == pytest.approx(opened.history[-1]["val_ppl"], rel=1e-4)
    settings = opened.pointer_settings(window=50)
    assert settings == {"window": 50, "theta": 1.0, "lambdah": 0.1}  # PTB's, window given
    pointed = opened.evaluate("valid", cache_pointer=settings)
    assert pointed["cache_pointer"] == {"window": 50, "theta": 1.0, "lambda": 0.1}
    assert pointed["loss"] != plain["loss"]
    assert main(["evaluate", "--run", str(run), "--split", "valid", "--cache-pointer",
                 "--window", "50", "--no-progress"]) == 0  # fmt: skip
    printed = json.loads(capsys.readouterr().out)
    assert printed["cache_pointer"] == pointed["cache_pointer"]
    assert printed["loss"] == pytest.approx(pointed["loss"], rel=1e-6)
    with pytest.raises(RunError, match="cannot be combined"):
        opened.evaluate(cache_pointer=settings, dynamic_eval={"learning_rate": 1e-5})


def test_a_training_run_is_made_whole_or_not_at_all(run, tmp_path):
    from awd_lstm.data import CorpusError
    from awd_lstm.runs import create_training_run

    config = dataclasses.replace(Run.open(run).config, batch_size=10_000)
    folder = tmp_path / "new"
    # Too few tokens for 10,000 streams: refused before anything stays behind.
    with pytest.raises(CorpusError, match="too few|streams"):
        create_training_run(folder, config, synthetic_tokens=1000)
    assert not folder.exists()
    made, corpus, description = create_training_run(
        folder, Run.open(run).config, synthetic_tokens=1000
    )
    assert made.synthetic_source() is not None and len(corpus.train) >= 1000
    assert "built-in" in description and (folder / "corpus").is_dir()
    made.check_resumable("train")
    with pytest.raises(RunError, match="is a training run, not a fine-tuning one"):
        made.check_resumable("finetune")
    with pytest.raises(RunError, match="has finished; nothing to resume"):
        Run.open(run).check_resumable("train")


def test_a_finetuning_from_python_is_the_commands(run, tmp_path):
    """`open_finetune` makes (or reopens) the fine-tuning folder the command makes;
    `training.finetune` then runs it to a finished run that records its parent."""
    from awd_lstm.runs import open_finetune
    from awd_lstm.training import finetune

    trained = tmp_path / "trained"
    _copy_run(run, trained)
    with pytest.raises(ValueError, match=r"`max_minutes` must be a number > 0"):
        open_finetune(trained, max_minutes=0)
    assert not (trained / "finetune").exists()
    made, corpus, weights = open_finetune(trained, epochs=1)
    assert made.path == str(trained / "finetune") and made.stage == "finetune"
    assert made.config.optimizer == "ntasgd" and made.config.epochs == 1
    assert len(weights) == len(Run.open(trained).trained_weights("best"))
    with pytest.raises(RunError, match="already holds a fine-tuning"):
        open_finetune(trained, epochs=1)
    with pytest.raises(RunError, match="with its own settings"):
        open_finetune(trained, resume=True, lr=1.0)
    finetune(made.config, corpus, made.path, weights, log=lambda line: None, progress=False)
    done = Run.open(made.path)
    assert done.finished and done.trained_from() == str(trained)
    with pytest.raises(RunError, match="has finished; nothing to resume"):
        open_finetune(trained, resume=True)


def _target_text(folder, vocabulary, seed=0):
    """A corpus of the trained run's words and words it never saw."""
    rng = np.random.default_rng(seed)
    known = [t for t in vocabulary.tokens if t not in ("<eos>", "<unk>")][:40]
    words = known + [f"new{i}" for i in range(10)]
    folder.mkdir()
    for split, lines in (("train", 60), ("valid", 15), ("test", 15)):
        text = "\n".join(" ".join(rng.choice(words, 8)) for _ in range(lines)) + "\n"
        (folder / f"{split}.txt").write_text(text)
    return folder


def test_target_domain_finetuning_remaps_the_vocabulary(run, tmp_path, capsys):
    from awd_lstm.runs import open_finetune

    trained = Run.open(run)
    text = _target_text(tmp_path / "target", trained.vocabulary)
    tuned, corpus, weights = open_finetune(run, tmp_path / "tuned", data=str(text), epochs=1)
    new, old = tuned.vocabulary, trained.vocabulary
    assert tuned.vocabulary.fingerprint() == corpus.vocab.fingerprint()
    assert {f"new{i}" for i in range(10)} <= set(new.tokens)
    before = trained.trained_weights("best")
    model = trained.load_model(stateful=False)
    paths = [v.path for v in model.trainable_variables]
    embedding = paths.index(model.encoder.embedding.embeddings.path)
    bias = paths.index(model.decoder_bias.path)
    for i, (start, now) in enumerate(zip(before, weights)):
        if i in (embedding, bias):
            continue
        np.testing.assert_array_equal(now, start)  # the LSTMs as trained
    for table in (embedding, bias):
        for token in new.tokens:
            row = weights[table][new.index[token]]
            if token in old:
                np.testing.assert_array_equal(row, before[table][old.index[token]])
            else:
                np.testing.assert_allclose(
                    row, before[table].mean(axis=0, dtype=np.float64), atol=1e-7
                )
    # The command: one epoch on the new text, then it evaluates on it.
    out = tmp_path / "by_command"
    argv = ["finetune", "--run", str(run), "--data", str(text), "--out", str(out), "--epochs", "1"]
    assert main([*argv, "--no-progress"]) == 0
    assert Run.open(out).vocabulary.tokens == new.tokens
    assert (
        main(["finetune", "--run", str(run), "--out", str(out), "--resume", "--data", str(text)])
        == 2
    )
    assert "continues a fine-tuning with its own settings" in capsys.readouterr().err


def test_a_model_with_an_adaptive_softmax_is_not_remapped(run):
    from awd_lstm.runs import remap_weights

    trained = Run.open(run)
    config = dataclasses.replace(trained.config, cutoffs=(10,))
    with pytest.raises(RunError, match="cannot be remapped to another vocabulary"):
        remap_weights(config, trained.vocabulary, trained.vocabulary, [])
