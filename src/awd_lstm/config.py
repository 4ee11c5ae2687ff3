"""The hyperparameters of a training run, as plain data (no Keras import)."""

import dataclasses
import math

OPTIMIZERS = ("ntasgd", "sgd", "adam", "rmsprop")
# What a training step with a non-finite loss or gradient does (`TrainingConfig.on_nan`).
ON_NAN = ("stop", "skip-batch")
# The encoder's recurrent layers (`awd_lstm.models.AWDLSTMEncoder`'s `cell`).
CELLS = ("lstm", "mogrifier", "qrnn")
# Hard bounds, whatever the machine (docs/RELIABILITY.md, "Resources"). Layers and the
# Mogrifier's rounds are built and traced one by one: far beyond any published model
# (3 or 4 layers, 6 rounds) a run only spends minutes building before its first step.
MAX_LAYERS = 100
MAX_MOGRIFIER_ROUNDS = 100
# Every other size below 2**31: the memory estimate refuses far smaller ones on any
# machine (awd_lstm.resources), and the bound keeps its arithmetic within floats.
MAX_SIZE = 2**31 - 1


def step_decay(boundaries, factor=0.1):
    """A `keras.callbacks.LearningRateScheduler` schedule: the learning rate is
    multiplied by `factor` at each (0-based) epoch in `boundaries`, that is after
    each of those (1-based) epochs: the reference's `--when`.

    Example:

    >>> schedule = step_decay([2, 4])
    >>> [round(schedule(epoch, 1.0), 6) for epoch in range(5)]
    [1.0, 1.0, 0.1, 1.0, 0.1]
    """
    boundaries = set(boundaries)

    def schedule(epoch, learning_rate):
        return learning_rate * factor if epoch in boundaries else learning_rate

    return schedule


def _is_number(value):
    # An int passes as a float; a bool (an int to Python) does not.
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _field(default, metadata):
    # `paper`: the reference code's name for the setting; `help`: one line for --help.
    return dataclasses.field(default=default, metadata=metadata)


@dataclasses.dataclass(frozen=True)
class TrainingConfig:
    """Hyperparameters of a training run (paper names in brackets)."""

    embedding_size: int = _field(
        400, {"paper": "emsize", "help": "embedding dimension, also the last LSTM's units"}
    )
    hidden_size: int = _field(1150, {"paper": "nhid", "help": "units of the inner LSTM layers"})
    num_layers: int = _field(3, {"paper": "nlayers", "help": "LSTM layers"})
    embedding_dropout: float = _field(
        0.1, {"paper": "dropoute", "help": "word types dropped from the embedding"}
    )
    input_dropout: float = _field(
        0.65, {"paper": "dropouti", "help": "locked dropout of the embeddings"}
    )
    hidden_dropout: float = _field(
        0.3, {"paper": "dropouth", "help": "locked dropout between LSTM layers"}
    )
    output_dropout: float = _field(
        0.4, {"paper": "dropout", "help": "locked dropout of the last LSTM output"}
    )
    weight_dropout: float = _field(
        0.5, {"paper": "wdrop", "help": "DropConnect on the recurrent kernels"}
    )
    tie_weights: bool = _field(True, {"paper": "tied", "help": "decoder weight = embedding matrix"})
    cutoffs: tuple = _field(
        (),
        {
            "paper": "splits",
            "help": "word ranks where the clusters of a tied adaptive softmax begin "
            "(e.g. 2800 20000 76000); none: full softmax",
            "metavar": "RANK",
        },
    )
    cell: str = _field(
        "lstm",
        {
            "help": "the recurrent layers: lstm (weight-dropped), mogrifier (Melis et al. "
            "2020, with the same weight drop) or qrnn (Bradbury et al. 2017, weight drop on "
            "its gate weights, as the reference's AWD-QRNN)",
            "choices": CELLS,
        },
    )
    mogrifier_rounds: int = _field(
        5,
        {"paper": "feature_mask_rounds", "help": "the Mogrifier's rounds (with --cell mogrifier)"},
    )
    mogrifier_rank: int = _field(
        0,
        {
            "paper": "feature_mask_rank",
            "help": "the rank of the Mogrifier's factorized matrices; 0: full",
        },
    )
    mixture_components: int = _field(
        0,
        {
            "paper": "n_experts",
            "help": "softmaxes of a mixture-of-softmaxes output layer over the tied "
            "embedding (Yang et al. 2018); 0: one softmax",
        },
    )
    mixture_dropout: float = _field(
        0.0, {"paper": "dropoutl", "help": "locked dropout of the mixture's latent vectors"}
    )
    last_hidden_size: int = _field(
        0,
        {
            "paper": "nhidlast",
            "help": "units of the last LSTM; 0: the embedding size (what a tied softmax "
            "needs; a mixture of softmaxes may differ)",
        },
    )
    alpha: float = _field(2.0, {"paper": "alpha", "help": "activation regularization scale"})
    beta: float = _field(1.0, {"paper": "beta", "help": "temporal activation regularization scale"})
    optimizer: str = _field(
        "ntasgd",
        {
            "paper": "optimizer",
            "help": "ntasgd (SGD, then averaged), sgd, adam, rmsprop (Adam without momentum, "
            "as the Mogrifier's authors train)",
        },
    )
    lr: float = _field(
        30.0, {"paper": "lr", "help": "learning rate (30 for SGD, 1e-3..2e-3 for Adam)"}
    )
    when: tuple = _field(
        (), {"paper": "when", "help": "epochs after which the learning rate is divided by 10"}
    )
    clip: float = _field(0.25, {"paper": "clip", "help": "global gradient-norm bound"})
    weight_decay: float = _field(1.2e-6, {"paper": "wdecay", "help": "L2 penalty"})
    nonmono: int = _field(
        5, {"paper": "nonmono", "help": "non-monotone interval of the NT-ASGD trigger"}
    )
    epochs: int = _field(500, {"paper": "epochs", "help": "training epochs"})
    batch_size: int = _field(80, {"paper": "batch_size", "help": "training streams"})
    eval_batch_size: int = _field(10, {"help": "validation streams (the test uses 1)"})
    bptt: int = _field(70, {"paper": "bptt", "help": "base segment length"})
    length_quantum: int = _field(
        5,
        {
            "help": "segment lengths rounded to multiples of this (fewer compiled shapes; "
            "no padded steps in JAX's 5-step chunks)"
        },
    )
    seed: int = _field(
        141, {"paper": "seed", "help": "seed of the weights, masks and segment lengths"}
    )
    mixed_precision: bool = _field(
        False,
        {
            "help": "bfloat16 computation with float32 weights (Keras' mixed_bfloat16 "
            "policy): faster on CPUs with AVX-512 BF16 or AMX, and on GPUs"
        },
    )
    on_nan: str = _field(
        "stop",
        {
            "help": "a step whose loss or gradient is not finite: stop the run (keeping the "
            "last checkpoint), or skip-batch: leave the weights and optimizer state as they "
            "were, reset the carried state and go on",
            "choices": ON_NAN,
        },
    )
    max_skips: int = _field(
        10,
        {"help": "with --on-nan skip-batch, the steps a run may skip; one more stops it"},
    )

    def __post_init__(self):
        for name in ("tie_weights", "mixed_precision"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be true or false; got {getattr(self, name)!r}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(
                f"optimizer must be one of {', '.join(OPTIMIZERS)}; got {self.optimizer!r}"
            )
        when = self.when
        if not isinstance(when, (list, tuple)) or not all(
            isinstance(e, int) and not isinstance(e, bool) and e >= 1 for e in when
        ):
            raise ValueError(f"when must be a list of positive epoch numbers; got {when!r}")
        object.__setattr__(self, "when", tuple(sorted(when)))
        cutoffs = self.cutoffs
        if (
            not isinstance(cutoffs, (list, tuple))
            or not all(isinstance(c, int) and not isinstance(c, bool) for c in cutoffs)
            or not all(a < b for a, b in zip((0, *cutoffs), cutoffs))
        ):
            raise ValueError(
                f"cutoffs must be strictly increasing positive word ranks; got {cutoffs!r}"
            )
        object.__setattr__(self, "cutoffs", tuple(cutoffs))
        positive = (
            "embedding_size hidden_size num_layers nonmono epochs batch_size "
            "eval_batch_size bptt length_quantum"
        ).split()
        for name in positive:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer; got {value!r}")
        seed = self.seed
        if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**32:
            raise ValueError(f"seed must be an integer in [0, 2**32); got {seed!r}")
        for name in (
            "embedding_dropout input_dropout hidden_dropout output_dropout weight_dropout "
            "mixture_dropout"
        ).split():
            value = getattr(self, name)
            if not (_is_number(value) and 0.0 <= value < 1.0):
                raise ValueError(f"{name} must be in [0, 1); got {value!r}")
        for name in ("lr", "clip"):
            value = getattr(self, name)
            if not (_is_number(value) and math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a finite number > 0; got {value!r}")
        if self.on_nan not in ON_NAN:
            raise ValueError(f"on_nan must be one of {', '.join(ON_NAN)}; got {self.on_nan!r}")
        if self.cell not in CELLS:
            raise ValueError(f"cell must be one of {', '.join(CELLS)}; got {self.cell!r}")
        for name in (
            "mixture_components",
            "last_hidden_size",
            "mogrifier_rounds",
            "mogrifier_rank",
            "max_skips",
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be an integer >= 0; got {value!r}")
        self._check_bounds()
        if self.mixture_components and (self.cutoffs or not self.tie_weights):
            raise ValueError(
                "a mixture of softmaxes (mixture_components) scores the tied embedding: "
                "it needs tie_weights and no cutoffs"
            )
        if (
            self.last_hidden_size
            and self.tie_weights
            and not self.mixture_components
            and self.last_hidden_size != self.embedding_size
        ):
            raise ValueError(
                f"last_hidden_size {self.last_hidden_size} must equal embedding_size "
                f"{self.embedding_size} with a tied softmax (a mixture of softmaxes, "
                "mixture_components, may differ)"
            )
        for name in ("alpha", "beta", "weight_decay"):
            value = getattr(self, name)
            if not (_is_number(value) and math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be a finite number >= 0; got {value!r}")

    def _check_bounds(self):
        """The hard bounds: `MAX_LAYERS`, `MAX_MOGRIFIER_ROUNDS`, `MAX_SIZE`."""
        for name, bound, why in (
            ("num_layers", MAX_LAYERS, "deeper stacks only take minutes to build"),
            ("mogrifier_rounds", MAX_MOGRIFIER_ROUNDS, "more only take minutes to build"),
        ):
            if getattr(self, name) > bound:
                raise ValueError(
                    f"{name} must be at most {bound} ({why}); got {getattr(self, name)}"
                )
        sizes = (
            "embedding_size hidden_size batch_size eval_batch_size bptt length_quantum "
            "mixture_components last_hidden_size mogrifier_rank"
        ).split()
        for name in sizes:
            if getattr(self, name) > MAX_SIZE:
                raise ValueError(f"{name} must be below 2**31; got {getattr(self, name)}")

    def learning_rate(self, epoch):
        """The base learning rate of `epoch` (1-based): `lr` divided by 10 once for
        every epoch of `when` already completed, as the reference's `--when` (the
        rule of `step_decay`, applied from the first epoch on)."""
        schedule, rate = step_decay(self.when), self.lr
        for index in range(epoch):  # Keras' 0-based epochs
            rate = schedule(index, rate)
        return rate

    @property
    def dtype_policy(self):
        """The Keras dtype policy of the run's models: `"float32"`, or with
        `mixed_precision` `"mixed_float16"` where the backend computes on a GPU (its
        float16 units; training scales the loss, `recipe.FLOAT16_LOSS_SCALE`) and
        `"mixed_bfloat16"` elsewhere (bfloat16 keeps float32's range: no scaling).
        The weights are float32 under every policy, so a run resumes on either."""
        if not self.mixed_precision:
            return "float32"
        from awd_lstm import backend

        return "mixed_float16" if backend.has_gpu() else "mixed_bfloat16"

    def model_kwargs(self):
        keys = (
            "embedding_size hidden_size num_layers embedding_dropout input_dropout "
            "hidden_dropout output_dropout weight_dropout tie_weights alpha beta"
        ).split()
        kwargs = {k: getattr(self, k) for k in keys}
        if self.mixture_components:
            kwargs.update(
                mixture_components=self.mixture_components,
                mixture_dropout=self.mixture_dropout,
            )
        if self.last_hidden_size:
            kwargs["last_hidden_size"] = self.last_hidden_size
        if self.cell == "mogrifier":
            kwargs.update(
                cell=self.cell,
                mogrifier_rounds=self.mogrifier_rounds,
                mogrifier_rank=self.mogrifier_rank or None,
            )
        elif self.cell != "lstm":
            kwargs["cell"] = self.cell
        if self.cutoffs:
            # Row budgets start empty and grow to fit the data (AdaptiveSoftmax).
            kwargs.update(cutoffs=self.cutoffs, tail_capacity=(0.0,) * len(self.cutoffs))
        return kwargs
