"""The `awd-lstm` command: train and evaluate language models, inspect corpora.

A thin shell over the library: it parses arguments, picks the Keras backend before
Keras is imported, seeds the process, and calls `awd_lstm.training`. Errors in the
user's input end the command with one sentence on stderr and exit status 2.
"""

import argparse
import dataclasses
import json
import math
import os
import sys

PRESETS_HELP = "ptb, wikitext-2, small, synthetic"
BACKENDS = ("tensorflow", "jax", "torch")

# Paper / reference-code names, shown beside the flags in --help.
PAPER_NAMES = {
    "embedding_size": "emsize",
    "hidden_size": "nhid",
    "num_layers": "nlayers",
    "embedding_dropout": "dropoute",
    "input_dropout": "dropouti",
    "hidden_dropout": "dropouth",
    "output_dropout": "dropout",
    "weight_dropout": "wdrop",
    "tie_weights": "tied",
    "weight_decay": "wdecay",
}


class UsageError(Exception):
    """Bad input from the user; the message is one sentence."""


def _add_config_flags(parser):
    from awd_lstm.presets import config_fields

    group = parser.add_argument_group("model and training hyperparameters (override the preset)")
    for field in config_fields():  # --seed among them
        flag = "--" + field.name.replace("_", "-")
        paper = PAPER_NAMES.get(field.name, field.name if field.name in ("alpha", "beta") else "")
        help_text = f"[{paper}] " if paper else ""
        if field.type in (bool, "bool"):
            group.add_argument(
                flag,
                type=_parse_bool,
                metavar="true|false",
                help=help_text + "(default: from the preset)",
            )
        else:
            kind = int if field.type in (int, "int") else float
            group.add_argument(flag, type=kind, help=help_text + "(default: from the preset)")


def _parse_bool(text):
    if text.lower() in ("1", "true", "yes"):
        return True
    if text.lower() in ("0", "false", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false; got {text!r}")


def build_parser():
    parser = argparse.ArgumentParser(
        prog="awd-lstm",
        description="AWD-LSTM language models (Merity et al. 2017) on Keras 3.",
    )
    backend_help = "Keras backend (default: KERAS_BACKEND, else tensorflow)"
    parser.add_argument("--backend", choices=BACKENDS, help=backend_help)
    commands = parser.add_subparsers(dest="command", required=True)

    def add_backend(subparser):
        # SUPPRESS: an absent subcommand flag must not erase `awd-lstm --backend X`.
        subparser.add_argument(
            "--backend", choices=BACKENDS, default=argparse.SUPPRESS, help=backend_help
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
    add_backend(train)
    train.add_argument("--level", choices=("word", "char"), default="word")
    train.add_argument(
        "--synthetic-tokens",
        type=int,
        default=200_000,
        help="training tokens of the built-in corpus (valid and test: a "
        "tenth each; default 200000)",
    )
    train.add_argument("--out", default=None, help="run folder (default: runs/<preset>)")
    train.add_argument("--no-progress", action="store_true", help="no progress bar")
    _add_config_flags(train)

    evaluate = commands.add_parser("evaluate", help="evaluate a trained run")
    evaluate.add_argument("--run", required=True, help="run folder written by train")
    evaluate.add_argument("--split", choices=("valid", "test"), default="test")
    add_backend(evaluate)

    data = commands.add_parser("data", help="corpus tools")
    data_commands = data.add_subparsers(dest="data_command", required=True)
    stats = data_commands.add_parser("stats", help="token and vocabulary counts of a corpus")
    stats.add_argument("directory")
    stats.add_argument("--level", choices=("word", "char"), default="word")
    return parser


def _select_backend(args):
    if args.backend:
        if "keras" in sys.modules and os.environ.get("KERAS_BACKEND") != args.backend:
            raise UsageError(
                f"--backend {args.backend} must be chosen before Keras is imported; "
                "run the command in a fresh process"
            )
        os.environ["KERAS_BACKEND"] = args.backend
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def command_train(args):
    from awd_lstm.presets import resolve_config

    try:
        config, preset = resolve_config(args, synthetic=args.data is None)
    except ValueError as e:
        raise UsageError(str(e)) from None
    if args.synthetic_tokens < 1000:
        raise UsageError(f"--synthetic-tokens must be at least 1000; got {args.synthetic_tokens}")
    run_dir = args.out or os.path.join("runs", preset)
    if os.path.exists(os.path.join(run_dir, "metrics.jsonl")):
        raise UsageError(f"run folder {run_dir} already holds a run; choose another --out")
    try:
        os.makedirs(run_dir, exist_ok=True)
        probe = os.path.join(run_dir, ".write-test")
        with open(probe, "w") as f:
            f.write("ok")
        os.unlink(probe)
    except OSError as e:
        raise UsageError(f"run folder {run_dir} is not writable: {e.strerror}") from None

    import keras
    import numpy as np

    from awd_lstm.data import HiddenMarkovSource, Vocabulary, load_corpus
    from awd_lstm.data.corpus import write_json_atomic
    from awd_lstm.training import train

    keras.utils.set_random_seed(config.seed)
    source = None
    if args.data is None:
        from awd_lstm.presets import SYNTHETIC_SOURCE

        source = HiddenMarkovSource(**SYNTHETIC_SOURCE, seed=config.seed)
        corpus_dir = os.path.join(run_dir, "corpus")
        tokens = args.synthetic_tokens
        source.write_corpus(corpus_dir, tokens, tokens // 10, tokens // 10, seed=config.seed)
        corpus = load_corpus(corpus_dir, vocab=Vocabulary(source.words()))
        data_description = f"built-in synthetic corpus ({corpus_dir})"
    else:
        corpus = load_corpus(args.data, level=args.level)
        data_description = args.data
    corpus.vocab.save(os.path.join(run_dir, "vocab.json"))
    write_json_atomic(
        os.path.join(run_dir, "config.json"),
        {
            "preset": preset,
            "data": args.data,
            "level": args.level,
            "backend": keras.backend.backend(),
            "config": dataclasses.asdict(config),
        },
    )
    print(
        f"awd-lstm train: {data_description}; {len(corpus.vocab):,} words; "
        f"backend {keras.backend.backend()}; run folder {run_dir}",
        flush=True,
    )
    model, _ = train(config, corpus, run_dir, progress=not args.no_progress)
    test_loss = _split_loss(config, len(corpus.vocab), corpus.test, 1, model.trainable_variables)
    final = {"test_loss": test_loss, "test_ppl": math.exp(test_loss)}
    if source is not None:
        final["optimal_ppl"] = source.optimal_perplexity(np.asarray(corpus.test))
        final["unigram_ppl"] = source.unigram_perplexity(corpus.train, corpus.test)
    write_json_atomic(os.path.join(run_dir, "final.json"), final)
    line = f"test perplexity {final['test_ppl']:.2f}"
    if source is not None:
        gap = final["test_ppl"] / final["optimal_ppl"] - 1
        line += (
            f" (optimum {final['optimal_ppl']:.2f}, {gap:+.1%}; unigram {final['unigram_ppl']:.2f})"
        )
    print(line)
    return 0


def _split_loss(config, vocab_size, ids, batch_size, weight_values):
    """Per-token loss of a split, evaluated at `batch_size` streams with the given
    weights (the reference validates with 10 streams and tests with 1)."""
    from awd_lstm.training import build_model, copy_weights, evaluate

    model = build_model(config, vocab_size, batch_size)
    copy_weights(weight_values, model)
    return evaluate(model, ids, config.bptt)


def _load_run(run_dir):
    from awd_lstm.config import TrainingConfig

    path = os.path.join(run_dir, "config.json")
    if not os.path.isfile(path):
        raise UsageError(f"{run_dir} is not a run folder (it has no config.json)")
    with open(path, encoding="utf-8") as f:
        saved = json.load(f)
    return saved, TrainingConfig(**saved["config"])


def command_evaluate(args):
    saved, config = _load_run(args.run)
    from awd_lstm.data import Vocabulary, load_corpus
    from awd_lstm.training import build_model

    weights = os.path.join(args.run, "best.weights.h5")
    if not os.path.isfile(weights):
        raise UsageError(f"{args.run} has no best.weights.h5: its training did not finish an epoch")
    vocab = Vocabulary.load(os.path.join(args.run, "vocab.json"))
    data = saved["data"] or os.path.join(args.run, "corpus")
    corpus = load_corpus(data, level=saved.get("level", "word"), vocab=vocab)
    trained = build_model(config, len(vocab), batch_size=config.eval_batch_size)
    trained.load_weights(weights)
    batch = config.eval_batch_size if args.split == "valid" else 1
    loss = _split_loss(
        config, len(vocab), corpus.split(args.split), batch, trained.trainable_variables
    )
    print(json.dumps({"split": args.split, "loss": loss, "ppl": math.exp(loss)}))
    return 0


def command_data(args):
    from awd_lstm.data import find_layout, load_corpus

    layout, _ = find_layout(args.directory)
    stats = load_corpus(args.directory, level=args.level).stats()
    stats["layout"] = layout
    print(json.dumps(stats, indent=1))
    return 0


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        _select_backend(args)
        from awd_lstm.data import CorpusError

        try:
            handler = {"train": command_train, "evaluate": command_evaluate, "data": command_data}[
                args.command
            ]
            return handler(args)
        except (CorpusError, FloatingPointError) as e:
            raise UsageError(str(e)) from None
    except UsageError as e:
        print(f"awd-lstm {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"awd-lstm {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
