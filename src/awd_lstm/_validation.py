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


def short_repr(value, limit=60):
    """`repr(value)`, cut to `limit` characters (a value from a file may be long)."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def json_type(value):
    """The JSON name of a parsed JSON value's type ("object", "array", "string",
    "number", "boolean", "null"), for messages about files."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    names = {dict: "object", list: "array", str: "string", int: "number", float: "number"}
    return names.get(type(value), type(value).__name__)


# What `check_json_fields` accepts of each kind, and how its messages name it.
_JSON_KINDS = {
    "string": (lambda v: isinstance(v, str), "a string"),
    "integer": (lambda v: isinstance(v, int) and not isinstance(v, bool), "an integer"),
    "number": (
        lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v),
        "a number",
    ),
    "boolean": (lambda v: isinstance(v, bool), "true or false"),
    "null": (lambda v: v is None, "null"),
    "object": (lambda v: isinstance(v, dict), "an object"),
    "array": (lambda v: isinstance(v, list), "a list"),
    "strings": (
        lambda v: isinstance(v, dict) and all(isinstance(e, str) for e in v.values()),
        "an object of strings",
    ),
}


def check_json_fields(data, fields):
    """Raises `ValueError` ("its 'name' must be a string or null; got 5") unless
    `data`, parsed JSON, is an object whose entries named in `fields` (`{name: kinds}`,
    kinds among string, integer, number, boolean, null, object, array, strings: an
    object of strings) are each of one of their kinds where present."""
    if not isinstance(data, dict):
        raise ValueError(f"a JSON {json_type(data)} where an object belongs")
    for name, kinds in fields.items():
        if name in data and not any(_JSON_KINDS[k][0](data[name]) for k in kinds):
            allowed = " or ".join(_JSON_KINDS[k][1] for k in kinds)
            raise ValueError(f"its {name!r} must be {allowed}; got {short_repr(data[name])}")


def check_rank(layer_name, inputs_shape, rank, meaning):
    """Checks the rank of an input shape."""
    if len(inputs_shape) != rank:
        raise ValueError(
            f"{layer_name} expects inputs of rank {rank} {meaning}; "
            f"Received: inputs.shape={tuple(inputs_shape)}"
        )
