"""Every command's arguments fuzzed: random argument lists, built from each
subcommand's own parser (so a new flag is fuzzed without a change here), end in
success or in one line `awd-lstm ...: error: ...` on stderr with status 2; never a
traceback, and nothing is written outside the folder or file the command was given.

The work a valid command line starts (training, loading and running a model,
plotting, downloading) is replaced by recorders that succeed: the fuzz goes through
every check up to where the work starts, at a few milliseconds an example.
"""

import argparse
import contextlib
import dataclasses
import io
import os
import shutil
import socket
import sys
import tempfile
import traceback
from types import SimpleNamespace

import keras
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from awd_lstm.cli import build_parser, main
from tests.conftest import check_error_line

pytestmark = pytest.mark.skipif(
    keras.backend.backend() != "tensorflow",
    reason="the command line's checks are the same on every backend",
)


def _commands(parser, path=()):
    """(words, parser) of every command that takes no further subcommand."""
    subcommands = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subcommands:
        yield path, parser
    for action in subcommands:
        for name, subparser in action.choices.items():
            yield from _commands(subparser, (*path, name))


def _arguments(parser):
    """The parser's options and positionals, but --help and --version."""
    skipped = (argparse._HelpAction, argparse._VersionAction, argparse._SubParsersAction)
    return [a for a in parser._actions if not isinstance(a, skipped)]


# Values no flag takes: wrong types, out of range, empty, very long, not UTF-8 (as
# Python decodes such bytes from the command line), lone surrogates, line breaks.
BAD = [
    "x",
    "1.5",
    "0",
    "-1",
    "99999999999999999999999",
    "nan",
    "inf",
    "1e309",
    "",
    " ",
    "x" * 10_000,
    os.fsdecode(b"\xff\xfe"),
    "\ud800",
    "a\nb",
    "--",
    "-",
]
LATIN_1 = os.fsdecode(b"caf\xe9")  # "café" in Latin-1, as a UTF-8 system decodes it
# Values of the flags that name paths, URLs, checksums, names and text, by metavar; the
# paths as placeholders that each example makes real in a fresh folder (see _Places).
# A value twice is drawn twice as often.
PLACES = {
    "RUN": "{RUN} {RUN} {UNFINISHED} {CLASSIFIER} {CLASSIFIER} {CORPUS} {MISSING} {TEXT} .",
    "DIR": "{OUT} {OUT}LATIN_1 {CORPUS} {RUN} {MISSING}/deeper {TEXT} {EMPTY} .",
    "FILE": "{TEXT} {TEXT} {BINARY} - {MISSING} {OUT}.png {OUT}LATIN_1.png {MISSING}/x.png "
    "{EMPTY}/x.png {RUN}",
    "PATH": "{OUT}.keras {OUT}LATIN_1.keras {OUT} {LABELLED} {LABELLED} {MISSING}/x.keras "
    "{TEXT} {RUN} {RUN}/x.keras",
    "URL": "http://127.0.0.1:{PORT}/ http://127.0.0.1:{PORT}/x.txt file://{MISSING}/ {TEXT}",
    "HEX": f"{'0' * 64} {'aBcDeF' * 10}0123 xyz",
    "NAME": "ptb small synthetic nope label text",
}
PLACES = {k: v.replace("LATIN_1", LATIN_1).split() for k, v in PLACES.items()}
PLACES["TEXT"] = ["the cat", "", "é", LATIN_1, "\ud800", "a\nb", "\t"]


def _mostly(usual, rare):
    """`usual` three times in four."""
    return st.integers(0, 3).flatmap(lambda i: rare if i == 0 else usual)


def _good_values(action):
    """Values of the flag's own kind: in its range mostly, sometimes huge."""
    if action.choices:
        return st.sampled_from(list(action.choices))
    if action.metavar == "true|false":
        return st.sampled_from(["true", "false", "yes", "0"])
    if action.type is int:
        return _mostly(st.integers(0, 8), st.integers(-(2**70), 2**70)).map(str)
    if action.type is float:
        usual = st.sampled_from(["0.1", "0.5", "1", "2.5", "0", "1e-3"])
        return _mostly(usual, st.floats().map(repr))
    if action.metavar == "TEXT":
        return _mostly(st.sampled_from(PLACES["TEXT"]), st.text(max_size=12))
    if action.metavar in PLACES:
        return st.sampled_from(PLACES[action.metavar])
    return st.text(max_size=12)


def _values(action):
    return _mostly(_good_values(action), st.sampled_from(BAD))


@st.composite
def _flag(draw, action):
    """The words of one option or positional."""
    name = draw(st.sampled_from(action.option_strings)) if action.option_strings else None
    if action.nargs == 0:
        return [name]
    if action.nargs in ("*", "+", "?"):
        low = 1 if action.nargs == "+" else 0
        values = draw(st.lists(_values(action), min_size=low, max_size=3 if low or name else 1))
    else:
        values = [draw(_values(action))]
    if name is None:
        return values
    if len(values) == 1 and draw(st.booleans()):
        return [f"{name}={values[0]}"]
    return [name, *values]


@st.composite
def command_lines(draw, words, parser):
    """An argument list of the command `words`: its positionals and required options
    mostly, a few of its other options, sometimes a stray word."""
    arguments = _arguments(parser)
    required = [a for a in arguments if a.required or not a.option_strings]
    # One of each required group (--run or --model), as one required argument.
    required += [
        draw(st.sampled_from(group._group_actions))
        for group in parser._mutually_exclusive_groups
        if group.required
    ]
    optional = [a for a in arguments if a not in required]
    chosen = [a for a in required if draw(st.integers(0, 9)) > 0]  # mostly given
    if optional:
        chosen += draw(st.lists(st.sampled_from(optional), max_size=4, unique_by=id))
    pieces = [draw(_flag(a)) for a in chosen]
    if draw(st.integers(0, 9)) == 0:
        pieces.append([draw(st.sampled_from(["extra", "{TEXT}", *BAD]))])
    pieces = draw(st.permutations(pieces))
    before = draw(st.lists(MAIN_FLAGS, max_size=1))  # awd-lstm --backend X COMMAND
    return [*(w for piece in before for w in piece), *words, *(w for p in pieces for w in p)]


PARSER = build_parser()
MAIN_FLAGS = st.sampled_from(_arguments(PARSER)).flatmap(_flag)
COMMANDS = list(_commands(PARSER))
ALL_COMMAND_LINES = st.one_of([command_lines(words, parser) for words, parser in COMMANDS])


def _closed_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def places(run, tmp_path_factory):
    """What the placeholders copy from: the finished tiny run, a classifier run (made,
    not trained: its work is a recorder here), labelled documents."""
    from awd_lstm.classification import ClassifierConfig, create_classifier_run
    from awd_lstm.data.synthetic import ClassSources

    folder = tmp_path_factory.mktemp("fuzz")
    ClassSources(seed=5, num_states=4, vocab_size=30).write_task(
        folder / "task", train=24, valid=8, test=8, min_length=4, max_length=10
    )
    config = ClassifierConfig(embedding_size=4, hidden_size=4, num_layers=1)
    create_classifier_run(folder / "classifier", config, data=folder / "task")
    return {"RUN": run, "CLASSIFIER": folder / "classifier", "TASK": folder / "task"}


RUN_FILES = {
    "config.json",
    "vocab.json",
    "metrics.jsonl",
    "final.json",
    "best.weights.h5",
    "checkpoint.weights.h5",
    "learning_curves.png",
    "corpus",
    "tensorboard",
}


class _Places:
    """A fresh folder for one example: the command's working folder `cwd` (empty),
    and the copies and files the placeholders of `argv` name."""

    def __init__(self, root, sources, argv):
        self.root, self.cwd = root, os.path.join(root, "cwd")
        os.makedirs(self.cwd)
        os.makedirs(os.path.join(root, "tmp"))
        words = "\0".join(argv)
        path = {
            name: os.path.join(root, name.lower()) for name in ("RUN", "UNFINISHED", "CLASSIFIER")
        }
        path.update(
            CORPUS=os.path.join(root, "corpus"),
            TEXT=os.path.join(root, "sentences.txt"),
            BINARY=os.path.join(root, "binary.txt"),
            LABELLED=os.path.join(root, "labelled"),
            EMPTY=os.path.join(root, "empty"),
            MISSING=os.path.join(root, "missing"),
            OUT="out",  # relative: in cwd
            PORT=str(_closed_port()) if "{PORT}" in words else "9",
        )
        self.paths = path
        # The run's own files, not what other tests made in the shared run (a
        # fine-tuning's folder, exports...).
        top = os.path.realpath(sources["RUN"])

        def own(folder, names):
            if os.path.realpath(folder) != top:
                return []
            return [name for name in names if name not in RUN_FILES]

        if "{RUN}" in words:
            shutil.copytree(sources["RUN"], path["RUN"], ignore=own)
        if "{UNFINISHED}" in words:  # a run that can be resumed
            shutil.copytree(sources["RUN"], path["UNFINISHED"], ignore=own)
            os.remove(os.path.join(path["UNFINISHED"], "final.json"))
        if "{CLASSIFIER}" in words:
            shutil.copytree(sources["CLASSIFIER"], path["CLASSIFIER"])
        if "{CORPUS}" in words:
            shutil.copytree(os.path.join(sources["RUN"], "corpus"), path["CORPUS"])
        if "{LABELLED}" in words:
            shutil.copytree(sources["TASK"], path["LABELLED"])
        if "{TEXT}" in words:
            with open(path["TEXT"], "w", encoding="utf-8") as f:
                f.write("the first sentence\n\nand a second one\n")
        if "{BINARY}" in words:
            with open(path["BINARY"], "wb") as f:
                f.write(b"\xff\xfe\x00 not text\n")
        if "{EMPTY}" in words:
            os.makedirs(path["EMPTY"])
        self.argv = [self.resolve(word) for word in argv]

    def resolve(self, word):
        for name, path in self.paths.items():
            word = word.replace("{" + name + "}", path)
        return word

    def listing(self):
        found = set()
        for folder, folders, files in os.walk(self.root):
            found.update(os.path.join(folder, name) for name in folders + files)
        return found


def _parsed(argv):
    """`(args, command)` of a command line the parser takes ("classify train": the
    command and its subcommand); None for one it refuses (or `--help`, `--version`)."""
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            args = PARSER.parse_args(argv)
    except SystemExit:
        return None
    subcommand = getattr(args, "classify_command", None) or getattr(args, "data_command", None)
    return args, f"{args.command} {subcommand}" if subcommand else args.command


# The stand-in a command that succeeds must have reached: it did its work, not
# returned early. (`presets`, `data stats` and `train --show-config` only print;
# `data download` succeeds without the network where its files are there.)
REACHED = {
    "train": "train",
    "finetune": "finetune",
    "evaluate": "evaluate",
    "generate": "generate",
    "score": "score",
    "export": "export",
    "classify train": "classify train",
    "classify evaluate": "classify",
    "classify predict": "predict",
    "plot": "plot",
}


def _outputs(argv, cwd):
    """The files and folders the command line names as its output (or their
    defaults): the only places it may write."""
    parsed = _parsed(argv)
    if parsed is None:
        return []
    args, command = parsed
    run = getattr(args, "run", None) or ""
    outputs = {
        "train": [args.resume or args.out or "runs"] if command == "train" else [],
        "finetune": [getattr(args, "out", None) or os.path.join(run, "finetune")],
        "export": [getattr(args, "out", None)],
        "classify train": [getattr(args, "out", None) or "runs"],
        "classify evaluate": [
            getattr(args, "confusion", None)
            or os.path.join(run, f"confusion_{getattr(args, 'split', '')}.png")
        ],
        "plot": [getattr(args, "out", None)],
        "data download": [getattr(args, "dir", None) or "data"],
    }.get(command, [])
    return [os.path.normpath(os.path.join(cwd, p)) for p in outputs if p]


def _inside(path, folder):
    return path == folder or path.startswith(folder + os.sep)


def _allowed(path, outputs):
    """Whether `path` is in an output, or a folder made to hold one."""
    return any(
        _inside(path, out) or (_inside(out, path) and os.path.isdir(path)) for out in outputs
    )


def _stand_in_model(run, **_):
    """What the commands take from a run's model: its vocabulary and encoder settings."""
    settings = {**dataclasses.asdict(run.config), "vocab_size": len(run.vocabulary)}
    encoder = SimpleNamespace(get_config=lambda: settings)
    return SimpleNamespace(vocabulary=run.vocabulary, encoder=encoder)


class _StandInScorer:
    """`iter_scores`' scorer, reading every line and scoring none."""

    def __init__(self, *args):
        pass

    def scores(self, pieces):
        for piece in pieces:
            if piece is not None and piece[1]:
                yield (-2.0, 2)


@pytest.fixture(scope="module")
def recorders(places):
    """The work of each command replaced by a recorder that succeeds: `calls` lists
    the names of those called."""
    from awd_lstm import checkpoints, classification, cli, export, generation, runs, training
    from awd_lstm._files import atomic_path
    from awd_lstm.data import download
    from awd_lstm.data.synthetic import ClassSources, HiddenMarkovSource

    calls = []

    def recorder(name, result=None):
        def record(*args, **kwargs):
            calls.append(name)
            return result(*args, **kwargs) if callable(result) else result

        return record

    def png(path, *args, **kwargs):
        with atomic_path(path, suffix=".png") as tmp, open(tmp, "wb") as f:
            f.write(b"\x89PNG")  # the file a plot writes, in the place it writes it

    def no_network(url, offset, timeout):
        raise download.DownloadError(f"cannot reach {url} (no network in the tests)")

    report = {
        "accuracy": 0.5,
        "confusion": [[1, 0], [1, 0]],
        "labels": ["0", "1"],
        "split": "test",
    }
    # The built-in corpus and task, sampled smaller (by default 200,000 tokens and
    # 5,000 documents: seconds each); their sizes are checked before.
    write_corpus, write_task = HiddenMarkovSource.write_corpus, ClassSources.write_task

    def small_corpus(source, folder, train, valid, test, seed=None):
        return write_corpus(source, folder, min(train, 3000), min(valid, 300), min(test, 300), seed)

    def small_task(sources, folder, train, valid, test, seed=None, **options):
        return write_task(sources, folder, min(train, 40), min(valid, 12), min(test, 12), seed)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(HiddenMarkovSource, "write_corpus", small_corpus)
        patch.setattr(ClassSources, "write_task", small_task)
        patch.setattr(cli, "build_parser", lambda: PARSER)  # 20 ms a call
        patch.setattr(training, "train", recorder("train"))
        patch.setattr(training, "finetune", recorder("finetune"))
        patch.setattr(runs.Run, "load_model", recorder("load_model", _stand_in_model))
        patch.setattr(checkpoints, "load_trained_weights", recorder("load_weights", []))
        patch.setattr(checkpoints, "load_checkpoint_weights", recorder("load_weights", []))
        patch.setattr(runs, "remap_weights", recorder("remap_weights", []))
        patch.setattr(runs.Run, "evaluate", recorder("evaluate", {"loss": 1.0, "ppl": 2.7}))
        patch.setattr(export, "export_keras", recorder("export", lambda model, path: png(path)))
        patch.setattr(export, "export_savedmodel", recorder("export"))
        tokens = recorder("generate", lambda *_, **__: iter(["a", "b"]))
        patch.setattr(generation, "iter_generate", tokens)
        # The input is read as the real scoring reads it (its checks run); only the
        # model's work is replaced.
        patch.setattr(generation, "_LineScorer", recorder("score", _StandInScorer))
        patch.setattr(classification, "train_classifier", recorder("classify train"))
        patch.setattr(classification.ClassifierRun, "evaluate", recorder("classify", report))
        probabilities = recorder("predict", lambda run, docs, **_: (np.full(2, 0.5) for _ in docs))
        patch.setattr(classification.ClassifierRun, "iter_predict", probabilities)
        patch.setattr(classification, "plot_confusion", recorder("plot", png))
        patch.setattr("awd_lstm.run_logs.plot_runs", recorder("plot", png))
        patch.setattr(download, "_open", recorder("network", no_network))
        patch.delenv(download.MIRROR_VARIABLE, raising=False)
        yield calls


def check_command_line(argv, places, calls, root):
    """Runs `main(argv)` in a fresh folder, as a terminal would (stdout strict UTF-8,
    stderr with backslash escapes), and checks its ending and what it wrote."""
    where = _Places(root, places, argv)
    argv = where.argv
    before = where.listing()
    stdin = io.TextIOWrapper(io.BytesIO(b"a line\n\xff\n"), encoding="utf-8")
    stdout = io.TextIOWrapper(io.BytesIO(), encoding="utf-8", write_through=True)
    stderr = io.TextIOWrapper(
        io.BytesIO(), encoding="utf-8", errors="backslashreplace", write_through=True
    )
    del calls[:]
    saved = sys.stdin, sys.stdout, sys.stderr, tempfile.tempdir
    sys.stdin, sys.stdout, sys.stderr = stdin, stdout, stderr
    tempfile.tempdir = os.path.join(root, "tmp")
    crash = None
    try:
        with contextlib.chdir(where.cwd):
            code = main(argv)
    except SystemExit as e:  # argparse
        code = e.code
    except BaseException:
        crash = traceback.format_exc()
    finally:
        sys.stdin, sys.stdout, sys.stderr, tempfile.tempdir = saved
    err = stderr.buffer.getvalue().decode("utf-8")
    assert crash is None, f"{argv!r} raised:\n{crash}"
    # 1: a download that failed (the network stubbed out); no other run fails here.
    assert code in (0, 2) or (code == 1 and "network" in calls), (argv, code, err)
    if code:
        check_error_line(err)
    else:
        parsed = _parsed(argv)
        if parsed is not None and not getattr(parsed[0], "show_config", False):
            reached = REACHED.get(parsed[1])
            assert reached is None or reached in calls, (argv, parsed[1], calls)
    outputs = _outputs(argv, where.cwd)
    changed = before ^ where.listing()
    stray = sorted(p for p in changed if not _allowed(p, outputs))
    assert not stray, f"{argv!r} wrote outside {outputs}: {stray}"
    return code, err


@settings(
    deadline=None,
    max_examples=300,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(argv=ALL_COMMAND_LINES, latin_1=st.booleans())
def test_every_command_line_ends_in_success_or_one_sentence(
    argv, latin_1, places, recorders, tmp_path
):
    # Half the examples in a folder whose name is not UTF-8: every path given is not.
    with tempfile.TemporaryDirectory(dir=tmp_path, prefix=LATIN_1 if latin_1 else None) as root:
        check_command_line(argv, places, recorders, os.path.realpath(root))


# Command lines the fuzz found ending in a traceback, in status 1 or writing outside
# their output, and their kin: (arguments, whether the folder's name is Latin-1, the
# status they end with now).
FOUND = [
    (["finetune", "--run=--"], False, 2),  # argparse's value [] (CPython gh-109475)
    (["data", "download", "ptb", "--dir", "{TEXT}"], False, 2),  # was 1
    (["data", "download", "enwik8", "--dir="], False, 2),  # an empty path: refused
    (["finetune", "--run", " "], False, 2),  # a blank one: refused (was a blank message)
    (["plot", "{RUN}", "--out", "{MISSING}/x.png"], False, 2),  # was 1, after the work
    (["classify", "evaluate", "--run", "{CLASSIFIER}", "--confusion", "{MISSING}/x.png"], False, 2),
    # A traceback printing the name or text to stdout, after the work:
    (["export", "--run", "{RUN}", "--out", f"{{OUT}}{LATIN_1}.keras"], False, 0),
    (["generate", "--run", "{RUN}", "--prompt", LATIN_1], False, 0),
    (["train", "--out", LATIN_1, "--synthetic-tokens", "1000"], False, 0),
    # Refused (status 2) writing the paths into config.json:
    (["train", "--data", "{CORPUS}", "--out", "{OUT}"], True, 0),
    (["finetune", "--run", "{RUN}"], True, 0),
    (["finetune", "--run", "{RUN}", "--data", "{CORPUS}"], True, 0),
    (["classify", "train", "--data", "{LABELLED}", "--out", "{OUT}"], True, 0),
    (["classify", "train", "--encoder", "{RUN}", "--out", "{OUT}"], True, 0),
]


@pytest.mark.parametrize("argv, latin_1, status", FOUND)
def test_found_by_the_fuzz(argv, latin_1, status, places, recorders, tmp_path):
    root = tmp_path / (LATIN_1 if latin_1 else "plain")
    root.mkdir()
    code, err = check_command_line(argv, places, recorders, str(root))
    assert code == status, err


def test_the_backend_running_is_accepted_without_keras_backend(monkeypatch, capsys):
    monkeypatch.delenv("KERAS_BACKEND", raising=False)  # Keras' default: tensorflow
    assert main(["--backend", "tensorflow", "presets", "small"]) == 0
    assert main(["--backend", "jax", "presets"]) == 2
    err = capsys.readouterr().err
    assert err == (
        "awd-lstm presets: error: --backend jax must be chosen before Keras is imported; "
        "run the command in a fresh process\n"
    )
