"""The in-process sandbox behind a wire tap that scripts only what the sandbox cannot.

The gateway in these tests is the real sandbox (:mod:`alikassa_async.sandbox`):
it checks ``Account`` and ``Sign``, validates, remembers what it created and
answers with the documented shapes; its fault table covers HTTP errors, dropped
connections and unreadable 200s. Two things it cannot do in-process:

* fail the way a socket fails (connection refused or timed out, a read or write
  timeout, a reset) — ``httpx.ASGITransport`` has no socket;
* lie in shapes it never produces (a 422 in Laravel's default shape, a 200
  without an ``id``, odd-but-documented keys, a multi-megabyte error).

:class:`Wire` sits between the client and ``sandbox.transport()``. It records
what left the client (``sent``), and plays a per-path script of *steps*:

``PASS``                 forward to the sandbox untouched
an exception             raised instead; nothing reached the sandbox
an ``httpx.Response``    answered instead; nothing reached the sandbox
``after(x)``             the sandbox handles the request (and commits), then the client
                         gets ``x`` instead: an exception, a response, or a function of
                         the sandbox's response
a callable               ``step(request)`` is called when the request arrives (to act on
                         the sandbox at that moment) and returns one of the above
"""

from __future__ import annotations

import json
import time
from collections import Counter, deque
from collections.abc import Callable
from typing import Any

import attrs
import httpx

__all__ = ["PASS", "After", "Sent", "Wire", "after", "json_response", "relabel"]

PASS = None


@attrs.frozen
class After:
    outcome: BaseException | httpx.Response | Callable[[httpx.Response], httpx.Response]


def after(
    outcome: BaseException | httpx.Response | Callable[[httpx.Response], httpx.Response],
) -> After:
    """The sandbox handles the request; the client gets ``outcome`` instead of its answer."""
    return After(outcome)


Step = BaseException | httpx.Response | After | Callable[[httpx.Request], Any] | None


@attrs.frozen
class Sent:
    """One request as it left the client."""

    path: str
    body: bytes
    headers: httpx.Headers
    at: float

    @property
    def order_id(self) -> str | None:
        try:
            data = json.loads(self.body)
        except ValueError:
            return None
        value = data.get("order_id") if isinstance(data, dict) else None
        return value if isinstance(value, str) else None


def json_response(status: int, data: Any, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.Response(
        status,
        content=json.dumps(data).encode(),
        headers={"content-type": "application/json", **(headers or {})},
    )


def relabel(payment_status: str) -> Callable[[httpx.Response], httpx.Response]:
    """The sandbox's real status answer, with another ``payment_status``."""

    def rewrite(real: httpx.Response) -> httpx.Response:
        return json_response(real.status_code, {**real.json(), "payment_status": payment_status})

    return rewrite


@attrs.define
class _Scripted:
    step: Step
    remaining: int | None  # None: every request from now on


class Wire(httpx.AsyncBaseTransport):
    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self.inner = inner
        self.sent: list[Sent] = []
        #: requests the client has outstanding right now, and the most at once
        self.in_flight = 0
        self.peak_in_flight = 0
        self._script: dict[str, deque[_Scripted]] = {}

    def script(self, path: str, *steps: Step, times: int | None = 1) -> None:
        """Queue ``steps`` for the next requests to ``path``, each ``times`` times
        (``times=None``: the last step repeats for good)."""
        queue = self._script.setdefault(path.strip("/"), deque())
        queue.extend(_Scripted(step, times) for step in steps)

    def clear(self, path: str | None = None) -> None:
        if path is None:
            self._script.clear()
        else:
            self._script.pop(path.strip("/"), None)

    def calls(self, path: str) -> int:
        path = path.strip("/")
        return sum(1 for s in self.sent if s.path == path)

    def sends(self, path: str = "v1/payout") -> Counter[str]:
        """How many requests to ``path`` left the client, per order_id."""
        path = path.strip("/")
        return Counter(s.order_id for s in self.sent if s.path == path and s.order_id)

    def _next(self, path: str) -> Step:
        queue = self._script.get(path)
        if not queue:
            return PASS
        scripted = queue[0]
        if scripted.remaining is not None:
            scripted.remaining -= 1
            if scripted.remaining <= 0:
                queue.popleft()
        return scripted.step

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.in_flight += 1
        self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
        try:
            return await self._handle(request)
        finally:
            self.in_flight -= 1

    async def _handle(self, request: httpx.Request) -> httpx.Response:
        body = await request.aread()
        path = request.url.path.strip("/")
        self.sent.append(Sent(path, body, request.headers, time.monotonic()))
        step = self._next(path)
        if callable(step) and not isinstance(step, httpx.Response | After):
            step = step(request)
        if isinstance(step, BaseException):
            raise step
        if isinstance(step, httpx.Response):
            return step
        real = await self.inner.handle_async_request(request)
        if not isinstance(step, After):
            return real
        await real.aread()
        await real.aclose()
        outcome = step.outcome
        if isinstance(outcome, BaseException):
            raise outcome
        if isinstance(outcome, httpx.Response):
            return outcome
        return outcome(real)

    async def aclose(self) -> None:
        await self.inner.aclose()
