"""The `awd-lstm` command: train, resume, fine-tune and evaluate language models.

A thin shell over the library: it parses arguments, picks the Keras backend before
Keras is imported, and calls the library (`awd_lstm.runs`, `awd_lstm.training`,
`awd_lstm.export`, `awd_lstm.generation`), which checks every setting. Errors in the
user's input end the command with one sentence on stderr, in the flags' names, and
exit status 2 (a model too large for this machine's memory among them); a diverged
run, a failing disk, a run out of memory or a run folder another process writes to
(`awd_lstm.runs.run_lock`: the commands that write a run folder lock it before they
write anything), with status 1.

A run folder is complete once its `config.json` exists (written last, atomically,
after the corpus and `vocab.json`); `metrics.jsonl`, the checkpoints, TensorBoard
events and the learning-curve PNG follow each epoch; `final.json` ends the run.
"""

import argparse
import contextlib
import dataclasses
import json
import math
import os
import shutil
import sys
import tempfile

from awd_lstm._environment import BACKENDS, UnsupportedKerasError, backend_variable_problem
from awd_lstm._lock import RunInUseError, check_not_in_use

PRESETS_HELP = "ptb, wikitext-2, wikitext-103, ptb-char, enwik8, small, synthetic"
VERBOSE_HELP = (
    "also show TensorFlow's start-up log lines (hidden unless TF_CPP_MIN_LOG_LEVEL is set)"
)
# The commands that run a model, and so load Keras and its backend.
MODEL_COMMANDS = ("train", "finetune", "evaluate", "generate", "score", "export", "classify")
# The classifier's settings that are flags, with their help.
CLASSIFIER_FLAG_HELP = {
    "epochs": "passes over the training documents (default 4 with --data, 12 without)",
    "batch_size": "documents per step",
    "lr": "peak learning rate of the slanted triangular schedule",
    "unfreeze": "gradual: the head first, one layer group more per epoch (the default with "
    "--encoder); all: every group from the start (the default without); none: the head only",
    "factor": "each layer group's rate is the next one's divided by this (default 2.6 with "
    "--encoder, 1 without)",
    "drop_mult": "the encoder's dropouts times this",
    "bptt": "tokens per BPT3C segment",
    "max_len": "the last tokens of a document the gradient reaches",
    "valid_fraction": "validation documents carved from training where the data has none",
    "test_fraction": "test documents carved from training where the data has none",
    "seed": "seed of the splits, batches and new weights",
    "train_documents": "the built-in task's training documents (at most 100,000)",
    "separation": "how far apart the built-in task's classes are, in (0, 1]",
}


def _classifier_config(**values):
    from awd_lstm.classification import ClassifierConfig

    return ClassifierConfig(**values)


class UsageError(Exception):
    """Bad input from the user; the message is one sentence."""


# What str.splitlines breaks at: a value echoed in an error must not break its line.
_LINE_BREAKS = {ord(c): repr(c)[1:-1] for c in "\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029"}


def _error_line(command, message):
    """The one line of a command's error: `awd-lstm COMMAND: error: MESSAGE`."""
    return f"{command}: error: {message}".translate(_LINE_BREAKS)


def _split_double_dash(word):
    return [word[:-3], "--"] if word.startswith("-") and word.endswith("=--") else [word]


class ArgumentParser(argparse.ArgumentParser):
    """argparse's parser whose errors are one line, like the commands' own
    (`awd-lstm train: error: argument --epochs: invalid int value: 'x'; ...`), exit
    status 2; `--help` shows the usage. Its subcommands' parsers are of this class too."""

    def parse_known_args(self, args=None, namespace=None):
        args = list(sys.argv[1:] if args is None else args)
        end = args.index("--") if "--" in args else len(args)
        # argparse before Python 3.12.3 reads the value of `--flag=--` as an empty
        # list (CPython gh-109475); it says `--flag --`, a flag without its value.
        args[:end] = [w for word in args[:end] for w in _split_double_dash(word)]
        namespace, extras = super().parse_known_args(args, namespace)
        # The innermost command parses first: words it does not know are its error.
        vars(namespace).setdefault("_command", self.prog)
        return namespace, extras

    def parse_args(self, args=None, namespace=None):
        namespace, extras = self.parse_known_args(args, namespace)
        command = vars(namespace).pop("_command")
        if extras:
            self._fail(command, f"unrecognized arguments: {' '.join(extras)}")
        return namespace

    def error(self, message):
        self._fail(self.prog, message)

    def _fail(self, command, message):
        self.exit(2, _error_line(command, f"{message}; see {command} --help") + "\n")


def _add_config_flags(parser, fields=None):
    from awd_lstm.config import OPTIMIZERS
    from awd_lstm.presets import config_fields

    group = parser.add_argument_group("model and training hyperparameters (override the preset)")
    for field in config_fields():  # --seed among them
        if fields is not None and field.name not in fields:
            continue
        flag = "--" + field.name.replace("_", "-")
        paper = field.metadata.get("paper")
        origin = "the trained run's" if fields is not None else "the preset's"
        help_text = f"{field.metadata['help']} (default: {origin})"
        if paper:
            help_text = f"[{paper}] {help_text}"
        if field.type is bool:
            group.add_argument(flag, type=_parse_bool, metavar="true|false", help=help_text)
        elif field.type is str:
            choices = field.metadata.get("choices", OPTIMIZERS)
            group.add_argument(flag, choices=choices, help=help_text)
        elif field.type is tuple:
            metavar = field.metadata.get("metavar", "EPOCH")
            group.add_argument(flag, type=int, nargs="*", metavar=metavar, help=help_text)
        else:
            metavar = "N" if field.type is int else "X"
            group.add_argument(flag, type=field.type, metavar=metavar, help=help_text)


def _add_model_source(parser):
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--run", metavar="RUN", help="run folder written by train")
    source.add_argument(
        "--model", metavar="FILE", help="a .keras file written by export (its vocabulary inside)"
    )


def _open_model(args, stateful):
    """The model and vocabulary of `--run` (its best weights) or `--model` (a
    `.keras` file); generation and scoring make the copy they need."""
    if args.run is not None:
        from awd_lstm.runs import Run

        run = Run.open(args.run)
        model = run.load_model(batch_size=1) if stateful else run.load_model(stateful=False)
        return model, run.vocabulary
    from awd_lstm._files import ModelFileError
    from awd_lstm.export import load_model

    try:
        model = load_model(args.model)
    except ModelFileError as e:
        raise UsageError(str(e)) from None
    except (OSError, ValueError) as e:
        raise UsageError(f"--model {args.model} cannot be loaded: {e}") from None
    if getattr(model, "vocabulary", None) is None:
        raise UsageError(
            f"--model {args.model} carries no vocabulary; export it with awd-lstm export"
        )
    return model, model.vocabulary


def _parse_bool(text):
    if text.lower() in ("1", "true", "yes"):
        return True
    if text.lower() in ("0", "false", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false; got {text!r}")


def add_vocabulary_flags(parser, description):
    """The flags of a vocabulary built from text that is not pre-tokenized (train's
    and classify train's), in a group of their own; returns the group."""
    vocabulary = parser.add_argument_group(
        "vocabulary, for text that is not pre-tokenized", description
    )
    vocabulary.add_argument(
        "--lowercase", action="store_true", default=None, help="lower-case the text first"
    )
    vocabulary.add_argument(
        "--split-punctuation",
        action="store_true",
        default=None,
        help='split punctuation from words, "Hello, world!" into "Hello , world !" (the '
        "Moses tokenizer: pip install 'awd-lstm[text]'); generate joins it back",
    )
    vocabulary.add_argument(
        "--min-count",
        type=int,
        metavar="N",
        help="training words seen fewer than N times read as <unk>",
    )
    vocabulary.add_argument(
        "--max-vocab",
        type=int,
        metavar="N",
        help="keep the N most frequent tokens, <eos> and <unk> included (ties: the word "
        "seen first)",
    )
    return vocabulary


def build_parser():
    from awd_lstm.distribute import STRATEGIES
    from awd_lstm.presets import DYNAMIC_EVAL, SCORE_SEGMENT_LENGTH
    from awd_lstm.runs import FINETUNE_FIELDS

    parser = ArgumentParser(
        prog="awd-lstm",
        description="AWD-LSTM language models (Merity et al. 2017) on Keras 3.",
    )
    from awd_lstm import __version__

    parser.add_argument("--version", action="version", version=f"awd-lstm {__version__}")
    backend_help = "Keras backend (default: the run's, else KERAS_BACKEND, else tensorflow)"
    parser.add_argument("--backend", choices=BACKENDS, help=backend_help)
    parser.add_argument("--verbose", action="store_true", help=VERBOSE_HELP)
    commands = parser.add_subparsers(dest="command", required=True)

    def add_common(subparser, progress=True):
        # SUPPRESS: an absent subcommand flag must not erase `awd-lstm --backend X`.
        subparser.add_argument(
            "--backend", choices=BACKENDS, default=argparse.SUPPRESS, help=backend_help
        )
        subparser.add_argument(
            "--verbose", action="store_true", default=argparse.SUPPRESS, help=VERBOSE_HELP
        )
        if progress:
            subparser.add_argument("--no-progress", action="store_true", help="no progress bar")

    def add_tensorboard(subparser):
        subparser.add_argument(
            "--tensorboard-every",
            type=int,
            default=50,
            metavar="N",
            help="training steps between two per-step TensorBoard points (default 50; "
            "0: per epoch only)",
        )

    def add_time_limit(subparser):
        subparser.add_argument(
            "--max-minutes",
            type=float,
            metavar="X",
            help="stop at the end of the epoch after which another one would pass this "
            "many minutes of training",
        )

    train = commands.add_parser("train", help="train a language model")
    train.add_argument(
        "--data",
        metavar="DIR",
        help="corpus folder (PTB, WikiText or train/valid/test.txt); "
        "default: the built-in synthetic corpus",
    )
    train.add_argument(
        "--preset",
        metavar="NAME",
        help=f"reference settings: {PRESETS_HELP} (default: synthetic without --data, ptb with it)",
    )
    train.add_argument(
        "--resume",
        metavar="RUN",
        help="continue the run in this folder from its last completed epoch, with its settings",
    )
    add_common(train)
    train.add_argument(
        "--level",
        choices=("word", "char"),
        help="tokens: words (default) or characters (default of ptb-char and enwik8)",
    )
    train.add_argument(
        "--synthetic-tokens",
        type=int,
        metavar="N",
        help="training tokens of the built-in corpus, 1000 to 10,000,000 (valid and test: "
        "a tenth each; default 200000)",
    )
    train.add_argument(
        "--out", metavar="DIR", default=None, help="run folder (default: runs/<preset>)"
    )
    vocabulary = add_vocabulary_flags(
        train,
        "default: the reference's, every whitespace-separated word of the three splits; "
        "any of these flags builds it from the training split only, and the words "
        "outside it read as <unk>",
    )
    vocabulary.add_argument(
        "--train-vocab",
        action="store_true",
        default=None,
        help="only build the vocabulary from the training split (implied by the others)",
    )
    train.add_argument(
        "--show-config",
        action="store_true",
        help="print the resolved settings (the preset with the flags over it) and exit",
    )
    add_time_limit(train)
    add_tensorboard(train)
    scale = train.add_argument_group("several devices or machines (data parallel)")
    scale.add_argument(
        "--distribute",
        choices=tuple(STRATEGIES),  # awd_lstm.distribute: no Keras import
        help="mirrored: all devices of this machine (tensorflow); multiworker: the "
        "machines of TF_CONFIG (tensorflow); data-parallel: all devices (jax)",
    )
    scale.add_argument(
        "--virtual-cpu-devices",
        type=int,
        metavar="N",
        help="split the CPU into N logical devices, at most 1024 (to try --distribute "
        "without GPUs)",
    )
    _add_config_flags(train)

    finetune = commands.add_parser(
        "finetune",
        help="fine-tune a trained run: averaged SGD from its best weights until the "
        "non-monotone rule fires",
    )
    finetune.add_argument("--run", required=True, metavar="RUN", help="run folder written by train")
    finetune.add_argument(
        "--out", metavar="DIR", help="run folder of the fine-tuning (default: RUN/finetune)"
    )
    finetune.add_argument(
        "--data",
        metavar="DIR",
        help="fine-tune on this corpus instead (the target domain's text, ULMFiT's "
        "second stage): a vocabulary of its own, known words keeping their trained rows",
    )
    finetune.add_argument(
        "--resume", action="store_true", help="continue an interrupted fine-tuning"
    )
    add_common(finetune)
    add_time_limit(finetune)
    add_tensorboard(finetune)
    _add_config_flags(finetune, FINETUNE_FIELDS)  # those a fine-tuning may change

    evaluate = commands.add_parser("evaluate", help="evaluate a trained run")
    evaluate.add_argument("--run", required=True, metavar="RUN", help="run folder written by train")
    evaluate.add_argument(
        "--split", choices=("valid", "test"), default="test", help="the split (default: test)"
    )
    pointer = evaluate.add_argument_group(
        "continuous cache pointer (defaults: the reference's values for the run's corpus; "
        "PTB's for other presets)"
    )
    pointer.add_argument(
        "--cache-pointer", action="store_true", help="mix a cache of recent states into p"
    )
    pointer.add_argument("--window", type=int, metavar="N", help="states kept (PTB 500)")
    pointer.add_argument("--theta", type=float, metavar="X", help="attention scale (PTB 1.0)")
    pointer.add_argument(
        "--lambda", dest="lambdah", type=float, metavar="X", help="cache weight (PTB 0.1)"
    )
    dynamic = evaluate.add_argument_group("dynamic evaluation (Krause et al. 2017)")
    dynamic.add_argument(
        "--dynamic-eval",
        action="store_true",
        help="adapt the weights to the text as it is evaluated (the run's files are not changed)",
    )
    dynamic.add_argument(
        "--learning-rate",
        type=float,
        metavar="X",
        help=f"step of the RMS-normalized gradient ({DYNAMIC_EVAL['learning_rate']:g})",
    )
    dynamic.add_argument(
        "--decay",
        type=float,
        metavar="X",
        help=f"pull back toward the trained weights ({DYNAMIC_EVAL['decay']:g})",
    )
    add_common(evaluate)

    generate = commands.add_parser("generate", help="sample text from a trained run")
    _add_model_source(generate)
    generate.add_argument(
        "--prompt", metavar="TEXT", default="", help="text to continue (default: a new line)"
    )
    generate.add_argument("--tokens", type=int, default=100, metavar="N", help="tokens to draw")
    generate.add_argument(
        "--temperature", type=float, default=1.0, metavar="X", help="> 0 (default 1)"
    )
    generate.add_argument(
        "--top-k", type=int, metavar="N", help="draw among the N most likely tokens only"
    )
    generate.add_argument(
        "--seed", type=int, default=0, metavar="N", help="seed of the draws (default 0)"
    )
    add_common(generate, progress=False)

    score = commands.add_parser(
        "score",
        help="log-probability of each line of a text: log_prob, tokens and perplexity, "
        "tab-separated, one line per input line",
    )
    _add_model_source(score)
    score.add_argument(
        "file", metavar="FILE", help="UTF-8 text, one sentence per line; - reads stdin"
    )
    score.add_argument(
        "--batch-size", type=int, default=32, metavar="N", help="sentences per batch"
    )
    score.add_argument(
        "--segment-length",
        type=int,
        default=SCORE_SEGMENT_LENGTH,
        metavar="N",
        help=f"a line of more tokens is scored alone, N at a time, the state carried "
        f"(default {SCORE_SEGMENT_LENGTH}); memory holds about --batch-size x N positions",
    )
    add_common(score, progress=False)
    # Accepted as before; each result is written as soon as it is scored.
    score.add_argument("--no-progress", action="store_true", help=argparse.SUPPRESS)

    export = commands.add_parser(
        "export", help="save a run's model as .keras or as a TensorFlow SavedModel"
    )
    export.add_argument("--run", required=True, metavar="RUN", help="run folder written by train")
    export.add_argument(
        "--format",
        choices=("keras", "savedmodel"),
        default="keras",
        help="keras: a .keras file, any backend (default); savedmodel: a TensorFlow "
        "SavedModel serving log-probabilities (tensorflow backend)",
    )
    export.add_argument(
        "--out",
        required=True,
        metavar="PATH",
        help="a .keras file, or a new folder for the SavedModel",
    )
    add_common(export, progress=False)

    classify = commands.add_parser(
        "classify", help="text classification on a language model's encoder (ULMFiT)"
    )
    classify_commands = classify.add_subparsers(dest="classify_command", required=True)
    fit = classify_commands.add_parser(
        "train",
        help="train a classifier: gradual unfreezing, discriminative and slanted "
        "triangular learning rates (default data: the built-in task)",
    )
    fit.add_argument(
        "--data",
        metavar="PATH",
        help="labelled documents: a CSV/TSV file or folder (train.tsv, valid.tsv, "
        "test.tsv), or class folders (train/<label>/*.txt); default: the built-in task",
    )
    fit.add_argument(
        "--encoder", metavar="RUN", help="a language-model run whose encoder to start from"
    )
    fit.add_argument(
        "--out", metavar="DIR", default=None, help="run folder (default: runs/classifier)"
    )
    fit.add_argument("--resume", action="store_true", help="continue the run in --out")
    fit.add_argument(
        "--label-column", metavar="NAME", default="label", help="tables' label column (label)"
    )
    fit.add_argument(
        "--text-column", metavar="NAME", default="text", help="tables' text column (text)"
    )
    add_vocabulary_flags(
        fit,
        "for a new encoder (an encoder's run reads the documents its own way); default: "
        "every whitespace-separated word of the training documents",
    )
    settings = fit.add_argument_group("classifier settings (defaults: ULMFiT's)")
    for field in dataclasses.fields(_classifier_config()):
        if field.name in CLASSIFIER_FLAG_HELP:
            flag = "--" + field.name.replace("_", "-")
            kind = field.type if isinstance(field.type, type) else float
            if field.name == "unfreeze":
                settings.add_argument(
                    flag, choices=("gradual", "all", "none"), help=CLASSIFIER_FLAG_HELP[field.name]
                )
                continue
            metavar = "N" if kind is int else "X"
            help_text = CLASSIFIER_FLAG_HELP[field.name]
            if field.default is not None:
                help_text += f" (default {field.default:g})"
            settings.add_argument(flag, type=kind, metavar=metavar, help=help_text)
    add_common(fit)
    add_tensorboard(fit)
    assess = classify_commands.add_parser(
        "evaluate", help="accuracy, per-class precision/recall/F1 and a confusion-matrix PNG"
    )
    assess.add_argument("--run", required=True, metavar="RUN", help="classifier run folder")
    assess.add_argument(
        "--split", choices=("valid", "test"), default="test", help="the split (default: test)"
    )
    assess.add_argument(
        "--confusion",
        metavar="FILE",
        help="the confusion matrix's PNG (default: RUN/confusion_SPLIT.png)",
    )
    add_common(assess)
    guess = classify_commands.add_parser(
        "predict", help="the label and class probabilities of each document (one per line)"
    )
    guess.add_argument("--run", required=True, metavar="RUN", help="classifier run folder")
    guess.add_argument(
        "file", metavar="FILE", help="UTF-8 text, one document per line; - reads stdin"
    )
    guess.add_argument(
        "--format",
        choices=("tsv", "jsonl"),
        default="tsv",
        help="tsv: label and probabilities, tab-separated (default); jsonl: one JSON object",
    )
    add_common(guess)

    plot = commands.add_parser(
        "plot", help="draw several runs' learning curves in one PNG, to compare them"
    )
    plot.add_argument("runs", nargs="+", metavar="RUN", help="run folders")
    plot.add_argument(
        "--out", metavar="FILE", default="runs.png", help="the PNG (default: runs.png)"
    )
    plot.add_argument(
        "--split",
        choices=("valid", "train"),
        default="valid",
        help="whose perplexity (default: valid)",
    )
    plot.add_argument("--title", metavar="TEXT", default="", help="the figure's title")

    presets = commands.add_parser(
        "presets", help="list the presets, or print one's settings (every hyperparameter)"
    )
    presets.add_argument("name", nargs="?", metavar="NAME", help=f"one of {PRESETS_HELP}")

    data = commands.add_parser("data", help="corpus tools")
    data_commands = data.add_subparsers(dest="data_command", required=True)
    stats = data_commands.add_parser("stats", help="token and vocabulary counts of a corpus")
    stats.add_argument("directory", metavar="DIR", help="corpus folder")
    stats.add_argument(
        "--level", choices=("word", "char"), default="word", help="tokens (default: word)"
    )
    from awd_lstm.data.download import MIRROR_VARIABLE, SOURCES

    download = data_commands.add_parser(
        "download",
        help="download a standard corpus, check its checksum and lay it out for train --data",
    )
    download.add_argument("name", choices=tuple(SOURCES), help="the corpus")
    download.add_argument("--dir", metavar="DIR", help="the corpus folder (default: data/NAME)")
    download.add_argument(
        "--url",
        metavar="URL",
        help="download from here instead: the file itself, or a folder ending in / that "
        f"holds the corpus's files under their usual names (default: ${MIRROR_VARIABLE} "
        "as such a folder, else the corpus's home); the published checksum still applies",
    )
    download.add_argument(
        "--sha256",
        nargs="+",
        metavar="HEX",
        help="expect these checksums instead of the published ones, one per file (ptb: "
        "train, valid, test), for files meant to differ",
    )
    download.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


# The arguments that name files and folders, as the command line writes them.
PATH_ARGUMENTS = {
    "run": "--run",
    "out": "--out",
    "data": "--data",
    "model": "--model",
    "resume": "--resume",
    "encoder": "--encoder",
    "confusion": "--confusion",
    "dir": "--dir",
    "file": "FILE",
    "directory": "DIR",
    "runs": "RUN",
}


def _check_paths_not_empty(args):
    """An empty or blank path (spaces only: a slip, not a name) is refused, naming its
    argument."""
    for name, flag in PATH_ARGUMENTS.items():
        value = getattr(args, name, None)
        for path in value if isinstance(value, list) else [value]:
            if isinstance(path, str) and not path.strip():
                raise UsageError(f"{flag} is {'blank' if path else 'empty'}; give a path")


def _check_folders_free(args):
    """Refuses at once, before Keras is imported, a command whose run folders (those
    it writes and the run it fine-tunes or takes the encoder of, where the command
    line names them) another process writes to; the commands take the lock itself
    before they write."""
    folders = []
    if args.command == "train" and not args.show_config:
        folders = [args.resume or args.out]
    elif args.command == "finetune":
        folders = [args.run, args.out or os.path.join(args.run, "finetune")]
    elif args.command == "classify" and args.classify_command == "train":
        folders = [args.out or os.path.join("runs", "classifier"), args.encoder]
    for folder in folders:
        if folder is not None:
            check_not_in_use(folder)


def _select_backend(args):
    backend = args.backend
    run_dir = args.resume if args.command == "train" else getattr(args, "run", None)
    if backend is None and run_dir:
        # A run continues, and evaluates identically, on the backend that trained it.
        from awd_lstm.runs import saved_backend

        backend = saved_backend(run_dir)
        backend = backend if backend in BACKENDS else None
    if backend:
        loaded = sys.modules.get("keras")  # KERAS_BACKEND may not say which it runs
        if loaded is not None and loaded.backend.backend() != backend:
            raise UsageError(
                f"--backend {backend} must be chosen before Keras is imported; "
                "run the command in a fresh process"
            )
        os.environ["KERAS_BACKEND"] = backend
    elif args.command in MODEL_COMMANDS and backend_variable_problem() is not None:
        raise UsageError(f"{backend_variable_problem()} (or choose one with --backend)")
    quiet = not getattr(args, "verbose", False) and "TF_CPP_MIN_LOG_LEVEL" not in os.environ
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if args.command in MODEL_COMMANDS and "keras" not in sys.modules:
        from awd_lstm._quiet import startup_lines_hidden

        with startup_lines_hidden() if quiet else contextlib.nullcontext():
            import keras  # noqa: F401 (with TensorFlow, if it is the backend)
    if args.command in MODEL_COMMANDS:
        # Keras' version and backend checked before any file is read or written.
        from awd_lstm import backend  # noqa: F401


@contextlib.contextmanager
def _flags_named(**flags):
    """Reports a library check's `ValueError` ("`name` must ...; Received: name=v")
    as a usage error in the flags' names ("--flag must ...; got v")."""
    try:
        yield
    except ValueError as e:
        message = str(e)
        for name, flag in flags.items():
            message = message.replace(f"`{name}`", flag).replace(f"Received: {name}=", "got ")
        raise UsageError(message) from None


def _flags_given(args, names):
    return ["--" + n.replace("_", "-") for n in names if getattr(args, n, None) is not None]


@contextlib.contextmanager
def _warnings_shown(command):
    """Shows the user's warnings of the block (words outside the vocabulary...) on
    stderr as they come, one line each; libraries' notices are dropped."""
    import warnings

    def show(message, category, *_, **__):
        if issubclass(category, UserWarning):
            print(f"awd-lstm {command}: warning: {message}", file=sys.stderr, flush=True)

    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.showwarning = show
        yield


def _progress(args):
    return not args.no_progress and sys.stdout.isatty()


def command_generate(args):
    from awd_lstm.generation import Detokenizer, check_generation_settings, iter_generate

    settings = dict(
        num_tokens=args.tokens, temperature=args.temperature, top_k=args.top_k, seed=args.seed
    )
    flags = dict(num_tokens="--tokens", temperature="--temperature", top_k="--top-k")
    with _flags_named(**flags, seed="--seed"):
        check_generation_settings(**settings)  # before the model is loaded
    model, vocabulary = _open_model(args, stateful=True)
    with _warnings_shown("generate"):
        tokens = iter_generate(model, vocabulary, args.prompt, **settings)
    # Written as it is drawn: a long generation shows its text, and Ctrl-C keeps it.
    text, out = Detokenizer(vocabulary), sys.stdout
    if args.prompt.strip():
        separator = "" if vocabulary.level == "char" else " "
        out.write(args.prompt.rstrip("\n") + separator)
    try:
        for token in tokens:
            out.write(text.add(token))
            out.flush()
    except KeyboardInterrupt:
        out.write(text.finish() + "\n")  # the text so far, its last line ended
        out.flush()
        raise
    out.write(text.finish() + "\n")
    return 0


def command_score(args):
    from awd_lstm._validation import check_positive_int
    from awd_lstm.generation import iter_scores

    with _flags_named(batch_size="--batch-size", segment_length="--segment-length"):
        check_positive_int("batch_size", args.batch_size)
        check_positive_int("segment_length", args.segment_length)
    with _input_file(args.file) as text:
        model, vocabulary = _open_model(args, stateful=False)
        options = dict(batch_size=args.batch_size, segment_length=args.segment_length)
        with _warnings_shown("score"):
            # Each line's result as soon as it is scored: nothing grows with the input.
            for log_prob, n in iter_scores(model, vocabulary, text, **options):
                print(f"{log_prob:.6f}\t{n}\t{math.exp(-log_prob / n):.6f}", flush=True)
    return 0


@contextlib.contextmanager
def _input_file(path):
    """The binary file `path` (`-`: standard input), open while the block reads it."""
    if path == "-":
        yield sys.stdin.buffer
        return
    try:
        file = open(path, "rb")
    except OSError as e:
        raise UsageError(f"{path} cannot be read: {e.strerror}") from None
    with file:
        yield file


def command_export(args):
    from awd_lstm.export import export_run
    from awd_lstm.runs import Run

    run = Run.open(args.run)
    with _flags_named(out="--out", format="--format"):
        export_run(run, args.out, args.format)
    print(f"wrote {args.out} (the model and its vocabulary)")
    return 0


def command_train(args):
    from awd_lstm.presets import PRESET_LEVELS, config_fields, resolve_config
    from awd_lstm.runs import create_training_run, resume_run

    chief = args.distribution is None or args.distribution.is_chief
    if args.resume and args.show_config:
        from awd_lstm.presets import describe
        from awd_lstm.runs import Run

        run = Run.open(args.resume)
        shown = {"preset": run.info.get("preset"), **describe(run.config, run.vocabulary.level)}
        if not run.tokenization.is_default:
            shown["tokenization"] = run.tokenization.to_json()
        print(json.dumps(shown, indent=1))
        return 0
    if args.resume:
        fixed = ["data", "preset", "level", "synthetic_tokens", "out", "max_minutes"]
        fixed += TOKENIZATION_FLAGS
        given = _flags_given(args, fixed + [f.name for f in config_fields()])
        if given:
            raise UsageError(
                f"--resume continues a run with its own settings; drop {', '.join(given)}"
            )
        with _writing("train", args.resume) if chief else contextlib.nullcontext():
            run, corpus = resume_run(args.resume, "train", writes=chief)
            _check_batch(args, run.config)
            print(f"awd-lstm train: resuming {args.resume}", flush=True)
            return _train(args, run, corpus, resume=True)
    try:
        config, preset = resolve_config(args, synthetic=args.data is None)
    except ValueError as e:
        raise UsageError(str(e)) from None
    level = args.level or PRESET_LEVELS.get(preset, "word")
    tokenization = _tokenization(args)
    if args.show_config:
        from awd_lstm.presets import describe

        shown = {"preset": preset, **describe(config, level)}
        if tokenization is not None:
            shown["tokenization"] = tokenization.to_json()
        print(json.dumps(shown, indent=1))
        return 0
    _check_batch(args, config)
    options = dict(data=args.data, level=level, preset=preset, tokenization=tokenization)
    options.update(synthetic_tokens=args.synthetic_tokens, max_minutes=args.max_minutes)
    options.update(replicas=_replicas(args))
    flags = dict(synthetic_tokens="--synthetic-tokens", max_minutes="--max-minutes", data="--data")
    if not chief:
        # A multi-worker run's other workers prepare and train in a folder of their
        # own; only the chief writes to the run folder.
        worker_dir = tempfile.mkdtemp(prefix="awd-lstm-worker-")
        try:
            with _flags_named(**flags):
                run, corpus, _ = create_training_run(worker_dir, config, **options)
            print(f"awd-lstm train: {args.distribution.describe()}", flush=True)
            return _train(args, run, corpus, resume=False)
        finally:
            shutil.rmtree(worker_dir, ignore_errors=True)
    run_dir = args.out or os.path.join("runs", preset)
    with _writing("train", run_dir, make=True):
        with _flags_named(**flags):
            run, corpus, description = create_training_run(run_dir, config, **options)
        where = f"; {args.distribution.describe()}" if args.distribution else ""
        print(
            f"awd-lstm train: {description}; {len(corpus.vocab):,} {level} types; "
            f"backend {run.info['backend']}{where}; run folder {run_dir}",
            flush=True,
        )
        return _train(args, run, corpus, resume=False)


TOKENIZATION_FLAGS = ["lowercase", "split_punctuation", "min_count", "max_vocab", "train_vocab"]


def _tokenization(args):
    """The `Tokenization` of train's vocabulary flags; None without any of them."""
    from awd_lstm.data import Tokenization

    if not _flags_given(args, TOKENIZATION_FLAGS):  # (classify train has no --train-vocab)
        return None
    settings = dict(lowercase=bool(args.lowercase), split_punctuation=bool(args.split_punctuation))
    for name in ("min_count", "max_vocab"):
        if getattr(args, name) is not None:
            settings[name] = getattr(args, name)
    with _flags_named(min_count="--min-count", max_vocab="--max-vocab"):
        return Tokenization(**settings, train_only=True)


def _writing(command, folder, make=False):
    """The lock of the run folder `folder` that `command` writes to, taken before it
    writes anything (`awd_lstm.runs.run_lock`; `make`: a new folder)."""
    from awd_lstm.runs import run_lock

    def log(line):
        print(f"awd-lstm {command}: {line}", flush=True)

    return run_lock(folder, make=make, log=log)


def _check_batch(args, config):
    if args.distribution is not None:
        args.distribution.check_batch(config.batch_size)


def _replicas(args):
    """The devices the run's batch is split over (its memory is checked per device)."""
    return 1 if args.distribution is None else args.distribution.replicas


def _train(args, run, corpus, resume, weights=None):
    """Trains (or fine-tunes) the run; the library tests it and writes final.json."""
    from awd_lstm import training

    options = dict(progress=not args.no_progress, max_seconds=run.max_seconds, resume=resume)
    options["tensorboard_every"] = args.tensorboard_every
    if run.stage == "finetune":
        training.finetune(run.config, corpus, run.path, weights, **options)
        return 0
    training.train(run.config, corpus, run.path, distribution=args.distribution, **options)
    if not (args.distribution is None or args.distribution.is_chief):
        print("training done; the chief tests the model and writes the run", flush=True)
    return 0


def command_finetune(args):
    from awd_lstm.runs import FINETUNE_FIELDS, Run, open_finetune

    overrides = {name: getattr(args, name) for name in FINETUNE_FIELDS}
    given = _flags_given(args, [*FINETUNE_FIELDS, "max_minutes", "data"])
    if args.resume and given:
        raise UsageError(
            f"--resume continues a fine-tuning with its own settings; drop {', '.join(given)}"
        )
    out = args.out or os.path.join(args.run, "finetune")
    check_not_in_use(args.run)  # before RUN/finetune is made in it
    if not args.resume:
        Run.open(args.run)  # a folder that is not a run: nothing is made for its fine-tuning
    with _writing("finetune", out, make=not args.resume):
        with _flags_named(max_minutes="--max-minutes"):
            run, corpus, weights = open_finetune(
                args.run,
                out,
                args.resume,
                args.max_minutes,
                data=args.data,
                **overrides,
            )
        print(f"awd-lstm finetune: {args.run} -> {run.path}", flush=True)
        return _train(args, run, corpus, resume=args.resume, weights=weights)


def command_evaluate(args):
    from awd_lstm.runs import Run

    run = Run.open(args.run)
    pointer = _method_settings(args, "cache_pointer", "window", "theta", "lambdah")
    dynamic = _method_settings(args, "dynamic_eval", "learning_rate", "decay")
    if pointer is not None and dynamic is not None:
        raise UsageError("--cache-pointer and --dynamic-eval cannot be combined")
    flags = dict(window="--window", theta="--theta", lambdah="--lambda", decay="--decay")
    with _flags_named(**flags, learning_rate="--learning-rate"):
        pointer, dynamic = run.evaluation_settings(pointer, dynamic)  # before the work
    result = run.evaluate(
        args.split,
        cache_pointer=pointer,
        dynamic_eval=dynamic,
        progress=_progress(args),
        log=lambda line: print(line, file=sys.stderr, flush=True),
    )
    print(json.dumps(result))
    return 0


def _method_settings(args, method, *names):
    """The settings `names` of `--cache-pointer` or `--dynamic-eval` given on the
    command line (None without the method's flag; its settings then must not be
    given)."""
    settings = {name: getattr(args, name) for name in names}
    if getattr(args, method):
        return settings
    for flag in _flags_given(args, names):
        raise UsageError(f"{flag.replace('lambdah', 'lambda')} needs --{method.replace('_', '-')}")
    return None


def command_presets(args):
    from awd_lstm.presets import PRESET_LEVELS, PRESETS, describe, preset

    if args.name is None:
        for name, config in PRESETS.items():
            level = PRESET_LEVELS.get(name, "word")
            print(
                f"{name}: {level} level, E={config.embedding_size}, H={config.hidden_size}, "
                f"{config.num_layers} {config.cell} layers, {config.optimizer} lr {config.lr:g}, "
                f"batch {config.batch_size}, bptt {config.bptt}, {config.epochs} epochs"
            )
        return 0
    try:
        config = preset(args.name)
    except ValueError as e:
        raise UsageError(str(e)) from None
    print(json.dumps(describe(config, PRESET_LEVELS.get(args.name, "word")), indent=1))
    return 0


def command_data(args):
    if args.data_command == "download":
        return command_data_download(args)
    from awd_lstm.data import find_layout, load_corpus

    layout, _ = find_layout(args.directory)
    stats = load_corpus(args.directory, level=args.level).stats()
    stats["layout"] = layout
    print(json.dumps(stats, indent=1))
    return 0


def command_data_download(args):
    from awd_lstm.data import download

    with _flags_named(url="--url", sha256="--sha256"):
        download.resolve_files(args.name, args.url, args.sha256)

    def log(line):
        print(f"awd-lstm data: {line}", flush=True)

    try:
        result = download.download_corpus(
            args.name, args.dir or None, args.url, args.sha256, progress=_progress(args), log=log
        )
    except download.DownloadError as e:
        # The network's or the server's fault, not the command line's.
        print(_error_line("awd-lstm data", e), file=sys.stderr)
        return 1
    files = ", ".join(os.path.basename(p) for p in result.paths)
    done = "downloaded into" if result.downloaded else "is already in"
    print(f"awd-lstm data: {args.name} {done} {result.directory} ({files})")
    print(f"next: {result.train_command}")
    return 0


def command_plot(args):
    from awd_lstm.run_logs import plot_runs
    from awd_lstm.runs import Run

    _check_picture("--out", args.out)
    runs = []
    for path in args.runs:
        history = Run.open(path).history
        if not history:
            raise UsageError(f"the run in {path} has no completed epoch yet")
        runs.append((os.path.basename(os.path.normpath(path)), history))
    labels = [label for label, _ in runs]
    if len(set(labels)) < len(labels):  # runs/a/ptb and runs/b/ptb: the whole paths
        runs = [(os.path.normpath(path), history) for path, (_, history) in zip(args.runs, runs)]
    metric = "val_ppl" if args.split == "valid" else "train_ppl"
    plot_runs(args.out, runs, metric, args.title)
    print(f"wrote {args.out}")
    return 0


def _check_picture(flag, path):
    """Raises `UsageError` unless `path` can name the PNG a command writes: ending in
    .png, not a folder, in a folder that exists (checked before the work)."""
    if not path.endswith(".png"):
        raise UsageError(f"{flag} must end with .png; got {path}")
    if os.path.isdir(path):
        raise UsageError(f"{flag} {path} is a folder; give the PNG's file name")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise UsageError(f"the folder of {flag}, {folder}, does not exist")


def command_classify(args):
    from awd_lstm import classification

    handler = {
        "train": _classify_train,
        "evaluate": _classify_evaluate,
        "predict": _classify_predict,
    }[args.classify_command]
    try:
        return handler(args, classification)
    except classification.ClassifierRunError as e:
        raise UsageError(str(e)) from None


def _classify_train(args, classification):
    out = args.out or os.path.join("runs", "classifier")
    if args.resume:
        given = _flags_given(args, ["data", "encoder", *CLASSIFIER_FLAG_HELP, *TOKENIZATION_FLAGS])
        if given:
            raise UsageError(
                f"--resume continues a run with its own settings; drop {', '.join(given)}"
            )
    with _writing("classify", out, make=not args.resume):
        return _classify_train_locked(args, classification, out)


def _classify_train_locked(args, classification, out):
    if args.resume:
        run = classification.ClassifierRun.open(out)
        if run.final is not None:
            raise UsageError(f"the run in {out} has finished; nothing to resume")
    else:
        values = {k: getattr(args, k) for k in CLASSIFIER_FLAG_HELP if getattr(args, k) is not None}
        flags = {k: "--" + k.replace("_", "-") for k in CLASSIFIER_FLAG_HELP}
        with _flags_named(**flags):
            config = _classifier_config(**values)
            tokenization = _tokenization(args)
            if tokenization is not None and args.encoder is not None:
                given = ", ".join(_flags_given(args, TOKENIZATION_FLAGS))
                raise UsageError(
                    f"the encoder's run reads the documents with its own vocabulary; drop "
                    f"{given} (they build a new encoder's)"
                )
            run = classification.create_classifier_run(
                out,
                config,
                args.data,
                args.encoder,
                args.label_column,
                args.text_column,
                tokenization=tokenization,
            )
        source = args.data or "the built-in task"
        print(
            f"awd-lstm classify train: {source}; {len(run.labels)} classes; "
            f"encoder {args.encoder or 'new'}; run folder {out}",
            flush=True,
        )
    classification.train_classifier(
        run,
        progress=not args.no_progress,
        resume=args.resume,
        tensorboard_every=args.tensorboard_every,
    )
    return 0


def _classify_evaluate(args, classification):
    run = classification.ClassifierRun.open(args.run)
    picture = args.confusion or os.path.join(args.run, f"confusion_{args.split}.png")
    _check_picture("--confusion", picture)
    report = run.evaluate(args.split, progress=_progress(args))
    classification.plot_confusion(picture, report)
    print(json.dumps({**report, "confusion_png": picture}))
    return 0


def _classify_predict(args, classification):

    from awd_lstm.data.corpus import read_lines

    run = classification.ClassifierRun.open(args.run)
    labels = list(run.labels)
    with _input_file(args.file) as file:
        documents = read_lines(file, "standard input" if args.file == "-" else args.file)
        # Each window's results as soon as they are known: nothing grows with the input
        # (the lines printed are the progress; no bar among them).
        for p in run.iter_predict(documents):
            label = labels[int(p.argmax())]
            if args.format == "jsonl":
                probabilities = dict(zip(labels, map(float, p)))
                print(json.dumps({"label": label, "probabilities": probabilities}), flush=True)
            else:
                print("\t".join([label, *(f"{x:.6f}" for x in p)]), flush=True)
    return 0


COMMANDS = {
    "train": command_train,
    "finetune": command_finetune,
    "evaluate": command_evaluate,
    "generate": command_generate,
    "score": command_score,
    "export": command_export,
    "presets": command_presets,
    "plot": command_plot,
    "classify": command_classify,
    "data": command_data,
}


def _escape_unprintable():
    # A name given in another encoding than the system's (Python reads its bytes as
    # lone surrogates) is printed with backslash escapes instead of failing the
    # command after its work: stdout's strict UTF-8 cannot encode it.
    for stream in (sys.stdout, sys.stderr):
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")


def main(argv=None):
    _escape_unprintable()
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        _check_paths_not_empty(args)
        _check_folders_free(args)
        _select_backend(args)
        from awd_lstm import distribute

        try:  # first thing, before the backend starts (virtual devices)
            args.distribution = distribute.setup(
                getattr(args, "distribute", None), getattr(args, "virtual_cpu_devices", None)
            )
        except distribute.DistributionError as e:
            raise UsageError(str(e)) from None
        from awd_lstm._files import CheckpointError
        from awd_lstm.data import CorpusError
        from awd_lstm.resources import ResourceError
        from awd_lstm.runs import RunError

        if getattr(args, "tensorboard_every", None) is not None:  # before anything is written
            from awd_lstm._validation import check_non_negative_int

            with _flags_named(tensorboard_every="--tensorboard-every"):
                check_non_negative_int("tensorboard_every", args.tensorboard_every)
        try:
            code = COMMANDS[args.command](args)
            sys.stdout.flush()  # a reader that went away is seen here (below), not at exit
            return code
        except (
            CorpusError,
            CheckpointError,
            distribute.DistributionError,
            RunError,
            ResourceError,  # a model too large for this machine: its settings must change
        ) as e:
            raise UsageError(str(e)) from None
    except BrokenPipeError:
        # The reader of the output went away (`| head`): stop quietly, with the status
        # of a program that SIGPIPE ends (128 + 13), as other command-line tools do.
        _discard_output()
        return 141
    except UsageError as e:
        print(_error_line(f"awd-lstm {args.command}", e), file=sys.stderr)
        return 2
    except UnsupportedKerasError as e:
        # The machine's Keras, not the command line.
        print(_error_line(f"awd-lstm {args.command}", e), file=sys.stderr)
        return 1
    except (FloatingPointError, RunInUseError) as e:
        # A run that diverged, or a run folder another process writes to (nothing was
        # changed): failures of the run, not of the command line.
        print(_error_line(f"awd-lstm {args.command}", e), file=sys.stderr)
        return 1
    except OSError as e:
        # The machine's fault, not the input's: a full disk, a folder that became
        # unwritable (the files being replaced are left as they were).
        from awd_lstm._files import WriteError

        reason = str(e) if isinstance(e, WriteError) else f"{e.strerror or e} ({e.filename})"
        print(_error_line(f"awd-lstm {args.command}", reason), file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"awd-lstm {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as e:
        # Out of memory, from Python or the backend: the machine's limit, not the
        # input's fault (a training run's own sentence says what it kept).
        from awd_lstm.resources import RanOutOfMemory, out_of_memory_reason

        reason = str(e) if isinstance(e, RanOutOfMemory) else out_of_memory_reason(e)
        if reason is None:
            raise
        print(_error_line(f"awd-lstm {args.command}", reason), file=sys.stderr)
        return 1


def _discard_output():
    """Standard output goes nowhere from now on: what is still buffered for a reader
    that went away would otherwise fail again when Python flushes it at exit."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (AttributeError, OSError, ValueError):  # not a file (a test's stand-in)
        pass


if __name__ == "__main__":
    sys.exit(main())
