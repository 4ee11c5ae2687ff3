"""The hyperparameters of a training run, as plain data (no Keras import)."""

import dataclasses
import math

OPTIMIZERS = ("ntasgd", "sgd", "adam")


@dataclasses.dataclass(frozen=True)
class TrainingConfig:
    """Hyperparameters of a training run (paper names in brackets)."""

    embedding_size: int = 400  # [emsize] embedding dimension, also the last LSTM's units
    hidden_size: int = 1150  # [nhid] units of the inner LSTM layers
    num_layers: int = 3  # [nlayers] LSTM layers
    embedding_dropout: float = 0.1  # [dropoute] word types dropped from the embedding
    input_dropout: float = 0.65  # [dropouti] locked dropout of the embeddings
    hidden_dropout: float = 0.3  # [dropouth] locked dropout between LSTM layers
    output_dropout: float = 0.4  # [dropout] locked dropout of the last LSTM output
    weight_dropout: float = 0.5  # [wdrop] DropConnect on the recurrent kernels
    tie_weights: bool = True  # [tied] decoder weight = embedding matrix
    alpha: float = 2.0  # [alpha] activation regularization scale
    beta: float = 1.0  # [beta] temporal activation regularization scale
    optimizer: str = "ntasgd"  # [optimizer] ntasgd (SGD, then averaged), sgd, adam
    lr: float = 30.0  # [lr] learning rate (30 for SGD, 1e-3..2e-3 for Adam)
    when: tuple = ()  # [when] epochs after which the learning rate is divided by 10
    clip: float = 0.25  # [clip] global gradient-norm bound
    weight_decay: float = 1.2e-6  # [wdecay] L2 penalty
    nonmono: int = 5  # [nonmono] non-monotone interval of the NT-ASGD trigger
    epochs: int = 500  # [epochs] training epochs
    batch_size: int = 80  # [batch_size] training streams
    eval_batch_size: int = 10  # validation streams (the test uses 1)
    bptt: int = 70  # [bptt] base segment length
    length_quantum: int = 5  # segment lengths rounded to multiples of this (compiled shapes)
    seed: int = 141  # [seed] seed of the weights, masks and segment lengths

    def __post_init__(self):
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
        positive = (
            "embedding_size hidden_size num_layers nonmono epochs batch_size "
            "eval_batch_size bptt length_quantum"
        ).split()
        for name in positive:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer; got {value!r}")
        for name in (
            "embedding_dropout input_dropout hidden_dropout output_dropout weight_dropout"
        ).split():
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and 0.0 <= value < 1.0):
                raise ValueError(f"{name} must be in [0, 1); got {value!r}")
        for name in ("lr", "clip"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a finite number > 0; got {value!r}")
        for name in ("alpha", "beta", "weight_decay"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be a finite number >= 0; got {value!r}")

    def learning_rate(self, epoch):
        """The base learning rate of `epoch` (1-based): `lr` divided by 10 once for
        every epoch of `when` already completed, as the reference's `--when`."""
        return self.lr * 0.1 ** sum(1 for e in self.when if e < epoch)

    def model_kwargs(self):
        keys = (
            "embedding_size hidden_size num_layers embedding_dropout input_dropout "
            "hidden_dropout output_dropout weight_dropout tie_weights alpha beta"
        ).split()
        return {k: getattr(self, k) for k in keys}
