"""The README's first command: the demo's source and an end-to-end run on a tiny corpus."""

import math

import numpy as np

from awd_lstm import demo


def test_entropy_rate_matches_the_likelihood_of_a_long_sample():
    transitions, stationary = demo.markov_source(8, seed=3)
    np.testing.assert_allclose(stationary @ transitions, stationary, atol=1e-10)
    tokens = demo.sample_chain(transitions, stationary, 200_000, np.random.default_rng(0))
    empirical = -np.mean(np.log(transitions[tokens[:-1], tokens[1:]]))
    assert abs(empirical - demo.entropy_rate(transitions, stationary)) < 0.02


def test_demo_runs_end_to_end(capsys):
    assert demo.main(["--epochs", "1", "--tokens", "3000", "--vocab-size", "12"]) == 0
    out = capsys.readouterr().out
    line = next(line for line in out.splitlines() if line.startswith("validation perplexity"))
    ppl = float(line.split()[2])
    assert math.isfinite(ppl) and 1.0 < ppl < 40.0
