"""The built-in synthetic corpus: text drawn from a seeded hidden Markov source.

Its exact optimum is known: the best possible model of a sequence drawn from the source
is the source itself, whose likelihood of the sequence the forward algorithm computes.
A trained language model's test perplexity can so be compared with the lowest any
model can reach on the same text.
"""

import math
import os

import numpy as np

from awd_lstm._files import write_text_atomic
from awd_lstm.data.corpus import EOS


class HiddenMarkovSource:
    """A hidden Markov model over words, `<eos>` among them.

    Args:
        num_states: Hidden states.
        vocab_size: Words, `<eos>` included (word 0).
        seed: Seed of the parameters.
        transition_concentration: Dirichlet concentration of the transition rows;
            small values make the next state predictable.
        emission_concentration: Dirichlet concentration of the emission rows over
            each state's own slice of the vocabulary.
        words_per_state: How many words each state can emit (`vocab_size` / states
            by default, overlapping slices otherwise).
        eos_probability: Probability that a state emits `<eos>` (ends the line).
    """

    def __init__(
        self,
        num_states=16,
        vocab_size=1000,
        seed=0,
        transition_concentration=0.05,
        emission_concentration=0.5,
        words_per_state=None,
        eos_probability=0.05,
    ):
        if num_states < 1 or vocab_size < 2:
            raise ValueError(
                f"need num_states >= 1 and vocab_size >= 2; got {num_states}, {vocab_size}"
            )
        rng = np.random.default_rng(seed)
        self.num_states = num_states
        self.vocab_size = vocab_size
        self.seed = seed
        self.transitions = rng.dirichlet(
            np.full(num_states, transition_concentration), size=num_states
        )
        words = vocab_size - 1
        per_state = words_per_state or max(1, words // num_states)
        self.emissions = np.zeros((num_states, vocab_size))
        for s in range(num_states):
            start = (s * words) // num_states
            slice_ids = 1 + (start + np.arange(per_state)) % words
            self.emissions[s, slice_ids] = (1 - eos_probability) * rng.dirichlet(
                np.full(per_state, emission_concentration)
            )
            self.emissions[s, 0] = eos_probability
        self.initial = self.stationary()

    def stationary(self):
        """The stationary law of the hidden chain."""
        values, vectors = np.linalg.eig(self.transitions.T)
        vector = np.real(vectors[:, np.argmin(np.abs(values - 1.0))])
        return vector / vector.sum()

    def words(self):
        """Word strings: `<eos>` first, then `w0001`, `w0002`, ..."""
        width = len(str(self.vocab_size))
        return [EOS] + [f"w{i:0{width}d}" for i in range(1, self.vocab_size)]

    def sample(self, length, seed):
        """`length` word ids drawn from the source, starting in its stationary law."""
        rng = np.random.default_rng(seed)
        transitions = np.cumsum(self.transitions, axis=1)
        emissions = np.cumsum(self.emissions, axis=1)
        state = int(rng.choice(self.num_states, p=self.initial))
        out = np.empty(length, dtype=np.int32)
        draws = rng.random((length, 2))
        last_state, last_word = self.num_states - 1, self.vocab_size - 1
        for t in range(length):
            out[t] = min(int(np.searchsorted(emissions[state], draws[t, 0], "right")), last_word)
            state = min(int(np.searchsorted(transitions[state], draws[t, 1], "right")), last_state)
        return out

    def log_likelihood(self, ids):
        """`log P(ids)` under the source (natural log), by the scaled forward algorithm."""
        alpha = self.initial
        total = 0.0
        for word in ids:
            alpha = alpha * self.emissions[:, word]
            norm = alpha.sum()
            if norm == 0.0:
                return -math.inf
            total += math.log(norm)
            alpha = (alpha / norm) @ self.transitions
        return total

    def optimal_perplexity(self, ids):
        """The perplexity of the source itself on `ids`: no model can do better on
        average."""
        return math.exp(-self.log_likelihood(ids) / len(ids))

    def unigram_perplexity(self, train_ids, test_ids):
        """Perplexity on `test_ids` of add-one word frequencies of `train_ids`."""
        counts = np.bincount(train_ids, minlength=self.vocab_size) + 1.0
        probs = counts / counts.sum()
        return math.exp(-np.mean(np.log(probs[test_ids])))

    def write_corpus(
        self, directory, train_tokens=200_000, valid_tokens=20_000, test_tokens=20_000, seed=None
    ):
        """Writes `train.txt`, `valid.txt`, `test.txt` (one line per `<eos>`); the
        corpus reader gives back exactly the sampled ids. Returns the file paths."""
        seed = self.seed if seed is None else seed
        os.makedirs(directory, exist_ok=True)
        words = self.words()
        paths = {}
        for offset, (split, n) in enumerate(
            (("train", train_tokens), ("valid", valid_tokens), ("test", test_tokens))
        ):
            ids = self.sample(n, seed=seed * 3 + offset + 1)
            if ids[-1] != 0:
                ids[-1] = 0  # every line of a text file ends with <eos>
            lines, line = [], []
            for i in ids:
                if i == 0:
                    lines.append(" ".join(line))
                    line = []
                else:
                    line.append(words[i])
            path = os.path.join(directory, f"{split}.txt")
            write_text_atomic(path, "\n".join(lines) + "\n")
            paths[split] = path
        return paths


# -- the built-in classification task ---------------------------------------------------


class BayesError:
    """The error of the Bayes-optimal classifier on a set of documents.

    Attributes:
        error: The fraction of the documents whose most probable class (the argmax of
            the exact posterior) is not their true label: what the optimal classifier
            scores on these documents, comparable with a trained classifier's test
            error on the same documents.
        expected_error: `1 - mean(max posterior)`: the optimal classifier's expected
            error on documents like these, from the posteriors alone (no labels
            needed); it estimates the same Bayes error rate with less sampling noise.
    """

    def __init__(self, error, expected_error):
        self.error = float(error)
        self.expected_error = float(expected_error)

    def __iter__(self):
        return iter((self.error, self.expected_error))

    def __repr__(self):
        return f"BayesError(error={self.error:.4f}, expected_error={self.expected_error:.4f})"


def _stack(sources):
    """The initial laws `(K, S)`, transitions `(K, S, S)` and emissions `(K, S, V)`."""
    initial = np.stack([s.initial for s in sources])
    transitions = np.stack([s.transitions for s in sources])
    emissions = np.stack([s.emissions for s in sources])
    return initial, transitions, emissions


def _row_sampler(table):
    """A function drawing, for each row index `rows[i]` of `table` (rows are laws),
    one column: many rows at once, by one `searchsorted` over the rows' cumulative
    sums laid end to end (row `r` shifted by `r`)."""
    rows, cols = table.shape
    flat = (np.cumsum(table, axis=1) + np.arange(rows)[:, None]).ravel()
    last = np.array([np.flatnonzero(row > 0)[-1] for row in table])

    def draw(row_ids, uniforms):
        found = np.searchsorted(flat, row_ids + uniforms, side="right") - row_ids * cols
        # Rounding can carry a draw past a row's last word of positive probability.
        return np.minimum(found, last[row_ids])

    return draw


class ClassSources:
    """The built-in classification task: one hidden Markov source per class.

    The classes share the vocabulary, the hidden states and the emission law of one
    base source, by default the source of the built-in language-model corpus
    (`HiddenMarkovSource(num_states=16, vocab_size=1000, seed=seed)`, as a run of the
    built-in corpus with that seed draws it); they differ in their transitions, each
    a mixture of the base transitions and a class's own random ones:
    `(1 - separation) * base + separation * own_k`, with `own_k` drawn like the
    base's (Dirichlet rows, of the base's concentration by default, seeded by
    `seed`).

    Why pretraining helps: every class's text is written in the base source's words
    with its emission law, so what a language model learns from the base corpus
    carries over: which words each hidden state emits (each state owns a slice of the
    vocabulary: the words' clusters, which its embeddings learn) and how to track the
    hidden state through a document (its recurrent state). What tells the classes
    apart is only which states tend to follow which, a low-dimensional pattern over
    the tracked state; a classifier trained from scratch on the labelled documents
    alone has to learn the clusters of ~1000 words from them too. A bag of words sees
    only how often each state (cluster) occurs, not in which order, so the
    `NaiveBayes` baseline stays above the Bayes error that `posteriors` reaches.

    A document is `length` tokens drawn from its class's source (starting in its
    stationary law), `length` uniform in `[min_length, max_length]`, then `<eos>`
    (its last line end). Every state emits `<eos>` with the same probability, so that
    closing `<eos>` (and redrawing a document of nothing but `<eos>`, which has the
    same probability under every class) leaves the class posteriors exact.

    Args:
        num_classes: Classes K (at least 2), named `class0`, `class1`, ...
        seed: Seed of the base source (when `base` is not given) and of the classes'
            own transitions.
        separation: Weight of each class's own transitions in (0, 1]: larger values
            make the classes easier to tell apart. The default, 0.05, on 2 classes and
            documents of 20-200 words: a Bayes error of about 4% and a naive Bayes
            error of about 35% (0.02: 14% and 42%; 0.1: 1% and 24%).
        base: A `HiddenMarkovSource` to perturb instead of the default one.
        class_concentration: Dirichlet concentration of the classes' own transition
            rows (default: the base source's `transition_concentration`, or its
            default 0.05 when `base` is given).
        **source_options: `HiddenMarkovSource` arguments of the base source (default
            `num_states=16, vocab_size=1000`, the built-in corpus's).
    """

    def __init__(
        self,
        num_classes=2,
        seed=0,
        separation=0.05,
        base=None,
        class_concentration=None,
        **source_options,
    ):
        import copy

        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
            raise ValueError(f"need at least 2 classes; got num_classes={num_classes!r}")
        if not 0.0 < separation <= 1.0:
            raise ValueError(f"separation must be in (0, 1]; got {separation!r}")
        if base is None:
            options = {"num_states": 16, "vocab_size": 1000, **source_options}
            base = HiddenMarkovSource(seed=seed, **options)
        elif source_options:
            raise ValueError("give either a base source or its arguments, not both")
        self.base = base
        self.seed = seed
        self.separation = separation
        self.num_classes = num_classes
        self.vocab_size = base.vocab_size
        self.num_states = base.num_states
        self.label_names = [f"class{k}" for k in range(num_classes)]
        if class_concentration is None:
            class_concentration = source_options.get("transition_concentration", 0.05)
        rng = np.random.default_rng([seed, 1])
        self.sources = []
        for _ in range(num_classes):
            own = rng.dirichlet(np.full(base.num_states, class_concentration), base.num_states)
            source = copy.copy(base)
            source.transitions = (1.0 - separation) * base.transitions + separation * own
            source.initial = source.stationary()
            self.sources.append(source)

    def words(self):
        """The shared word strings (the base source's): `<eos>` first."""
        return self.base.words()

    def sample_documents(self, n, seed, min_length=20, max_length=200):
        """`n` documents and their labels, drawn with `seed`.

        Returns:
            `(documents, labels)`: a list of int32 word-id arrays, each ending with
            `<eos>` (id 0), and an int array of class ids, drawn uniformly.
        """
        if not 1 <= min_length <= max_length:
            raise ValueError(f"need 1 <= min_length <= max_length; got {min_length}, {max_length}")
        rng = np.random.default_rng(seed)
        labels = rng.integers(self.num_classes, size=n)
        lengths = rng.integers(min_length, max_length + 1, size=n)
        docs = np.zeros((n, max_length + 1), dtype=np.int32)
        todo = np.arange(n)
        while len(todo):
            docs[todo] = self._draw(labels[todo], max_length, rng)
            words = np.arange(max_length + 1)[None, :] < lengths[todo, None]
            empty = ~np.any((docs[todo] != 0) & words, axis=1)
            todo = todo[empty]  # nothing but <eos>: drawn again (same odds in every class)
        out = []
        for doc, length in zip(docs, lengths):
            doc = doc[: length + 1].copy()
            doc[length] = 0
            out.append(doc)
        return out, labels

    def _draw(self, labels, length, rng):
        initial, transitions, emissions = _stack(self.sources)
        k, s, v = emissions.shape
        start = _row_sampler(initial)
        step = _row_sampler(transitions.reshape(k * s, s))
        emit = _row_sampler(emissions.reshape(k * s, v))
        state = start(labels, rng.random(len(labels)))
        out = np.empty((len(labels), length + 1), dtype=np.int32)
        for t in range(length + 1):
            rows = labels * s + state
            out[:, t] = emit(rows, rng.random(len(labels)))
            state = step(rows, rng.random(len(labels)))
        return out

    def document_text(self, ids):
        """The text of a document in the built-in corpus's word format: one line per
        `<eos>`, each ended by a line break (as the corpus files are); reading it
        with `awd_lstm.data.labelled.encode_documents` gives back `ids`."""
        words = self.words()
        lines, line = [], []
        for i in ids:
            if i == 0:
                lines.append(" ".join(line) + "\n")
                line = []
            else:
                line.append(words[i])
        if line:
            lines.append(" ".join(line))
        return "".join(lines)

    def log_likelihoods(self, docs):
        """`log P(doc | class)` for every document and class, shape `(n, K)`
        (natural log), by the scaled forward algorithm run on all documents at once."""
        initial, transitions, emissions = _stack(self.sources)
        n = len(docs)
        lengths = np.array([len(d) for d in docs], dtype=np.int64)
        ids = np.zeros((n, int(lengths.max(initial=0))), dtype=np.int64)
        for i, doc in enumerate(docs):
            ids[i, : len(doc)] = doc
        alpha = np.repeat(initial[None], n, axis=0)  # (n, K, S)
        total = np.zeros((n, self.num_classes))
        for t in range(ids.shape[1]):
            active = t < lengths
            scaled = alpha * np.moveaxis(emissions[:, :, ids[:, t]], 2, 0)
            norm = scaled.sum(axis=2)
            with np.errstate(divide="ignore"):
                total += np.where(active[:, None], np.log(norm), 0.0)
            scaled /= np.where(norm > 0, norm, 1.0)[..., None]
            moved = np.matmul(scaled[:, :, None, :], transitions[None])[:, :, 0, :]
            alpha = np.where(active[:, None, None], moved, alpha)
        return total

    def posteriors(self, docs):
        """The exact class posteriors `(n, K)` of the documents under a uniform class
        prior, from each class source's forward-algorithm likelihood."""
        logp = self.log_likelihoods(docs)
        top = logp.max(axis=1, keepdims=True)
        impossible = ~np.isfinite(top[:, 0])
        weights = np.exp(logp - np.where(np.isfinite(top), top, 0.0))
        weights[impossible] = 1.0  # a document no class can emit: no evidence
        return weights / weights.sum(axis=1, keepdims=True)

    def bayes_error(self, docs, labels):
        """The Bayes-optimal classifier's error on `docs` with their true `labels`:
        a `BayesError` with `error` (the fraction misclassified by the argmax of the
        exact posterior) and `expected_error` (`1 - mean(max posterior)`)."""
        post = self.posteriors(docs)
        labels = np.asarray(labels)
        error = np.mean(post.argmax(axis=1) != labels)
        return BayesError(error, 1.0 - post.max(axis=1).mean())

    def exact_bayes_error(self, length):
        """The exact Bayes error over all documents of `length` tokens (every word
        sequence, weighed by its probability), by enumeration: for tiny sources only
        (at most 10^6 sequences)."""
        import itertools

        count = self.vocab_size**length
        if count > 10**6:
            raise ValueError(f"{count} sequences of length {length}: too many to enumerate")
        seqs = [np.array(s) for s in itertools.product(range(self.vocab_size), repeat=length)]
        probs = np.exp(self.log_likelihoods(seqs))  # (sequences, K)
        return 1.0 - probs.max(axis=1).sum() / self.num_classes

    def sample_task(
        self, train=1000, valid=200, test=200, seed=None, min_length=20, max_length=200
    ):
        """The three splits, drawn with seeds derived from `seed` (default: the
        sources'): `{split: (documents, labels)}` as `sample_documents` returns."""
        seed = self.seed if seed is None else seed
        return {
            split: self.sample_documents(n, seed * 3 + offset + 1, min_length, max_length)
            for offset, (split, n) in enumerate(
                (("train", train), ("valid", valid), ("test", test))
            )
        }

    def write_task(
        self,
        folder,
        train=1000,
        valid=200,
        test=200,
        seed=None,
        min_length=20,
        max_length=200,
        layout="tsv",
    ):
        """Writes the splits of `sample_task` so that `load_labelled(folder)` reads
        them: `layout` "tsv" or "csv" (`train.tsv`, `valid.tsv`, `test.tsv` with the
        columns `label` and `text`), or "folders" (`train/class0/000000.txt`, ...).
        Documents are in the built-in corpus's word format (`document_text`).
        Returns `{split: path}`."""
        from awd_lstm.data.labelled import write_labelled_folder, write_labelled_table

        if layout not in ("tsv", "csv", "folders"):
            raise ValueError(f"layout must be 'tsv', 'csv' or 'folders'; got {layout!r}")
        os.makedirs(folder, exist_ok=True)
        task = self.sample_task(train, valid, test, seed, min_length, max_length)
        paths = {}
        for split, (docs, labels) in task.items():
            pairs = [(self.document_text(d), self.label_names[c]) for d, c in zip(docs, labels)]
            if layout == "folders":
                paths[split] = write_labelled_folder(os.path.join(folder, split), pairs)
            else:
                path = os.path.join(folder, f"{split}.{layout}")
                paths[split] = write_labelled_table(path, pairs)
        return paths

    def baseline_error(self, train_docs, train_labels, test_docs, test_labels):
        """The test error of the bag-of-words baseline, `NaiveBayes` trained on the
        training documents."""
        model = NaiveBayes(self.vocab_size, self.num_classes).fit(train_docs, train_labels)
        return model.error(test_docs, test_labels)


class NaiveBayes:
    """Multinomial naive Bayes over word ids with add-one smoothing: the bag-of-words
    baseline of a classification task (class priors from the training frequencies).

    Args:
        vocab_size: Word ids are in `[0, vocab_size)`.
        num_classes: Class ids are in `[0, num_classes)`.
    """

    def __init__(self, vocab_size, num_classes):
        self.vocab_size = vocab_size
        self.num_classes = num_classes
        self.log_word_probs = None
        self.log_prior = None

    def fit(self, docs, labels):
        """Counts the training words per class; returns the fitted model."""
        counts = np.ones((self.num_classes, self.vocab_size))
        labels = np.asarray(labels)
        for doc, label in zip(docs, labels):
            counts[label] += np.bincount(doc, minlength=self.vocab_size)
        self.log_word_probs = np.log(counts / counts.sum(axis=1, keepdims=True))
        with np.errstate(divide="ignore"):
            self.log_prior = np.log(np.bincount(labels, minlength=self.num_classes) / len(labels))
        return self

    def log_scores(self, docs):
        """`log P(class) + sum log P(word | class)` per document and class, `(n, K)`."""
        if self.log_word_probs is None:
            raise ValueError("the model is not fitted: call fit first")
        return np.stack([self.log_word_probs[:, doc].sum(axis=1) for doc in docs]) + (
            self.log_prior
        )

    def predict(self, docs):
        return self.log_scores(docs).argmax(axis=1)

    def error(self, docs, labels):
        """The fraction of `docs` whose predicted class is not their label."""
        return float(np.mean(self.predict(docs) != np.asarray(labels)))
