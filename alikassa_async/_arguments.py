"""Checks of caller arguments that are not builder fields (timeouts, counts, headers).

Each check returns ``None`` when the value is fine, else the problem in a few words;
the caller raises ``ConfigurationError`` (at construction) or
``RequestValidationError`` (per call) with it, before any I/O — so a wrong type
never escapes as a bare ``TypeError``/``ValueError`` from deep inside httpx.
"""

from __future__ import annotations

import math
import re
from decimal import Decimal

__all__ = ["MAX_PHP_INT", "count_problem", "header_problem", "seconds_problem"]

#: the largest integer the gateway (64-bit PHP) reads as an integer
MAX_PHP_INT = 2**63 - 1
#: visible ASCII and spaces only: no CR/LF (header injection), no other control characters
_HEADER_VALUE = re.compile(r"[\x21-\x7e](?:[\x20-\x7e]*[\x21-\x7e])?")


def seconds_problem(value: object, *, allow_none: bool = True) -> str | None:
    """A duration in seconds: a positive, finite number (``None``: no limit, if allowed)."""
    if value is None:
        return None if allow_none else "must be a number of seconds, not None"
    if isinstance(value, bool) or not isinstance(value, int | float | Decimal):
        return f"must be a number of seconds, not {type(value).__name__}"
    if not math.isfinite(value) or not value > 0:
        return f"must be a positive, finite number of seconds, not {value!r}"
    return None


def count_problem(value: object, *, minimum: int = 1, maximum: int = MAX_PHP_INT) -> str | None:
    """An integer in ``[minimum, maximum]`` (``bool`` is not a count)."""
    if isinstance(value, bool) or not isinstance(value, int):
        return f"must be an integer, not {type(value).__name__}"
    if not minimum <= value <= maximum:
        return f"must be between {minimum} and {maximum}, not {value}"
    return None


def header_value_ok(value: str) -> bool:
    return _HEADER_VALUE.fullmatch(value) is not None


def header_problem(value: object, *, max_length: int = 256) -> str | None:
    """An HTTP header value: visible ASCII (inner spaces allowed), 1 to ``max_length`` chars."""
    if not isinstance(value, str):
        return f"must be a string, not {type(value).__name__}"
    if not 1 <= len(value) <= max_length:
        return f"must be 1 to {max_length} characters long"
    if not header_value_ok(value):
        return "must be printable ASCII without line breaks or control characters"
    return None
