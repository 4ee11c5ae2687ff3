"""The `awd-lstm` command: train, resume, fine-tune and evaluate language models.

A thin shell over the library: it parses arguments, picks the Keras backend before
Keras is imported, and calls the library (`awd_lstm.runs`, `awd_lstm.training`,
`awd_lstm.export`, `awd_lstm.generation`), which checks every setting. Errors in the
user's input end the command with one sentence on stderr, in the flags' names, and
exit status 2; a diverged run or a failing disk, with status 1.

A run folder is complete once its `config.json` exists (written last, atomically,
after the corpus and `vocab.json`); `metrics.jsonl`, the checkpoints, TensorBoard
events and the learning-curve PNG follow each epoch; `final.json` ends the run.
"""

import argparse
import contextlib
import json
import math
import os
import shutil
import sys
import tempfile

PRESETS_HELP = "ptb, wikitext-2, wikitext-103, ptb-char, enwik8, small, synthetic"
BACKENDS = ("tensorflow", "jax", "torch")


class UsageError(Exception):
    """Bad input from the user; the message is one sentence."""


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
            group.add_argument(flag, choices=OPTIMIZERS, help=help_text)
        elif field.type is tuple:
            metavar = field.metadata.get("metavar", "EPOCH")
            group.add_argument(flag, type=int, nargs="*", metavar=metavar, help=help_text)
        else:
            metavar = "N" if field.type is int else "X"
            group.add_argument(flag, type=field.type, metavar=metavar, help=help_text)


def _parse_bool(text):
    if text.lower() in ("1", "true", "yes"):
        return True
    if text.lower() in ("0", "false", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false; got {text!r}")


def build_parser():
    from awd_lstm.distribute import STRATEGIES
    from awd_lstm.presets import DYNAMIC_EVAL
    from awd_lstm.runs import FINETUNE_FIELDS

    parser = argparse.ArgumentParser(
        prog="awd-lstm",
        description="AWD-LSTM language models (Merity et al. 2017) on Keras 3.",
    )
    from awd_lstm import __version__

    parser.add_argument("--version", action="version", version=f"awd-lstm {__version__}")
    backend_help = "Keras backend (default: the run's, else KERAS_BACKEND, else tensorflow)"
    parser.add_argument("--backend", choices=BACKENDS, help=backend_help)
    commands = parser.add_subparsers(dest="command", required=True)

    def add_common(subparser, progress=True):
        # SUPPRESS: an absent subcommand flag must not erase `awd-lstm --backend X`.
        subparser.add_argument(
            "--backend", choices=BACKENDS, default=argparse.SUPPRESS, help=backend_help
        )
        if progress:
            subparser.add_argument("--no-progress", action="store_true", help="no progress bar")

    def add_time_limit(subparser):
        subparser.add_argument(
            "--max-minutes",
            type=float,
            help="stop at the end of the epoch after which another one would pass this "
            "many minutes of training",
        )

    train = commands.add_parser("train", help="train a language model")
    train.add_argument(
        "--data",
        help="corpus folder (PTB, WikiText or train/valid/test.txt); "
        "default: the built-in synthetic corpus",
    )
    train.add_argument(
        "--preset",
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
        help="training tokens of the built-in corpus (valid and test: a "
        "tenth each; default 200000)",
    )
    train.add_argument("--out", default=None, help="run folder (default: runs/<preset>)")
    train.add_argument(
        "--show-config",
        action="store_true",
        help="print the resolved settings (the preset with the flags over it) and exit",
    )
    add_time_limit(train)
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
        help="split the CPU into N logical devices (to try --distribute without GPUs)",
    )
    _add_config_flags(train)

    finetune = commands.add_parser(
        "finetune",
        help="fine-tune a trained run: averaged SGD from its best weights until the "
        "non-monotone rule fires",
    )
    finetune.add_argument("--run", required=True, help="run folder written by train")
    finetune.add_argument("--out", help="run folder of the fine-tuning (default: RUN/finetune)")
    finetune.add_argument(
        "--resume", action="store_true", help="continue an interrupted fine-tuning"
    )
    add_common(finetune)
    add_time_limit(finetune)
    _add_config_flags(finetune, FINETUNE_FIELDS)  # those a fine-tuning may change

    evaluate = commands.add_parser("evaluate", help="evaluate a trained run")
    evaluate.add_argument("--run", required=True, help="run folder written by train")
    evaluate.add_argument("--split", choices=("valid", "test"), default="test")
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
    generate.add_argument("--run", required=True, help="run folder written by train")
    generate.add_argument("--prompt", default="", help="text to continue (default: a new line)")
    generate.add_argument("--tokens", type=int, default=100, metavar="N", help="tokens to draw")
    generate.add_argument(
        "--temperature", type=float, default=1.0, metavar="T", help="> 0 (default 1)"
    )
    generate.add_argument(
        "--top-k", type=int, metavar="K", help="draw among the K most likely tokens only"
    )
    generate.add_argument("--seed", type=int, default=0, help="seed of the draws (default 0)")
    add_common(generate, progress=False)

    score = commands.add_parser(
        "score",
        help="log-probability of each line of a text: log_prob, tokens and perplexity, "
        "tab-separated, one line per input line",
    )
    score.add_argument("--run", required=True, help="run folder written by train")
    score.add_argument("file", help="UTF-8 text, one sentence per line; - reads stdin")
    score.add_argument(
        "--batch-size", type=int, default=32, metavar="N", help="sentences per batch"
    )
    add_common(score)

    export = commands.add_parser(
        "export", help="save a run's model as .keras or as a TensorFlow SavedModel"
    )
    export.add_argument("--run", required=True, help="run folder written by train")
    export.add_argument("--format", choices=("keras", "savedmodel"), default="keras")
    export.add_argument(
        "--out", required=True, help="a .keras file, or a new folder for the SavedModel"
    )
    add_common(export, progress=False)

    presets = commands.add_parser(
        "presets", help="list the presets, or print one's settings (every hyperparameter)"
    )
    presets.add_argument("name", nargs="?", help=f"one of {PRESETS_HELP}")

    data = commands.add_parser("data", help="corpus tools")
    data_commands = data.add_subparsers(dest="data_command", required=True)
    stats = data_commands.add_parser("stats", help="token and vocabulary counts of a corpus")
    stats.add_argument("directory")
    stats.add_argument("--level", choices=("word", "char"), default="word")
    return parser


def _select_backend(args):
    backend = args.backend
    run_dir = args.resume if args.command == "train" else getattr(args, "run", None)
    if backend is None and run_dir:
        # A run continues, and evaluates identically, on the backend that trained it.
        from awd_lstm.runs import saved_backend

        backend = saved_backend(run_dir)
        backend = backend if backend in BACKENDS else None
    if backend:
        if "keras" in sys.modules and os.environ.get("KERAS_BACKEND") != backend:
            raise UsageError(
                f"--backend {backend} must be chosen before Keras is imported; "
                "run the command in a fresh process"
            )
        os.environ["KERAS_BACKEND"] = backend
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


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


def _report_warnings(command, caught):
    # The user's concerns (words outside the vocabulary...), not libraries' notices.
    for warning in caught:
        if issubclass(warning.category, UserWarning):
            print(f"awd-lstm {command}: warning: {warning.message}", file=sys.stderr)


def _progress(args):
    return not args.no_progress and sys.stdout.isatty()


def command_generate(args):
    import warnings

    from awd_lstm.generation import check_generation_settings, generate
    from awd_lstm.runs import Run

    settings = dict(
        num_tokens=args.tokens, temperature=args.temperature, top_k=args.top_k, seed=args.seed
    )
    flags = dict(num_tokens="--tokens", temperature="--temperature", top_k="--top-k")
    with _flags_named(**flags, seed="--seed"):
        check_generation_settings(**settings)  # before the model is loaded
    run = Run.open(args.run)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        text, _ = generate(run.load_model(batch_size=1), run.vocabulary, args.prompt, **settings)
    _report_warnings("generate", caught)
    if args.prompt.strip():
        separator = "" if run.vocabulary.level == "char" else " "
        text = args.prompt.rstrip("\n") + separator + text
    print(text)
    return 0


def command_score(args):
    import warnings

    from awd_lstm._validation import check_positive_int
    from awd_lstm.data.corpus import split_lines
    from awd_lstm.generation import score_sentences
    from awd_lstm.runs import Run

    with _flags_named(batch_size="--batch-size"):
        check_positive_int("batch_size", args.batch_size)
    if args.file == "-":
        raw, source = sys.stdin.buffer.read(), "standard input"
    else:
        try:
            with open(args.file, "rb") as f:
                raw, source = f.read(), args.file
        except OSError as e:
            raise UsageError(f"{args.file} cannot be read: {e.strerror}") from None
    sentences = split_lines(raw, source)
    run = Run.open(args.run)
    model = run.load_model(stateful=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        scores = score_sentences(
            model, run.vocabulary, sentences, batch_size=args.batch_size, progress=_progress(args)
        )
    _report_warnings("score", caught)
    print("\n".join(f"{lp:.6f}\t{n}\t{math.exp(-lp / n):.6f}" for lp, n in scores))
    return 0


def command_export(args):
    from awd_lstm.export import export_run
    from awd_lstm.runs import Run

    run = Run.open(args.run)
    with _flags_named(out="--out", format="--format"):
        vocab_path = export_run(run, args.out, args.format)
    print(f"wrote {args.out} and its vocabulary {vocab_path}")
    return 0


def command_train(args):
    from awd_lstm.presets import PRESET_LEVELS, config_fields, resolve_config
    from awd_lstm.runs import create_training_run, resume_run

    chief = args.distribution is None or args.distribution.is_chief
    if args.resume and args.show_config:
        from awd_lstm.presets import describe
        from awd_lstm.runs import Run

        run = Run.open(args.resume)
        shown = describe(run.config, run.vocabulary.level)
        print(json.dumps({"preset": run.info.get("preset"), **shown}, indent=1))
        return 0
    if args.resume:
        fixed = ["data", "preset", "level", "synthetic_tokens", "out", "max_minutes"]
        given = _flags_given(args, fixed + [f.name for f in config_fields()])
        if given:
            raise UsageError(
                f"--resume continues a run with its own settings; drop {', '.join(given)}"
            )
        run, corpus = resume_run(args.resume, "train", writes=chief)
        _check_batch(args, run.config)
        print(f"awd-lstm train: resuming {args.resume}", flush=True)
        return _train(args, run, corpus, resume=True)
    try:
        config, preset = resolve_config(args, synthetic=args.data is None)
    except ValueError as e:
        raise UsageError(str(e)) from None
    level = args.level or PRESET_LEVELS.get(preset, "word")
    if args.show_config:
        from awd_lstm.presets import describe

        print(json.dumps({"preset": preset, **describe(config, level)}, indent=1))
        return 0
    _check_batch(args, config)
    options = dict(data=args.data, level=level, preset=preset)
    options.update(synthetic_tokens=args.synthetic_tokens, max_minutes=args.max_minutes)
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
    with _flags_named(**flags):
        run, corpus, description = create_training_run(run_dir, config, **options)
    where = f"; {args.distribution.describe()}" if args.distribution else ""
    print(
        f"awd-lstm train: {description}; {len(corpus.vocab):,} {level} types; "
        f"backend {run.info['backend']}{where}; run folder {run_dir}",
        flush=True,
    )
    return _train(args, run, corpus, resume=False)


def _check_batch(args, config):
    if args.distribution is not None:
        args.distribution.check_batch(config.batch_size)


def _train(args, run, corpus, resume, weights=None):
    """Trains (or fine-tunes) the run; the library tests it and writes final.json."""
    from awd_lstm import training

    options = dict(progress=not args.no_progress, max_seconds=run.max_seconds, resume=resume)
    if run.stage == "finetune":
        training.finetune(run.config, corpus, run.path, weights, **options)
        return 0
    training.train(run.config, corpus, run.path, distribution=args.distribution, **options)
    if not (args.distribution is None or args.distribution.is_chief):
        print("training done; the chief tests the model and writes the run", flush=True)
    return 0


def command_finetune(args):
    from awd_lstm.runs import FINETUNE_FIELDS, open_finetune

    overrides = {name: getattr(args, name) for name in FINETUNE_FIELDS}
    with _flags_named(max_minutes="--max-minutes"):
        run, corpus, weights = open_finetune(
            args.run, args.out, args.resume, args.max_minutes, **overrides
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
                f"{config.num_layers} layers, {config.optimizer} lr {config.lr:g}, "
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
    from awd_lstm.data import find_layout, load_corpus

    layout, _ = find_layout(args.directory)
    stats = load_corpus(args.directory, level=args.level).stats()
    stats["layout"] = layout
    print(json.dumps(stats, indent=1))
    return 0


COMMANDS = {
    "train": command_train,
    "finetune": command_finetune,
    "evaluate": command_evaluate,
    "generate": command_generate,
    "score": command_score,
    "export": command_export,
    "presets": command_presets,
    "data": command_data,
}


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
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
        from awd_lstm.runs import RunError

        try:
            return COMMANDS[args.command](args)
        except (CorpusError, CheckpointError, distribute.DistributionError, RunError) as e:
            raise UsageError(str(e)) from None
    except UsageError as e:
        print(f"awd-lstm {args.command}: error: {e}", file=sys.stderr)
        return 2
    except FloatingPointError as e:
        # A run that diverged: a failure of the run, not of the command line.
        print(f"awd-lstm {args.command}: error: {e}", file=sys.stderr)
        return 1
    except OSError as e:
        # The machine's fault, not the input's: a full disk, a folder that became
        # unwritable (the files being replaced are left as they were).
        from awd_lstm._files import WriteError

        reason = str(e) if isinstance(e, WriteError) else f"{e.strerror or e} ({e.filename})"
        print(f"awd-lstm {args.command}: error: {reason}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"awd-lstm {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
