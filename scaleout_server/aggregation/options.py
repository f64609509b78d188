"""Checks for `aggregator_kwargs` values, so a bad value fails when the session starts, not mid-round."""

from __future__ import annotations

import math
from typing import Any


def number(options: dict[str, Any], key: str, *, low: float | None = None, high: float | None = None,
           low_open: bool = False, high_open: bool = False) -> float:
    """`options[key]` as a finite float within the bounds (`*_open`: the bound itself is excluded)."""
    value = options[key]
    lo = "" if low is None else f"{'>' if low_open else '>='} {low:g}"
    hi = "" if high is None else f"{'<' if high_open else '<='} {high:g}"
    wanted = " and ".join(p for p in (lo, hi) if p) or "finite"
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"aggregator keyword {key!r} must be a number {wanted}, got {value!r}")
    value = float(value)
    too_low = low is not None and (value <= low if low_open else value < low)
    too_high = high is not None and (value >= high if high_open else value > high)
    if too_low or too_high:
        raise ValueError(f"aggregator keyword {key!r} must be a number {wanted}, got {value!r}")
    return value


def integer(options: dict[str, Any], key: str, *, low: int, allow_none: bool = False) -> int | None:
    """`options[key]` as an int >= low (an integral float is accepted; None only with `allow_none`)."""
    value = options[key]
    if value is None and allow_none:
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        extra = " or null" if allow_none else ""
        raise ValueError(f"aggregator keyword {key!r} must be an integer >= {low}{extra}, got {value!r}")
    return value
