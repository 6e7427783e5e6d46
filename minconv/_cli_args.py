"""Argument types of the ``minconv`` command: each refuses a value out of its range.

argparse calls them on the text of an option; a ValueError or ArgumentTypeError
becomes a one-line error naming the option (see :mod:`minconv.cli`). Floats must
be finite: ``nan`` and ``inf`` parse as floats but are never a sensible setting.
"""
import argparse
import json
import math


def _number(kind, text):
    try:
        value = kind(text)
    except (TypeError, ValueError):
        raise argparse.ArgumentTypeError(
            f"expected {'an integer' if kind is int else 'a number'}, got {text!r}") from None
    if kind is float and not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def ranged(kind, low=None, high=None, low_open=False, high_open=False):
    """A type for ``kind`` (int or float) values within [low, high] (ends open if asked)."""
    def parse(text):
        value = _number(kind, text)
        below = low is not None and (value <= low if low_open else value < low)
        above = high is not None and (value >= high if high_open else value > high)
        if below or above:
            left = "(" if low_open else "["
            right = ")" if high_open else "]"
            lo, hi = "-inf" if low is None else low, "inf" if high is None else high
            span = f"{left}{lo}, {hi}{right}"
            raise argparse.ArgumentTypeError(f"must lie in {span}, got {text}")
        return value
    parse.__name__ = f"{kind.__name__} in range"
    return parse


finite_float = ranged(float)
positive_int = ranged(int, 1)
nonnegative_int = ranged(int, 0)
positive_float = ranged(float, 0, low_open=True)
nonnegative_float = ranged(float, 0)
fraction = ranged(float, 0, 1, high_open=True)          # [0, 1): momentum, dropout


def int_list(text, low=0):
    """'3,1,4' -> [3, 1, 4], each at least ``low``; empty items are skipped."""
    values = [_number(int, v) for v in text.split(",") if v.strip()]
    if not values:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}")
    bad = [v for v in values if v < low]
    if bad:
        raise argparse.ArgumentTypeError(f"every value must be >= {low}, got {bad}")
    return values


def json_object(text):
    """A JSON object (a dict), e.g. '{"widths": [32, 64]}'; anything else is refused."""
    try:
        value = json.loads(text, parse_constant=_no_constant)
    except json.JSONDecodeError as error:
        raise argparse.ArgumentTypeError(f"not valid JSON ({error})") from None
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(
            f"expected a JSON object such as '{{\"key\": value}}', got {type(value).__name__}")
    return value


def _no_constant(name):
    raise ValueError(f"{name} is not a number JSON allows")


def strict_json(value):
    """``value`` as JSON text without NaN or Infinity, which are not JSON (a strict reader
    refuses them): non-finite numbers become null. Every ``--json`` output goes through it."""
    def clean(v):
        if isinstance(v, float) and not math.isfinite(v):
            return None
        if isinstance(v, dict):
            return {k: clean(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [clean(x) for x in v]
        return v
    return json.dumps(clean(value), allow_nan=False)
