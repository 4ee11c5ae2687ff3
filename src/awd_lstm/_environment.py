"""What the package needs of its surroundings: the Keras it is tested with, the backends
it runs on, and the environment variables that choose them. Checked once, in one
sentence, before anything fails deeper down.

This module imports neither Keras nor a backend: the command line reads it before
Keras loads.
"""

import os
import re
import warnings

# The Keras minor versions the test suite runs on: pyproject.toml's dependency is
# `KERAS_REQUIREMENT` (a test checks that the two agree). The package reaches into a
# few of Keras' internals (`awd_lstm/backend/_keras.py`), which change between minor
# versions; widen the range once CI tests another.
KERAS_MINIMUM = (3, 15)
KERAS_BELOW = (3, 16)
KERAS_REQUIREMENT = "keras>={}.{},<{}.{}".format(*KERAS_MINIMUM, *KERAS_BELOW)
# Set to 1 to import the package with a Keras outside that range (a warning instead
# of the error), e.g. to try a newer Keras.
UNTESTED_KERAS_VARIABLE = "AWD_LSTM_UNTESTED_KERAS"

# The Keras backends the package runs on (Keras also has others: numpy, openvino).
BACKENDS = ("tensorflow", "jax", "torch")
BACKEND_VARIABLE = "KERAS_BACKEND"


class UnsupportedKerasError(ImportError):
    """Keras is of a version outside the tested range, or runs a backend the package
    does not support; the message is one sentence."""


def check_keras(version, backend, environ=None):
    """Raises `UnsupportedKerasError` unless Keras `version` lies in the tested range
    (with `AWD_LSTM_UNTESTED_KERAS=1`: warns instead) and `backend` is one of
    `BACKENDS`."""
    environ = os.environ if environ is None else environ
    if backend not in BACKENDS:
        raise UnsupportedKerasError(
            f"awd_lstm runs on the {', '.join(BACKENDS[:-1])} or {BACKENDS[-1]} backend, "
            f"not Keras' {backend!r} backend; set {BACKEND_VARIABLE} to one of them"
        )
    if KERAS_MINIMUM <= _minor_version(version) < KERAS_BELOW:
        return
    message = (
        f"awd_lstm is tested with Keras {KERAS_REQUIREMENT[len('keras') :]} and this is "
        f"Keras {version}"
    )
    override = environ.get(UNTESTED_KERAS_VARIABLE, "")
    if override not in ("", "0", "1"):
        raise UnsupportedKerasError(f"{UNTESTED_KERAS_VARIABLE} must be 0 or 1; got {override!r}")
    if override == "1":
        warnings.warn(f"{message}; it may fail in ways the tests have not seen", stacklevel=2)
        return
    raise UnsupportedKerasError(
        f"{message}: install one in that range (pip install '{KERAS_REQUIREMENT}'), or set "
        f"{UNTESTED_KERAS_VARIABLE}=1 to try this one"
    )


def backend_variable_problem(environ=None):
    """One sentence on what is wrong with `KERAS_BACKEND`, or None when it is unset,
    empty (Keras' default) or one of `BACKENDS`."""
    environ = os.environ if environ is None else environ
    value = environ.get(BACKEND_VARIABLE, "")
    if value == "" or value in BACKENDS:
        return None
    return (
        f"the environment variable {BACKEND_VARIABLE} is {value!r}; it must be one of "
        f"{', '.join(BACKENDS)}"
    )


def _minor_version(version):
    """`(major, minor)` of a version string such as `3.15.1` or `3.16.0.dev2026`;
    `(0, 0)` where it has none (outside every range)."""
    found = re.match(r"(\d+)\.(\d+)", str(version))
    return (int(found[1]), int(found[2])) if found else (0, 0)
