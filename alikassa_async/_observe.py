"""Request ids, typed hooks and OpenTelemetry: what a production team sees of each call.

Every logical call (an endpoint method, with all its retries) gets a request id,
generated here, carried on every log record (``extra={"alikassa": {...}}``),
span, hook event and error (``exc.request_id``), so a support ticket can quote
it. Hooks receive typed, redacted events. OpenTelemetry (extra ``otel``: the
API package only, as libraries should) gets one span per operation, a child
span per HTTP attempt with the stable HTTP semantic-convention attributes, and
metrics; without the package every instrument here is a no-op and costs an
attribute lookup.

Nothing secret reaches any of them: no card, phone or account number, no
``Sign``, no body. An ``order_id`` and AliKassa's payout ``id`` are not secret.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import attrs

from ._defaults import __version__

__all__ = [
    "Hooks",
    "OutcomeUnknownEvent",
    "RequestEvent",
    "ResponseEvent",
    "RetryEvent",
    "Telemetry",
    "new_request_id",
]

logger = logging.getLogger("alikassa_async")

#: response headers a gateway (or its proxy) may carry its own request id in
GATEWAY_REQUEST_ID_HEADERS = ("x-request-id", "request-id", "x-correlation-id", "cf-ray")


def new_request_id() -> str:
    """A fresh id for one logical call: ``ak_`` and 24 hex digits."""
    return "ak_" + uuid.uuid4().hex[:24]


# -- typed hook events ----------------------------------------------------------------


@attrs.frozen
class RequestEvent:
    """An attempt is about to be sent."""

    request_id: str
    #: ``v1/payout``, ``v1/payout/status``, ...
    endpoint: str
    #: 1 for the first attempt of the call
    attempt: int
    order_id: str | None = None


@attrs.frozen
class ResponseEvent:
    """An attempt got an HTTP answer (any status)."""

    request_id: str
    endpoint: str
    attempt: int
    status_code: int
    duration_ms: float
    order_id: str | None = None
    #: the gateway's own request id, if it sent one in a response header
    gateway_request_id: str | None = None


@attrs.frozen
class RetryEvent:
    """A read is about to be tried again."""

    request_id: str
    endpoint: str
    #: the attempt that failed
    attempt: int
    delay: float
    #: the error's class name (``ServerError``, ``TransportError``, ...)
    error_type: str


@attrs.frozen
class OutcomeUnknownEvent:
    """A create may or may not have taken effect: look ``order_id`` up before anything else."""

    request_id: str
    endpoint: str
    order_id: str
    reason: str


Hook = Callable[[Any], Awaitable[None] | None]


@attrs.frozen
class Hooks:
    """Callbacks for teams not on OpenTelemetry; each may be sync or async.

    >>> AliKassaClient(..., hooks=Hooks(on_outcome_unknown=page_the_on_call))

    A hook that raises is logged and ignored: observing a payout never breaks it.
    """

    on_request: Callable[[RequestEvent], Awaitable[None] | None] | None = None
    on_response: Callable[[ResponseEvent], Awaitable[None] | None] | None = None
    on_retry: Callable[[RetryEvent], Awaitable[None] | None] | None = None
    on_outcome_unknown: Callable[[OutcomeUnknownEvent], Awaitable[None] | None] | None = None

    async def emit(self, name: str, event: object) -> None:
        hook = getattr(self, name)
        if hook is None:
            return
        try:
            result = hook(event)
            if inspect.isawaitable(result):
                await result
        except Exception:
            logger.exception("alikassa_async hook %s raised; ignored", name)


NO_HOOKS = Hooks()


# -- OpenTelemetry ----------------------------------------------------------------------

#: the operation span of each endpoint
OPERATION_NAMES = {
    "v1/payment": "alikassa.payment.create",
    "v1/payment/status": "alikassa.payment.status",
    "v1/payment/history": "alikassa.payment.history",
    "v1/payout": "alikassa.payout.create",
    "v1/payout/status": "alikassa.payout.status",
    "v1/account/balance": "alikassa.account.balance",
    "v1/account/info": "alikassa.account.info",
}


class Telemetry:
    """The SDK's spans and metrics; no-ops when ``opentelemetry-api`` is not installed."""

    def __init__(self) -> None:
        try:
            from opentelemetry import metrics, trace
        except ImportError:
            self.enabled = False
            return
        self.enabled = True
        self._trace = trace
        self._tracer = trace.get_tracer("alikassa_async", __version__)
        meter = metrics.get_meter("alikassa_async", __version__)
        self.request_duration = meter.create_histogram(
            "http.client.request.duration", unit="s",
            description="Duration of one HTTP attempt to the AliKassa gateway")
        self.retries = meter.create_counter(
            "alikassa.client.retries", description="Reads tried again")
        self.payouts = meter.create_counter(
            "alikassa.payouts", description="Payouts by outcome (batch items and creates)")
        self.batch_in_flight = meter.create_up_down_counter(
            "alikassa.batch.in_flight", description="Batch payouts in progress")
        self.journal_commit = meter.create_histogram(
            "alikassa.journal.commit.duration", unit="s",
            description="Time a journal write took to be durable")

    @contextlib.contextmanager
    def span(self, name: str, attributes: dict[str, Any], *, client: bool = False
             ) -> Iterator[Any]:
        """A span (``None`` without OpenTelemetry); an escaping error marks it failed."""
        if not self.enabled:
            yield None
            return
        kind = self._trace.SpanKind.CLIENT if client else self._trace.SpanKind.INTERNAL
        with self._tracer.start_as_current_span(
                name, kind=kind, attributes=_clean(attributes),
                record_exception=False, set_status_on_exception=False) as span:
            try:
                yield span
            except BaseException as exc:
                span.set_attribute("error.type", type(exc).__name__)
                span.set_status(self._trace.Status(self._trace.StatusCode.ERROR,
                                                   type(exc).__name__))
                raise

    def set(self, span: Any, **attributes: Any) -> None:
        if span is not None:
            for key, value in _clean(attributes).items():
                span.set_attribute(key.replace("__", "."), value)

    def record_attempt(self, seconds: float, attributes: dict[str, Any]) -> None:
        if self.enabled:
            self.request_duration.record(seconds, _clean(attributes))

    def count_retry(self, endpoint: str) -> None:
        if self.enabled:
            self.retries.add(1, {"alikassa.endpoint": endpoint})

    def count_payout(self, outcome: str) -> None:
        if self.enabled:
            self.payouts.add(1, {"alikassa.outcome": outcome})

    def batch_started(self, delta: int) -> None:
        if self.enabled:
            self.batch_in_flight.add(delta)

    @contextlib.contextmanager
    def journal_write(self) -> Iterator[None]:
        if not self.enabled:
            yield
            return
        started = time.perf_counter()
        try:
            yield
        finally:
            self.journal_commit.record(time.perf_counter() - started)


def _clean(attributes: dict[str, Any]) -> dict[str, Any]:
    """OpenTelemetry takes str/bool/int/float values; None means "not known": leave out."""
    return {key.replace("__", "."): value for key, value in attributes.items()
            if value is not None}


#: one per process: OpenTelemetry's providers are global anyway
TELEMETRY = Telemetry()
