"""Reference settings per corpus, as plain data (the reference implementation's README).

Word-level presets follow the reference implementation's README runs; `small` trains
in minutes per epoch on a 2-core CPU; `synthetic` is the built-in corpus's.
"""

import dataclasses

from awd_lstm.config import TrainingConfig

PRESETS = {
    # PTB, reference README: batch 20, dropouti 0.4, dropouth 0.25, 500 epochs.
    "ptb": TrainingConfig(
        batch_size=20, input_dropout=0.4, hidden_dropout=0.25, epochs=500, seed=141
    ),
    # WikiText-2, reference README: dropouth 0.2, 750 epochs, batch 80.
    "wikitext-2": TrainingConfig(hidden_dropout=0.2, epochs=750, batch_size=80, seed=1882),
    # Character level (Merity et al. 2018, reference README): Adam, no AR/TAR, no
    # embedding dropout, the learning rate divided by 10 after the `when` epochs.
    "ptb-char": TrainingConfig(
        embedding_size=200,
        hidden_size=1000,
        num_layers=3,
        embedding_dropout=0.0,
        input_dropout=0.1,
        hidden_dropout=0.25,
        output_dropout=0.1,
        weight_dropout=0.5,
        alpha=0.0,
        beta=0.0,
        optimizer="adam",
        lr=2e-3,
        when=(300, 400),
        epochs=500,
        batch_size=128,
        bptt=150,
    ),
    "enwik8": TrainingConfig(
        embedding_size=400,
        hidden_size=1840,
        num_layers=3,
        embedding_dropout=0.0,
        input_dropout=0.1,
        hidden_dropout=0.1,
        output_dropout=0.4,
        weight_dropout=0.2,
        alpha=0.0,
        beta=0.0,
        optimizer="adam",
        lr=1e-3,
        when=(25, 35),
        epochs=50,
        batch_size=128,
        bptt=200,
    ),
    # WikiText-103 (Merity et al. 2018, reference README; the reference ran these
    # settings with a QRNN): 4 layers of 2500 units, light dropout, no weight drop,
    # AR/TAR or weight decay, Adam with the rate divided by 10 after epoch 12, and a
    # tied adaptive softmax over the 267,735-word vocabulary.
    # Yang et al. (2018), "Breaking the softmax bottleneck": AWD-LSTM with a mixture of
    # 15 softmaxes, the README command of their code for PTB (nhid 960, nhidlast 620,
    # emsize 280, dropouti 0.4, dropoutl 0.29, dropouth 0.225, batch 12, lr 20, seed
    # 28; the other settings its defaults, AWD-LSTM's). 56.54 / 54.44 val/test after
    # fine-tuning (finetune --lr 25).
    "ptb-mos": TrainingConfig(
        embedding_size=280,
        hidden_size=960,
        last_hidden_size=620,
        num_layers=3,
        mixture_components=15,
        mixture_dropout=0.29,
        input_dropout=0.4,
        hidden_dropout=0.225,
        output_dropout=0.4,
        embedding_dropout=0.1,
        weight_dropout=0.5,
        batch_size=12,
        lr=20.0,
        epochs=1000,
        seed=28,
    ),
    "wikitext-103": TrainingConfig(
        embedding_size=400,
        hidden_size=2500,
        num_layers=4,
        embedding_dropout=0.0,
        input_dropout=0.1,
        hidden_dropout=0.1,
        output_dropout=0.1,
        weight_dropout=0.0,
        alpha=0.0,
        beta=0.0,
        weight_decay=0.0,
        optimizer="adam",
        lr=1e-3,
        when=(12,),
        epochs=14,
        batch_size=60,
        bptt=140,
        cutoffs=(2800, 20000, 76000),
        seed=1111,
    ),
    # A PTB-sized model scaled down to minutes per epoch on a 2-core CPU.
    "small": TrainingConfig(
        embedding_size=200,
        hidden_size=400,
        num_layers=3,
        batch_size=20,
        bptt=35,
        input_dropout=0.4,
        hidden_dropout=0.25,
        epochs=40,
    ),
    # The built-in hidden Markov corpus: a default run ends in minutes on a CPU.
    "synthetic": TrainingConfig(
        embedding_size=64,
        hidden_size=128,
        num_layers=2,
        embedding_dropout=0.0,
        input_dropout=0.1,
        hidden_dropout=0.1,
        output_dropout=0.1,
        weight_dropout=0.2,
        lr=20.0,
        epochs=8,
        batch_size=32,
        bptt=35,
        nonmono=3,
        seed=1,
    ),
}

# The tokenization a preset reads its corpus with unless --level says otherwise.
# (The reference's own prepared character corpora, pennchar and its enwik8 files, are
# already space-separated symbols: read those with --level word.)
PRESET_LEVELS = {"ptb-char": "char", "enwik8": "char"}

# Dynamic evaluation's default settings (Krause et al. 2017): the step of
# the RMS-normalized gradient and the pull back toward the trained weights.
DYNAMIC_EVAL = {"learning_rate": 2e-5, "decay": 0.02}

# The source of the built-in corpus: HiddenMarkovSource arguments (the seed comes
# from the run's).
SYNTHETIC_SOURCE = {"num_states": 16, "vocab_size": 1000}


def config_fields():
    return dataclasses.fields(TrainingConfig)


def resolve_config(args, synthetic):
    """The preset named by `args.preset` (default: synthetic or ptb) with every flag
    the user set applied over it. Returns `(config, preset_name)`; raises
    `ValueError` with one sentence for an unknown preset or a bad value."""
    name = args.preset or ("synthetic" if synthetic else "ptb")
    base = preset(name)
    overrides = {
        f.name: getattr(args, f.name)
        for f in config_fields()
        if getattr(args, f.name, None) is not None
    }
    return dataclasses.replace(base, **overrides), name


def describe(config, level="word"):
    """A config as the plain dict `awd-lstm presets` and `train --show-config` print
    (every `TrainingConfig` field, tuples as lists), with the token `level`."""
    values = {
        k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(config).items()
    }
    return {"level": level, **values}


def preset(name):
    """The `TrainingConfig` of preset `name`; `ValueError` naming the known ones."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; known: {', '.join(PRESETS)}")
    return PRESETS[name]
