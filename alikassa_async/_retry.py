"""When and how long to wait before trying a read again.

Only reads (status, history, balance, info) are retried on transport errors,
429 and 5xx. Creates are re-sent only when nothing can have reached the server
(a connect error): AliKassa has no idempotency key (API reference §12).

>>> policy = RetryPolicy(max_attempts=5, total_timeout=20.0)
>>> AliKassaClient(..., retry=policy)          # or RetryPolicy.disabled()
"""

from __future__ import annotations

import contextvars
import datetime
import math
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from email.utils import parsedate_to_datetime
from typing import Any

import attrs

from ._arguments import count_problem, seconds_problem
from ._errors import ConfigurationError

__all__ = ["RetryPolicy", "parse_retry_after"]


class RetryPolicyError(ConfigurationError, ValueError):
    """A ``RetryPolicy`` field of the wrong type or range (also a ``ValueError``, as before)."""


def _count(minimum: int) -> Callable[[Any, attrs.Attribute[Any], Any], None]:
    def check(_: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
        problem = count_problem(value, minimum=minimum, maximum=1000)
        if problem is not None:
            raise RetryPolicyError(f"RetryPolicy.{attribute.name} {problem}")

    return check


def _delay(_: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    # 0 is a valid delay here (no backoff), unlike a timeout.
    problem = (
        None
        if value == 0 and not isinstance(value, bool)
        else seconds_problem(value, allow_none=False)
    )
    if problem is not None:
        raise RetryPolicyError(f"RetryPolicy.{attribute.name} {problem}")


def _deadline(_: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    problem = seconds_problem(value)
    if problem is not None:
        raise RetryPolicyError(f"RetryPolicy.{attribute.name} {problem}")


@attrs.frozen
class RetryPolicy:
    """Bounds for retrying one call: attempts, backoff and a total deadline.

    A field of the wrong type or range raises ``ConfigurationError`` here, at once."""

    #: attempts per read call, the first included (1 disables retries)
    max_attempts: int = attrs.field(default=4, validator=_count(1))
    #: first backoff ceiling in seconds; doubles per attempt, full jitter below it
    backoff_base: float = attrs.field(default=0.25, validator=_delay)
    backoff_max: float = attrs.field(default=8.0, validator=_delay)
    #: the longest ``Retry-After`` we honour; a longer hint ends the retries
    max_retry_after: float = attrs.field(default=30.0, validator=_delay)
    #: wall-clock budget of one call across all attempts — connect, send, the whole
    #: answer, every retry — (None: attempts only, bounded by the per-operation timeouts)
    total_timeout: float | None = attrs.field(default=60.0, validator=_deadline)
    #: extra attempts for a create whose connection could not even be opened
    create_connect_retries: int = attrs.field(default=2, validator=_count(0))

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
        if "," in value:  # an IMF or RFC 850 date without its GMT: not a date we trust
            return None
        when = when.replace(tzinfo=datetime.UTC)  # asctime carries no zone; it means UTC
    return max(when.timestamp() - (time.time() if now is None else now), 0.0)


def _seconds(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return max(value, 0.0) if math.isfinite(value) else None


#: Awaited before each retry the client makes inside one call, when set: a batch sets its
#: rate limiter here, so that ``rate`` counts every request the gateway sees, not only
#: the calls the batch makes. A context variable, so it follows the batch's own tasks
#: and never a caller's unrelated calls on the same client.
RETRY_PACE: contextvars.ContextVar[Callable[[], Awaitable[None]] | None] = contextvars.ContextVar(
    "alikassa_retry_pace", default=None
)
