"""Wait until a payment or payout is final, or watch its status change.

>>> status = await client.wait_for_payout(id=created.id, timeout=600)
>>> status.payment_status                       # paid, cancel or fail
>>> async for status in client.watch_payment(order_id="A-1"):
...     print(status.payment_status)            # each change, the final one last

Polls back off exponentially (with jitter, capped at ``max_interval``).
Trouble while polling never ends a wait early and never reads as a failure:
transport errors, 5xx, 429 (its ``Retry-After`` is honoured), garbled
answers and any other non-200 — including 404, since a payout created a
moment ago may not be visible to the status endpoint yet — are logged and
polled through. Only the deadline ends a wait, with
:class:`~alikassa_async._errors.PollingTimeoutError` carrying the last status
seen (and the last error as ``__cause__``). Mistakes of the caller (no id, a
missing certificate, a closed client) raise at once.

Every status request of a client passes through one semaphore
(``client.max_status_in_flight``, 32 by default), so thousands of
concurrent waits share the connection pool instead of exhausting it.
Nothing runs in the background: cancelling the awaiting task (or leaving a
``watch_*`` loop) stops the polling.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import AsyncGenerator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, aclosing, nullcontext
from typing import Protocol, TypeVar

from ._arguments import seconds_problem
from ._defaults import DEFAULT_POLL_INTERVAL, DEFAULT_POLL_MAX_INTERVAL, DEFAULT_POLL_TIMEOUT
from ._errors import (
    AliKassaError,
    APIError,
    PollingTimeoutError,
    RateLimitError,
    RequestValidationError,
    TransportError,
)
from ._models import PaymentStatus, PaymentStatusResponse, PayoutStatusResponse
from ._protocols import StatusSource

__all__ = [
    "DEFAULT_INTERVAL",
    "DEFAULT_MAX_INTERVAL",
    "DEFAULT_TIMEOUT",
    "poll_until_final",
    "wait_for_payment",
    "wait_for_payout",
    "watch_payment",
    "watch_payout",
]

logger = logging.getLogger("alikassa_async.polling")

#: seconds until a wait gives up (None: wait forever)
DEFAULT_TIMEOUT = DEFAULT_POLL_TIMEOUT
#: first pause between polls, in seconds
DEFAULT_INTERVAL = DEFAULT_POLL_INTERVAL
#: the longest pause between polls, in seconds
DEFAULT_MAX_INTERVAL = DEFAULT_POLL_MAX_INTERVAL
_GROWTH = 1.5

# Errors that are "the gateway could not tell us right now": keep polling.
# (NotFoundError and every other APIError included: see the module docstring.)
_TRANSIENT = (APIError, TransportError)


class _Status(Protocol):
    @property
    def payment_status(self) -> PaymentStatus: ...


S = TypeVar("S", bound=_Status)
Throttle = Callable[[], Awaitable[None]]


def _check_timing(timeout: float | None, interval: float, max_interval: float) -> None:
    problems = {
        name: [problem]
        for name, problem in (
            ("timeout", seconds_problem(timeout)),
            ("interval", seconds_problem(interval, allow_none=False)),
            ("max_interval", seconds_problem(max_interval, allow_none=False)),
        )
        if problem is not None
    }
    if not problems and not max_interval >= interval:
        problems["max_interval"] = ["must be at least interval"]
    if problems:
        raise RequestValidationError(problems)


def _pause(step: int, interval: float, max_interval: float) -> float:
    """Jittered exponential pause before poll ``step + 1``: in [ceiling/2, ceiling]."""
    ceiling = min(max_interval, interval * _GROWTH**step)
    return random.uniform(ceiling / 2, ceiling)


async def poll_until_final(
    fetch: Callable[[], Awaitable[S]],
    *,
    what: str = "status",
    timeout: float | None = DEFAULT_TIMEOUT,  # noqa: ASYNC109 - the wait's deadline, by design
    interval: float = DEFAULT_INTERVAL,
    max_interval: float = DEFAULT_MAX_INTERVAL,
    slots: asyncio.Semaphore | None = None,
    throttle: Throttle | None = None,
) -> AsyncGenerator[S, None]:
    """Yield ``fetch()``'s answer each time its status changes; end after a final one.

    The building block of ``wait_for_*``/``watch_*``: ``slots`` bounds the
    requests in flight, ``throttle`` (awaited before each request) lets a
    batch apply its rate limit. Raises ``PollingTimeoutError`` at the deadline.

    >>> async for st in poll_until_final(lambda: client.payout_status(id=1)):
    ...     print(st.payment_status)
    """
    _check_timing(timeout, interval, max_interval)
    loop = asyncio.get_running_loop()
    deadline = None if timeout is None else loop.time() + timeout
    last: S | None = None
    last_error: AliKassaError | None = None
    step = 0
    while True:
        if deadline is not None and loop.time() >= deadline:
            raise _timed_out(what, timeout, last, last_error) from last_error
        hint: float | None = None
        limit: AbstractAsyncContextManager[object] = (
            nullcontext() if deadline is None else asyncio.timeout_at(deadline)
        )
        try:
            async with limit:
                answer = await _fetch_once(fetch, slots, throttle)
        except TimeoutError:
            # Our own deadline expired mid-request (the client maps its own
            # timeouts to TransportError, so this one is the wait's).
            if deadline is not None and loop.time() >= deadline:
                raise _timed_out(what, timeout, last, last_error) from last_error
            raise
        except _TRANSIENT as exc:
            last_error = exc
            if isinstance(exc, RateLimitError):
                hint = exc.retry_after
            logger.info(
                "%s: poll %d inconclusive (%s); polling on", what, step + 1, type(exc).__name__
            )
        else:
            if last is None or answer.payment_status != last.payment_status:
                last = answer
                yield answer
                if answer.payment_status.is_final:
                    return
            last = answer
        pause = _pause(step, interval, max_interval)
        if hint is not None:
            pause = max(pause, hint)  # the server asked us to wait this long
        if deadline is not None:
            pause = min(pause, max(deadline - loop.time(), 0.0))
        step += 1
        await asyncio.sleep(pause)


async def _fetch_once(
    fetch: Callable[[], Awaitable[S]], slots: asyncio.Semaphore | None, throttle: Throttle | None
) -> S:
    if throttle is not None:
        await throttle()
    if slots is None:
        return await fetch()
    async with slots:
        return await fetch()


def _timed_out(
    what: str, timeout: float | None, last: _Status | None, error: AliKassaError | None
) -> PollingTimeoutError:
    seen = last.payment_status.value if last is not None else "none"
    message = f"{what}: not final after {timeout:g} s (last status seen: {seen})"
    if error is not None:
        message += f"; last error: {type(error).__name__}"
    return PollingTimeoutError(message, last_status=last)


async def _last(changes: AsyncGenerator[S, None]) -> S:
    final: S | None = None
    async with aclosing(changes):
        async for status in changes:
            final = status
    assert final is not None  # the iterator either yields a final status or raises
    return final


def _describe(kind: str, id: int | str | None, order_id: str | None) -> str:
    return f"{kind} id={id}" if id is not None else f"{kind} order_id={order_id}"


def watch_payment(
    client: StatusSource,
    *,
    id: int | str | None = None,
    order_id: str | None = None,
    timeout: float | None = DEFAULT_TIMEOUT,
    interval: float = DEFAULT_INTERVAL,
    max_interval: float = DEFAULT_MAX_INTERVAL,
) -> AsyncGenerator[PaymentStatusResponse, None]:
    """Each status change of one payment, the final one last.

    >>> async for st in watch_payment(client, id=created.id):
    ...     print(st.payment_status)
    """
    return poll_until_final(
        lambda: client.payment_status(id=id, order_id=order_id),
        what=_describe("payment", id, order_id),
        timeout=timeout,
        interval=interval,
        max_interval=max_interval,
        slots=client.status_slots,
    )


def watch_payout(
    client: StatusSource,
    *,
    id: int | str | None = None,
    order_id: str | None = None,
    timeout: float | None = DEFAULT_TIMEOUT,
    interval: float = DEFAULT_INTERVAL,
    max_interval: float = DEFAULT_MAX_INTERVAL,
) -> AsyncGenerator[PayoutStatusResponse, None]:
    """Each status change of one payout, the final one last.

    >>> async for st in watch_payout(client, order_id="P-1"):
    ...     print(st.payment_status)
    """
    return poll_until_final(
        lambda: client.payout_status(id=id, order_id=order_id),
        what=_describe("payout", id, order_id),
        timeout=timeout,
        interval=interval,
        max_interval=max_interval,
        slots=client.status_slots,
    )


async def wait_for_payment(
    client: StatusSource,
    *,
    id: int | str | None = None,
    order_id: str | None = None,
    timeout: float | None = DEFAULT_TIMEOUT,  # noqa: ASYNC109 - the wait's deadline, by design
    interval: float = DEFAULT_INTERVAL,
    max_interval: float = DEFAULT_MAX_INTERVAL,
) -> PaymentStatusResponse:
    """The payment's final status (``paid``, ``cancel`` or ``fail``).

    >>> st = await wait_for_payment(client, id=created.id, timeout=900)
    """
    return await _last(
        watch_payment(
            client,
            id=id,
            order_id=order_id,
            timeout=timeout,
            interval=interval,
            max_interval=max_interval,
        )
    )


async def wait_for_payout(
    client: StatusSource,
    *,
    id: int | str | None = None,
    order_id: str | None = None,
    timeout: float | None = DEFAULT_TIMEOUT,  # noqa: ASYNC109 - the wait's deadline, by design
    interval: float = DEFAULT_INTERVAL,
    max_interval: float = DEFAULT_MAX_INTERVAL,
) -> PayoutStatusResponse:
    """The payout's final status (``paid``, ``cancel`` or ``fail``).

    >>> st = await wait_for_payout(client, order_id="P-1", timeout=900)
    """
    return await _last(
        watch_payout(
            client,
            id=id,
            order_id=order_id,
            timeout=timeout,
            interval=interval,
            max_interval=max_interval,
        )
    )
