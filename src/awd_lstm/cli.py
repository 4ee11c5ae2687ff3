"""The `awd-lstm` command: train, resume, fine-tune and evaluate language models.

A thin shell over the library: it parses arguments, picks the Keras backend before
Keras is imported, seeds the process, and calls `awd_lstm.training`. Errors in the
user's input end the command with one sentence on stderr and exit status 2.

A run folder is complete once its `config.json` exists (written last, atomically,
after the corpus and `vocab.json`); `metrics.jsonl`, the checkpoints, TensorBoard
events and the learning-curve PNG follow each epoch; `final.json` ends the run.
"""

import argparse
import dataclasses
import json
import math
import os
import shutil
import sys
import tempfile

PRESETS_HELP = "ptb, wikitext-2, wikitext-103, ptb-char, enwik8, small, synthetic"
BACKENDS = ("tensorflow", "jax", "torch")

# Hyperparameters `finetune` may change; the others are the trained model's.
FINETUNE_FIELDS = ("epochs", "lr", "nonmono", "seed")


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

    parser = argparse.ArgumentParser(
        prog="awd-lstm",
        description="AWD-LSTM language models (Merity et al. 2017) on Keras 3.",
    )
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
    _add_config_flags(finetune, FINETUNE_FIELDS)

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
        help="step of the RMS-normalized gradient (2e-5)",
    )
    dynamic.add_argument(
        "--decay", type=float, metavar="X", help="pull back toward the trained weights (0.02)"
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
        try:
            backend = _read_run(run_dir)[0].get("backend")
        except UsageError:
            backend = None  # reported by the command itself
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


def _read_run(run_dir):
    """`(saved, config)`: a run folder's config.json and its TrainingConfig."""
    from awd_lstm.config import TrainingConfig

    path = os.path.join(run_dir, "config.json")
    if not os.path.isfile(path):
        raise UsageError(f"{run_dir} is not a run folder (it has no config.json)")
    try:
        with open(path, encoding="utf-8") as f:
            saved = json.load(f)
        config = TrainingConfig(**saved["config"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise UsageError(f"{path} is not a valid run configuration: {reason}") from None
    return saved, config


def _check_writable(run_dir):
    try:
        os.makedirs(run_dir, exist_ok=True)
        probe = os.path.join(run_dir, ".write-test")
        with open(probe, "w") as f:
            f.write("ok")
        os.unlink(probe)
    except OSError as e:
        raise UsageError(f"run folder {run_dir} is not writable: {e.strerror}") from None


def _max_seconds(minutes):
    if minutes is None:
        return None
    if not (math.isfinite(minutes) and minutes > 0):
        raise UsageError(f"--max-minutes must be a number > 0; got {minutes}")
    return minutes * 60.0


def _synthetic_source(saved, config):
    from awd_lstm.data import HiddenMarkovSource
    from awd_lstm.presets import SYNTHETIC_SOURCE

    if saved.get("synthetic_tokens") is None:
        return None
    return HiddenMarkovSource(**SYNTHETIC_SOURCE, seed=saved.get("synthetic_seed", config.seed))


def _load_run_vocab(run_dir, saved):
    """The run's vocabulary, checked against config.json."""
    from awd_lstm.data import Vocabulary

    vocab = Vocabulary.load(os.path.join(run_dir, "vocab.json"))
    expected = saved.get("vocab_fingerprint")
    if expected is not None and vocab.fingerprint() != expected:
        raise UsageError(
            f"{os.path.join(run_dir, 'vocab.json')} is not the vocabulary this run was "
            "trained with (its fingerprint differs from config.json's)"
        )
    return vocab


def _load_run_model(run_dir, batch_size, stateful=True):
    """`(config, vocab, model)`: a run's best weights in a model of `batch_size`."""
    saved, config = _read_run(run_dir)
    weights = _best_weights(run_dir)
    vocab = _load_run_vocab(run_dir, saved)
    from awd_lstm.training import build_model, copy_weights, load_trained_weights

    values = load_trained_weights(config, len(vocab), weights)
    if not stateful:
        from awd_lstm.export import inference_model

        return config, vocab, inference_model(config, len(vocab), values)
    model = build_model(config, len(vocab), batch_size)
    copy_weights(values, model)
    return config, vocab, model


def _report_warnings(command, caught):
    # The user's concerns (words outside the vocabulary...), not libraries' notices.
    for warning in caught:
        if not issubclass(warning.category, UserWarning):
            continue
        print(f"awd-lstm {command}: warning: {warning.message}", file=sys.stderr)


def command_generate(args):
    import warnings

    if not args.temperature > 0:
        raise UsageError(f"--temperature must be > 0; got {args.temperature}")
    if args.top_k is not None and args.top_k < 1:
        raise UsageError(f"--top-k must be at least 1; got {args.top_k}")
    if args.tokens < 0:
        raise UsageError(f"--tokens must be at least 0; got {args.tokens}")
    if not 0 <= args.seed < 2**32:
        raise UsageError(f"--seed must be an integer in [0, 2**32); got {args.seed}")
    _, vocab, model = _load_run_model(args.run, batch_size=1)
    from awd_lstm.generation import generate

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        text, _ = generate(
            model,
            vocab,
            args.prompt,
            num_tokens=args.tokens,
            temperature=args.temperature,
            top_k=args.top_k,
            seed=args.seed,
        )
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
    _, vocab, model = _load_run_model(args.run, args.batch_size, stateful=False)
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
    saved, config = _read_run(args.run)
    if args.format == "keras" and not args.out.endswith(".keras"):
        raise UsageError(f"--out must end with .keras for --format keras; got {args.out}")
    if args.format == "savedmodel" and os.path.exists(args.out):
        raise UsageError(f"{args.out} already exists; a SavedModel needs a new folder")
    parent = os.path.dirname(os.path.abspath(args.out))
    if not os.path.isdir(parent):
        raise UsageError(f"the folder of --out, {parent}, does not exist")
    if not os.access(parent, os.W_OK):
        raise UsageError(f"the folder of --out, {parent}, is not writable")
    import keras

    if args.format == "savedmodel" and keras.backend.backend() != "tensorflow":
        raise UsageError(
            "a SavedModel is a TensorFlow graph: export with --backend tensorflow "
            f"(this run uses {keras.backend.backend()})"
        )
    weights = _best_weights(args.run)
    vocab = _load_run_vocab(args.run, saved)
    from awd_lstm.export import export_keras, export_savedmodel, inference_model
    from awd_lstm.training import load_trained_weights

    model = inference_model(config, len(vocab), load_trained_weights(config, len(vocab), weights))
    if args.format == "keras":
        export_keras(model, args.out)
        vocab_path = args.out[: -len(".keras")] + ".vocab.json"
    else:
        export_savedmodel(model, args.out)
        vocab_path = os.path.join(args.out, "vocab.json")
    vocab.save(vocab_path)
    print(f"wrote {args.out} and its vocabulary {vocab_path}")
    return 0


def _load_run_corpus(run_dir, saved):
    """The run's corpus, read with its saved vocabulary (checked against config.json)."""
    from awd_lstm.data import load_corpus

    vocab = _load_run_vocab(run_dir, saved)
    data = saved.get("data") or os.path.join(run_dir, "corpus")
    return load_corpus(data, level=saved.get("level", "word"), vocab=vocab)


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
    run_dir = args.out or os.path.join("runs", preset)
    if not _is_chief(args):
        # A multi-worker run's other workers prepare and train in a folder of their
        # own; only the chief writes to the run folder.
        worker_dir = tempfile.mkdtemp(prefix="awd-lstm-worker-")
        try:
            saved, corpus, _ = _prepare_run(args, worker_dir, config, preset, level)
            print(f"awd-lstm train: {args.distribution.describe()}", flush=True)
            return _train_and_test(args, worker_dir, saved, config, corpus, max_seconds, False)
        finally:
            shutil.rmtree(worker_dir, ignore_errors=True)
    if os.path.exists(os.path.join(run_dir, "config.json")):
        raise UsageError(
            f"run folder {run_dir} already holds a run; choose another --out "
            f"or continue it with --resume {run_dir}"
        )
    created = not os.path.exists(run_dir)
    _check_writable(run_dir)
    try:
        saved, corpus, description = _prepare_run(args, run_dir, config, preset, level)
    except BaseException:
        # Nothing half-written: a folder this command created goes again.
        if created:
            shutil.rmtree(run_dir, ignore_errors=True)
        raise
    where = f"; {args.distribution.describe()}" if args.distribution else ""
    print(
        f"awd-lstm train: {description}; {len(corpus.vocab):,} {level} types; "
        f"backend {saved['backend']}{where}; run folder {run_dir}",
        flush=True,
    )
    return _train_and_test(args, run_dir, saved, config, corpus, max_seconds, resume=False)


def _prepare_run(args, run_dir, config, preset, level):
    """Writes the corpus (built-in), vocab.json and, last, config.json of a new run."""
    import keras

    from awd_lstm._files import write_json_atomic
    from awd_lstm.data import HiddenMarkovSource, Vocabulary, load_corpus
    from awd_lstm.training import check_splits

    synthetic_tokens = args.synthetic_tokens if args.synthetic_tokens is not None else 200_000
    keras.utils.set_random_seed(config.seed)
    if args.data is None:
        from awd_lstm.presets import SYNTHETIC_SOURCE

        if level != "word":
            raise UsageError("the built-in synthetic corpus is word level; drop --level char")
        source = HiddenMarkovSource(**SYNTHETIC_SOURCE, seed=config.seed)
        corpus_dir = os.path.join(run_dir, "corpus")
        n = synthetic_tokens
        source.write_corpus(corpus_dir, n, n // 10, n // 10, seed=config.seed)
        corpus = load_corpus(corpus_dir, vocab=Vocabulary(source.words()))
        description = f"built-in synthetic corpus ({corpus_dir})"
    else:
        corpus = load_corpus(args.data, level=level)
        description = args.data
    check_splits(config, corpus)
    corpus.vocab.save(os.path.join(run_dir, "vocab.json"))
    saved = {
        "stage": "train",
        "preset": preset,
        "data": os.path.abspath(args.data) if args.data else None,
        "level": level,
        "backend": keras.backend.backend(),
        "vocab_size": len(corpus.vocab),
        "vocab_fingerprint": corpus.vocab.fingerprint(),
        "max_minutes": args.max_minutes,
        "synthetic_tokens": None if args.data else synthetic_tokens,
        "synthetic_seed": None if args.data else config.seed,
        "config": dataclasses.asdict(config),
    }
    # Written last: a folder with config.json holds a complete corpus and vocabulary.
    write_json_atomic(os.path.join(run_dir, "config.json"), saved)
    return saved, corpus, description


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
    saved, config = _read_run(run_dir)
    if saved.get("stage", "train") != "train":
        raise UsageError(f"{run_dir} is a fine-tuning run; use awd-lstm finetune --resume")
    if os.path.exists(os.path.join(run_dir, "final.json")):
        raise UsageError(f"the run in {run_dir} has finished; nothing to resume")
    _check_distributed_batch(args, config)
    if _is_chief(args):
        _check_writable(run_dir)
    import keras

    keras.utils.set_random_seed(config.seed)
    corpus = _load_run_corpus(run_dir, saved)
    max_seconds = _max_seconds(saved.get("max_minutes"))
    print(f"awd-lstm train: resuming {run_dir}", flush=True)
    return _train_and_test(args, run_dir, saved, config, corpus, max_seconds, resume=True)


def _train_and_test(args, run_dir, saved, config, corpus, max_seconds, resume, weights=None):
    from awd_lstm import training

    if saved.get("stage") == "finetune":
        model, _ = training.finetune(
            config,
            corpus,
            run_dir,
            weights,
            progress=not args.no_progress,
            max_seconds=max_seconds,
            resume=resume,
        )
    else:
        model, _ = training.train(
            config,
            corpus,
            run_dir,
            progress=not args.no_progress,
            max_seconds=max_seconds,
            resume=resume,
            distribution=getattr(args, "distribution", None),
        )
    if not _is_chief(args):
        print("training done; the chief tests the model and writes the run", flush=True)
        return 0
    print("testing with batch 1", flush=True)
    test_loss = training.split_loss(
        config,
        len(corpus.vocab),
        corpus.test,
        1,
        model.trainable_variables,
        progress=not args.no_progress,
    )
    final = _loss_summary("test", test_loss, corpus.vocab.level)
    source = _synthetic_source(saved, config)
    if source is not None:
        import numpy as np

        final["optimal_ppl"] = source.optimal_perplexity(np.asarray(corpus.test))
        final["unigram_ppl"] = source.unigram_perplexity(corpus.train, corpus.test)
    from awd_lstm._files import write_json_atomic

    write_json_atomic(os.path.join(run_dir, "final.json"), final)
    line = f"test perplexity {final['test_ppl']:.2f}"
    if "test_bpc" in final:
        line += f" ({final['test_bpc']:.3f} bpc)"
    if source is not None:
        gap = final["test_ppl"] / final["optimal_ppl"] - 1
        line += (
            f" (optimum {final['optimal_ppl']:.2f}, {gap:+.1%}; unigram {final['unigram_ppl']:.2f})"
        )
    print(line)
    return 0


def _loss_summary(split, loss, level):
    summary = {f"{split}_loss": loss, f"{split}_ppl": math.exp(min(loss, 700))}
    if level == "char":
        summary[f"{split}_bpc"] = loss / math.log(2)
    return summary


def command_finetune(args):
    from awd_lstm.presets import config_fields

    parent = args.run
    run_dir = args.out or os.path.join(parent, "finetune")
    max_seconds = _max_seconds(args.max_minutes)
    if args.resume:
        given = [
            "--" + f.name.replace("_", "-")
            for f in config_fields()
            if getattr(args, f.name, None) is not None
        ]
        if given or args.max_minutes is not None:
            raise UsageError("--resume continues a fine-tuning with its own settings")
        saved, config = _read_run(run_dir)
        if os.path.exists(os.path.join(run_dir, "final.json")):
            raise UsageError(f"the fine-tuning in {run_dir} has finished; nothing to resume")
        max_seconds = _max_seconds(saved.get("max_minutes"))
    else:
        parent_saved, parent_config = _read_run(parent)
        if os.path.exists(os.path.join(run_dir, "config.json")):
            raise UsageError(
                f"{run_dir} already holds a fine-tuning; continue it with --resume "
                "or choose another --out"
            )
        overrides = {
            name: getattr(args, name) for name in FINETUNE_FIELDS if getattr(args, name) is not None
        }
        if parent_config.optimizer == "adam" and "lr" not in overrides:
            raise UsageError(
                f"{parent} trained with Adam (lr {parent_config.lr}); fine-tuning is averaged "
                "SGD: give its learning rate with --lr"
            )
        try:
            config = dataclasses.replace(parent_config, optimizer="ntasgd", **overrides)
        except ValueError as e:
            raise UsageError(str(e)) from None
        saved = {
            **parent_saved,
            "stage": "finetune",
            "finetuned_from": os.path.abspath(parent),
            "data": parent_saved.get("data") or os.path.abspath(os.path.join(parent, "corpus")),
            "max_minutes": args.max_minutes,
            "config": dataclasses.asdict(config),
        }
        best = _best_weights(parent)
    _check_writable(run_dir)
    import keras

    from awd_lstm import training
    from awd_lstm._files import write_json_atomic

    keras.utils.set_random_seed(config.seed)
    if args.resume:
        corpus = _load_run_corpus(run_dir, saved)
        # Needed when the fine-tuning died before its first checkpoint.
        best = _best_weights(saved.get("finetuned_from", parent))
        weights = training.load_trained_weights(config, len(corpus.vocab), best)
    else:
        corpus = _load_run_corpus(parent, saved)
        weights = training.load_trained_weights(config, len(corpus.vocab), best)
        shutil.copyfile(os.path.join(parent, "vocab.json"), os.path.join(run_dir, "vocab.json"))
        write_json_atomic(os.path.join(run_dir, "config.json"), saved)
    print(f"awd-lstm finetune: {parent} -> {run_dir}", flush=True)
    return _train_and_test(
        args, run_dir, saved, config, corpus, max_seconds, resume=args.resume, weights=weights
    )


def _best_weights(run_dir):
    path = os.path.join(run_dir, "best.weights.h5")
    if not os.path.isfile(path):
        raise UsageError(f"{run_dir} has no best.weights.h5: its training did not finish an epoch")
    return path


def command_evaluate(args):
    saved, config = _read_run(args.run)
    from awd_lstm.training import load_trained_weights, split_loss

    weights = _best_weights(args.run)
    corpus = _load_run_corpus(args.run, saved)
    values = load_trained_weights(config, len(corpus.vocab), weights)
    batch = config.eval_batch_size if args.split == "valid" else 1
    progress = not args.no_progress and sys.stdout.isatty()
    pointer = _cache_pointer(args, saved, batch)
    dynamic = _dynamic_settings(args)
    if pointer is not None and dynamic is not None:
        raise UsageError("--cache-pointer and --dynamic-eval cannot be combined")
    result = {"split": args.split}
    if dynamic is not None:
        from awd_lstm.dynamic_eval import dynamic_evaluate, gradient_rms

        print("gradient statistics over the training split", file=sys.stderr, flush=True)
        streams = max(1, min(100, len(corpus.train) // 20))
        rms = gradient_rms(config, len(corpus.vocab), values, corpus.train, batch_size=streams)
        loss = dynamic_evaluate(
            config,
            len(corpus.vocab),
            values,
            corpus.split(args.split),
            rms,
            batch_size=batch,
            progress=progress,
            **dynamic,
        )
        result["dynamic_eval"] = dynamic
    elif pointer is None:
        loss = split_loss(
            config, len(corpus.vocab), corpus.split(args.split), batch, values, progress=progress
        )
    else:
        from awd_lstm.pointer import evaluate_with_cache
        from awd_lstm.training import build_model, copy_weights

        model = build_model(config, len(corpus.vocab), batch)
        copy_weights(values, model)
        loss = evaluate_with_cache(
            model, corpus.split(args.split), config.bptt, pointer, progress=progress
        )
        result["cache_pointer"] = {
            "window": pointer.window,
            "theta": pointer.theta,
            "lambda": pointer.lambdah,
        }
    summary = _loss_summary(args.split, loss, corpus.vocab.level)
    result.update(loss=loss, ppl=summary[f"{args.split}_ppl"])
    if f"{args.split}_bpc" in summary:
        result["bpc"] = summary[f"{args.split}_bpc"]
    print(json.dumps(result))
    return 0


def _dynamic_settings(args):
    """Dynamic-evaluation settings the flags ask for (None without --dynamic-eval)."""
    if not args.dynamic_eval:
        for flag, value in (("--learning-rate", args.learning_rate), ("--decay", args.decay)):
            if value is not None:
                raise UsageError(f"{flag} needs --dynamic-eval")
        return None
    settings = {
        "learning_rate": 2e-5 if args.learning_rate is None else args.learning_rate,
        "decay": 0.02 if args.decay is None else args.decay,
    }
    for key, value in settings.items():
        if not (math.isfinite(value) and value >= 0):
            flag = "--" + key.replace("_", "-")
            raise UsageError(f"{flag} must be a finite number >= 0; got {value}")
    if settings["decay"] > 1:
        # Each step moves the weights this fraction of the way back: past 1 overshoots.
        raise UsageError(f"--decay must be in [0, 1]; got {settings['decay']}")
    return settings


def _cache_pointer(args, saved, batch):
    """The CachePointer the flags ask for (None without --cache-pointer)."""
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
    from awd_lstm.pointer import POINTER_PRESETS, CachePointer

    settings = dict(POINTER_PRESETS.get(saved.get("preset"), POINTER_PRESETS["ptb"]))
    for key in ("window", "theta", "lambdah"):
        if getattr(args, key) is not None:
            settings[key] = getattr(args, key)
    if settings["window"] < 1:
        raise UsageError(f"--window must be a positive integer; got {settings['window']}")
    if not (math.isfinite(settings["theta"]) and settings["theta"] >= 0):
        raise UsageError(f"--theta must be a finite number >= 0; got {settings['theta']}")
    if not 0.0 <= settings["lambdah"] <= 1.0:
        raise UsageError(f"--lambda must be in [0, 1]; got {settings['lambdah']}")
    return CachePointer(**settings, num_streams=batch)


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

        try:
            return COMMANDS[args.command](args)
        except (CorpusError, CheckpointError, FloatingPointError, DistributionError) as e:
            raise UsageError(str(e)) from None
    except UsageError as e:
        print(f"awd-lstm {args.command}: error: {e}", file=sys.stderr)
        return 2
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
