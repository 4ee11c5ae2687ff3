"""Argument checks shared by the public layers.

Every message names the argument, echoes the value and says what is allowed, in one
sentence, so a user sees at once what to change.
"""

import math
import numbers


def check_rate(name, value):
    """Returns `value` as a float after checking that it lies in [0, 1)."""
    if (
        isinstance(value, bool)
        or not isinstance(value, numbers.Real)
        or not math.isfinite(value)
        or not 0.0 <= value < 1.0
    ):
        raise ValueError(f"`{name}` must be a number in [0, 1); Received: {name}={value!r}")
    return float(value)


def check_keep_prob(name, value):
    """Returns `value` as a float after checking that it lies in (0, 1]."""
    if (
        isinstance(value, bool)
        or not isinstance(value, numbers.Real)
        or not 0.0 < value <= 1.0  # also false for NaN
    ):
        raise ValueError(
            f"`{name}` is a keep probability and must be in (0, 1]; Received: {name}={value!r}"
        )
    return float(value)


def check_choice(name, value, choices):
    """Checks that `value` is one of `choices`."""
    if value not in choices:
        allowed = ", ".join(repr(c) for c in choices)
        raise ValueError(f"`{name}` must be one of {allowed}; Received: {name}={value!r}")
    return value


def check_positive_int(name, value):
    """Returns `value` as an int after checking that it is an integer >= 1."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"`{name}` must be a positive integer; Received: {name}={value!r}")
    return int(value)


def check_non_negative_int(name, value):
    """Returns `value` as an int after checking that it is an integer >= 0."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
        raise ValueError(f"`{name}` must be an integer >= 0; Received: {name}={value!r}")
    return int(value)


def check_positive_number(name, value):
    """Returns `value` as a float after checking that it is finite and > 0."""
    if (
        isinstance(value, bool)
        or not isinstance(value, numbers.Real)
        or not math.isfinite(value)
        or value <= 0
    ):
        raise ValueError(f"`{name}` must be a number > 0; Received: {name}={value!r}")
    return float(value)


def check_non_negative(name, value):
    """Returns `value` as a float after checking that it is finite and >= 0."""
    if (
        isinstance(value, bool)
        or not isinstance(value, numbers.Real)
        or not math.isfinite(value)
        or value < 0
    ):
        raise ValueError(f"`{name}` must be a finite number >= 0; Received: {name}={value!r}")
    return float(value)


def check_rank(layer_name, inputs_shape, rank, meaning):
    """Checks the rank of an input shape."""
    if len(inputs_shape) != rank:
        raise ValueError(
            f"{layer_name} expects inputs of rank {rank} {meaning}; "
            f"Received: inputs.shape={tuple(inputs_shape)}"
        )
