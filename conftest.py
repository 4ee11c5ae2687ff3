"""Makes NumPy and Keras available to the docstring examples run by pytest."""

import os

import keras
import numpy as np
import pytest

try:  # the test extra's property tests: the same examples on every run
    from hypothesis import settings

    settings.register_profile("deterministic", derandomize=True)
    settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "deterministic"))
except ImportError:
    pass

# awd_lstm.legacy runs only in a process of its own with TF_USE_LEGACY_KERAS=1.
collect_ignore = [] if os.environ.get("TF_USE_LEGACY_KERAS") == "1" else ["src/awd_lstm/legacy.py"]


@pytest.fixture(autouse=True)
def _doctest_namespace(doctest_namespace):
    doctest_namespace["np"] = np
    doctest_namespace["keras"] = keras
