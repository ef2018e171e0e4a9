"""Argument checks shared by every public constructor: one style of error everywhere.

A wrong *type* raises :class:`ArgumentTypeError` (a ``TypeError``; it is also a
``ValueError`` so that code written against synopsloss 0.1, which raised
``ValueError`` for some wrong types, keeps working). A wrong *value* raises
``ValueError``. Messages name the argument, what was received and what is expected.

Example
-------
>>> check_number("weight", 0.5, nonnegative=True)
0.5
>>> check_int("batch_size", "8", minimum=1)
Traceback (most recent call last):
...
synopsloss.errors.ArgumentTypeError: batch_size must be an int, got str '8'
"""

from __future__ import annotations

import math
import numbers
from typing import Any, Optional

from .errors import ArgumentTypeError

__all__ = ["ArgumentTypeError", "check_number", "check_int"]


def check_number(name: str, value: Any, *, positive: bool = False, nonnegative: bool = False,
                 finite: bool = True) -> float:
    """``value`` as a float: a real number (not a bool), finite, and > 0 / >= 0 when asked."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or getattr(value, "shape", ()) != ():
        raise ArgumentTypeError(f"{name} must be a number, got {type(value).__name__} {value!r}")
    value = float(value)  # (a NumPy scalar too)
    if finite and not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    if positive and not value > 0:
        raise ValueError(f"{name} must be > 0, got {value!r}")
    if nonnegative and not value >= 0:
        raise ValueError(f"{name} must be >= 0, got {value!r}")
    return float(value)


def check_int(name: str, value: Any, *, minimum: Optional[int] = None, optional: bool = False) -> Optional[int]:
    """``value`` as an int (not a bool), at least ``minimum``; ``None`` passes when ``optional``."""
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        hint = " (pass int(value))" if isinstance(value, numbers.Integral) else ""
        raise ArgumentTypeError(f"{name} must be an int, got {type(value).__name__} {value!r}{hint}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    return value
