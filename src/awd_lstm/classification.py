"""Text classification runs on the AWD-LSTM encoder, the ULMFiT way (Howard & Ruder 2018).

`train_classifier` trains an `AWDLSTMClassifier` on labelled documents
(`awd_lstm.data.labelled`) and writes a run folder that works like a language
model's: `config.json` (written last; `stage` "classifier"), `vocab.json` and
`labels.json` first, then after each epoch `best.weights.h5` (the best validation
accuracy), `checkpoint.weights.h5` (weights, optimizer and callback state: what a
resumed run continues from), `metrics.jsonl` and `tensorboard/`, and at the end
`final.json` with the test accuracy and error. Every file is replaced atomically.

The recipe (section 3.3 of the paper): the encoder of a trained language model
(`encoder=RUN`; its vocabulary and tokenization read the documents), or a new one;
Adam (`beta_1=0.7, beta_2=0.99`) with slanted triangular learning rates over the
whole run and discriminative rates per layer group (each group's the next one's
divided by 2.6); gradual unfreezing (the head first, one group more per epoch);
documents batched by length and read in BPT3C segments.

Without data the task is built in: documents of `ClassSources`, one hidden Markov
source per class over the built-in language-model corpus's source, whose Bayes
error on the test documents `final.json` reports beside the model's and a bag of
words' (naive Bayes).
"""

import contextlib
import dataclasses
import itertools
import json
import math
import os
import time

import numpy as np

from awd_lstm import resources
from awd_lstm._files import write_json_atomic, write_text_atomic
from awd_lstm._validation import (
    check_json_fields,
    check_positive_int,
    check_positive_number,
    check_rate,
)
from awd_lstm.data import CorpusError

CONFIG, VOCAB, LABELS = "config.json", "vocab.json", "labels.json"
BEST, CHECKPOINT, METRICS, FINAL = (
    "best.weights.h5",
    "checkpoint.weights.h5",
    "metrics.jsonl",
    "final.json",
)
STAGE = "classifier"
UNFREEZE = ("gradual", "all", "none")
# The built-in task is sampled in memory at about 3 ms a document (with its validation
# and test fifths): 100,000 take minutes.
MAX_TRAIN_DOCUMENTS = 100_000
# The built-in task's documents (in the run folder, read again on resume).
TASK = "data"
# Documents `iter_predict` (and `awd-lstm classify predict`) reads and predicts at a
# time: enough to sort them into batches of like lengths, few enough to hold.
PREDICT_WINDOW = 1024


class ClassifierRunError(ValueError):
    """A classifier run folder that cannot be used; the message is one sentence."""


@dataclasses.dataclass(frozen=True)
class ClassifierConfig:
    """The settings of a classifier run (JSON in `config.json`).

    Args:
        epochs: Passes over the training documents (None: 4 on given data, 12 on
            the built-in task).
        batch_size: Documents per step.
        lr: The slanted triangular schedule's peak rate (the last group's).
        cut_frac, ratio: The schedule's rise fraction and peak-to-floor ratio.
        factor: Each layer group's rate is the next one's divided by this (None:
            ULMFiT's 2.6 on a language model's encoder, 1 on a new one).
        unfreeze: "gradual" (the head first, one group more per epoch), "all" (every
            group from the start) or "none" (the head only: the encoder stays fixed);
            None: "gradual" on a language model's encoder, "all" on a new one (whose
            random weights have nothing to keep).
        head_sizes, head_dropout: The head (`AWDLSTMClassifier`).
        drop_mult: The encoder's dropouts are the language model's times this
            (fastai's text classifier: 0.5).
        bptt, max_len: BPT3C segments and the gradient's reach, in tokens.
        length_quantum: Batches are padded to a multiple of this many tokens.
        valid_fraction, test_fraction: Splits carved from the training documents
            where the data has none (seeded, stratified).
        seed: Seed of the splits, the batches, the head and a new encoder.
        embedding_size, hidden_size, num_layers: A new encoder's sizes (without a
            language model to start from).
        train_documents: The built-in task's training documents, at most 100,000
            (valid and test: a fifth as many each, at least 200).
        separation: How far apart the built-in task's classes are
            (`ClassSources(separation=...)`: larger is easier; at 0.1 the Bayes error
            is about 1% and a bag of words' about 25%).
    """

    epochs: int = None
    batch_size: int = 32
    lr: float = 0.01
    cut_frac: float = 0.1
    ratio: float = 32.0
    factor: float = None
    unfreeze: str = None
    head_sizes: tuple = (50,)
    head_dropout: tuple = (0.2, 0.1)
    drop_mult: float = 0.5
    bptt: int = 70
    max_len: int = 1400
    length_quantum: int = 8
    valid_fraction: float = 0.1
    test_fraction: float = 0.1
    seed: int = 0
    embedding_size: int = 64
    hidden_size: int = 128
    num_layers: int = 2
    train_documents: int = 5000
    separation: float = 0.1

    def __post_init__(self):
        for name in ("head_sizes", "head_dropout"):
            value = getattr(self, name)
            if not isinstance(value, (list, tuple)):
                raise ValueError(f"`{name}` must be a list; Received: {name}={value!r}")
            object.__setattr__(self, name, tuple(value))
        for size in self.head_sizes:
            check_positive_int("head_sizes", size)
        for rate in self.head_dropout:
            check_rate("head_dropout", rate)
        if self.epochs is not None:
            check_positive_int("epochs", self.epochs)
        for name in (
            "batch_size",
            "bptt",
            "max_len",
            "length_quantum",
            "embedding_size",
            "hidden_size",
            "num_layers",
            "train_documents",
        ):
            check_positive_int(name, getattr(self, name))
        if self.train_documents > MAX_TRAIN_DOCUMENTS:
            raise ValueError(
                f"`train_documents` must be at most {MAX_TRAIN_DOCUMENTS:,}; "
                f"Received: train_documents={self.train_documents!r}"
            )
        for name in ("lr", "ratio"):
            check_positive_number(name, getattr(self, name))
        if self.factor is not None:
            check_positive_number("factor", self.factor)
        if check_positive_number("separation", self.separation) > 1.0:
            raise ValueError(
                f"`separation` must be in (0, 1]; Received: separation={self.separation!r}"
            )
        for name in ("cut_frac", "drop_mult", "valid_fraction", "test_fraction"):
            check_rate(name, getattr(self, name))
        if self.unfreeze is not None and self.unfreeze not in UNFREEZE:
            raise ValueError(
                f"`unfreeze` must be one of {', '.join(UNFREEZE)}; "
                f"Received: unfreeze={self.unfreeze!r}"
            )
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"`seed` must be an integer >= 0; Received: seed={self.seed!r}")

    def to_json(self):
        data = dataclasses.asdict(self)
        data["head_sizes"], data["head_dropout"] = list(self.head_sizes), list(self.head_dropout)
        return data


def _read_json(path, what):
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        raise ClassifierRunError(f"{path} cannot be read as {what}: {e}") from None


def _read_results(path, lines=False):
    """`final.json`'s results, or with `lines` `metrics.jsonl`'s epoch records, checked
    as a language model run's (`awd_lstm.runs`)."""
    from awd_lstm.runs import RunError, read_results

    try:
        return read_results(path, lines=lines)
    except RunError as e:
        raise ClassifierRunError(str(e)) from None


# The JSON kinds of config.json's entries.
INFO_FIELDS = {
    "stage": ("string",),
    "config": ("object",),
    "data_options": ("strings",),
    "data": ("string", "null"),
    "data_relative": ("string",),
    "task": ("object", "null"),
    "encoder": ("object",),
    "encoder_run": ("string",),
    "backend": ("string",),
}
DATA_OPTIONS = ("label_column", "text_column")


def _checked_info(info):
    """The `ClassifierConfig` of `config.json`'s contents `info`, its entries checked
    for their types; `ValueError` names the first that is wrong."""
    check_json_fields(info, INFO_FIELDS)
    for name in ("config", "encoder"):
        if name not in info:
            raise ValueError(f"it has no {name!r}")
    unknown = sorted(set(info.get("data_options", {})) - set(DATA_OPTIONS))
    if unknown:
        raise ValueError(f"its 'data_options' has an unknown option {unknown[0]!r}")
    task = info.get("task")
    if task is not None:
        check_json_fields(task, {"seed": ("integer",), "separation": ("number",)})
        if "seed" not in task:
            raise ValueError("its 'task' has no 'seed'")
    known = {field.name for field in dataclasses.fields(ClassifierConfig)}
    unknown = sorted(set(info["config"]) - known)
    if unknown:
        raise ValueError(f"its 'config' has an unknown setting {unknown[0]!r}")
    return ClassifierConfig(**info["config"])


class ClassifierRun:
    """A classifier run folder: its settings, vocabulary, labels, history and model."""

    def __init__(self, path, info, config, vocabulary, labels):
        self.path, self.info, self.config = os.fspath(path), info, config
        self.vocabulary, self.labels = vocabulary, labels

    @classmethod
    def open(cls, path):
        """Opens a classifier run folder (one sentence if it is not one)."""
        from awd_lstm.data import Vocabulary
        from awd_lstm.data.labelled import LabelVocabulary

        path = os.fspath(path)
        config_path = os.path.join(path, CONFIG)
        if not os.path.isfile(config_path):
            raise ClassifierRunError(f"{path} is not a run folder (it has no {CONFIG})")
        info = _read_json(config_path, "a run configuration")
        if not isinstance(info, dict) or info.get("stage") != STAGE:
            stage = info.get("stage", "train") if isinstance(info, dict) else None
            raise ClassifierRunError(
                f"{path} is not a classifier run (it holds a {stage!r} run); "
                "give a folder written by awd-lstm classify train"
            )
        try:
            config = _checked_info(info)
        except ValueError as e:
            raise ClassifierRunError(
                f"{config_path} is not a valid classifier run configuration: {e}"
            ) from None
        from awd_lstm.export import check_saved_objects

        try:
            check_saved_objects(info["encoder"], f"{config_path} is refused")
        except ValueError as e:
            raise ClassifierRunError(str(e)) from None
        try:
            vocabulary = Vocabulary.load(os.path.join(path, VOCAB))
            labels = LabelVocabulary.load(os.path.join(path, LABELS))
        except CorpusError as e:
            raise ClassifierRunError(str(e)) from None
        return cls(path, info, config, vocabulary, labels)

    @property
    def history(self):
        path = os.path.join(self.path, METRICS)
        if not os.path.exists(path):
            return []
        return _read_results(path, lines=True)

    @property
    def final(self):
        path = os.path.join(self.path, FINAL)
        return _read_results(path) if os.path.exists(path) else None

    def data(self):
        """The run's labelled corpus, read again with its settings."""
        from awd_lstm.data.labelled import load_labelled

        where = self.info.get("data") or os.path.join(self.path, TASK)
        relative = self.info.get("data_relative")
        if relative and os.path.exists(os.path.join(self.path, relative)):
            where = os.path.join(self.path, relative)
        options = self.info.get("data_options", {})
        c = self.config
        return load_labelled(
            where,
            valid_fraction=c.valid_fraction,
            test_fraction=c.test_fraction,
            seed=c.seed,
            **options,
        )

    def build_model(self):
        """The run's classifier, untrained (its encoder of the run's sizes)."""
        from awd_lstm.models import AWDLSTMClassifier, AWDLSTMEncoder

        try:
            encoder = AWDLSTMEncoder.from_config(self.info["encoder"])
        except (TypeError, ValueError) as e:
            reason = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise ClassifierRunError(
                f"{os.path.join(self.path, CONFIG)} holds an encoder that cannot be made: {reason}"
            ) from None
        c = self.config
        model = AWDLSTMClassifier(
            encoder,
            len(self.labels),
            head_sizes=c.head_sizes,
            head_dropout=c.head_dropout,
            bptt=c.bptt,
            max_len=c.max_len,
            seed=c.seed,
        )
        model.build((None, None))
        model.vocabulary, model.labels = self.vocabulary, self.labels
        return model

    def load_model(self, weights="best"):
        """The classifier with the best weights (or the checkpoint's, `"last"`)."""
        from awd_lstm import checkpoints

        name = BEST if weights == "best" else CHECKPOINT
        path = os.path.join(self.path, name)
        if not os.path.exists(path):
            raise ClassifierRunError(f"{self.path} has no trained weights yet ({name})")
        model = self.build_model()
        if weights == "best":
            checkpoints.load_weights(model, path)
        else:
            _compile(model, self.config, 1)
            checkpoints.load_checkpoint(model, path)
        return model

    def predict(self, texts, batch_size=64, progress=False):
        """Class probabilities `(documents, classes)` of `texts` under the best weights."""
        from awd_lstm.data.labelled import encode_documents

        model = self.load_model()
        docs = encode_documents(texts, self.vocabulary)
        return _probabilities(model, docs, batch_size, self.config.length_quantum, progress)

    def iter_predict(self, texts, batch_size=64, window=PREDICT_WINDOW):
        """An iterator over the class probabilities of each of `texts` (an iterable:
        a file's lines are read as it goes), in order, under the best weights:
        `predict`'s, `window` documents at a time (each window sorted by length into
        batches), so that memory does not grow with the input. The arguments are
        checked and the model loaded at the call, before any text is read."""
        from awd_lstm.data.labelled import encode_documents

        check_positive_int("batch_size", batch_size)
        check_positive_int("window", window)
        model = self.load_model()
        quantum = self.config.length_quantum

        def probabilities():
            rest, read = iter(texts), 0
            while chunk := list(itertools.islice(rest, window)):
                docs = encode_documents(chunk, self.vocabulary, start=read)
                read += len(chunk)
                yield from _probabilities(model, docs, batch_size, quantum)

        return probabilities()

    def evaluate(self, split="test", batch_size=64, progress=False):
        """Accuracy, error, per-class precision/recall/F1 and the confusion matrix
        (rows: true class, columns: predicted) of the best weights on `split`."""
        from awd_lstm.data.labelled import encode_documents

        corpus = self.data()
        model = self.load_model()
        docs = encode_documents(corpus.texts(split), self.vocabulary)
        if not docs:
            raise ClassifierRunError(f"the run's {split} split has no documents")
        truth = corpus.label_ids(split)
        p = _probabilities(model, docs, batch_size, self.config.length_quantum, progress)
        return classification_report(truth, p.argmax(-1), list(self.labels), split)


def classification_report(truth, predicted, labels, split="test"):
    """Accuracy, error, per-class precision/recall/F1 and the confusion matrix."""
    k = len(labels)
    confusion = np.zeros((k, k), dtype=np.int64)
    np.add.at(confusion, (np.asarray(truth), np.asarray(predicted)), 1)
    per_class = {}
    for i, label in enumerate(labels):
        tp = confusion[i, i]
        precision = tp / confusion[:, i].sum() if confusion[:, i].sum() else 0.0
        recall = tp / confusion[i].sum() if confusion[i].sum() else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per_class[label] = {
            "precision": float(precision),
            "recall": float(recall),
            "f1": float(f1),
            "support": int(confusion[i].sum()),
        }
    accuracy = float(np.trace(confusion) / max(confusion.sum(), 1))
    return {
        "split": split,
        "documents": int(confusion.sum()),
        "accuracy": accuracy,
        "error": 1.0 - accuracy,
        "per_class": per_class,
        "confusion": confusion.tolist(),
        "labels": list(labels),
    }


def plot_confusion(path, report, title=""):
    """A PNG of the confusion matrix of `report` (`classification_report`)."""
    from matplotlib.figure import Figure

    from awd_lstm.run_logs import _save

    confusion = np.asarray(report["confusion"])
    labels = report["labels"]
    figure = Figure(figsize=(1.2 + 0.6 * len(labels), 1.0 + 0.6 * len(labels)), dpi=100)
    axes = figure.add_subplot()
    shares = confusion / np.maximum(confusion.sum(axis=1, keepdims=True), 1)
    axes.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    for i in range(len(labels)):
        for j in range(len(labels)):
            color = "white" if shares[i, j] > 0.5 else "black"
            axes.text(j, i, str(confusion[i, j]), ha="center", va="center", color=color)
    axes.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    axes.set_yticks(range(len(labels)), labels)
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    axes.set_title(title or f"{report['split']}: accuracy {report['accuracy']:.1%}")
    _save(figure, path)


def _probabilities(model, docs, batch_size, length_quantum, progress=False):
    from awd_lstm.data.labelled import length_batches, pad_batch
    from awd_lstm.progress import Progress

    out = np.zeros((len(docs), model.num_classes), dtype=np.float64)
    bar = Progress(len(docs), "document", progress)
    done = 0
    for batch in length_batches([len(d) for d in docs], batch_size, shuffle=False):
        ids, lengths, _ = pad_batch(docs, batch, length_quantum=length_quantum)
        logits = np.asarray(model.predict_on_batch({"ids": ids, "lengths": lengths}), np.float64)
        logits -= logits.max(-1, keepdims=True)
        p = np.exp(logits)
        out[batch] = p / p.sum(-1, keepdims=True)
        done += len(batch)
        bar.update(done)
    return out


def _steps_per_epoch(config, documents):
    return math.ceil(documents / config.batch_size)


def _compile(model, config, steps_per_epoch):
    """Adam (beta_1 0.7, beta_2 0.99) with discriminative rates and slanted triangular
    learning rates: one triangle over the run, or with gradual unfreezing one per
    stage (an epoch per group unfrozen, then the rest of the run)."""
    import keras

    from awd_lstm.transfer import (
        DiscriminativeAdam,
        SlantedTriangular,
        StagedSlantedTriangular,
        discriminative_multipliers,
    )

    if config.unfreeze == "gradual":
        partial = min(len(model.layer_groups()) - 1, config.epochs - 1)
        stages = [steps_per_epoch] * partial + [steps_per_epoch * (config.epochs - partial)]
        schedule = StagedSlantedTriangular(config.lr, stages, config.cut_frac, config.ratio)
    else:
        total = max(steps_per_epoch * config.epochs, math.ceil(1 / config.cut_frac))
        schedule = SlantedTriangular(config.lr, total, config.cut_frac, config.ratio)
    optimizer = DiscriminativeAdam(
        schedule,
        multipliers=discriminative_multipliers(model, config.factor),
        beta_1=0.7,
        beta_2=0.99,
    )
    model.compile(optimizer, keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


def _encoder_config(config, vocabulary, encoder_run):
    """A new encoder's config, or the language model's with its dropouts times
    `drop_mult` (its weights are loaded when training starts)."""
    from awd_lstm.models import AWDLSTMEncoder

    defaults = dict(
        embedding_dropout=0.1, input_dropout=0.65, hidden_dropout=0.3, weight_dropout=0.5
    )
    if encoder_run is None:
        encoder = AWDLSTMEncoder(
            len(vocabulary),
            embedding_size=config.embedding_size,
            hidden_size=config.hidden_size,
            num_layers=config.num_layers,
            seed=config.seed,
            **{k: v * config.drop_mult for k, v in defaults.items()},
        )
        return encoder.get_config()
    language_model = encoder_run.load_model(stateful=False)
    source = language_model.encoder
    encoder_config = source.get_config()
    for name in defaults:
        encoder_config[name] = encoder_config[name] * config.drop_mult
    return encoder_config


def _numpy(variables):
    from keras import ops

    return [ops.convert_to_numpy(v) for v in variables]


def create_classifier_run(
    path,
    config,
    data=None,
    encoder=None,
    label_column="label",
    text_column="text",
    tokenization=None,
):
    """Makes a classifier run in `path`: reads the labelled data in `data` (or writes
    the built-in task to `RUN/data`), takes the vocabulary of the language-model run
    `encoder` (or builds one from the training documents, read with `tokenization`, a
    `Tokenization`: by default every whitespace-separated word), checks everything,
    then writes `vocab.json`, `labels.json` and, last, `config.json`, with the folder
    locked (`awd_lstm.runs.run_lock`; refused while another process trains `encoder`).
    Returns the `ClassifierRun`."""
    from awd_lstm.data import Tokenization, Vocabulary
    from awd_lstm.data.labelled import load_labelled
    from awd_lstm.data.synthetic import ClassSources
    from awd_lstm.resources import check_classifier_memory
    from awd_lstm.runs import Run, _whole_or_removed, check_not_in_use

    path = os.fspath(path)
    if os.path.exists(os.path.join(path, CONFIG)):
        raise ClassifierRunError(f"{path} already holds a run; resume it or choose another folder")
    pretrained = encoder is not None
    if pretrained and tokenization is not None:
        raise ClassifierRunError(
            "the encoder's run reads the documents with its own vocabulary; a "
            "tokenization only builds a new encoder's"
        )
    if tokenization is None:
        tokenization = Tokenization(train_only=True)
    elif not tokenization.train_only:
        tokenization = dataclasses.replace(tokenization, train_only=True)
    config = dataclasses.replace(
        config,
        factor=config.factor if config.factor is not None else (2.6 if pretrained else 1.0),
        unfreeze=config.unfreeze or ("gradual" if pretrained else "all"),
        epochs=config.epochs or (4 if data is not None else 12),
    )
    lm_run = Run.open(encoder) if encoder is not None else None
    if lm_run is not None:
        check_not_in_use(lm_run.path)  # not while it trains: its weights are still changing
    with _whole_or_removed(path):  # a folder this call made is removed if it fails
        options = {"label_column": label_column, "text_column": text_column}
        info = {"stage": STAGE, "config": config.to_json(), "data_options": options}
        task = None
        os.makedirs(path, exist_ok=True)
        if data is None:
            seed = config.seed
            if lm_run is not None and lm_run.info.get("synthetic_seed") is not None:
                seed = lm_run.info["synthetic_seed"]  # the classes perturb the corpus's source
            sources = ClassSources(seed=seed, separation=config.separation)
            n = config.train_documents
            held_out = max(200, n // 5)  # enough test documents to tell errors apart
            sources.write_task(
                os.path.join(path, TASK), train=n, valid=held_out, test=held_out, seed=seed
            )
            task = {"seed": seed, "train_documents": n, "separation": config.separation}
            info.update({"data": None, "task": task})
        else:
            data = os.fspath(data)
            info.update(
                {
                    "data": os.path.abspath(data),
                    "data_relative": os.path.relpath(os.path.abspath(data), path),
                }
            )
        corpus = load_labelled(
            data if data is not None else os.path.join(path, TASK),
            valid_fraction=config.valid_fraction,
            test_fraction=config.test_fraction,
            seed=config.seed,
            **options,
        )
        if not corpus.valid:
            raise CorpusError("the data has no validation documents; raise valid_fraction")
        if lm_run is not None:
            vocabulary = lm_run.vocabulary
            info["encoder_run"] = os.path.abspath(lm_run.path)
        else:
            from awd_lstm.data import tokenize_line
            from awd_lstm.data.labelled import document_lines

            tokens = [
                t
                for text in corpus.texts("train")
                for line in document_lines(text)
                for t in tokenize_line(line, "word", tokenization)
            ]
            vocabulary = Vocabulary.from_training(tokens, tokenization=tokenization)
        info["encoder"] = _encoder_config(config, vocabulary, lm_run)
        check_classifier_memory(config, info["encoder"], len(corpus.labels))
        from awd_lstm import backend

        info["backend"] = backend.name()
        vocabulary.save(os.path.join(path, VOCAB))
        corpus.labels.save(os.path.join(path, LABELS))
        write_json_atomic(os.path.join(path, CONFIG), info)
        return ClassifierRun.open(path)


def train_classifier(run, log=print, progress=True, resume=False, tensorboard_every=50):
    """Trains the classifier of `run` (a `ClassifierRun`), writing its files; from
    its checkpoint with `resume=True`. Returns `final.json`'s contents. The run folder
    is locked meanwhile (`awd_lstm.runs.run_lock`: another process that would write
    there is refused). A classifier whose estimated memory is above what the machine
    has is refused before it is built (`awd_lstm.resources.ResourceError`); one that
    runs out of memory anyway stops with `awd_lstm.resources.RanOutOfMemory`, its last
    checkpoint kept."""
    from awd_lstm.runs import run_lock
    from awd_lstm.training import _out_of_memory_stops_the_run  # the same file names

    resources.check_classifier_memory(run.config, run.info["encoder"], len(run.labels))
    with run_lock(run.path, log=log), _out_of_memory_stops_the_run(run.path):
        return _train_classifier(run, log, progress, resume, tensorboard_every)


def _train_classifier(run, log, progress, resume, tensorboard_every):
    import keras

    from awd_lstm import backend, checkpoints
    from awd_lstm.data.labelled import encode_documents, length_batches, pad_batch
    from awd_lstm.progress import Progress
    from awd_lstm.run_logs import TRAIN, VALIDATION, ScalarWriter
    from awd_lstm.runs import Run
    from awd_lstm.transfer import GradualUnfreezing

    config = run.config
    backend.set_random_seed(config.seed)
    corpus = run.data()
    docs = {
        s: encode_documents(corpus.texts(s), run.vocabulary) for s in ("train", "valid", "test")
    }
    labels = {s: corpus.label_ids(s) for s in docs}
    model = run.build_model()
    steps = _steps_per_epoch(config, len(docs["train"]))
    _compile(model, config, steps)
    model.optimizer.build(model.trainable_variables)
    checkpoint_path = os.path.join(run.path, CHECKPOINT)
    state = None
    if resume and os.path.exists(checkpoint_path):
        state = checkpoints.load_checkpoint(model, checkpoint_path)
        log(f"resuming after epoch {state['epoch']}")
    elif run.info.get("encoder_run"):
        weights = Run.open(run.info["encoder_run"]).load_model(stateful=False).encoder.weights
        for target, source in zip(model.encoder.weights, _numpy(weights), strict=True):
            target.assign(source)
    groups = model.layer_groups()
    callbacks = []
    if config.unfreeze == "gradual":
        callbacks.append(GradualUnfreezing())
    elif config.unfreeze == "none":
        for group in groups[:-1]:
            for layer in group:
                layer.trainable = False
    hooks = keras.callbacks.CallbackList(callbacks, model=model, epochs=config.epochs, verbose=0)
    records = list(state["records"]) if state else []
    best = state.get("best") if state else None
    epoch = state["epoch"] if state else 0
    hooks.on_train_begin()
    if state and callbacks:
        callbacks[0].set_state(state["unfreezing"])
    step = int(keras.ops.convert_to_numpy(model.optimizer.iterations))
    writer = ScalarWriter(os.path.join(run.path, "tensorboard"), purge_step=step + 1 if step else 0)
    try:
        while epoch < config.epochs:
            hooks.on_epoch_begin(epoch)
            started = time.perf_counter()
            lengths = [len(d) for d in docs["train"]]
            bar = Progress(sum(lengths), "token", progress, stateful_metrics=["loss"])
            loss_sum, count, tokens = 0.0, 0, 0
            for batch in length_batches(lengths, config.batch_size, config.seed, epoch):
                ids, batch_lengths, y = pad_batch(
                    docs["train"], batch, labels["train"], length_quantum=config.length_quantum
                )
                logged = tensorboard_every and (step + 1) % tensorboard_every == 0
                # The step's own rate (the head's): the schedule at the step about to run.
                rate = (
                    float(keras.ops.convert_to_numpy(model.optimizer.learning_rate))
                    if logged
                    else None
                )
                result = model.train_on_batch(
                    {"ids": ids, "lengths": batch_lengths}, y, return_dict=True
                )
                loss = float(result["loss"])
                if not math.isfinite(loss):
                    raise FloatingPointError(f"the loss became {loss} at step {step + 1}")
                step += 1
                loss_sum += loss * len(batch)
                count += len(batch)
                tokens += int(batch_lengths.sum())
                if logged:
                    writer.add(TRAIN, {"batch_loss": loss, "batch_learning_rate": rate}, step)
                bar.update(tokens, [("loss", loss_sum / count)])
            seconds = time.perf_counter() - started
            valid = _split_scores(model, docs["valid"], labels["valid"], config)
            record = {
                "epoch": epoch + 1,
                "train_loss": loss_sum / count,
                "val_loss": valid["loss"],
                "val_accuracy": valid["accuracy"],
                "val_error": 1 - valid["accuracy"],
                "tokens_per_sec": tokens / seconds,
                "seconds": time.perf_counter() - started,
            }
            records.append(record)
            writer.add(
                TRAIN,
                {
                    "epoch_loss": record["train_loss"],
                    "epoch_tokens_per_second": record["tokens_per_sec"],
                },
                step,
            )
            writer.add(
                VALIDATION, {"epoch_loss": valid["loss"], "epoch_accuracy": valid["accuracy"]}, step
            )
            if best is None or valid["accuracy"] > best:
                best = valid["accuracy"]
                checkpoints.save_weights(model, os.path.join(run.path, BEST))
            hooks.on_epoch_end(epoch, dict(record))
            epoch += 1
            state = {
                "stage": STAGE,
                "epoch": epoch,
                "records": records,
                "best": best,
                "unfreezing": callbacks[0].get_state() if callbacks else None,
            }
            with _all_trainable(groups):  # the checkpoint's layout of a model not frozen
                checkpoints.save_checkpoint(model, state, checkpoint_path)
            write_text_atomic(
                os.path.join(run.path, METRICS), "".join(json.dumps(r) + "\n" for r in records)
            )
            log(
                f"epoch {epoch}: train loss {record['train_loss']:.4f}, valid accuracy "
                f"{valid['accuracy']:.2%}; training {record['tokens_per_sec']:,.0f} tokens/s; "
                f"{record['seconds']:.0f} s with validation"
            )
        hooks.on_train_end()
    finally:
        writer.close()
    checkpoints.load_weights(model, os.path.join(run.path, BEST))
    test = _split_scores(model, docs["test"], labels["test"], config)
    final = {
        "test_accuracy": test["accuracy"],
        "test_error": 1 - test["accuracy"],
        "test_loss": test["loss"],
    }
    line = f"test accuracy {test['accuracy']:.2%} (error {1 - test['accuracy']:.2%})"
    task = run.info.get("task")
    if task is not None:
        from awd_lstm.data.synthetic import ClassSources

        sources = ClassSources(seed=task["seed"], separation=task.get("separation", 0.05))
        index = {w: i for i, w in enumerate(sources.words())}
        source_ids = [_source_ids(index, text) for text in corpus.texts("test")]
        train_ids = [_source_ids(index, text) for text in corpus.texts("train")]
        bayes = sources.bayes_error(source_ids, labels["test"])
        baseline = sources.baseline_error(train_ids, labels["train"], source_ids, labels["test"])
        final.update(
            {
                "bayes_error": float(bayes.error),
                "bayes_expected_error": float(bayes.expected_error),
                "bag_of_words_error": float(baseline),
            }
        )
        line += f"; Bayes error {bayes.error:.2%}, bag of words {baseline:.2%}"
    write_json_atomic(os.path.join(run.path, FINAL), final)
    log(line)
    return final


@contextlib.contextmanager
def _all_trainable(groups):
    """Every group trainable while the block runs, then as before (frozen layers'
    weights would otherwise count as states, and a resumed model is not frozen)."""
    before = [[layer.trainable for layer in group] for group in groups]
    for group in groups:
        for layer in group:
            layer.trainable = True
    try:
        yield
    finally:
        for group, flags in zip(groups, before):
            for layer, flag in zip(group, flags):
                layer.trainable = flag


def _source_ids(index, text):
    """A built-in task document's ids in its source's numbering (`index`: word to id)."""
    from awd_lstm.data.labelled import document_lines

    return np.array([index[t] for line in document_lines(text) for t in [*line.split(), "<eos>"]])


def _split_scores(model, docs, labels, config):
    if not docs:
        return {"loss": float("nan"), "accuracy": float("nan")}
    p = _probabilities(model, docs, 2 * config.batch_size, config.length_quantum)
    loss = -np.mean(np.log(np.maximum(p[np.arange(len(labels)), labels], 1e-30)))
    return {"loss": float(loss), "accuracy": float(np.mean(p.argmax(-1) == labels))}
