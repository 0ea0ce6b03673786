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

import asyncio
import contextlib
import inspect
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import attrs

from ._defaults import __version__
from ._errors import ConfigurationError

__all__ = [
    "CallTrace",
    "Hooks",
    "OutcomeUnknownEvent",
    "RequestEvent",
    "ResponseEvent",
    "RetryEvent",
    "Telemetry",
    "new_request_id",
]

logger = logging.getLogger("alikassa_async")

#: the header the request id goes in, with ``AliKassaClient(send_request_id=True)``
REQUEST_ID_HEADER = "X-Request-Id"
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


def _callable_or_none(_instance: object, attribute: Any, value: object) -> None:
    if value is not None and not callable(value):
        raise ConfigurationError(
            f"Hooks({attribute.name}=...) must be a function (sync or async) or None, "
            f"not {type(value).__name__}"
        )


@attrs.frozen
class Hooks:
    """Callbacks for teams not on OpenTelemetry; each may be sync or async.

    >>> AliKassaClient(..., hooks=Hooks(on_outcome_unknown=page_the_on_call))

    A hook that raises is logged and ignored: observing a payout never breaks it. So is
    one that cancels itself, or (async) runs past the call's ``total_timeout``.
    """

    on_request: Callable[[RequestEvent], Awaitable[None] | None] | None = attrs.field(
        default=None, validator=_callable_or_none
    )
    on_response: Callable[[ResponseEvent], Awaitable[None] | None] | None = attrs.field(
        default=None, validator=_callable_or_none
    )
    on_retry: Callable[[RetryEvent], Awaitable[None] | None] | None = attrs.field(
        default=None, validator=_callable_or_none
    )
    on_outcome_unknown: Callable[[OutcomeUnknownEvent], Awaitable[None] | None] | None = (
        attrs.field(default=None, validator=_callable_or_none)
    )

    async def emit(self, name: str, event: object, deadline: float | None = None) -> None:
        hook = getattr(self, name)
        if hook is None:
            return
        request_id = getattr(event, "request_id", None)
        extra = {"alikassa": {"request_id": request_id, "hook": name}}
        task = asyncio.current_task()
        try:
            result = hook(event)
            if inspect.isawaitable(result):
                if deadline is None:
                    await result
                else:  # the call's deadline holds, hooks included
                    async with asyncio.timeout(max(deadline - time.monotonic(), 0.0)):
                        await result
        except asyncio.CancelledError:
            if task is not None and task.cancelling():
                raise  # the caller's own cancel or timeout: not the hook's to swallow
            logger.error(
                "alikassa_async hook %s cancelled itself; ignored (request_id=%s)",
                name,
                request_id,
                extra=extra,
            )
        except Exception:
            logger.exception(
                "alikassa_async hook %s raised or ran past the call's deadline; ignored "
                "(request_id=%s)",
                name,
                request_id,
                extra=extra,
            )


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
        self._no_tracing = (trace.ProxyTracerProvider, trace.NoOpTracerProvider)
        meter = metrics.get_meter("alikassa_async", __version__)
        self.request_duration = meter.create_histogram(
            "http.client.request.duration",
            unit="s",
            description="Duration of one HTTP attempt to the AliKassa gateway",
        )
        self.retries = meter.create_counter(
            "alikassa.client.retries", description="Reads tried again"
        )
        self.payouts = meter.create_counter(
            "alikassa.payouts", description="Payouts by outcome (batch items and creates)"
        )
        self.batch_in_flight = meter.create_up_down_counter(
            "alikassa.batch.in_flight", description="Batch payouts in progress"
        )
        self.journal_commit = meter.create_histogram(
            "alikassa.journal.commit.duration",
            unit="s",
            description="Time a journal write took to be durable",
        )

    @contextlib.contextmanager
    def span(self, name: str, attributes: dict[str, Any], *, client: bool = False) -> Iterator[Any]:
        """A span (``None`` without OpenTelemetry); an escaping error marks it failed."""
        if not self.enabled:
            yield None
            return
        if not self._tracing():
            yield self._trace.INVALID_SPAN  # a no-op span: callers may still set on it
            return
        kind = self._trace.SpanKind.CLIENT if client else self._trace.SpanKind.INTERNAL
        with self._tracer.start_as_current_span(
            name,
            kind=kind,
            attributes=_clean(attributes),
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            try:
                yield span
            except BaseException as exc:
                span.set_attribute("error.type", type(exc).__name__)
                span.set_status(
                    self._trace.Status(self._trace.StatusCode.ERROR, type(exc).__name__)
                )
                raise

    def _tracing(self) -> bool:
        """Whether an application configured a tracer provider. Until it does, the API's
        spans are no-ops that still cost ~20 µs a call (context managers, attribute
        cleaning, context switches): skip them. Checked per call, so a provider set
        later is used from then on."""
        # get_tracer_provider() reads the environment on every call while none is set;
        # the API's module global (private, hence the fallback) says the same for free.
        provider = getattr(self._trace, "_TRACER_PROVIDER", self)
        if provider is None:
            return False
        if provider is self:
            provider = self._trace.get_tracer_provider()
        return not isinstance(provider, self._no_tracing)

    def start_span(self, name: str, attributes: dict[str, Any]) -> Any:
        """A span that is not made current (for a batch, whose body spans many tasks and
        yields to the caller); end it with :meth:`end_span`."""
        if not self.enabled:
            return None
        return self._tracer.start_span(name, attributes=_clean(attributes))

    def end_span(self, span: Any, error: BaseException | None = None) -> None:
        if span is None:
            return
        if error is not None:
            self.fail(span, type(error).__name__)
        span.end()

    def fail(self, span: Any, error_type: str) -> None:
        """Mark ``span`` failed, with ``error.type`` as the HTTP conventions spell it."""
        if span is not None and span is not self._trace.INVALID_SPAN:
            span.set_attribute("error.type", error_type)
            span.set_status(self._trace.Status(self._trace.StatusCode.ERROR))

    @contextlib.contextmanager
    def child_span(self, parent: Any, name: str, attributes: dict[str, Any]) -> Iterator[Any]:
        """A current span under ``parent`` (a span from :meth:`start_span`, or None)."""
        if not self.enabled:
            yield None
            return
        if not self._tracing():
            yield self._trace.INVALID_SPAN
            return
        context = None if parent is None else self._trace.set_span_in_context(parent)
        with self._tracer.start_as_current_span(
            name, context=context, attributes=_clean(attributes)
        ) as span:
            yield span

    def set(self, span: Any, **attributes: Any) -> None:
        # a span exists only when OpenTelemetry is there; INVALID_SPAN is the no-op one
        if span is not None and span is not self._trace.INVALID_SPAN:
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
    return {key.replace("__", "."): value for key, value in attributes.items() if value is not None}


#: one per process: OpenTelemetry's providers are global anyway
TELEMETRY = Telemetry()


class CallTrace:
    """One logical call, as the logs, hooks, spans and metrics see it.

    The client makes one per endpoint call; every attempt, retry and outcome of
    the call goes through it, so each record carries the same ``request_id``.
    """

    __slots__ = (
        "_attempt_span",
        "_attempt_started",
        "_host",
        "_op_span",
        "_port",
        "attempt",
        "deadline",
        "endpoint",
        "gateway_request_id",
        "hooks",
        "lookup",
        "order_id",
        "request_id",
    )

    def __init__(
        self,
        endpoint: str,
        *,
        host: str,
        port: int | None,
        hooks: Hooks,
        order_id: str | None = None,
        lookup: dict[str, str] | None = None,
    ) -> None:
        self.request_id = new_request_id()
        self.endpoint = endpoint
        self.order_id = order_id
        self.lookup = lookup
        self.hooks = hooks
        self.attempt = 0
        #: the call's total deadline (time.monotonic()), which bounds async hooks too
        self.deadline: float | None = None
        self.gateway_request_id: str | None = None
        self._host = host
        self._port = port
        self._op_span: Any = None
        self._attempt_span: Any = None
        self._attempt_started = 0.0

    def log_context(self, **more: Any) -> dict[str, Any]:
        """``extra=`` for a log record: ``record.alikassa`` holds the call's facts."""
        facts: dict[str, Any] = {"endpoint": self.endpoint, "request_id": self.request_id}
        if self.order_id is not None:
            facts["order_id"] = self.order_id
        if self.lookup:
            facts.update(self.lookup)
        if self.attempt:
            facts["attempt"] = self.attempt
        facts.update(more)
        return {"alikassa": facts}

    def describe(self) -> str:
        """`` order_id=... request_id=...`` for a human-readable log message."""
        asked = self.lookup or ({"order_id": self.order_id} if self.order_id else {})
        named = "".join(f" {key}={value}" for key, value in asked.items())
        return f"{named} request_id={self.request_id}"

    # -- the operation ----------------------------------------------------------------

    @contextlib.contextmanager
    def operation(self) -> Iterator[CallTrace]:
        attributes = {
            "alikassa.request_id": self.request_id,
            "alikassa.order_id": self.order_id,
            "alikassa.endpoint": self.endpoint,
        }
        with TELEMETRY.span(
            OPERATION_NAMES.get(self.endpoint, "alikassa.call"), attributes
        ) as span:
            self._op_span = span
            yield self

    def outcome(self, outcome: str) -> None:
        TELEMETRY.set(self._op_span, alikassa__outcome=outcome)

    # -- attempts ---------------------------------------------------------------------

    async def attempt_starts(self) -> None:
        self.attempt += 1
        if self.hooks is not NO_HOOKS:
            await self.hooks.emit(
                "on_request",
                RequestEvent(self.request_id, self.endpoint, self.attempt, self.order_id),
                deadline=self.deadline,
            )
        self._attempt_started = time.perf_counter()
        if TELEMETRY.enabled:
            attributes: dict[str, Any] = {
                "http.request.method": "POST",
                "server.address": self._host,
                "server.port": self._port,
                "url.path": "/" + self.endpoint,
                "alikassa.request_id": self.request_id,
                "alikassa.order_id": self.order_id,
            }
            if self.attempt > 1:
                attributes["http.request.resend_count"] = self.attempt - 1
            manager = TELEMETRY.span("POST", attributes, client=True)
            self._attempt_span = (manager, manager.__enter__())

    def _end_attempt(self, status: int | None, error: BaseException | None) -> float:
        seconds = time.perf_counter() - self._attempt_started
        if self._attempt_span is not None:
            manager, span = self._attempt_span
            self._attempt_span = None
            TELEMETRY.set(span, http__response__status_code=status)
            if error is not None:
                TELEMETRY.fail(span, type(error).__name__)
            elif status is not None and status >= 400:
                TELEMETRY.fail(span, str(status))
            manager.__exit__(None, None, None)
            TELEMETRY.record_attempt(
                seconds,
                {
                    "http.request.method": "POST",
                    "server.address": self._host,
                    "http.response.status_code": status,
                    "alikassa.endpoint": self.endpoint,
                    "error.type": None if error is None else type(error).__name__,
                },
            )
        return seconds * 1000

    async def answered(self, status: int, headers: Any) -> float:
        """The attempt got an HTTP answer; its duration in ms."""
        for name in GATEWAY_REQUEST_ID_HEADERS:
            value = headers.get(name)
            if value:
                self.gateway_request_id = str(value)[:128]
                break
        elapsed = self._end_attempt(status, None)
        if self.hooks is not NO_HOOKS:
            await self.hooks.emit(
                "on_response",
                ResponseEvent(
                    self.request_id,
                    self.endpoint,
                    self.attempt,
                    status,
                    elapsed,
                    self.order_id,
                    self.gateway_request_id,
                ),
                deadline=self.deadline,
            )
        return elapsed

    def failed(self, error: BaseException) -> None:
        """The attempt broke before an answer (connection, timeout, cancellation)."""
        self._end_attempt(None, error)

    async def retrying(self, delay: float, error: BaseException) -> None:
        TELEMETRY.count_retry(self.endpoint)
        if self.hooks is not NO_HOOKS:
            await self.hooks.emit(
                "on_retry",
                RetryEvent(
                    self.request_id, self.endpoint, self.attempt, delay, type(error).__name__
                ),
                deadline=self.deadline,
            )

    async def outcome_unknown(self, reason: str) -> None:
        self.outcome("unknown")
        if self.hooks is not NO_HOOKS:
            await self.hooks.emit(
                "on_outcome_unknown",
                OutcomeUnknownEvent(self.request_id, self.endpoint, self.order_id or "", reason),
                deadline=self.deadline,
            )
