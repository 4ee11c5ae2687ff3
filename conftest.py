"""Makes NumPy and Keras available to the docstring examples run by pytest."""

import os

import keras
import numpy as np
import pytest

# awd_lstm.legacy runs only in a process of its own with TF_USE_LEGACY_KERAS=1.
collect_ignore = [] if os.environ.get("TF_USE_LEGACY_KERAS") == "1" else ["src/awd_lstm/legacy.py"]


@pytest.fixture(autouse=True)
def _doctest_namespace(doctest_namespace):
    doctest_namespace["np"] = np
    doctest_namespace["keras"] = keras
