"""The `awd-lstm` command: train, resume, fine-tune and evaluate language models.

A thin shell over the library: it parses arguments, picks the Keras backend before
Keras is imported, seeds the process, and calls `awd_lstm.training`. Errors in the
user's input end the command with one sentence on stderr and exit status 2.

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

    data = commands.add_parser("data", help="corpus tools")
    data_commands = data.add_subparsers(dest="data_command", required=True)
    stats = data_commands.add_parser("stats", help="token and vocabulary counts of a corpus")
    stats.add_argument("directory")
    stats.add_argument("--level", choices=("word", "char"), default="word")
    return parser


def _run_folder_of(args):
    if args.command == "train":
        return args.resume
    return getattr(args, "run", None)


def _select_backend(args):
    backend = args.backend
    run_dir = _run_folder_of(args)
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


def _select_distribution(args):
    """Checks `--distribute` and `--virtual-cpu-devices` and sets them up, first thing
    (before the backend starts): `args.distribution`."""
    args.distribution = None
    strategy = getattr(args, "distribute", None)
    devices = getattr(args, "virtual_cpu_devices", None)
    if strategy is None and devices is None:
        return
    from awd_lstm import distribute

    backend = os.environ.get("KERAS_BACKEND", "tensorflow")
    try:
        if strategy is not None:
            distribute.check_strategy(strategy, backend)
        if devices is not None:
            distribute.set_virtual_cpu_devices(devices, backend)
        if strategy is not None:
            args.distribution = distribute.create(strategy, backend)
    except distribute.DistributionError as e:
        raise UsageError(str(e)) from None


def _check_distributed_batch(args, config):
    from awd_lstm.distribute import DistributionError

    if getattr(args, "distribution", None) is not None:
        try:
            args.distribution.check_batch(config.batch_size)
        except DistributionError as e:
            raise UsageError(str(e)) from None


def _is_chief(args):
    distribution = getattr(args, "distribution", None)
    return distribution is None or distribution.is_chief


def _open_run(run_dir):
    from awd_lstm.runs import Run

    return Run.open(run_dir)


def _check_writable(run_dir):
    from awd_lstm.runs import check_writable

    check_writable(run_dir)


def _max_seconds(minutes):
    if minutes is None:
        return None
    if not (math.isfinite(minutes) and minutes > 0):
        raise UsageError(f"--max-minutes must be a number > 0; got {minutes}")
    return minutes * 60.0


def _report_warnings(command, caught):
    # The user's concerns (words outside the vocabulary...), not libraries' notices.
    for warning in caught:
        if not issubclass(warning.category, UserWarning):
            continue
        print(f"awd-lstm {command}: warning: {warning.message}", file=sys.stderr)


def command_generate(args):
    import warnings

    from awd_lstm.generation import check_generation_settings, generate

    settings = dict(
        num_tokens=args.tokens, temperature=args.temperature, top_k=args.top_k, seed=args.seed
    )
    flags = dict(num_tokens="--tokens", temperature="--temperature", top_k="--top-k")
    with _flags_named(**flags, seed="--seed"):
        check_generation_settings(**settings)  # before the model is loaded
    run = _open_run(args.run)
    vocab, model = run.vocabulary, run.load_model(batch_size=1)

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        text, _ = generate(model, vocab, args.prompt, **settings)
    _report_warnings("generate", caught)
    if args.prompt.strip():
        separator = "" if vocab.level == "char" else " "
        text = args.prompt.rstrip("\n") + separator + text
    print(text)
    return 0


def command_score(args):
    import warnings

    from awd_lstm.data.corpus import split_lines

    if args.batch_size < 1:
        raise UsageError(f"--batch-size must be at least 1; got {args.batch_size}")
    if args.file == "-":
        raw, source = sys.stdin.buffer.read(), "standard input"
    else:
        try:
            with open(args.file, "rb") as f:
                raw = f.read()
        except OSError as e:
            raise UsageError(f"{args.file} cannot be read: {e.strerror}") from None
        source = args.file
    sentences = split_lines(raw, source)
    run = _open_run(args.run)
    vocab, model = run.vocabulary, run.load_model(stateful=False)
    from awd_lstm.generation import score_sentences

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        scores = score_sentences(
            model,
            vocab,
            sentences,
            batch_size=args.batch_size,
            progress=not args.no_progress and sys.stdout.isatty(),
        )
    _report_warnings("score", caught)
    out = [f"{log_prob:.6f}\t{n}\t{math.exp(-log_prob / n):.6f}" for log_prob, n in scores]
    print("\n".join(out))
    return 0


def command_export(args):
    run = _open_run(args.run)
    if args.format == "keras" and not args.out.endswith(".keras"):
        raise UsageError(f"--out must end with .keras for --format keras; got {args.out}")
    if args.format == "savedmodel" and os.path.exists(args.out):
        raise UsageError(f"{args.out} already exists; a SavedModel needs a new folder")
    parent = os.path.dirname(os.path.abspath(args.out))
    if not os.path.isdir(parent):
        raise UsageError(f"the folder of --out, {parent}, does not exist")
    if not os.access(parent, os.W_OK):
        raise UsageError(f"the folder of --out, {parent}, is not writable")

    from awd_lstm import backend

    if args.format == "savedmodel" and backend.name() != "tensorflow":
        raise UsageError(
            "a SavedModel is a TensorFlow graph: export with --backend tensorflow "
            f"(this run uses {backend.name()})"
        )
    from awd_lstm.export import export_keras, export_savedmodel

    run.weights_path("best")  # before any file is written
    model = run.load_model(stateful=False)
    if args.format == "keras":
        export_keras(model, args.out)
        vocab_path = args.out[: -len(".keras")] + ".vocab.json"
    else:
        export_savedmodel(model, args.out)
        vocab_path = os.path.join(args.out, "vocab.json")
    run.vocabulary.save(vocab_path)
    print(f"wrote {args.out} and its vocabulary {vocab_path}")
    return 0


def command_train(args):
    if args.resume:
        return _resume_train(args)
    from awd_lstm.presets import PRESET_LEVELS, resolve_config

    try:
        config, preset = resolve_config(args, synthetic=args.data is None)
    except ValueError as e:
        raise UsageError(str(e)) from None
    if args.synthetic_tokens is not None and args.synthetic_tokens < 1000:
        raise UsageError(f"--synthetic-tokens must be at least 1000; got {args.synthetic_tokens}")
    max_seconds = _max_seconds(args.max_minutes)
    _check_distributed_batch(args, config)
    level = args.level or PRESET_LEVELS.get(preset, "word")
    if args.data is None and level != "word":
        given = "--level char" if args.level else f"--preset {preset} (character level)"
        raise UsageError(f"the built-in synthetic corpus is word level; give --data with {given}")
    run_dir = args.out or os.path.join("runs", preset)
    if not _is_chief(args):
        # A multi-worker run's other workers prepare and train in a folder of their
        # own; only the chief writes to the run folder.
        worker_dir = tempfile.mkdtemp(prefix="awd-lstm-worker-")
        try:
            run, corpus, _ = _create_run(args, worker_dir, config, preset, level)
            print(f"awd-lstm train: {args.distribution.describe()}", flush=True)
            return _train(args, run, corpus, max_seconds, resume=False)
        finally:
            shutil.rmtree(worker_dir, ignore_errors=True)
    if os.path.exists(os.path.join(run_dir, "config.json")):
        raise UsageError(
            f"run folder {run_dir} already holds a run; choose another --out "
            f"or continue it with --resume {run_dir}"
        )
    run, corpus, description = _create_run(args, run_dir, config, preset, level)
    where = f"; {args.distribution.describe()}" if args.distribution else ""
    print(
        f"awd-lstm train: {description}; {len(corpus.vocab):,} {level} types; "
        f"backend {run.info['backend']}{where}; run folder {run_dir}",
        flush=True,
    )
    return _train(args, run, corpus, max_seconds, resume=False)


def _create_run(args, run_dir, config, preset, level):
    from awd_lstm.runs import create_training_run

    return create_training_run(
        run_dir,
        config,
        data=args.data,
        level=level,
        preset=preset,
        synthetic_tokens=args.synthetic_tokens,
        max_minutes=args.max_minutes,
    )


def _resume_train(args):
    from awd_lstm.presets import config_fields

    given = [
        "--" + name.replace("_", "-")
        for name in ["data", "preset", "level", "synthetic_tokens", "out", "max_minutes"]
        + [f.name for f in config_fields()]
        if getattr(args, name, None) is not None
    ]
    if given:
        raise UsageError(f"--resume continues a run with its own settings; drop {', '.join(given)}")
    run_dir = args.resume
    run = _open_run(run_dir)
    run.check_resumable("train")
    _check_distributed_batch(args, run.config)
    if _is_chief(args):
        _check_writable(run_dir)
    import keras

    keras.utils.set_random_seed(run.config.seed)
    corpus = run.corpus()
    max_seconds = _max_seconds(run.info.get("max_minutes"))
    print(f"awd-lstm train: resuming {run_dir}", flush=True)
    return _train(args, run, corpus, max_seconds, resume=True)


def _train(args, run, corpus, max_seconds, resume, weights=None):
    """Trains (or fine-tunes) the run; the library tests it and writes final.json."""
    from awd_lstm import training

    options = dict(progress=not args.no_progress, max_seconds=max_seconds, resume=resume)
    if run.stage == "finetune":
        training.finetune(run.config, corpus, run.path, weights, **options)
    else:
        distribution = getattr(args, "distribution", None)
        training.train(run.config, corpus, run.path, distribution=distribution, **options)
    if not _is_chief(args):
        print("training done; the chief tests the model and writes the run", flush=True)
    return 0


def command_finetune(args):
    from awd_lstm.presets import config_fields
    from awd_lstm.runs import FINETUNE_FIELDS

    run_dir = args.out or os.path.join(args.run, "finetune")
    import keras

    if args.resume:
        given = [
            "--" + f.name.replace("_", "-")
            for f in config_fields()
            if getattr(args, f.name, None) is not None
        ]
        if given or args.max_minutes is not None:
            raise UsageError("--resume continues a fine-tuning with its own settings")
        run = _open_run(run_dir)
        run.check_resumable("finetune")
        keras.utils.set_random_seed(run.config.seed)
        corpus = run.corpus()
        # Before its first checkpoint it starts again from the trained run's weights.
        weights = run.finetune_start_weights(args.run)
        _check_writable(run_dir)
    else:
        parent = _open_run(args.run)
        _max_seconds(args.max_minutes)  # everything checked before anything is written
        if os.path.exists(os.path.join(run_dir, "config.json")):
            raise UsageError(
                f"{run_dir} already holds a fine-tuning; continue it with --resume "
                "or choose another --out"
            )
        config = parent.finetune_config(**{name: getattr(args, name) for name in FINETUNE_FIELDS})
        keras.utils.set_random_seed(config.seed)
        corpus = parent.corpus()
        weights = parent.trained_weights("best")
        run = parent.create_finetune(run_dir, config, max_minutes=args.max_minutes)
    max_seconds = _max_seconds(run.info.get("max_minutes"))
    print(f"awd-lstm finetune: {args.run} -> {run_dir}", flush=True)
    return _train(args, run, corpus, max_seconds, resume=args.resume, weights=weights)


def command_evaluate(args):
    run = _open_run(args.run)
    pointer = _cache_pointer(args, run)
    dynamic = _dynamic_settings(args)
    if pointer is not None and dynamic is not None:
        raise UsageError("--cache-pointer and --dynamic-eval cannot be combined")
    result = run.evaluate(
        args.split,
        cache_pointer=pointer,
        dynamic_eval=dynamic,
        progress=not args.no_progress and sys.stdout.isatty(),
        log=lambda line: print(line, file=sys.stderr, flush=True),
    )
    print(json.dumps(result))
    return 0


def _dynamic_settings(args):
    """Dynamic-evaluation settings the flags ask for (None without --dynamic-eval)."""
    if not args.dynamic_eval:
        for flag, value in (("--learning-rate", args.learning_rate), ("--decay", args.decay)):
            if value is not None:
                raise UsageError(f"{flag} needs --dynamic-eval")
        return None
    from awd_lstm.dynamic_eval import check_dynamic_settings
    from awd_lstm.presets import DYNAMIC_EVAL

    settings = dict(DYNAMIC_EVAL)
    for key in settings:
        if getattr(args, key) is not None:
            settings[key] = getattr(args, key)
    with _flags_named(learning_rate="--learning-rate", decay="--decay"):
        check_dynamic_settings(**settings)
    return settings


def _cache_pointer(args, run):
    """The cache pointer's settings the flags ask for (None without --cache-pointer)."""
    given = [
        flag
        for flag, value in (
            ("--window", args.window),
            ("--theta", args.theta),
            ("--lambda", args.lambdah),
        )
        if value is not None
    ]
    if not args.cache_pointer:
        if given:
            raise UsageError(f"{given[0]} needs --cache-pointer")
        return None
    from awd_lstm.pointer import check_pointer_settings

    settings = run.pointer_settings(window=args.window, theta=args.theta, lambdah=args.lambdah)
    with _flags_named(window="--window", theta="--theta", lambdah="--lambda"):
        check_pointer_settings(**settings)
    return settings


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
    "data": command_data,
}


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        _select_backend(args)
        _select_distribution(args)
        from awd_lstm._files import CheckpointError
        from awd_lstm.data import CorpusError
        from awd_lstm.distribute import DistributionError
        from awd_lstm.runs import RunError

        try:
            return COMMANDS[args.command](args)
        except (CorpusError, CheckpointError, DistributionError, RunError) as e:
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
