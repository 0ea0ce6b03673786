"""Fault injection: scripted per endpoint from tests, or random with a seed from the CLI.

>>> sandbox.faults.add("v1/payout", Fault.status(503), times=3)   # next 3 payouts: 503
>>> sandbox.faults.add("v1/payout", Fault.drop_after_commit(), order_id="P-7")
>>> sandbox.faults.add("*", Fault.delay(5))                       # any endpoint, once
>>> sandbox.faults.set_random(rate=0.1, seed=42)                  # 10 % of all calls

A fault fires for a request that passed the ``Account``/``Sign`` checks. Its
*phase* says when: ``before`` the handler runs (nothing is validated, created
or changed) or ``after`` it (for a valid create: the record now exists, and
the client never learns it). :data:`FAULT_KINDS` is the table of every kind —
a new fault is a new row there plus its case in the sandbox app — with the
phase it defaults to and what an SDK create call should conclude, so a test
matrix can be generated from it::

    for kind in FAULT_KINDS.values():
        sandbox.faults.add("v1/payout", kind.example())
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from typing import Literal

import attrs

__all__ = [
    "ENDPOINTS",
    "FAULT_KINDS",
    "RANDOM_FAULTS",
    "Fault",
    "FaultKind",
    "FaultPlan",
    "FiredFault",
    "Phase",
    "RandomFaults",
    "normalise_endpoint",
]

Phase = Literal["before", "after"]

#: every API path the sandbox serves, and whether it creates something
ENDPOINTS: Mapping[str, bool] = {
    "v1/payment": True,
    "v1/payment/status": False,
    "v1/payment/history": False,
    "v1/payout": True,
    "v1/payout/status": False,
    "v1/account/balance": False,
    "v1/account/info": False,
}


@attrs.frozen
class Fault:
    """One injected misbehaviour. Build it with the class methods, not by hand."""

    kind: str
    phase: Phase
    status_code: int | None = None
    #: ``Retry-After`` in seconds (sent as seconds, or as an HTTP date when ``http_date``)
    retry_after: float | None = None
    http_date: bool = False
    seconds: float = 0.0
    size: int = 0
    #: ``Location`` of a redirect (None: the requested path itself)
    location: str | None = None

    def __attrs_post_init__(self) -> None:
        if self.kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {self.kind!r}; see FAULT_KINDS")
        if self.phase not in ("before", "after"):
            raise ValueError("phase must be 'before' or 'after'")

    @classmethod
    def status(
        cls,
        code: int,
        *,
        retry_after: float | None = None,
        http_date: bool = False,
        after_commit: bool = False,
    ) -> Fault:
        """Answer HTTP ``code`` (500/502/503/504: an error page; 429: ``Retry-After``)."""
        if not 400 <= code <= 599:
            raise ValueError("status faults are 4xx/5xx codes")
        if code == 429 and retry_after is None:
            retry_after = 1.0
        return cls(
            "status",
            "after" if after_commit else "before",
            status_code=code,
            retry_after=retry_after,
            http_date=http_date,
        )

    @classmethod
    def drop_before_commit(cls) -> Fault:
        """Close the connection without an answer; nothing was created."""
        return cls("drop", "before")

    @classmethod
    def drop_after_commit(cls) -> Fault:
        """Create the record, then close the connection without an answer."""
        return cls("drop", "after")

    @classmethod
    def delay(cls, seconds: float, *, after_commit: bool = False) -> Fault:
        """Sleep ``seconds`` (e.g. past the client's timeout), then answer normally."""
        return cls("delay", "after" if after_commit else "before", seconds=float(seconds))

    @classmethod
    def html_200(cls, *, after_commit: bool = True) -> Fault:
        """200 with an HTML page instead of JSON."""
        return cls("html_200", "after" if after_commit else "before")

    @classmethod
    def truncated_json_200(cls) -> Fault:
        """The real 200 answer, cut in half."""
        return cls("truncated_json_200", "after")

    @classmethod
    def json_array_200(cls, *, after_commit: bool = True) -> Fault:
        """200 with ``[]`` (PHP's empty array) instead of an object."""
        return cls("json_array_200", "after" if after_commit else "before")

    @classmethod
    def huge_body_200(cls, size: int = 9 * 1024 * 1024) -> Fault:
        """200 with a JSON body of ``size`` bytes (the SDK refuses above 8 MiB)."""
        return cls("huge_body_200", "after", size=size)

    @classmethod
    def slow_body_200(cls, seconds: float = 2.0) -> Fault:
        """The real 200 answer, trickled out over ``seconds``."""
        return cls("slow_body_200", "after", seconds=float(seconds))

    @classmethod
    def slow_headers(cls, seconds: float = 5.0) -> Fault:
        """The real answer with its status line and headers trickled out byte by byte over
        ``seconds`` (each byte well inside any read timeout), then the body at once."""
        return cls("slow_headers", "after", seconds=float(seconds))

    @classmethod
    def redirect(cls, code: int = 307, *, location: str | None = None) -> Fault:
        """Answer a 3xx pointing at ``location`` (default: the requested path, so a
        client that follows it re-sends the signed request). Nothing is created."""
        if not 300 <= code <= 399:
            raise ValueError("redirect faults are 3xx codes")
        return cls("redirect", "before", status_code=code, location=location)

    def describe(self) -> str:
        detail = {
            "status": f" {self.status_code}",
            "delay": f" {self.seconds:g}s",
            "slow_body_200": f" {self.seconds:g}s",
            "slow_headers": f" {self.seconds:g}s",
            "redirect": f" {self.status_code}",
            "huge_body_200": f" {self.size}B",
        }.get(self.kind, "")
        return f"{self.kind}{detail} ({self.phase} commit)"


@attrs.frozen
class FaultKind:
    """A row of the fault table."""

    name: str
    default_phase: Phase
    description: str
    #: after a create call hit by this fault (with its default phase): does the record exist?
    creates_record: bool
    #: what the SDK's create call must conclude
    create_outcome: str
    #: what the SDK's read call must do
    read_outcome: str
    example: Callable[[], Fault]


_UNKNOWN = "OutcomeUnknownError (never 'failed')"
FAULT_KINDS: dict[str, FaultKind] = {
    k.name: k
    for k in (
        FaultKind(
            "status",
            "before",
            "HTTP 500/502/503/504 (an error page) or 429 with Retry-After (seconds or date)",
            False,
            _UNKNOWN,
            "retried with backoff, Retry-After honoured",
            lambda: Fault.status(503),
        ),
        FaultKind(
            "drop",
            "before",
            "connection closed without a response (under uvicorn: the socket is aborted; "
            "in-process: httpx.RemoteProtocolError)",
            False,
            _UNKNOWN,
            "retried",
            Fault.drop_before_commit,
        ),
        FaultKind(
            "delay",
            "before",
            "sleep N seconds, then answer normally (past a timeout: the "
            "client gives up while the server still commits)",
            True,
            "created (or OutcomeUnknownError on a client timeout)",
            "answered (or retried after a timeout)",
            lambda: Fault.delay(0.2),
        ),
        FaultKind(
            "html_200", "after", "200 with an HTML page", True, _UNKNOWN, "retried", Fault.html_200
        ),
        FaultKind(
            "truncated_json_200",
            "after",
            "200 with the real JSON cut in half",
            True,
            _UNKNOWN,
            "retried",
            Fault.truncated_json_200,
        ),
        FaultKind(
            "json_array_200",
            "after",
            "200 with [] instead of an object",
            True,
            _UNKNOWN,
            "retried",
            Fault.json_array_200,
        ),
        FaultKind(
            "huge_body_200",
            "after",
            "200 with a JSON body of N bytes (default 9 MiB)",
            True,
            _UNKNOWN,
            "retried",
            Fault.huge_body_200,
        ),
        FaultKind(
            "slow_body_200",
            "after",
            "the real 200, streamed slowly over N seconds",
            True,
            "created (or OutcomeUnknownError on a read timeout)",
            "answered",
            lambda: Fault.slow_body_200(0.3),
        ),
        FaultKind(
            "slow_headers",
            "after",
            "the real answer, its status line and headers trickled "
            "a byte at a time over N seconds (in-process: the answer starts N seconds late)",
            True,
            "created (or OutcomeUnknownError when the call's deadline passes first)",
            "answered (or TransportError when the call's deadline passes first)",
            lambda: Fault.slow_headers(0.3),
        ),
        FaultKind(
            "redirect",
            "before",
            "a 3xx (default 307) pointing back at the requested path: "
            "a client that follows it re-sends the signed body",
            False,
            _UNKNOWN,
            "APIError, not retried and never followed",
            Fault.redirect,
        ),
    )
}

#: what ``--fault-rate`` draws from (each equally likely)
RANDOM_FAULTS: tuple[Callable[[], Fault], ...] = (
    lambda: Fault.status(500),
    lambda: Fault.status(502),
    lambda: Fault.status(503),
    lambda: Fault.status(504),
    lambda: Fault.status(429, retry_after=1),
    Fault.drop_before_commit,
    Fault.drop_after_commit,
    lambda: Fault.status(503, after_commit=True),
    Fault.html_200,
    Fault.truncated_json_200,
    Fault.json_array_200,
    lambda: Fault.delay(0.5),
)


@attrs.frozen
class FiredFault:
    """A fault that fired: when, where, for which order_id."""

    at: datetime
    endpoint: str
    order_id: str | None
    fault: Fault


@attrs.define
class _Scripted:
    fault: Fault
    remaining: int
    order_id: str | None


class RandomFaults:
    """Each request draws a fault with probability ``rate`` (reproducible with ``seed``)."""

    def __init__(
        self,
        rate: float,
        seed: int | None = None,
        choices: Iterable[Callable[[], Fault]] = RANDOM_FAULTS,
        endpoints: Iterable[str] | None = None,
    ) -> None:
        if not 0.0 <= rate <= 1.0:
            raise ValueError("rate must be between 0 and 1")
        self.rate = rate
        self.choices = tuple(choices)
        self.endpoints = frozenset(normalise_endpoint(e) for e in endpoints or ENDPOINTS)
        self._random = random.Random(seed)

    def draw(self, endpoint: str) -> Fault | None:
        if endpoint not in self.endpoints or self._random.random() >= self.rate:
            return None
        return self._random.choice(self.choices)()


def normalise_endpoint(endpoint: str) -> str:
    """``"/v1/payout"``, ``"v1/payout"`` -> ``"v1/payout"``; ``"*"`` stays."""
    name = endpoint.strip().strip("/")
    if name != "*" and name not in ENDPOINTS:
        raise ValueError(f"unknown endpoint {endpoint!r}; one of {sorted(ENDPOINTS)} or '*'")
    return name


class FaultPlan:
    """The queue of scripted faults per endpoint, plus optional random faults."""

    def __init__(self) -> None:
        self._queues: dict[str, deque[_Scripted]] = {}
        self.random: RandomFaults | None = None
        #: every fault that fired, in order
        self.fired: list[FiredFault] = []

    def add(
        self, endpoint: str, fault: Fault, *, times: int = 1, order_id: str | None = None
    ) -> None:
        """Make the next ``times`` requests to ``endpoint`` (``"*"``: any) hit ``fault``.

        With ``order_id``, only requests whose body names that order_id count.
        Faults queued for one endpoint fire in the order they were added.
        """
        if times < 1:
            raise ValueError("times must be at least 1")
        name = normalise_endpoint(endpoint)
        self._queues.setdefault(name, deque()).append(_Scripted(fault, times, order_id))

    def set_random(
        self,
        rate: float,
        seed: int | None = None,
        *,
        choices: Iterable[Callable[[], Fault]] = RANDOM_FAULTS,
        endpoints: Iterable[str] | None = None,
    ) -> None:
        """Random faults on top of the script (``rate`` 0 switches them off)."""
        self.random = RandomFaults(rate, seed, choices, endpoints) if rate > 0 else None

    def clear(self) -> None:
        self._queues.clear()
        self.random = None

    def pending(self, endpoint: str | None = None) -> int:
        """Scripted firings not used yet (for one endpoint, or all)."""
        names = [normalise_endpoint(endpoint)] if endpoint else list(self._queues)
        return sum(s.remaining for n in names for s in self._queues.get(n, ()))

    def take(self, endpoint: str, order_id: str | None) -> Fault | None:
        """The fault for this request, if any (consumes one scripted firing)."""
        for name in (endpoint, "*"):
            queue = self._queues.get(name)
            if not queue:
                continue
            for scripted in queue:
                if scripted.order_id is not None and scripted.order_id != order_id:
                    continue
                scripted.remaining -= 1
                if scripted.remaining <= 0:
                    queue.remove(scripted)
                return self._fire(endpoint, order_id, scripted.fault)
        if self.random is not None:
            drawn = self.random.draw(endpoint)
            if drawn is not None:
                return self._fire(endpoint, order_id, drawn)
        return None

    def _fire(self, endpoint: str, order_id: str | None, fault: Fault) -> Fault:
        self.fired.append(FiredFault(datetime.now().astimezone(), endpoint, order_id, fault))
        return fault
