"""``AliKassaClient``: one pooled HTTP session, signed requests, typed answers.

>>> async with AliKassaClient(account, payment_cert=pay, payout_cert=out) as client:
...     created = await client.create_payment(build_payment(...))
...     status = await client.payment_status(id=created.id)

Every endpoint method names its path, certificate and response type and hands
off to :meth:`AliKassaClient._call`, where encoding, signing, retries, logging
and error mapping happen once.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import ssl
import time
import uuid as uuid_module
from collections.abc import (
    AsyncGenerator,
    AsyncIterable,
    AsyncIterator,
    Awaitable,
    Callable,
    Coroutine,
    Iterable,
    Mapping,
)
from concurrent.futures import ThreadPoolExecutor
from datetime import date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, Literal, NoReturn, ParamSpec, TypeVar
from urllib.parse import urlsplit

import attrs
import httpx

from . import _batch, _hpack_redaction, _polling
from . import _converters as converters
from ._arguments import count_problem, header_problem, seconds_problem
from ._builtin_sender import BuiltinSender
from ._defaults import (
    DEFAULT_BASE_URL,
    DEFAULT_CONCURRENCY,
    DEFAULT_KEEPALIVE_EXPIRY,
    DEFAULT_MAX_CONNECTIONS,
    DEFAULT_MAX_STATUS_IN_FLIGHT,
    DEFAULT_MAX_WAITING,
    DEFAULT_TIMEOUT,
    DEFAULT_USER_AGENT,
    DEMO_ACCOUNT,
    LOOPBACK_HOSTS,
)
from ._encoding import php_json_encode
from ._errors import (
    AliKassaError,
    APIError,
    AuthenticationError,
    ClientClosedError,
    ConfigurationError,
    InvalidRequestError,
    NotFoundError,
    OutcomeUnknownError,
    RateLimitError,
    RequestValidationError,
    ServerError,
    TransportError,
    snippet,
)
from ._models import (
    AccountInfo,
    Balance,
    HistoryPage,
    HistoryRow,
    PaymentCreated,
    PaymentRequest,
    PaymentStatusResponse,
    PayoutCreated,
    PayoutRequest,
    PayoutStatusResponse,
)
from ._observe import NO_HOOKS, REQUEST_ID_HEADER, CallTrace, Hooks, new_request_id
from ._retry import RETRY_PACE, RetryPolicy, parse_retry_after
from ._signing import Certificate, SignatureHash, hash_algorithm
from ._tls import TLSWatch, check_transport_tls, client_transports, tls_context
from ._transport import (
    AiohttpSender,
    Answer,
    HttpxSender,
    LanePoolTransport,
    MaybeSent,
    NotSent,
    Secret,
    Sender,
    SignedBody,
)

if TYPE_CHECKING:
    from ._worker import WorkerPolicy
    from .pg_journal import PostgresJournal

__all__ = ["DEFAULT_BASE_URL", "AliKassaClient", "ClientClosedError"]

logger = logging.getLogger("alikassa_async")


T = TypeVar("T")
CertKind = Literal["payment", "payout"]


#: Answer size caps. A create, status or balance answer is a few hundred bytes; an
#: account's service list a few KiB; a history row about 200 bytes (a page of the
#: largest ``page_size`` fits with room to spare). Each cap is far above what the gateway
#: sends and low enough that parsing stays bounded: a 1 MiB answer is parsed off the
#: event loop in ~40 ms, blocking the loop for under ~10 ms (json's C parser holds the
#: GIL); 8 MiB would block it for ~250 ms (benchmarks/RESULTS-big-answers.md).
SMALL_ANSWER_BYTES = 64 * 1024
INFO_ANSWER_BYTES = 1024 * 1024
HISTORY_ANSWER_BYTES = 1024 * 1024
#: the largest ``page_size`` of a history page (about 500 bytes a row fit the cap)
MAX_PAGE_SIZE = 2000
#: Answers up to this size are parsed on the event loop (well under 1 ms); bigger ones
#: in a worker thread.
PARSE_INLINE_BYTES = 64 * 1024


@attrs.frozen
class _Endpoint(Generic[T]):
    path: str
    cert: CertKind
    response: type[T]
    creates: bool = False
    max_bytes: int = SMALL_ANSWER_BYTES


_PAYMENT = _Endpoint("v1/payment", "payment", PaymentCreated, creates=True)
_PAYMENT_STATUS = _Endpoint("v1/payment/status", "payment", PaymentStatusResponse)
_PAYMENT_HISTORY = _Endpoint(
    "v1/payment/history", "payment", HistoryPage, max_bytes=HISTORY_ANSWER_BYTES
)
_PAYOUT = _Endpoint("v1/payout", "payout", PayoutCreated, creates=True)
_PAYOUT_STATUS = _Endpoint("v1/payout/status", "payout", PayoutStatusResponse)
_BALANCE = _Endpoint("v1/account/balance", "payout", Balance)
_INFO = _Endpoint("v1/account/info", "payout", AccountInfo, max_bytes=INFO_ANSWER_BYTES)


_P = ParamSpec("_P")
_R = TypeVar("_R")


def _stamped(method: Callable[_P, Awaitable[_R]]) -> Callable[_P, Coroutine[Any, Any, _R]]:
    """Every error of a public call carries a request id, also one refused before the
    network (a bad argument, a missing certificate, a closed client): support tickets
    quote it, whatever went wrong."""

    @functools.wraps(method)
    async def call(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        try:
            return await method(*args, **kwargs)
        except AliKassaError as exc:
            if exc.request_id is None:
                exc.request_id = new_request_id()
            raise

    return call


async def _paced_in_time(pace: Callable[[], Awaitable[None]], deadline: float | None) -> bool:
    """Wait for the batch's turn for a retry; False if it does not come before the
    call's deadline (a paused or backed-up limiter must not stretch ``total_timeout``)."""
    if deadline is None:
        await pace()
        return True
    try:
        async with asyncio.timeout(deadline - time.monotonic()):
            await pace()
    except TimeoutError:
        return False
    return time.monotonic() < deadline


def _cancelled_in_doubt(
    endpoint: _Endpoint[Any], order_id: str | None, trace: CallTrace, when: str
) -> None:
    """The caller's own timeout or cancel ended a create that may have taken effect: no
    exception of ours will say so, so this WARNING (and the span's outcome) must."""
    trace.outcome("unknown")
    logger.warning(
        "POST %s cancelled after %s: outcome unknown for order_id=%s; look it up by "
        "order_id before sending it again%s",
        endpoint.path,
        when,
        order_id,
        trace.describe(),
        extra=trace.log_context(outcome="unknown", cancelled=True),
    )


class _Retryable(Exception):
    """Internal: this attempt failed in a way a read may retry."""

    def __init__(self, error: AliKassaError, retry_after: float | None = None) -> None:
        self.error = error
        self.retry_after = retry_after


def _check_observability(hooks: object, send_request_id: object) -> None:
    if hooks is not None and not isinstance(hooks, Hooks):
        raise ConfigurationError("hooks must be an alikassa_async.Hooks(...)")
    if not isinstance(send_request_id, bool):
        raise ConfigurationError("send_request_id must be True or False")


def _check_certificates(**certificates: object) -> None:
    for name, cert in certificates.items():
        if cert is not None and not isinstance(cert, Certificate):
            raise ConfigurationError(f"{name} must be a Certificate (Certificate.from_dir)")


def _check_account(account: str) -> str:
    try:
        return str(uuid_module.UUID(str(account)))
    except (ValueError, TypeError, AttributeError):
        raise ConfigurationError(
            f"account must be the account UUID from the AliKassa cabinet (e.g. {DEMO_ACCOUNT})"
        ) from None


def _check_arguments(
    *,
    timeout: object,
    max_connections: object,
    max_keepalive_connections: object,
    http2: object,
    sign_threads: object,
    http_client: object,
    transport: object,
    retry: object,
    allow_plain_http: object,
    user_agent: object,
    tls_from_env: object,
    signature_hash: object,
) -> None:
    """Every constructor argument that is not checked where it is used, checked now."""
    problems: list[str] = []

    def check(name: str, problem: str | None) -> None:
        if problem is not None:
            problems.append(f"{name} {problem}")

    if isinstance(timeout, httpx.Timeout):
        for part in ("connect", "read", "write", "pool"):
            check(f"timeout.{part}", seconds_problem(getattr(timeout, part)))
    else:
        check("timeout", seconds_problem(timeout))
    check("max_connections", count_problem(max_connections, maximum=100_000))
    if max_keepalive_connections is not None:
        check(
            "max_keepalive_connections",
            count_problem(max_keepalive_connections, minimum=0, maximum=100_000),
        )
    if sign_threads is not None:
        check("sign_threads", count_problem(sign_threads, minimum=0, maximum=256))
    for name, flag in (
        ("http2", http2),
        ("allow_plain_http", allow_plain_http),
        ("tls_from_env", tls_from_env),
    ):
        if not isinstance(flag, bool):
            problems.append(f"{name} must be True or False, not {type(flag).__name__}")
    if http_client is not None and not isinstance(http_client, httpx.AsyncClient):
        problems.append("http_client must be an httpx.AsyncClient")
    if transport is not None and not isinstance(transport, httpx.AsyncBaseTransport):
        problems.append("transport must be an httpx.AsyncBaseTransport")
    if retry is not None and not isinstance(retry, RetryPolicy):
        problems.append("retry must be a RetryPolicy (or None for the default)")
    check("user_agent", header_problem(user_agent))
    if not isinstance(signature_hash, str):
        problems.append("signature_hash must be 'sha1' or 'sha256'")
    if problems:
        raise ConfigurationError("; ".join(problems))


def _check_base_url(base_url: str, allow_plain_http: bool) -> str:
    if not isinstance(base_url, str):
        raise ConfigurationError(f"base_url must be a string, not {type(base_url).__name__}")
    try:
        parts = urlsplit(base_url)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError:
        raise ConfigurationError(f"base_url is not a valid URL: {base_url!r}") from None
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise ConfigurationError(f"base_url must be an http(s) URL, not {base_url!r}")
    if parts.scheme == "http" and parts.hostname not in LOOPBACK_HOSTS and not allow_plain_http:
        raise ConfigurationError(
            "base_url uses plain http to a non-loopback host; pass allow_plain_http=True "
            "only for a sandbox you control"
        )
    return base_url.rstrip("/") + "/"


def _lookup_key(id: int | str | None, order_id: str | None) -> dict[str, str]:
    if (id is None) == (order_id is None):
        raise RequestValidationError({"id": ["give exactly one of id or order_id"]})
    if id is not None:
        if isinstance(id, bool) or not isinstance(id, int | str):
            raise RequestValidationError(
                {"id": [f"must be an int or str, not {type(id).__name__}"]}
            )
        text = (str(id) if isinstance(id, str) or abs(id) < 10**128 else "").strip()
        if not text or len(text) > 128 or not text.isprintable():
            raise RequestValidationError(
                {"id": ["must be a non-empty id of at most 128 printable characters"]}
            )
        return {"id": text}
    if not isinstance(order_id, str) or not 1 <= len(order_id) <= 128:
        raise RequestValidationError({"order_id": ["must be a string of 1 to 128 characters"]})
    if not order_id.isprintable():
        # No payout has one (the builders refuse them), and logs would carry it raw:
        # terminal escapes, forged log lines.
        raise RequestValidationError({"order_id": ["must not contain control characters"]})
    return {"order_id": order_id}


def _history_payload(
    date_from: date | str | None, date_to: date | str | None, page: int, page_size: int | None
) -> dict[str, object]:
    problems: dict[str, list[str]] = {}
    payload: dict[str, object] = {}
    for name, value in (("date_from", date_from), ("date_to", date_to)):
        if value is None:
            continue
        if isinstance(value, datetime):
            payload[name] = value.date().isoformat()  # the gateway filters by day
        elif isinstance(value, date):
            payload[name] = value.isoformat()
        elif not isinstance(value, str) or len(value) > 10:
            problems[name] = ["must be a date or a YYYY-MM-DD string"]
        else:
            try:
                payload[name] = date.fromisoformat(value).isoformat()
            except ValueError:
                problems[name] = ["must be a date or a YYYY-MM-DD string"]
    problem = count_problem(page)
    if problem is not None:
        problems["page"] = [problem]
    payload["page"] = page
    if page_size is not None:
        # A page must fit the history answer cap (about 200 bytes a row).
        problem = count_problem(page_size, maximum=MAX_PAGE_SIZE)
        if problem is not None:
            problems["paginate"] = [problem]
        payload["paginate"] = page_size
    if problems:
        raise RequestValidationError(problems)
    return payload


class AliKassaClient:
    """Async client for the AliKassa merchant API. Hold one for the app's lifetime.

    Payments are signed with ``payment_cert``; payouts and account calls with
    ``payout_cert``. ``http_client`` lets you bring your own
    ``httpx.AsyncClient`` (then you close it); ``transport`` plugs an httpx
    transport (e.g. ``httpx.ASGITransport`` for the in-process sandbox).
    ``http_backend``: by default (``None``) the SDK's own HTTP/1.1 connections
    (``"builtin"``, :mod:`alikassa_async._builtin_sender`), or httpx when
    ``http_client``, ``transport`` or ``http2`` is given; ``"httpx"`` forces
    httpx on the lane pool; ``"aiohttp"`` (extra ``[aiohttp]``) sends through
    aiohttp (:mod:`alikassa_async._transport`).
    ``sign_threads``: ``None`` signs in a 2-thread pool for keys of 3072 bits
    and more (where signing dominates), inline otherwise; ``0`` always inline.
    """

    def __init__(
        self,
        account: str,
        payment_cert: Certificate | None = None,
        payout_cert: Certificate | None = None,
        *,
        base_url: str = DEFAULT_BASE_URL,
        signature_hash: SignatureHash = "sha1",
        timeout: float | httpx.Timeout | None = DEFAULT_TIMEOUT,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        max_keepalive_connections: int | None = None,
        http2: bool = False,
        http_backend: Literal["builtin", "httpx", "aiohttp"] | None = None,
        sign_threads: int | None = None,
        http_client: httpx.AsyncClient | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        retry: RetryPolicy | None = None,
        verify: ssl.SSLContext | str | Path | bool = True,
        allow_plain_http: bool = False,
        user_agent: str = DEFAULT_USER_AGENT,
        tls_from_env: bool = False,
        hooks: Hooks | None = None,
        send_request_id: bool = False,
    ) -> None:
        _check_arguments(
            timeout=timeout,
            max_connections=max_connections,
            max_keepalive_connections=max_keepalive_connections,
            http2=http2,
            sign_threads=sign_threads,
            http_client=http_client,
            transport=transport,
            retry=retry,
            allow_plain_http=allow_plain_http,
            user_agent=user_agent,
            tls_from_env=tls_from_env,
            signature_hash=signature_hash,
        )
        _check_observability(hooks, send_request_id)
        self._hooks = hooks or NO_HOOKS
        self._send_request_id = send_request_id
        self.account = _check_account(account)
        _check_certificates(payment_cert=payment_cert, payout_cert=payout_cert)
        self._certs: dict[CertKind, Certificate | None] = {
            "payment": payment_cert,
            "payout": payout_cert,
        }
        hash_algorithm(signature_hash)  # fail now on a typo, not on the first call
        self.signature_hash: SignatureHash = signature_hash
        self.base_url = _check_base_url(base_url, allow_plain_http)
        parts = urlsplit(self.base_url)
        self._host, self._port = parts.hostname or "", parts.port
        self.retry = retry if retry is not None else RetryPolicy()
        self._base_headers = {
            "Content-Type": "application/json",
            "Account": self.account,
            "User-Agent": user_agent,
        }
        _hpack_redaction.install()  # HTTP/2 (ours or the caller's client) logs headers
        self._sign_threads = sign_threads
        self._sign_pool: ThreadPoolExecutor | None = None
        self._http: httpx.AsyncClient | None = None
        ssl_context = tls_context(verify, from_env=tls_from_env)
        self._tls = TLSWatch(
            [
                ssl_context,
                *(check_transport_tls(t) for t in (transport, *client_transports(http_client))),
            ]
        )
        self._sender = self._make_sender(
            http_backend,
            timeout,
            max_connections,
            max_keepalive_connections,
            http2,
            http_client,
            transport,
            ssl_context,
        )
        self._closed = False

    def _make_sender(
        self,
        http_backend: str | None,
        timeout: float | httpx.Timeout | None,
        max_connections: int,
        max_keepalive_connections: int | None,
        http2: bool,
        http_client: httpx.AsyncClient | None,
        transport: httpx.AsyncBaseTransport | None,
        ssl_context: ssl.SSLContext,
    ) -> Sender:
        if http_backend is None:  # the built-in sender unless an httpx feature was asked for
            custom = http_client is not None or transport is not None or http2
            http_backend = "httpx" if custom else "builtin"
        if http_backend == "httpx":
            return self._httpx_sender(
                timeout,
                max_connections,
                max_keepalive_connections,
                http2,
                http_client,
                transport,
                ssl_context,
            )
        elif http_backend in ("builtin", "aiohttp"):
            if http_client is not None or transport is not None or http2:
                raise ConfigurationError(
                    f"http_backend={http_backend!r} cannot be combined with http_client, "
                    "transport or http2"
                )
            self._timeout = httpx.Timeout(timeout)
            if http_backend == "builtin":
                return BuiltinSender(
                    max_connections=max_connections,
                    max_keepalive_connections=max_keepalive_connections,
                    keepalive_expiry=DEFAULT_KEEPALIVE_EXPIRY,
                    timeout=self._timeout,
                    ssl_context=ssl_context,
                )
            else:  # aiohttp keeps every pooled connection alive: no keep-alive count
                return AiohttpSender(
                    max_connections=max_connections,
                    keepalive_expiry=DEFAULT_KEEPALIVE_EXPIRY,
                    timeout=self._timeout,
                    ssl_context=ssl_context,
                )
        raise ConfigurationError("http_backend must be 'builtin', 'httpx' or 'aiohttp'")

    def _httpx_sender(
        self,
        timeout: float | httpx.Timeout | None,
        max_connections: int,
        max_keepalive_connections: int | None,
        http2: bool,
        http_client: httpx.AsyncClient | None,
        transport: httpx.AsyncBaseTransport | None,
        ssl_context: ssl.SSLContext,
    ) -> Sender:
        owned = http_client is None
        lanes: LanePoolTransport | None = None
        if http_client is None:
            if transport is None and not http2:
                # httpcore's own pool costs CPU per open connection; lanes do not.
                transport = lanes = LanePoolTransport(
                    max_connections=max_connections,
                    max_keepalive_connections=max_keepalive_connections,
                    verify=ssl_context,
                )
            http_client = self._own_http_client(
                timeout,
                max_connections,
                max_keepalive_connections,
                http2,
                transport,
                ssl_context,
            )
        self._http = http_client
        self._timeout = http_client.timeout
        return HttpxSender(http_client, owned=owned, direct=lanes)

    @staticmethod
    def _own_http_client(
        timeout: float | httpx.Timeout | None,
        max_connections: int,
        max_keepalive_connections: int | None,
        http2: bool,
        transport: httpx.AsyncBaseTransport | None,
        ssl_context: ssl.SSLContext,
    ) -> httpx.AsyncClient:
        if http2:
            try:
                import h2  # noqa: F401
            except ImportError:
                raise ConfigurationError(
                    "http2=True needs the 'h2' package: pip install 'alikassa-async[http2]'"
                ) from None
        return httpx.AsyncClient(
            timeout=timeout,
            limits=httpx.Limits(
                max_connections=max_connections, max_keepalive_connections=max_keepalive_connections
            ),
            http2=http2,
            transport=transport,
            verify=ssl_context,
            follow_redirects=False,
            trust_env=False,
        )

    # -- lifecycle ---------------------------------------------------------

    async def __aenter__(self) -> AliKassaClient:
        self._ensure_open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connection pool (unless it was passed in as ``http_client``)."""
        if self._closed:
            return
        self._closed = True
        await self._sender.aclose()
        if self._sign_pool is not None:
            self._sign_pool.shutdown(wait=False, cancel_futures=True)

    @property
    def is_closed(self) -> bool:
        return self._closed

    def _ensure_open(self) -> None:
        if self._closed:
            raise ClientClosedError("this AliKassaClient has been closed")

    def __repr__(self) -> str:
        certs = {k: (c.fingerprint if c else None) for k, c in self._certs.items()}
        return (
            f"AliKassaClient(account={self.account!r}, base_url={self.base_url!r}, "
            f"certificates={certs!r}, closed={self._closed})"
        )

    # -- endpoints ---------------------------------------------------------

    @_stamped
    async def create_payment(
        self, request: PaymentRequest, *, application: str | None = None
    ) -> PaymentCreated:
        """Create a payment. Sent once: a doubtful outcome raises ``OutcomeUnknownError``.

        ``application`` sets the ``Application`` header of the H2H card flow.
        """
        if not isinstance(request, PaymentRequest):
            raise RequestValidationError({"request": ["must be built with build_payment()"]})
        if application is not None:
            problem = header_problem(application)
            if problem is not None:
                raise RequestValidationError({"application": [problem]})
        extra = {"Application": application} if application else None
        created = await self._call(
            _PAYMENT, request.to_wire(), order_id=request.order_id, extra_headers=extra
        )
        return attrs.evolve(created, order_id=request.order_id)

    @_stamped
    async def payment_status(
        self, *, id: int | str | None = None, order_id: str | None = None
    ) -> PaymentStatusResponse:
        """Status of one payment, by AliKassa ``id`` (preferred) or your ``order_id``."""
        key = _lookup_key(id, order_id)
        return await self._call(_PAYMENT_STATUS, key, lookup=key)

    @_stamped
    async def payment_history_page(
        self,
        *,
        date_from: date | str | None = None,
        date_to: date | str | None = None,
        page: int = 1,
        page_size: int | None = None,
    ) -> HistoryPage:
        """One page of ``v1/payment/history``."""
        payload = _history_payload(date_from, date_to, page, page_size)
        return await self._call(_PAYMENT_HISTORY, payload)

    async def payment_history(
        self,
        date_from: date | str | None = None,
        date_to: date | str | None = None,
        *,
        page_size: int | None = None,
    ) -> AsyncIterator[HistoryRow]:
        """Every history row in the date range, fetching signed pages as you iterate."""
        page = 1
        previous: Mapping[str, Any] | None = None
        while True:
            result = await self.payment_history_page(
                date_from=date_from, date_to=date_to, page=page, page_size=page_size
            )
            if page > 1 and (result.raw == previous or result.current_page not in (None, page)):
                return  # the server ignores `page` and repeats itself: stop, never loop
            previous = result.raw
            for row in result.rows:
                yield row
            if not result.has_next or not result.rows:
                return
            page += 1

    @_stamped
    async def create_payout(self, request: PayoutRequest) -> PayoutCreated:
        """Create a payout. Sent once: a doubtful outcome raises ``OutcomeUnknownError``.

        Never treat ``OutcomeUnknownError`` as failed: look the payout up with
        ``payout_status(order_id=...)`` (API reference §4).
        """
        if not isinstance(request, PayoutRequest):
            raise RequestValidationError({"request": ["must be built with build_payout()"]})
        created = await self._call(_PAYOUT, request.to_wire(), order_id=request.order_id)
        return attrs.evolve(created, order_id=request.order_id)

    @_stamped
    async def payout_status(
        self, *, id: int | str | None = None, order_id: str | None = None
    ) -> PayoutStatusResponse:
        """Status of one payout, by AliKassa ``id`` or your ``order_id``."""
        key = _lookup_key(id, order_id)
        return await self._call(_PAYOUT_STATUS, key, lookup=key)

    @_stamped
    async def balance(self) -> Balance:
        """Balance of the account (signed with the payout certificate)."""
        return await self._call(_BALANCE, {})

    @_stamped
    async def account_info(self) -> AccountInfo:
        """Which services are enabled on the account (signed with the payout certificate)."""
        return await self._call(_INFO, {})

    # -- the pipeline ------------------------------------------------------

    def _signer(self, endpoint: _Endpoint[Any]) -> Certificate:
        cert = self._certs[endpoint.cert]
        if cert is None:
            raise ConfigurationError(
                f"{endpoint.path} is signed with the {endpoint.cert} certificate; "
                f"pass {endpoint.cert}_cert=Certificate.from_dir(...) to AliKassaClient"
            )
        return cert

    async def _call(
        self,
        endpoint: _Endpoint[T],
        payload: Mapping[str, object],
        *,
        order_id: str | None = None,
        extra_headers: Mapping[str, str] | None = None,
        lookup: dict[str, str] | None = None,
    ) -> T:
        """Encode once, sign once, send with the retry rules of this endpoint, and parse."""
        self._ensure_open()
        cert = self._signer(endpoint)
        trace = CallTrace(
            endpoint.path,
            host=self._host,
            port=self._port,
            hooks=self._hooks,
            order_id=order_id,
            lookup=lookup,
        )
        # The body (card numbers) and Sign live on in these frames while the call runs:
        # keep them in objects whose repr is redacted, for tracebacks with captured locals.
        body = SignedBody(php_json_encode(payload))
        del payload
        headers = {**self._base_headers, "Sign": Secret(await self._signature(cert, body.data))}
        if self._send_request_id:
            headers[REQUEST_ID_HEADER] = trace.request_id
        if extra_headers:
            headers.update(extra_headers)
        with trace.operation():
            try:
                result = await self._send_with_retries(endpoint, body, headers, trace)
            except AliKassaError as exc:
                exc.request_id = trace.request_id
                exc.gateway_request_id = trace.gateway_request_id
                if isinstance(exc, OutcomeUnknownError):
                    await trace.outcome_unknown(exc.reason)
                else:
                    trace.outcome("rejected" if endpoint.creates else "error")
                raise
            if endpoint.creates:
                trace.outcome("created")
            return result

    async def _send_with_retries(
        self, endpoint: _Endpoint[T], body: SignedBody, headers: Mapping[str, str], trace: CallTrace
    ) -> T:
        url = self.base_url + endpoint.path
        policy = self.retry
        deadline = None if policy.total_timeout is None else time.monotonic() + policy.total_timeout
        trace.deadline = deadline
        while True:
            started = time.monotonic()
            try:
                return await self._attempt(
                    endpoint, url, body, headers, trace, self._attempt_timeout(deadline), deadline
                )
            except _Retryable as failure:
                error = failure.error
                attempt = trace.attempt
                retries_allowed = (
                    policy.create_connect_retries + 1 if endpoint.creates else policy.max_attempts
                )
                delay = policy.delay(attempt, failure.retry_after)
                remaining = None if deadline is None else deadline - time.monotonic()
                if (
                    attempt >= retries_allowed
                    or delay is None
                    or (remaining is not None and delay >= remaining)
                ):
                    self._give_up(endpoint, attempt, error, trace)
                logger.info(
                    "POST %s attempt %d failed in %.1f ms (%s); retrying in %.2f s%s",
                    endpoint.path,
                    attempt,
                    (time.monotonic() - started) * 1000,
                    type(error).__name__,
                    delay,
                    trace.describe(),
                    extra=trace.log_context(error=type(error).__name__, retry_in=delay),
                )
                await trace.retrying(delay, error)
                await asyncio.sleep(delay)
                pace = RETRY_PACE.get()
                if pace is not None and not await _paced_in_time(pace, deadline):
                    self._give_up(endpoint, attempt, error, trace)

    @staticmethod
    def _give_up(
        endpoint: _Endpoint[Any], attempt: int, error: AliKassaError, trace: CallTrace
    ) -> NoReturn:
        logger.warning(
            "POST %s failed after %d attempt(s): %s%s",
            endpoint.path,
            attempt,
            error,
            trace.describe(),
            extra=trace.log_context(error=type(error).__name__),
        )
        raise error from None

    async def _attempt(
        self,
        endpoint: _Endpoint[T],
        url: str,
        body: SignedBody,
        headers: Mapping[str, str],
        trace: CallTrace,
        time_budget: httpx.Timeout | None,
        deadline: float | None,
    ) -> T:
        order_id = trace.order_id
        self._tls.check()  # before anything leaves: nothing was sent if it raises
        await trace.attempt_starts()
        body.started = False
        failure: NotSent | MaybeSent
        try:
            answer = await self._sender.post(
                url, body, headers, time_budget, deadline, endpoint.max_bytes
            )
        except (NotSent, MaybeSent) as exc:
            failure = exc
            trace.failed(exc)
        except asyncio.CancelledError as exc:
            trace.failed(exc)
            if endpoint.creates and body.started:
                # The connection was closed, not reused.
                _cancelled_in_doubt(endpoint, order_id, trace, "its request may have been sent")
            raise
        else:
            try:
                elapsed = await trace.answered(answer.status_code, answer.headers)
                return await self._answered(endpoint, answer, trace, elapsed)
            except asyncio.CancelledError:
                if endpoint.creates:
                    _cancelled_in_doubt(endpoint, order_id, trace, "its answer arrived")
                raise
        # Raised outside the except block, so no exception chain holds the HTTP stack's frames.
        if isinstance(failure, NotSent):
            # Nothing of the request can have been processed: a create may be retried.
            raise _Retryable(TransportError(str(failure), endpoint=endpoint.path))
        # Sent (or partly sent) and then broken: a create may have taken effect.
        if endpoint.creates:
            raise self._unknown(endpoint, trace, str(failure), failure)
        raise _Retryable(TransportError(str(failure), endpoint=endpoint.path))

    async def _answered(
        self, endpoint: _Endpoint[T], answer: Answer, trace: CallTrace, elapsed: float
    ) -> T:
        logger.debug(
            "POST %s -> %d in %.1f ms%s",
            endpoint.path,
            answer.status_code,
            elapsed,
            trace.describe(),
            extra=trace.log_context(status=answer.status_code, duration_ms=round(elapsed, 3)),
        )
        if answer.status_code != 200:
            self._refuse(endpoint, answer, trace)
        if len(answer.body) > PARSE_INLINE_BYTES:
            parsed = await asyncio.to_thread(_parse, endpoint.response, answer.body)
        else:
            parsed = _parse(endpoint.response, answer.body)
        if isinstance(parsed, converters.ResponseShapeError):
            reason = f"unreadable 200 answer: {parsed}"
            if endpoint.creates:  # a 200 we cannot read may still mean it was created
                raise self._unknown(endpoint, trace, reason, parsed)
            raise _Retryable(_api_error(APIError, reason, answer, endpoint, answer.body))
        return parsed

    def _attempt_timeout(self, deadline: float | None) -> httpx.Timeout | None:
        """The client's timeouts, shortened so no attempt outlives the call's deadline."""
        if deadline is None:
            return None
        remaining = max(deadline - time.monotonic(), 0.001)
        configured = self._timeout
        parts = (configured.connect, configured.read, configured.write, configured.pool)
        if all(p is not None and p <= remaining for p in parts):
            return None
        return httpx.Timeout(
            connect=_shorter(configured.connect, remaining),
            read=_shorter(configured.read, remaining),
            write=_shorter(configured.write, remaining),
            pool=_shorter(configured.pool, remaining),
        )

    async def _signature(self, cert: Certificate, body: bytes) -> str:
        """Sign inline, or in the thread pool where signing is the bottleneck.

        ``cryptography`` releases the GIL while signing: at 4096 bits (1.35 ms a
        signature) two threads gave +40-60 % here; at 2048 bits the hand-off costs
        about what the 0.22 ms signature does (benchmarks/RESULTS-signing.md).
        """
        threads = self._sign_threads
        if threads == 0 or (threads is None and cert.key_size < 3072):
            return cert.sign(body, self.signature_hash)
        if self._sign_pool is None:
            self._sign_pool = ThreadPoolExecutor(threads or 2, thread_name_prefix="alikassa-sign")
        return await asyncio.get_running_loop().run_in_executor(
            self._sign_pool, cert.sign, body, self.signature_hash
        )

    def _unknown(
        self, endpoint: _Endpoint[Any], trace: CallTrace, reason: str, cause: BaseException
    ) -> OutcomeUnknownError:
        logger.warning(
            "POST %s outcome unknown for order_id=%s: %s (request_id=%s)",
            endpoint.path,
            trace.order_id,
            reason,
            trace.request_id,
            extra=trace.log_context(outcome="unknown", reason=reason),
        )
        return OutcomeUnknownError(
            trace.order_id or "", endpoint=endpoint.path, reason=reason, cause=cause
        )

    def _refuse(self, endpoint: _Endpoint[Any], response: Answer, trace: CallTrace) -> NoReturn:
        """Raise what a non-200 answer means for this endpoint."""
        raw = response.body
        status = response.status_code
        error = _error_for(response, endpoint, raw)
        if endpoint.creates and not isinstance(error, InvalidRequestError | AuthenticationError):
            # The vendor: a payout that got any non-200 must never be taken as cancelled.
            raise self._unknown(endpoint, trace, f"HTTP {status}", error)
        if isinstance(error, RateLimitError | ServerError):
            raise _Retryable(
                error,
                error.retry_after
                if isinstance(error, RateLimitError)
                else parse_retry_after(response.headers),
            )
        raise error

    # -- polling and batch payouts -----------------------------------------
    # Thin delegates to alikassa_async._polling and alikassa_async._batch, where the
    # logic and its docs live. Keep this block at the end of the class.

    #: the most status requests that waits, watches and batches keep in flight at
    #: once (keep it below ``max_connections``); set it before the first wait
    max_status_in_flight: int = DEFAULT_MAX_STATUS_IN_FLIGHT
    _status_slots: asyncio.Semaphore | None = None

    @property
    def status_slots(self) -> asyncio.Semaphore:
        """The one semaphore bounding this client's polling requests, made on first use."""
        if self._status_slots is None:
            self._status_slots = asyncio.Semaphore(self.max_status_in_flight)
        return self._status_slots

    @_stamped
    async def wait_for_payment(
        self,
        *,
        id: int | str | None = None,
        order_id: str | None = None,
        timeout: float | None = _polling.DEFAULT_TIMEOUT,  # noqa: ASYNC109 - the wait's deadline
        interval: float = _polling.DEFAULT_INTERVAL,
        max_interval: float = _polling.DEFAULT_MAX_INTERVAL,
    ) -> PaymentStatusResponse:
        """Poll until the payment is ``paid``, ``cancel`` or ``fail``; ``PollingTimeoutError``
        at the deadline, never earlier (see :mod:`alikassa_async._polling`).

        >>> st = await client.wait_for_payment(id=created.id, timeout=900)
        """
        return await _polling.wait_for_payment(
            self,
            id=id,
            order_id=order_id,
            timeout=timeout,
            interval=interval,
            max_interval=max_interval,
        )

    @_stamped
    async def wait_for_payout(
        self,
        *,
        id: int | str | None = None,
        order_id: str | None = None,
        timeout: float | None = _polling.DEFAULT_TIMEOUT,  # noqa: ASYNC109 - the wait's deadline
        interval: float = _polling.DEFAULT_INTERVAL,
        max_interval: float = _polling.DEFAULT_MAX_INTERVAL,
    ) -> PayoutStatusResponse:
        """Poll until the payout is ``paid``, ``cancel`` or ``fail``; ``PollingTimeoutError``
        at the deadline, never earlier (see :mod:`alikassa_async._polling`).

        >>> st = await client.wait_for_payout(id=created.id, timeout=900)
        """
        return await _polling.wait_for_payout(
            self,
            id=id,
            order_id=order_id,
            timeout=timeout,
            interval=interval,
            max_interval=max_interval,
        )

    def watch_payment(
        self,
        *,
        id: int | str | None = None,
        order_id: str | None = None,
        timeout: float | None = _polling.DEFAULT_TIMEOUT,
        interval: float = _polling.DEFAULT_INTERVAL,
        max_interval: float = _polling.DEFAULT_MAX_INTERVAL,
    ) -> AsyncGenerator[PaymentStatusResponse, None]:
        """Async iterator of the payment's status changes, the final one last.

        >>> async for st in client.watch_payment(order_id="A-1"):
        ...     print(st.payment_status)
        """
        return _polling.watch_payment(
            self,
            id=id,
            order_id=order_id,
            timeout=timeout,
            interval=interval,
            max_interval=max_interval,
        )

    def watch_payout(
        self,
        *,
        id: int | str | None = None,
        order_id: str | None = None,
        timeout: float | None = _polling.DEFAULT_TIMEOUT,
        interval: float = _polling.DEFAULT_INTERVAL,
        max_interval: float = _polling.DEFAULT_MAX_INTERVAL,
    ) -> AsyncGenerator[PayoutStatusResponse, None]:
        """Async iterator of the payout's status changes, the final one last.

        >>> async for st in client.watch_payout(id=created.id):
        ...     print(st.payment_status)
        """
        return _polling.watch_payout(
            self,
            id=id,
            order_id=order_id,
            timeout=timeout,
            interval=interval,
            max_interval=max_interval,
        )

    def payouts_batch(
        self,
        items: Iterable[_batch.PayoutItem] | AsyncIterable[_batch.PayoutItem],
        *,
        concurrency: int = DEFAULT_CONCURRENCY,
        rate: float | None = None,
        journal: _batch.JournalSpec | None = None,
        wait_final: bool = False,
        progress: Callable[[_batch.BatchProgress], None] | None = None,
        total: int | None = None,
        wait_timeout: float | None = _polling.DEFAULT_TIMEOUT,
        wait_interval: float = _polling.DEFAULT_INTERVAL,
        wait_max_interval: float = _polling.DEFAULT_MAX_INTERVAL,
        max_waiting: int = DEFAULT_MAX_WAITING,
        reconcile: _batch.ReconcilePolicy | None = None,
    ) -> AsyncGenerator[_batch.BatchResult, None]:
        """Create many payouts, ``concurrency`` at a time; yield a ``BatchResult`` per item
        as each completes (see :func:`alikassa_async._batch.payouts_batch`).

        >>> async for r in client.payouts_batch(requests, journal="payouts.db", rate=50):
        ...     print(r.order_id, r.outcome)
        """
        return _batch.payouts_batch(
            self,
            items,
            concurrency=concurrency,
            rate=rate,
            journal=journal,
            wait_final=wait_final,
            progress=progress,
            total=total,
            wait_timeout=wait_timeout,
            wait_interval=wait_interval,
            wait_max_interval=wait_max_interval,
            max_waiting=max_waiting,
            reconcile=reconcile,
        )

    def payouts_worker(
        self,
        journal: PostgresJournal,
        *,
        batch: str,
        concurrency: int = DEFAULT_CONCURRENCY,
        rate: float | None = None,
        reconcile: _batch.ReconcilePolicy | None = None,
        policy: WorkerPolicy | None = None,
        worker_id: str | None = None,
    ) -> AsyncGenerator[_batch.BatchResult, None]:
        """Work on a batch loaded into PostgreSQL, alongside any number of other workers
        (extra ``postgres``; :mod:`alikassa_async._worker`).

        >>> async for r in client.payouts_worker(journal, batch="payroll-2026-12"):
        ...     print(r.order_id, r.outcome)
        """
        from . import _worker as _worker  # psycopg is an extra

        if journal.payout_cert is None:
            journal.payout_cert = self._certs["payout"]
        return _worker.payouts_worker(
            self,
            journal,
            batch=batch,
            concurrency=concurrency,
            rate=rate,
            reconcile=reconcile,
            policy=policy,
            worker_id=worker_id,
        )

    # -- end of polling and batch payouts ----------------------------------


def _parse(cls: type[T], raw: bytes) -> T | converters.ResponseShapeError:
    """The typed answer, or the shape error (returned, so a worker thread can hand it back)."""
    try:
        return converters.structure(cls, converters.parse_json(raw))
    except converters.ResponseShapeError as exc:
        return exc


def _shorter(configured: float | None, remaining: float) -> float:
    return remaining if configured is None else min(configured, remaining)


def _api_error(
    cls: type[APIError],
    message: str,
    response: Answer,
    endpoint: _Endpoint[Any],
    raw: bytes,
    **extra: Any,
) -> APIError:
    return cls(
        message,
        status_code=response.status_code,
        endpoint=endpoint.path,
        body=raw,
        headers=dict(response.headers),
        **extra,
    )


def _error_for(response: Answer, endpoint: _Endpoint[Any], raw: bytes) -> APIError:
    """The one mapping from an HTTP answer to an exception class."""
    status = response.status_code
    message, errors = _error_details(raw)
    if status in (400, 422):
        return _api_error(
            InvalidRequestError,
            message or "The given data was invalid.",
            response,
            endpoint,
            raw,
            errors=errors,
        )
    if status in (401, 403):
        return _api_error(
            AuthenticationError,
            message or "signature or account rejected",
            response,
            endpoint,
            raw,
            errors=errors,
        )
    if status == 404:
        return _api_error(NotFoundError, message or "not found", response, endpoint, raw)
    if status == 429:
        return _api_error(
            RateLimitError,
            message or "too many requests",
            response,
            endpoint,
            raw,
            retry_after=parse_retry_after(response.headers),
        )
    if status >= 500:
        return _api_error(ServerError, message or "server error", response, endpoint, raw)
    if 300 <= status < 400:
        # Never followed, whatever client is in use: that would re-send the signed body.
        return _api_error(
            APIError, f"redirect (HTTP {status}) not followed", response, endpoint, raw
        )
    return _api_error(APIError, message or f"unexpected HTTP {status}", response, endpoint, raw)


def _error_details(raw: bytes) -> tuple[str, dict[str, list[str]]]:
    """``message`` and Laravel-style ``errors`` from an error body, or a short snippet."""
    try:
        data = converters.parse_json(raw)
    except converters.ResponseShapeError:
        return (snippet(raw) if raw else ""), {}
    if not isinstance(data, dict):
        return snippet(raw), {}
    message = data.get("message")
    errors: dict[str, list[str]] = {}
    if isinstance(data.get("errors"), dict):
        for field, messages in data["errors"].items():
            items = messages if isinstance(messages, list) else [messages]
            errors[str(field)] = [str(m) for m in items]
    # Cut what the gateway says to a snippet: an echoing or oversized body must not
    # flow whole into exception messages and logs.
    errors = {
        field: [snippet(m) for m in messages[:10]] for field, messages in list(errors.items())[:50]
    }
    return (snippet(str(message)) if message is not None else snippet(raw)), errors
