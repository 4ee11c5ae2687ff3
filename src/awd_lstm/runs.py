"""Run folders as objects: the one place that creates, opens and loads them.

A run folder holds:

- `config.json`: the settings (`TrainingConfig`), the corpus's location, the backend,
  the vocabulary's fingerprint. Written last when the run is created, atomically: a
  folder with a `config.json` holds a complete vocabulary (and built-in corpus).
- `vocab.json` (with the tokenization settings, `awd_lstm.data.Tokenization`, where
  they are not the reference's), and `corpus/` for the built-in corpus.
- After each epoch: `metrics.jsonl`, `best.weights.h5` (the best validated weights),
  `checkpoint.weights.h5` (what a resumed run continues from), `tensorboard/`,
  `learning_curves.png`.
- `final.json` when the run has ended: the test split's loss and perplexity.
- `.lock` while a process writes to the folder (`run_lock`): who it is.

One process at a time writes to a run folder: `train`, `finetune` (and the classifier's
training) hold its lock (`run_lock`) from before they write anything until they end;
another process that would write there is refused with `RunInUseError`, one sentence
naming the holder. Reading a run that is training (evaluating, generating, exporting)
is allowed: every file is replaced atomically.

`awd-lstm` and Python users go through the same `Run`, so a run made in a notebook
with `awd_lstm.training.train` opens with every command, and the other way round:

    run = awd_lstm.load_run("runs/ptb")
    run.config.hidden_size, run.final["test_ppl"], run.history[-1]["val_ppl"]
    model = run.load_model(batch_size=1)          # stateful, the best weights
"""

import contextlib
import dataclasses
import json
import os
import shutil

import numpy as np

from awd_lstm._environment import BACKENDS
from awd_lstm._files import write_json_atomic
from awd_lstm._lock import RunInUseError, check_not_in_use, folder_lock  # noqa: F401 (exported)
from awd_lstm._validation import (
    check_json_fields,
    check_positive_int,
    check_positive_number,
    json_type,
    short_repr,
)
from awd_lstm.config import TrainingConfig

CONFIG = "config.json"
VOCAB = "vocab.json"
FINAL = "final.json"
BEST = "best.weights.h5"
CHECKPOINT = "checkpoint.weights.h5"
METRICS = "metrics.jsonl"
CURVES = "learning_curves.png"
CORPUS = "corpus"

# Hyperparameters a fine-tuning may change; the others are the trained model's.
FINETUNE_FIELDS = ("epochs", "lr", "nonmono", "seed")
STAGES = ("train", "finetune")


class RunError(ValueError):
    """A run folder that cannot be used as asked; the message is one sentence."""


class Run:
    """A run folder: its settings, vocabulary, history and models.

    Make one with `Run.create` (or let `awd_lstm.training.train` make it) and reopen
    it with `Run.open` / `awd_lstm.load_run`.

    Attributes:
        path: The folder.
        info: Everything `config.json` holds (a dict).
        config: The run's `TrainingConfig`.
        stage: `"train"` or `"finetune"`.
        vocabulary: The run's `Vocabulary`, checked against `config.json`.
    """

    def __init__(self, path, info, config, vocabulary):
        self.path = os.fspath(path)
        self.info = info
        self.config = config
        self.vocabulary = vocabulary

    # -- making and opening -------------------------------------------------------

    @classmethod
    def create(
        cls,
        path,
        config,
        vocabulary,
        *,
        data=None,
        stage="train",
        preset=None,
        max_minutes=None,
        synthetic=None,
        finetuned_from=None,
        backend=None,
    ):
        """Writes a new run's `vocab.json` and, last, `config.json`.

        Args:
            path: The run folder (made if missing, locked while it is written: see
                `run_lock`); it must not hold a run yet.
            config: The run's `TrainingConfig`.
            vocabulary: The corpus's `Vocabulary`.
            data: Where the corpus is read again from (to resume, fine-tune,
                evaluate): a corpus folder, a `Corpus` (read from files; their paths
                are kept), or None for the built-in corpus in `path/corpus`.
            stage: `"train"` or `"finetune"`.
            preset: The preset's name, if any (the cache pointer's defaults follow it).
            max_minutes: The time limit, kept for a resumed run.
            synthetic: `{"tokens": N, "seed": S}` for the built-in corpus, whose
                source then gives `final.json` the exact optimum perplexity.
            finetuned_from: The trained run a fine-tuning starts from.
            backend: The Keras backend; default: the one in use.
        """
        path = os.fspath(path)
        if not isinstance(config, TrainingConfig):
            raise RunError(f"config must be a TrainingConfig; got {type(config).__name__}")
        if stage not in STAGES:
            raise RunError(f"stage must be one of {', '.join(STAGES)}; got {stage!r}")
        if max_minutes is not None:
            max_minutes = check_positive_number("max_minutes", max_minutes)
        if backend is None:
            from awd_lstm import backend as backends

            backend = backends.name()
        info = {
            "stage": stage,
            "preset": preset,
            "level": vocabulary.level,
            "backend": backend,
            "vocab_size": len(vocabulary),
            "vocab_fingerprint": vocabulary.fingerprint(),
            "max_minutes": max_minutes,
            "synthetic_tokens": None,
            "synthetic_seed": None,
            "config": dataclasses.asdict(config),
        }
        info.update(_data_location(data, path))
        if synthetic is not None:
            info["synthetic_tokens"] = synthetic["tokens"]
            info["synthetic_seed"] = synthetic["seed"]
        if finetuned_from is not None:
            info.update(_located("finetuned_from", os.fspath(finetuned_from), path))
        with run_lock(path, make=True):
            if os.path.exists(os.path.join(path, CONFIG)):
                raise RunError(f"{path} already holds a run (it has a {CONFIG})")
            if data is None and not os.path.isdir(os.path.join(path, CORPUS)):
                raise RunError(
                    f"give the corpus's location (data=): {path} has no {CORPUS}/ folder of its own"
                )
            vocabulary.save(os.path.join(path, VOCAB))
            # Written last: a folder with config.json holds a complete vocabulary.
            write_json_atomic(os.path.join(path, CONFIG), info)
        return cls(path, info, config, vocabulary)

    @classmethod
    def open(cls, path):
        """Opens a run folder, checking its `config.json` and its vocabulary."""
        from awd_lstm.data import CorpusError, Vocabulary

        path = os.fspath(path)
        config_path = os.path.join(path, CONFIG)
        if not os.path.isfile(config_path):
            raise RunError(f"{path} is not a run folder (it has no {CONFIG})")
        try:
            with open(config_path, encoding="utf-8") as f:
                info = json.load(f)
            config = _checked_info(info)
        except (OSError, ValueError) as e:
            reason = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise RunError(f"{config_path} is not a valid run configuration: {reason}") from None
        vocab_path = os.path.join(path, VOCAB)
        try:
            vocabulary = Vocabulary.load(vocab_path)
        except CorpusError as e:
            raise RunError(str(e)) from None
        expected = info.get("vocab_fingerprint")
        size = info.get("vocab_size")
        if (expected is not None and vocabulary.fingerprint() != expected) or (
            size is not None and len(vocabulary) != size
        ):
            raise RunError(
                f"{vocab_path} is not the vocabulary this run was trained with (its size or "
                f"fingerprint differs from {CONFIG}'s)"
            )
        return cls(path, info, config, vocabulary)

    # -- what it holds --------------------------------------------------------------

    @property
    def stage(self):
        return self.info.get("stage", "train")

    @property
    def tokenization(self):
        """How the run reads text (`awd_lstm.data.Tokenization`, kept in `vocab.json`;
        the reference's for a run without one): `corpus`, `generate` and `score`
        read with it."""
        return self.vocabulary.tokenization

    @property
    def finished(self):
        """Whether the run has ended (it has a `final.json`)."""
        return os.path.exists(os.path.join(self.path, FINAL))

    @property
    def max_seconds(self):
        """The run's time limit in seconds (None: none), kept for a resumed run."""
        minutes = self.info.get("max_minutes")
        return None if minutes is None else minutes * 60.0

    @property
    def history(self):
        """The epoch records of `metrics.jsonl` (a list of dicts; empty before the
        first epoch)."""
        path = os.path.join(self.path, METRICS)
        if not os.path.exists(path):
            return []
        return read_results(path, lines=True)

    @property
    def final(self):
        """`final.json` (test loss and perplexity), or None before the run ends."""
        path = os.path.join(self.path, FINAL)
        if not os.path.exists(path):
            return None
        return read_results(path)

    def write_final(self, final):
        """Writes `final.json`, atomically: the run has ended."""
        write_json_atomic(os.path.join(self.path, FINAL), final)

    def corpus(self):
        """The run's corpus, read with the run's vocabulary."""
        from awd_lstm.data import load_corpus

        level = self.info.get("level", "word")
        data = self._corpus_location()
        if isinstance(data, dict):
            return load_corpus(paths=data, level=level, vocab=self.vocabulary)
        return load_corpus(data, level=level, vocab=self.vocabulary)

    def split_ids(self, split):
        """One split of the run's corpus as token ids, read with the run's vocabulary
        (the other splits are not read)."""
        from awd_lstm.data import read_split

        data = self._corpus_location()
        if isinstance(data, dict):
            return read_split(split, self.vocabulary, paths=data)
        return read_split(split, self.vocabulary, data)

    def _corpus_location(self):
        """Where the corpus is: a `{split: path}` dict or a folder (the run's own
        `corpus/` for the built-in corpus)."""
        if self.info.get("data_paths"):
            relative = self.info.get("data_paths_relative", {})
            return {
                split: self._resolve(path, relative.get(split))
                for split, path in self.info["data_paths"].items()
            }
        if self.info.get("data") is None:
            return os.path.abspath(os.path.join(self.path, CORPUS))
        return self._resolve(self.info["data"], self.info.get("data_relative"))

    def trained_from(self, default=None):
        """The folder of the trained run a fine-tuning started from (`default` when
        the fine-tuning does not say, or the folder is no longer where it says)."""
        recorded = self.info.get("finetuned_from")
        if recorded is None:
            return default
        path = self._resolve(recorded, self.info.get("finetuned_from_relative"))
        if os.path.exists(os.path.join(path, CONFIG)) or default is None:
            return path
        return default

    def check_resumable(self, stage):
        """Raises `RunError` unless this is an unfinished run of `stage`
        (`"train"` or `"finetune"`)."""
        if self.stage != stage:
            kind = {"train": "training", "finetune": "fine-tuning"}
            raise RunError(
                f"{self.path} is a {kind[self.stage]} run, not a {kind[stage]} one; resume "
                f"it with awd-lstm {self.stage} --resume"
            )
        if self.finished:
            raise RunError(f"the run in {self.path} has finished; nothing to resume")

    def finetune_start_weights(self, trained_run=None):
        """A fine-tuning's starting weights when it resumes: None once it has a
        checkpoint (it continues from that), else the best weights of the trained
        run it was made from (or of `trained_run`, where that folder is gone)."""
        if os.path.exists(os.path.join(self.path, CHECKPOINT)):
            return None
        trained = Run.open(self.trained_from(trained_run))
        weights = trained.trained_weights("best")
        if trained.vocabulary.tokens != self.vocabulary.tokens:  # target-domain text
            weights = remap_weights(trained.config, trained.vocabulary, self.vocabulary, weights)
        return weights

    def _resolve(self, absolute, relative):
        """A recorded path: relative to the run folder where it still exists there (a
        folder moved or copied with what it refers to), else as recorded."""
        if relative is not None:
            candidate = os.path.normpath(os.path.join(self.path, relative))
            if os.path.exists(candidate):
                return candidate
        return absolute

    def synthetic_source(self):
        """The `HiddenMarkovSource` of the built-in corpus, or None for other corpora."""
        from awd_lstm.data import HiddenMarkovSource
        from awd_lstm.presets import SYNTHETIC_SOURCE

        if self.info.get("synthetic_tokens") is None:
            return None
        seed = self.info.get("synthetic_seed", self.config.seed)
        return HiddenMarkovSource(**SYNTHETIC_SOURCE, seed=seed)

    def weights_path(self, weights="best"):
        """The file of the `"best"` (validated) or `"last"` (checkpoint) weights."""
        names = {"best": BEST, "last": CHECKPOINT}
        if weights not in names:
            raise RunError(f"weights must be 'best' or 'last'; got {weights!r}")
        path = os.path.join(self.path, names[weights])
        if not os.path.isfile(path):
            raise RunError(
                f"{self.path} has no {names[weights]}: its training did not finish an epoch"
            )
        return path

    def trained_weights(self, weights="best"):
        """The trainable weights (one array per variable) of the best validated
        model (`"best"`) or of the last checkpoint (`"last"`: what it evaluates
        with, the averages once NT-ASGD averages)."""
        from awd_lstm import checkpoints

        path = self.weights_path(weights)
        vocab_size = len(self.vocabulary)
        if weights == "best":
            return checkpoints.load_trained_weights(self.config, vocab_size, path)
        return checkpoints.load_checkpoint_weights(self.config, vocab_size, path)

    def load_model(self, batch_size=1, stateful=True, weights="best"):
        """A language model holding the run's weights and vocabulary (`.vocabulary`).

        Args:
            batch_size: Streams of the stateful model.
            stateful: True: a stateful model of `batch_size` streams that carries its
                state from call to call (evaluation, generation). False: a model for
                any batch, from a zero state at every call (scoring, export).
            weights: `"best"` (the best validated weights) or `"last"` (the last
                checkpoint's).
        """
        from awd_lstm import recipe

        values = self.trained_weights(weights)
        vocab_size = len(self.vocabulary)
        if not stateful:
            from awd_lstm.export import inference_model

            model = inference_model(self.config, vocab_size, values)
        else:
            model = recipe.build_model(self.config, vocab_size, batch_size)
            recipe.copy_weights(values, model)
        model.vocabulary = self.vocabulary
        return model

    # -- evaluation -----------------------------------------------------------------

    def pointer_settings(self, **overrides):
        """The cache pointer's settings for this run: the reference's for its preset's
        corpus (PTB's for other presets), with `overrides` (`window`, `theta`,
        `lambdah`) that are not None."""
        from awd_lstm.pointer import POINTER_PRESETS

        settings = dict(POINTER_PRESETS.get(self.info.get("preset"), POINTER_PRESETS["ptb"]))
        settings.update({k: v for k, v in overrides.items() if v is not None})
        return settings

    def evaluation_settings(self, cache_pointer=None, dynamic_eval=None):
        """`(cache_pointer, dynamic_eval)` completed and checked: the cache pointer's
        settings given (a dict; None values and missing keys take this run's
        `pointer_settings`) and dynamic evaluation's (missing or None: the defaults,
        `awd_lstm.presets.DYNAMIC_EVAL`); None stays None. Raises `ValueError` naming
        the setting that is wrong."""
        if cache_pointer is not None and dynamic_eval is not None:
            raise RunError("the cache pointer and dynamic evaluation cannot be combined")
        if cache_pointer is not None:
            from awd_lstm.pointer import check_pointer_settings

            cache_pointer = self.pointer_settings(**cache_pointer)
            check_pointer_settings(**cache_pointer)
        if dynamic_eval is not None:
            from awd_lstm.dynamic_eval import check_dynamic_settings
            from awd_lstm.presets import DYNAMIC_EVAL

            given = {k: v for k, v in dynamic_eval.items() if v is not None}
            dynamic_eval = {**DYNAMIC_EVAL, **given}
            check_dynamic_settings(**dynamic_eval)
        return cache_pointer, dynamic_eval

    def evaluate(
        self, split="test", cache_pointer=None, dynamic_eval=None, progress=False, log=None
    ):
        """The best weights' loss on `split`, as the reference evaluates: validation
        with `eval_batch_size` streams, test with 1, the state carried over the split.

        Args:
            split: `"valid"` or `"test"`.
            cache_pointer: None, or the cache pointer's settings (a dict of
                `window`, `theta`, `lambdah`; those not given: `pointer_settings`).
            dynamic_eval: None, or dynamic evaluation's settings (`learning_rate`,
                `decay`; `{}`: the defaults); the run's files are not changed.
            progress: A progress bar over the split.
            log: Called with a line before long preparatory work.

        Returns:
            `{"split", "loss", "ppl"}` (and `"bpc"` at character level, and the
            pointer's or dynamic evaluation's settings).
        """
        from awd_lstm import recipe

        cache_pointer, dynamic_eval = self.evaluation_settings(cache_pointer, dynamic_eval)
        config, vocab_size = self.config, len(self.vocabulary)
        values = self.trained_weights("best")
        ids = self.split_ids(split)
        batch = config.eval_batch_size if split == "valid" else 1
        result = {"split": split}
        if dynamic_eval is not None:
            from awd_lstm.dynamic_eval import dynamic_evaluate, gradient_rms

            if log is not None:
                log("gradient statistics over the training split")
            train = self.split_ids("train")
            streams = max(1, min(100, len(train) // 20))
            rms = gradient_rms(config, vocab_size, values, train, batch_size=streams)
            loss = dynamic_evaluate(
                config, vocab_size, values, ids, rms, batch_size=batch, progress=progress,
                **dynamic_eval,
            )  # fmt: skip
            result["dynamic_eval"] = dict(dynamic_eval)
        elif cache_pointer is not None:
            from awd_lstm.pointer import CachePointer, evaluate_with_cache

            pointer = CachePointer(**cache_pointer, num_streams=batch)
            model = recipe.build_model(config, vocab_size, batch)
            recipe.copy_weights(values, model)
            loss = evaluate_with_cache(model, ids, config.bptt, pointer, progress=progress)
            result["cache_pointer"] = {
                "window": pointer.window,
                "theta": pointer.theta,
                "lambda": pointer.lambdah,
            }
        else:
            loss = recipe.split_loss(config, vocab_size, ids, batch, values, progress=progress)
        summary = recipe.loss_summary(split, loss, self.vocabulary.level)
        result.update(loss=loss, ppl=summary[f"{split}_ppl"])
        if f"{split}_bpc" in summary:
            result["bpc"] = summary[f"{split}_bpc"]
        return result

    # -- fine-tuning ----------------------------------------------------------------

    def finetune_config(self, **overrides):
        """The fine-tuning's `TrainingConfig`: this run's, with averaged SGD and the
        `overrides` among `FINETUNE_FIELDS` (a run trained with Adam needs `lr`)."""
        unknown = sorted(set(overrides) - set(FINETUNE_FIELDS))
        if unknown:
            raise RunError(
                f"a fine-tuning can change only {', '.join(FINETUNE_FIELDS)}; got {unknown[0]}"
            )
        overrides = {k: v for k, v in overrides.items() if v is not None}
        adaptive = {"adam": "Adam", "rmsprop": "RMSProp"}.get(self.config.optimizer)
        if adaptive and "lr" not in overrides:
            raise RunError(
                f"{self.path} trained with {adaptive} (lr {self.config.lr}); "
                "fine-tuning is averaged SGD: give its learning rate with --lr (lr in Python)"
            )
        try:
            return dataclasses.replace(self.config, optimizer="ntasgd", **overrides)
        except ValueError as e:
            raise RunError(str(e)) from None

    def create_finetune(self, path, config, max_minutes=None, data=None, vocabulary=None):
        """Creates the run folder of a fine-tuning of this run (see `finetune_config`);
        a folder this call made is removed again if it fails. With `data` (a corpus
        folder) and its `vocabulary`, the fine-tuning is on that text instead of the
        run's own (ULMFiT's target-domain fine-tuning)."""
        if data is not None:
            with _whole_or_removed(path):
                return Run.create(
                    path,
                    config,
                    vocabulary,
                    data=data,
                    stage="finetune",
                    max_minutes=max_minutes,
                    finetuned_from=self.path,
                    backend=self.info.get("backend"),
                )
        data = self._corpus_location()
        synthetic = None
        if self.info.get("synthetic_tokens") is not None:
            synthetic = {
                "tokens": self.info["synthetic_tokens"],
                "seed": self.info.get("synthetic_seed", self.config.seed),
            }
        with _whole_or_removed(path):
            return Run.create(
                path,
                config,
                self.vocabulary,
                data=data,
                stage="finetune",
                preset=self.info.get("preset"),
                max_minutes=max_minutes,
                synthetic=synthetic,
                finetuned_from=self.path,
                backend=self.info.get("backend"),
            )

    def __repr__(self):
        return f"Run({self.path!r}, stage={self.stage!r}, finished={self.finished})"


# The built-in corpus is sampled and written in memory: 10 million tokens take minutes
# and a few GB; a number beyond would fail in NumPy or exhaust the memory.
MAX_SYNTHETIC_TOKENS = 10_000_000


def write_builtin_corpus(folder, seed, tokens=200_000):
    """Samples the built-in corpus (the seeded hidden Markov source: `tokens` training
    tokens, a tenth of that each for validation and test) into `folder`; returns it
    as a `Corpus`. A run of it keeps it in `RUN/corpus` (`Run.create(...,
    data=None, synthetic={"tokens": tokens, "seed": seed})`)."""
    from awd_lstm.data import HiddenMarkovSource, Vocabulary, load_corpus
    from awd_lstm.presets import SYNTHETIC_SOURCE

    if (
        isinstance(tokens, bool)
        or not isinstance(tokens, int)
        or not 1000 <= tokens <= MAX_SYNTHETIC_TOKENS
    ):
        raise RunError(
            f"the built-in corpus takes 1000 to {MAX_SYNTHETIC_TOKENS:,} training tokens; "
            f"got {tokens!r}"
        )
    source = HiddenMarkovSource(**SYNTHETIC_SOURCE, seed=seed)
    source.write_corpus(folder, tokens, tokens // 10, tokens // 10, seed=seed)
    return load_corpus(folder, vocab=Vocabulary(source.words()))


def check_writable(path):
    """Makes the folder `path` if need be and raises `RunError` if no file can be
    written there."""
    try:
        os.makedirs(path, exist_ok=True)
        probe = os.path.join(path, ".write-test")
        with open(probe, "w") as f:
            f.write("ok")
        os.unlink(probe)
    except OSError as e:
        raise RunError(f"run folder {path} is not writable: {e.strerror}") from None


@contextlib.contextmanager
def run_lock(path, make=False, log=None):
    """Holds the lock of the run folder `path` while the block runs: the one writer.

    Another process that takes it meanwhile is refused with `RunInUseError`, one
    sentence naming this one (its process id, host, command line and start time,
    kept in `path/.lock`), and changes nothing. The operating system drops the lock
    when its process ends, however it ends, so a lock a killed process left is taken
    over (with a line to `log`). Re-entrant: this process may take it again inside
    the block. `train` and `finetune` take it themselves; take it around your own
    writes to a run folder.

        with awd_lstm.runs.run_lock("runs/ptb"):
            ...

    Args:
        path: The run folder.
        make: Make the folder (and its missing parents) if need be; those left empty
            at the end are removed again.
        log: Called with a line when a killed process's lock is taken over, or the
            file system keeps no locks (default: a warning).

    Yields:
        The lock: `.made` says whether taking it made the folder.
    """
    path = os.fspath(path)
    if not make and not os.path.isdir(path):
        raise RunError(f"{path} is not a run folder (there is no such folder)")
    held = contextlib.ExitStack()
    try:
        lock = held.enter_context(folder_lock(path, make, log))
    except OSError as e:
        raise RunError(f"run folder {path} is not writable: {e.strerror or e}") from None
    with held:
        yield lock


@contextlib.contextmanager
def _whole_or_removed(path):
    """Makes the folder `path` (locked, and checked writable); if the block fails, a
    folder this process made for it is removed again: nothing half-written stays
    behind."""
    with run_lock(path, make=True) as lock:
        check_writable(path)
        try:
            yield
        except BaseException:
            if lock.made:
                shutil.rmtree(path, ignore_errors=True)
            raise


def create_training_run(
    path,
    config,
    data=None,
    level="word",
    preset=None,
    synthetic_tokens=None,
    max_minutes=None,
    tokenization=None,
    replicas=1,
):
    """Makes a training run in `path`: reads the corpus in `data` at `level` (or, with
    `data=None`, writes the built-in corpus of `synthetic_tokens` training tokens,
    200,000 by default, to `RUN/corpus`), checks its splits against the batch sizes,
    then writes `vocab.json` and `config.json`. `tokenization` (an
    `awd_lstm.data.Tokenization` or its dict; default: the reference's) reads the text
    and chooses the vocabulary, and is kept in `vocab.json`. Everything is checked
    before anything is written, and a folder this call made is removed again if it
    fails. `replicas`: the devices the batch will be split over, for the memory check.
    Returns `(run, corpus, description)`, the description naming the corpus for a log
    line."""
    from awd_lstm import backend
    from awd_lstm.data import Tokenization, load_corpus
    from awd_lstm.presets import SYNTHETIC_SOURCE
    from awd_lstm.recipe import check_splits
    from awd_lstm.resources import check_training_memory

    path = os.fspath(path)
    if os.path.exists(os.path.join(path, CONFIG)):
        raise RunError(f"run folder {path} already holds a run; choose another or resume it")
    if max_minutes is not None:
        check_positive_number("max_minutes", max_minutes)
    if tokenization is not None:
        tokenization = Tokenization.from_json(tokenization)
        tokenization.check_level(level)
    if data is None:
        tokens = 200_000 if synthetic_tokens is None else synthetic_tokens
        if check_positive_int("synthetic_tokens", tokens) < 1000:
            raise RunError(
                f"`synthetic_tokens` must be at least 1000; Received: synthetic_tokens={tokens}"
            )
        if tokens > MAX_SYNTHETIC_TOKENS:
            raise RunError(
                f"`synthetic_tokens` must be at most {MAX_SYNTHETIC_TOKENS:,} (the built-in "
                f"corpus is for trying things out; give a corpus folder, `data`, for more); "
                f"Received: synthetic_tokens={tokens}"
            )
        if level != "word":
            raise RunError(
                f"the built-in synthetic corpus is word level; give `data`, a corpus "
                f"folder, for level={level!r}"
            )
        if tokenization is not None and not tokenization.is_default:
            raise RunError(
                "the built-in synthetic corpus has a vocabulary of its own; give `data`, "
                "a corpus folder, for tokenization settings"
            )
    backend.set_random_seed(config.seed)
    if data is None:
        vocab_size = SYNTHETIC_SOURCE["vocab_size"]
    else:
        corpus = load_corpus(data, level=level, tokenization=tokenization)
        check_splits(config, corpus)
        vocab_size = len(corpus.vocab)
    check_training_memory(config, vocab_size, replicas)  # before the folder is made
    with _whole_or_removed(path):
        synthetic = None
        if data is None:
            corpus = write_builtin_corpus(os.path.join(path, CORPUS), config.seed, tokens)
            synthetic = {"tokens": tokens, "seed": config.seed}
            description = f"built-in synthetic corpus ({os.path.join(path, CORPUS)})"
            check_splits(config, corpus)
        else:
            description = data
        run = Run.create(
            path,
            config,
            corpus.vocab,
            data=data,
            preset=preset,
            max_minutes=max_minutes,
            synthetic=synthetic,
        )
    return run, corpus, description


def resume_run(path, stage="train", writes=True):
    """Opens the unfinished run of `stage` in `path` to continue it: checked
    resumable (and writable, and not in use by another process: `RunInUseError`,
    with `writes`), the process seeded with its seed. Returns `(run,
    corpus)`; `awd_lstm.training.train(run.config, corpus, run.path, resume=True,
    max_seconds=run.max_seconds)` continues it."""
    from awd_lstm import backend

    run = Run.open(path)
    run.check_resumable(stage)
    if writes:
        with run_lock(run.path):  # refused while another process trains it
            check_writable(run.path)
    backend.set_random_seed(run.config.seed)
    return run, run.corpus()


def open_finetune(
    trained, path=None, resume=False, max_minutes=None, data=None, replicas=1, **overrides
):
    """The fine-tuning of the trained run in folder `trained`, in folder `path`
    (default `trained/finetune`): made with `finetune_config(**overrides)` and
    `max_minutes`, or with `resume=True` opened again to continue (with its own
    settings; `replicas` as in `create_training_run`); refused (`RunInUseError`)
    while another process trains `trained` or writes to `path`. Returns `(run, corpus, weights)`:
    `awd_lstm.training.finetune(run.config, corpus, run.path, weights, resume=resume,
    max_seconds=run.max_seconds)` runs it (`weights` is None where it continues from
    its checkpoint)."""
    from awd_lstm import backend
    from awd_lstm.resources import check_training_memory

    path = os.fspath(path) if path is not None else os.path.join(os.fspath(trained), "finetune")
    check_not_in_use(trained)  # not while it trains: its weights are still changing
    if resume:
        given = sorted(k for k, v in overrides.items() if v is not None)
        if given or max_minutes is not None or data is not None:
            raise RunError("--resume (resume=True) continues a fine-tuning with its own settings")
        run, corpus = resume_run(path, "finetune")
        # Before its first checkpoint it starts again from the trained run's weights.
        return run, corpus, run.finetune_start_weights(trained)
    parent = Run.open(trained)
    if max_minutes is not None:
        check_positive_number("max_minutes", max_minutes)
    if os.path.exists(os.path.join(path, CONFIG)):
        raise RunError(f"{path} already holds a fine-tuning; resume it or choose another folder")
    config = parent.finetune_config(**overrides)
    backend.set_random_seed(config.seed)
    weights = parent.trained_weights("best")
    if data is None:
        corpus = parent.corpus()
        check_training_memory(config, len(corpus.vocab), replicas)
        run = parent.create_finetune(path, config, max_minutes=max_minutes)
        return run, corpus, weights
    from awd_lstm.data import load_corpus
    from awd_lstm.recipe import check_splits

    # The new text read the trained run's way: its level and tokenization.
    level, tokenization = parent.vocabulary.level, parent.vocabulary.tokenization
    corpus = load_corpus(data, level=level, tokenization=tokenization)
    check_splits(config, corpus)
    check_training_memory(config, len(corpus.vocab), replicas)
    weights = remap_weights(parent.config, parent.vocabulary, corpus.vocab, weights)
    run = parent.create_finetune(path, config, max_minutes, data=data, vocabulary=corpus.vocab)
    return run, corpus, weights


def remap_weights(config, old_vocabulary, new_vocabulary, weights):
    """A language model's trainable weights (`Run.trained_weights`) for another
    vocabulary: the embedding rows (and an untied decoder's columns) and the decoder
    bias of words both vocabularies have are kept, a new word's are the mean
    (`awd_lstm.transfer.remap_embeddings`); the LSTMs' are unchanged. A model with an
    adaptive softmax cannot be remapped (its clusters follow the vocabulary's order)."""
    from awd_lstm.export import inference_model
    from awd_lstm.transfer import remap_embeddings

    if config.cutoffs:
        raise RunError(
            "a language model with an adaptive softmax (cutoffs) cannot be remapped to "
            "another vocabulary: its clusters follow the vocabulary's frequency order"
        )
    template = inference_model(config, len(old_vocabulary), weights)
    old, new = old_vocabulary.tokens, new_vocabulary.tokens
    remapped = []
    for variable, value in zip(template.trainable_variables, weights, strict=True):
        value = np.asarray(value)
        if variable is template.encoder.embedding.embeddings or variable is template.decoder_bias:
            value = remap_embeddings(old, new, value)
        elif template.decoder is not None and variable is template.decoder.kernel:
            value = remap_embeddings(old, new, value.T).T  # (hidden, vocabulary)
        remapped.append(value)
    return remapped


def saved_backend(path):
    """The backend recorded in a run folder's `config.json`, or None (no run, or
    unreadable: the command that opens the run reports that). Reads JSON only, so
    that the backend can be chosen before Keras is imported."""
    try:
        with open(os.path.join(os.fspath(path), CONFIG), encoding="utf-8") as f:
            backend = json.load(f).get("backend")
    except (OSError, ValueError, AttributeError):
        return None
    return backend if isinstance(backend, str) else None


def load_run(path):
    """Opens a run folder: `Run.open(path)`."""
    return Run.open(path)


def _data_location(data, run_dir):
    """`config.json`'s entries for where the corpus is read again from: absolute
    paths, and the same relative to the run folder (used first, where they exist)."""
    if data is None:
        return {"data": None}
    if isinstance(data, dict):
        located = {k: _located("path", os.fspath(v), run_dir) for k, v in data.items()}
        return {
            "data": None,
            "data_paths": {k: v["path"] for k, v in located.items()},
            "data_paths_relative": {k: v["path_relative"] for k, v in located.items()},
        }
    if isinstance(data, (str, os.PathLike)):
        return _located("data", os.fspath(data), run_dir)
    paths = getattr(data, "paths", None)  # a Corpus
    if not paths:
        raise RunError(
            "the corpus was not read from files, so the run could not read it again: "
            "write it to a folder and read it with awd_lstm.data.load_corpus"
        )
    return _data_location(dict(paths), run_dir)


def _located(key, path, run_dir):
    absolute = os.path.abspath(path)
    relative = os.path.relpath(absolute, os.path.abspath(run_dir))
    return {key: absolute, f"{key}_relative": relative}


# The JSON kinds of config.json's entries (besides "config", the `TrainingConfig`).
INFO_FIELDS = {
    "stage": ("string",),
    "preset": ("string", "null"),
    "level": ("string",),
    "backend": ("string", "null"),
    "vocab_size": ("integer", "null"),
    "vocab_fingerprint": ("string", "null"),
    "max_minutes": ("number", "null"),
    "synthetic_tokens": ("integer", "null"),
    "synthetic_seed": ("integer", "null"),
    "data": ("string", "null"),
    "data_relative": ("string", "null"),
    "data_paths": ("strings",),
    "data_paths_relative": ("strings",),
    "finetuned_from": ("string",),
    "finetuned_from_relative": ("string",),
    "config": ("object",),
}


def _checked_info(info):
    """The `TrainingConfig` of `config.json`'s contents `info`, every entry checked
    for its type and value; `ValueError` names the first that is wrong."""
    from awd_lstm.data.corpus import LEVELS

    check_json_fields(info, INFO_FIELDS)
    if "config" not in info:
        raise ValueError("it has no 'config' (the training settings)")
    if info.get("stage", "train") not in STAGES:
        raise ValueError(f"its 'stage' must be one of {', '.join(STAGES)}; got {info['stage']!r}")
    if info.get("level", "word") not in LEVELS:
        raise ValueError(f"its 'level' must be one of {', '.join(LEVELS)}; got {info['level']!r}")
    if info.get("backend") is not None and info["backend"] not in BACKENDS:
        raise ValueError(
            f"its 'backend' must be one of {', '.join(BACKENDS)}; got {info['backend']!r}"
        )
    if info.get("max_minutes") is not None and info["max_minutes"] <= 0:
        raise ValueError(f"its 'max_minutes' must be > 0; got {info['max_minutes']!r}")
    settings = info["config"]
    known = {field.name for field in dataclasses.fields(TrainingConfig)}
    unknown = sorted(set(settings) - known)
    if unknown:
        raise ValueError(f"its 'config' has an unknown setting {unknown[0]!r}")
    return TrainingConfig(**settings)


def read_results(path, lines=False):
    """A run file's JSON object of results (`final.json`; with `lines`, one per line:
    `metrics.jsonl`'s epoch records): each value a number, true or false, or null, a
    record's `epoch` an integer >= 1. `RunError` names what is damaged."""
    try:
        with open(path, encoding="utf-8") as f:
            if lines:
                values = [json.loads(line) for line in f if line.strip()]
            else:
                values = [json.load(f)]
    except (OSError, ValueError) as e:
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise RunError(f"{path} cannot be read: {reason}") from None
    for number, value in enumerate(values, 1):
        where = f"its line {number}" if lines else "it"
        if not isinstance(value, dict):
            raise RunError(
                f"{path} cannot be read: {where} holds a JSON {json_type(value)} where an "
                "object belongs"
            )
        epoch = value.get("epoch", 1) if lines else 1
        if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 1:
            raise RunError(
                f"{path} cannot be read: {where} has the epoch {short_repr(epoch)} where an "
                "integer >= 1 belongs"
            )
        odd = next((k for k, v in value.items() if not _is_result(v)), None)
        if odd is not None:
            raise RunError(
                f"{path} cannot be read: {where} has {odd!r} {short_repr(value[odd])} where a "
                "number, true, false or null belongs"
            )
    return values if lines else values[0]


def _is_result(value):
    # Perplexities may be inf (json writes Infinity) after a diverged epoch.
    return value is None or isinstance(value, (bool, int, float))
