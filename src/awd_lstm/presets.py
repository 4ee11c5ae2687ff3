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
    # Melis et al. (2020), "Mogrifier LSTM": their tuned 24M-parameter PTB model (the
    # config of deepmind/lamb's 786252db3825+_tune_ptb_24m_lstm_fm_d2_arms/trial_483):
    # 2 layers, tied, 5 rounds of rank 84, input dropout 0.729, output 0.716,
    # inter-layer 0.291, state dropout 0.387, no embedding dropout or activation
    # penalty, "RMSProp" (Adam with beta1 0) lr 0.0023, batch 64, 70 steps, 1000 turns
    # of about an epoch each, seed 1. 51.4 / 50.1 val/test. Mapped to this pipeline:
    # the hidden size is the largest whose model here has at most their 24M parameters
    # (912: 23.98M); their state dropout (a mask on the carried h) becomes the weight
    # drop of the recurrent kernels, AWD-LSTM's regularizer of the same product;
    # their loss sums the 70 steps' cross-entropies where this one averages them, so
    # their L2 penalty (2.5e-4, on sum(w^2)/2) and gradient-norm bound (10) are
    # divided by 70. Not mapped: their averaging (Adam here does not average), the
    # skip connection of the layers' outputs, the capped input gate and resetting the
    # state with probability 0.01.
    "ptb-mogrifier": TrainingConfig(
        embedding_size=912,
        hidden_size=912,
        num_layers=2,
        cell="mogrifier",
        mogrifier_rounds=5,
        mogrifier_rank=84,
        embedding_dropout=0.0,
        input_dropout=0.729,
        hidden_dropout=0.291,
        output_dropout=0.716,
        weight_dropout=0.387,
        alpha=0.0,
        beta=0.0,
        optimizer="rmsprop",
        lr=0.0023,
        weight_decay=2.5e-4 / 70,
        clip=10.0 / 70,
        epochs=1000,
        batch_size=64,
        bptt=70,
        seed=1,
    ),
    # WikiText-103 (Merity et al. 2018, reference README, `--model QRNN`): 4 QRNN
    # layers of 2500 units, light dropout, no weight drop, AR/TAR or weight decay,
    # Adam with the rate divided by 10 after epoch 12, and a tied adaptive softmax over
    # the 267,735-word vocabulary (33.0 test perplexity in 12 hours on one GPU).
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
        cell="qrnn",
        seed=1111,
    ),
    # AWD-QRNN on PTB, reference README: `--model QRNN --batch_size 20 --clip 0.2
    # --wdrop 0.1 --nhid 1550 --nlayers 4 --emsize 400 --dropouth 0.3 --seed 9001
    # --dropouti 0.4 --epochs 550` (60.6 / 58.3 val/test; fine-tuned, `--seed 404
    # --epochs 300`, 59.1 / 56.7; with the pointer 53.4 / 52.6).
    "ptb-qrnn": TrainingConfig(
        cell="qrnn",
        embedding_size=400,
        hidden_size=1550,
        num_layers=4,
        batch_size=20,
        clip=0.2,
        weight_dropout=0.1,
        input_dropout=0.4,
        hidden_dropout=0.3,
        epochs=550,
        seed=9001,
    ),
    # AWD-QRNN on WikiText-2, reference README: `--epochs 500 --clip 0.25 --dropouti
    # 0.4 --dropouth 0.2 --nhid 1550 --nlayers 4 --seed 4002 --model QRNN --wdrop 0.1
    # --batch_size 40` (69.3 / 66.8; fine-tuned 68.5 / 65.9; pointer 53.6 / 52.1).
    "wikitext-2-qrnn": TrainingConfig(
        cell="qrnn",
        hidden_size=1550,
        num_layers=4,
        batch_size=40,
        clip=0.25,
        weight_dropout=0.1,
        input_dropout=0.4,
        hidden_dropout=0.2,
        epochs=500,
        seed=4002,
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

# Scoring sentences (`awd_lstm.generation.iter_scores`, `awd-lstm score`): a line of
# more tokens is scored alone, this many positions per call, the state carried.
SCORE_SEGMENT_LENGTH = 256

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
