"""Makes NumPy and Keras available to the docstring examples run by pytest."""

import keras
import numpy as np
import pytest


@pytest.fixture(autouse=True)
def _doctest_namespace(doctest_namespace):
    doctest_namespace["np"] = np
    doctest_namespace["keras"] = keras
