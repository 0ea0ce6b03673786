"""When and how long to wait before trying a read again.

Only reads (status, history, balance, info) are retried on transport errors,
429 and 5xx. Creates are re-sent only when nothing can have reached the server
(a connect error): AliKassa has no idempotency key (API reference §12).

>>> policy = RetryPolicy(max_attempts=5, total_timeout=20.0)
>>> AliKassaClient(..., retry=policy)          # or RetryPolicy.disabled()
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Mapping
from email.utils import parsedate_to_datetime

import attrs

__all__ = ["RetryPolicy", "parse_retry_after"]


@attrs.frozen
class RetryPolicy:
    """Bounds for retrying one call: attempts, backoff and a total deadline."""

    #: attempts per read call, the first included (1 disables retries)
    max_attempts: int = attrs.field(default=4, validator=attrs.validators.ge(1))
    #: first backoff ceiling in seconds; doubles per attempt, full jitter below it
    backoff_base: float = 0.25
    backoff_max: float = 8.0
    #: the longest ``Retry-After`` we honour; a longer hint ends the retries
    max_retry_after: float = 30.0
    #: wall-clock budget of one call across all attempts (None: attempts only)
    total_timeout: float | None = 60.0
    #: extra attempts for a create whose connection could not even be opened
    create_connect_retries: int = 2

    @classmethod
    def disabled(cls) -> RetryPolicy:
        """One attempt for everything."""
        return cls(max_attempts=1, create_connect_retries=0)

    def backoff(self, attempt: int) -> float:
        """Full-jitter delay before attempt ``attempt + 1`` (``attempt`` counts from 1)."""
        ceiling = min(self.backoff_max, self.backoff_base * (2 ** (attempt - 1)))
        return random.uniform(0, ceiling)

    def delay(self, attempt: int, retry_after: float | None) -> float | None:
        """Seconds to wait, or ``None`` when the server asks for longer than we allow."""
        if retry_after is None:
            return self.backoff(attempt)
        if retry_after > self.max_retry_after:
            return None
        return max(retry_after, 0.0)


def parse_retry_after(headers: Mapping[str, str], now: float | None = None) -> float | None:
    """Seconds from ``Retry-After`` (seconds or HTTP date) or ``retry-after-ms``."""
    millis = headers.get("retry-after-ms")
    if millis is not None:
        seconds = _seconds(millis)
        if seconds is not None:
            return seconds / 1000.0
    value = headers.get("retry-after")
    if value is None:
        return None
    value = value.strip()
    seconds = _seconds(value)
    if seconds is not None:
        return seconds
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        return None
    return max(when.timestamp() - (time.time() if now is None else now), 0.0)


def _seconds(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return max(value, 0.0) if math.isfinite(value) else None
