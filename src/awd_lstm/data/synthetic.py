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
