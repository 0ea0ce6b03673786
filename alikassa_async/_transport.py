"""How request bytes reach the gateway, and what a failure says about delivery.

The pipeline needs three things from HTTP: the status, the headers, the body —
and, when something breaks, one fact: *could the request have reached the
server?* A sender answers exactly that with :class:`NotSent` (a create may be
retried) or :class:`MaybeSent` (a create's outcome is unknown), so the retry
and unknown-outcome rules in the client do not depend on the HTTP library.

Two senders here (the default, the SDK's own HTTP/1.1 client, is
:mod:`alikassa_async._builtin_sender`):

- :class:`HttpxSender` — ``http_backend="httpx"``, or a caller's ``http_client``
  or ``transport``: one ``httpx.AsyncClient``, by default on a
  :class:`LanePoolTransport`;
- :class:`AiohttpSender` — opt in with ``AliKassaClient(http_backend="aiohttp")``
  (extra ``[aiohttp]``).

Why the lane pool: httpcore 1.0's connection pool rescans every connection and
queued request on each request start and finish and polls every idle socket
(encode/httpcore#1035), so one ``httpx.AsyncClient`` spends ~2.4 ms of CPU per
request at 64 in flight against ~0.8 ms at 1. :class:`LanePoolTransport` gives
each connection its own single-connection httpx transport (a "lane") and hands
a whole lane to one request at a time, so httpcore only ever sees one
connection and one request: measured 2.4x the plain client's throughput at 64
in flight and 2.9x at 256 (benchmarks/README.md). Waiting for a lane is an
``asyncio.Semaphore``, which cancellation cannot corrupt (encode/httpcore#1093).

Why not ``httpx-aiohttp``: it maps aiohttp's ``ServerDisconnectedError`` —
raised after the request was written — to ``httpx.ConnectTimeout``, which any
httpx user reads as "never sent"; a payout would be sent again.
"""

from __future__ import annotations

import asyncio
import collections
import ssl
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from typing import Any, Protocol

import httpx

from ._defaults import DEFAULT_KEEPALIVE_EXPIRY

__all__ = [
    "AiohttpSender",
    "Answer",
    "HttpxSender",
    "LanePoolTransport",
    "MaybeSent",
    "NotSent",
    "Secret",
    "Sender",
    "SignedBody",
]

#: Bodies above this are refused by default; each endpoint passes its own, smaller cap.
MAX_RESPONSE_BYTES = 8 * 1024 * 1024


class NotSent(Exception):
    """The request cannot have reached the server: a create may be retried."""


class MaybeSent(Exception):
    """The request may have reached the server: a create's outcome is unknown."""


class Answer:
    """What the pipeline needs of a response; ``headers`` is case-insensitive."""

    __slots__ = ("body", "headers", "status_code")

    def __init__(self, status_code: int, headers: Mapping[str, str], body: bytes) -> None:
        self.status_code = status_code
        self.headers = headers
        self.body = body


class Sender(Protocol):
    async def post(
        self,
        url: str,
        body: SignedBody,
        headers: Mapping[str, str],
        time_budget: httpx.Timeout | None,
        deadline: float | None,
        max_bytes: int = MAX_RESPONSE_BYTES,
    ) -> Answer: ...

    async def aclose(self) -> None: ...


class Secret(str):
    """A header value (``Sign``) whose repr is redacted; it is sent as the plain text."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "'<redacted>'"


class SignedBody(httpx.ByteStream):
    """A request body that records whether its bytes started to leave, with a redacted repr.

    The body holds card numbers and is what ``Sign`` signs: its ``repr`` (what
    tracebacks with captured locals and debuggers show) names only its size.
    ``started`` turns true when the HTTP stack first asks for the body, which it
    does only after the request head: a request whose body was never asked for
    cannot have been processed, whatever else happened.
    """

    __slots__ = ("data", "started")

    def __init__(self, body: bytes) -> None:
        super().__init__(body)
        self.data = body
        self.started = False

    def __iter__(self) -> Iterator[bytes]:
        self.started = True
        return super().__iter__()

    async def __aiter__(self) -> AsyncIterator[bytes]:
        self.started = True
        async for chunk in super().__aiter__():
            yield chunk

    def __repr__(self) -> str:
        return f"<SignedBody: {len(self.data)} bytes, redacted>"


# -- httpx ----------------------------------------------------------------------------

_HTTPX_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)


def _httpx_not_sent(exc: BaseException) -> bool:
    """httpx's connect errors mean "not sent" only when httpx's own stack raised them."""
    if not isinstance(exc, _HTTPX_NOT_SENT):
        return False
    cause = exc.__cause__
    # A third-party transport may reuse these classes for failures after the send.
    return cause is None or type(cause).__module__.split(".")[0] in ("httpcore", "httpx")


class _TooLarge(Exception):
    def __init__(self, max_bytes: int, declared: object = None) -> None:
        size = "" if declared is None else f" of {declared} bytes"
        super().__init__(
            f"response body{size} is too large for this endpoint (limit {max_bytes} bytes)"
        )


class HttpxSender:
    """POST through an ``httpx.AsyncClient`` (the SDK's own or the caller's).

    When the SDK owns the client and its transport (``direct``), requests go to
    that transport straight away: the client's cookie jar, auth and redirect
    generators and event hooks do nothing for us and cost ~0.2 ms a request.
    A caller's client is never allowed to follow a redirect (the signed body
    would be re-sent to wherever it points).

    The call's ``deadline`` bounds the whole attempt — pool wait, connect, write,
    response head and body — with one ``asyncio.timeout``: httpx's timeouts are
    per operation, so a server trickling its headers or body a byte at a time
    would otherwise hold the call forever.
    """

    def __init__(
        self,
        client: httpx.AsyncClient,
        *,
        owned: bool,
        direct: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.client = client
        self._owned = owned
        self._direct = direct
        self._timeout = client.timeout

    async def post(
        self,
        url: str,
        body: SignedBody,
        headers: Mapping[str, str],
        time_budget: httpx.Timeout | None,
        deadline: float | None,
        max_bytes: int = MAX_RESPONSE_BYTES,
    ) -> Answer:
        timeout = self._timeout if time_budget is None else time_budget
        if self._direct is not None:
            request = httpx.Request(
                "POST",
                url,
                content=body.data,
                headers=headers,
                extensions={"timeout": timeout.as_dict()},
            )
        else:
            request = self.client.build_request(
                "POST", url, content=body.data, headers=headers, timeout=timeout
            )
        request.stream = body  # same bytes and Content-Length; records when they start to go
        limit = None if deadline is None else max(deadline - time.monotonic(), 0.001)
        scope = asyncio.timeout(limit)
        failure: NotSent | MaybeSent
        try:
            async with scope:
                return await self._exchange(request, max_bytes)
        except TimeoutError:
            if not scope.expired():
                failure = MaybeSent("TimeoutError inside the HTTP stack")
            elif body.started:
                # The cancellation closed the connection: httpcore closes one interrupted
                # mid-exchange, and the lane pool discards the lane.
                failure = MaybeSent("the call's deadline passed while waiting for the answer")
            else:
                failure = NotSent("the call's deadline passed before the request was sent")
        except _TooLarge as exc:
            failure = MaybeSent(str(exc))
        except (httpx.HTTPError, OSError) as exc:
            failure = (NotSent if _httpx_not_sent(exc) else MaybeSent)(_describe(exc))
        # Raised outside the except block: httpx's exception holds the request (Sign, body)
        # and its frames the bytes; none of it may ride along in the chain.
        raise failure

    async def _exchange(self, request: httpx.Request, max_bytes: int) -> Answer:
        if self._direct is not None:
            response = await self._direct.handle_async_request(request)
            try:
                raw = await _read_capped(response, max_bytes)
            finally:
                await response.aclose()  # the lane pool discards a lane not read to the end
        else:
            response = await self.client.send(request, stream=True, follow_redirects=False)
            try:
                raw = await _read_capped(response, max_bytes)
            finally:
                await _close_shielded(response)
        return Answer(response.status_code, response.headers, raw)

    async def aclose(self) -> None:
        if self._owned:
            await self.client.aclose()


async def _close_shielded(response: httpx.Response) -> None:
    """Close a response so that a second cancellation cannot stop httpcore half-way
    (which would leave a pooled connection marked busy forever)."""
    closing = asyncio.ensure_future(response.aclose())
    try:
        await asyncio.shield(closing)
    except asyncio.CancelledError:
        closing.add_done_callback(_ignore_result)
        raise


def _ignore_result(task: asyncio.Future[Any]) -> None:
    if not task.cancelled():
        task.exception()


async def _read_capped(response: httpx.Response, max_bytes: int) -> bytes:
    declared = response.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise _TooLarge(max_bytes, declared)
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.aiter_bytes():
        size += len(chunk)
        if size > max_bytes:
            raise _TooLarge(max_bytes)
        chunks.append(chunk)
    return b"".join(chunks)


def _describe(exc: BaseException) -> str:
    text = " ".join((str(exc) or type(exc).__name__).split())
    return f"{type(exc).__name__}: {text[:120]}"


class _LaneStream(httpx.AsyncByteStream):
    """A lane's response body; closing it gives the lane back exactly once.

    The lane is reused only if its answer was read to the end and closed without
    interruption; otherwise (cancelled, over a cap, broken) it is discarded and
    its connection closed, so a half-read connection can never serve the next
    request.
    """

    __slots__ = ("_complete", "_inner", "_lane", "_pool")

    def __init__(
        self, inner: httpx.AsyncByteStream, pool: LanePoolTransport, lane: httpx.AsyncBaseTransport
    ) -> None:
        self._inner = inner
        self._pool = pool
        self._lane: httpx.AsyncBaseTransport | None = lane
        self._complete = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self._inner:
            yield chunk
        self._complete = True

    async def aclose(self) -> None:
        lane, self._lane = self._lane, None
        reusable = self._complete
        try:
            await self._inner.aclose()
        except BaseException:
            reusable = False  # httpcore may have stopped half-way through its cleanup
            raise
        finally:
            if lane is not None:
                self._pool._give_back(lane, reusable=reusable)


class LanePoolTransport(httpx.AsyncBaseTransport):
    """``max_connections`` single-connection httpx transports, one request per lane.

    >>> httpx.AsyncClient(transport=LanePoolTransport(max_connections=100))

    Idle lanes are reused last-in first-out (the warmest connection first); at
    most ``max_keepalive_connections`` stay open, and one idle for longer than
    ``keepalive_expiry`` is closed. Waiting for a lane honours the request's
    ``pool`` timeout with ``httpx.PoolTimeout`` (nothing was sent). Every lane is
    a plain ``httpx.AsyncHTTPTransport``, so TLS, timeouts, the stale-connection
    check and httpx's exception mapping are exactly httpx's.

    Cancellation-safe: a lane goes back to the idle list only after an exchange
    that finished cleanly (answer read to the end, stream closed); any other
    ending — a cancelled task, an error, a body left unread — discards the lane
    and closes its connection in the background. The bookkeeping (slot, idle
    list) is synchronous, so a cancellation cannot leave it half-done.
    """

    def __init__(
        self,
        *,
        max_connections: int = 100,
        max_keepalive_connections: int | None = None,
        keepalive_expiry: float | None = DEFAULT_KEEPALIVE_EXPIRY,
        verify: ssl.SSLContext | bool = True,
        lane_factory: Callable[[], httpx.AsyncBaseTransport] | None = None,
    ) -> None:
        if (
            isinstance(max_connections, bool)
            or not isinstance(max_connections, int)
            or (max_connections < 1)
        ):
            raise ValueError("max_connections must be a positive integer")
        self._max_idle = (
            max_connections
            if max_keepalive_connections is None
            else min(max_keepalive_connections, max_connections)
        )
        self._expiry = keepalive_expiry
        if lane_factory is None:
            # One SSLContext for every lane: building one loads the CA bundle (~10 ms).
            context = (
                verify
                if isinstance(verify, ssl.SSLContext)
                else (httpx.create_ssl_context(verify=verify, trust_env=False))
            )
            limits = httpx.Limits(
                max_connections=1, max_keepalive_connections=1, keepalive_expiry=keepalive_expiry
            )

            def lane_factory() -> httpx.AsyncBaseTransport:
                return httpx.AsyncHTTPTransport(verify=context, limits=limits, trust_env=False)

        self._new_lane = lane_factory
        self._slots = asyncio.Semaphore(max_connections)
        self._idle: collections.deque[tuple[float, httpx.AsyncBaseTransport]] = collections.deque()
        self.lanes: set[httpx.AsyncBaseTransport] = set()
        self._closing: set[asyncio.Future[None]] = set()
        self._closed = False

    @property
    def busy(self) -> int:
        """Lanes serving a request right now."""
        return len(self.lanes) - len(self._idle)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if self._closed:
            raise RuntimeError("the transport has been closed")
        if self._slots.locked():
            timeout = request.extensions.get("timeout", {}).get("pool")
            try:
                async with asyncio.timeout(timeout):
                    await self._slots.acquire()
            except TimeoutError:
                raise httpx.PoolTimeout(
                    "no connection free within the pool timeout", request=request
                ) from None
        else:
            await self._slots.acquire()  # a free slot: returns without suspending
        lane = self._idle.pop()[1] if self._idle else self._create_lane()
        try:
            response = await lane.handle_async_request(request)
        except BaseException:
            self._give_back(lane, reusable=False)
            raise
        assert isinstance(response.stream, httpx.AsyncByteStream)
        return httpx.Response(
            status_code=response.status_code,
            headers=response.headers,
            stream=_LaneStream(response.stream, self, lane),
            extensions=response.extensions,
        )

    def _create_lane(self) -> httpx.AsyncBaseTransport:
        lane = self._new_lane()
        self.lanes.add(lane)
        return lane

    def _give_back(self, lane: httpx.AsyncBaseTransport, *, reusable: bool) -> None:
        """Return a lane's slot; keep the lane for reuse only after a clean exchange.

        Synchronous on purpose: a cancellation cannot interrupt it. Lanes that go
        are closed in background tasks, which ``aclose`` waits for."""
        try:
            if self._closed or not reusable:
                self.lanes.discard(lane)
                self._close_later(lane)
                return
            now = time.monotonic()
            self._idle.append((now, lane))
            # Close surplus and long-idle lanes, oldest first; O(1) amortised.
            while self._idle and (
                len(self._idle) > self._max_idle
                or (self._expiry is not None and now - self._idle[0][0] > self._expiry)
            ):
                _, stale = self._idle.popleft()
                self.lanes.discard(stale)
                self._close_later(stale)
        finally:
            self._slots.release()

    def _close_later(self, lane: httpx.AsyncBaseTransport) -> None:
        closing = asyncio.ensure_future(lane.aclose())
        self._closing.add(closing)
        closing.add_done_callback(self._closed_one)

    def _closed_one(self, closing: asyncio.Future[None]) -> None:
        self._closing.discard(closing)
        _ignore_result(closing)

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        lanes, self.lanes = list(self.lanes), set()
        self._idle.clear()
        for lane in lanes:
            await lane.aclose()
        if self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)


# -- aiohttp --------------------------------------------------------------------------

#: how long after the deadline the outer timeout fires, so aiohttp's own (more precise)
#: timeout error is seen first
_BACKSTOP = 0.05


class AiohttpSender:
    """POST with one ``aiohttp.ClientSession`` (extra ``[aiohttp]``), no httpx in between.

    aiohttp raises only ``ClientConnectorError`` (DNS, refused, TLS handshake) or
    ``ConnectionTimeoutError`` (pool wait + connect) before writing a request;
    every other failure may follow a complete send.
    """

    def __init__(
        self,
        *,
        max_connections: int,
        keepalive_expiry: float | None,
        timeout: httpx.Timeout,
        ssl_context: ssl.SSLContext | bool,
    ) -> None:
        try:
            import aiohttp
        except ImportError:
            from ._errors import ConfigurationError

            raise ConfigurationError(
                "http_backend='aiohttp' needs aiohttp: pip install 'alikassa-async[aiohttp]'"
            ) from None
        self._aiohttp = aiohttp
        self._timeout = self._client_timeout(timeout)
        self._limit = max_connections
        self._keepalive = keepalive_expiry
        self._ssl = ssl_context
        self._session: Any = None

    def _client_timeout(self, timeout: httpx.Timeout) -> Any:
        # aiohttp's ``connect`` covers waiting for a pooled connection plus connecting.
        connect = None if timeout.connect is None else timeout.connect + (timeout.pool or 0)
        return self._aiohttp.ClientTimeout(
            total=None, connect=connect, sock_connect=timeout.connect, sock_read=timeout.read
        )

    def _open(self) -> Any:
        # Made on first use: a ClientSession must be built inside the running loop.
        aiohttp = self._aiohttp
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(
                limit=self._limit, ssl=self._ssl, keepalive_timeout=self._keepalive or 0
            ),
            timeout=self._timeout,
            trust_env=False,
            auto_decompress=False,
            skip_auto_headers=("User-Agent",),
        )
        return self._session

    async def post(
        self,
        url: str,
        body: SignedBody,
        headers: Mapping[str, str],
        time_budget: httpx.Timeout | None,
        deadline: float | None,
        max_bytes: int = MAX_RESPONSE_BYTES,
    ) -> Answer:
        aiohttp = self._aiohttp
        session = self._session or self._open()
        timeout = self._timeout if time_budget is None else self._client_timeout(time_budget)
        limit = None
        if deadline is not None:
            limit = max(deadline - time.monotonic(), 0.001)
            timeout = aiohttp.ClientTimeout(
                total=limit,
                connect=timeout.connect,
                sock_connect=timeout.sock_connect,
                sock_read=timeout.sock_read,
            )
            # aiohttp's own total timeout says more (connect vs. read); this is the backstop.
            limit += _BACKSTOP
        scope = asyncio.timeout(limit)
        # aiohttp has no hook for "the body starts to go": count it as gone from here on.
        body.started = True
        failure: NotSent | MaybeSent
        try:
            async with scope:
                return await self._exchange(session, url, body.data, headers, timeout, max_bytes)
        except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError) as exc:
            failure = NotSent(_describe(exc))
        except _TooLarge as exc:
            failure = MaybeSent(str(exc))
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            past_deadline = isinstance(exc, TimeoutError) and (
                scope.expired() or (deadline is not None and time.monotonic() >= deadline)
            )
            failure = MaybeSent(
                "the call's deadline passed while waiting for the answer"
                if past_deadline
                else _describe(exc)
            )
        raise failure  # outside the except block: no chain into aiohttp's frames

    async def _exchange(
        self,
        session: Any,
        url: str,
        body: bytes,
        headers: Mapping[str, str],
        client_timeout: Any,
        max_bytes: int,
    ) -> Answer:
        async with session.post(
            url, data=body, headers=dict(headers), allow_redirects=False, timeout=client_timeout
        ) as response:
            try:
                if (response.content_length or 0) > max_bytes:
                    raise _TooLarge(max_bytes, response.content_length)
                chunks: list[bytes] = []
                size = 0
                async for chunk in response.content.iter_any():
                    size += len(chunk)
                    if size > max_bytes:
                        raise _TooLarge(max_bytes)
                    chunks.append(chunk)
            except BaseException:
                response.close()  # never pool a connection whose answer was not read to the end
                raise
            return Answer(response.status, response.headers, b"".join(chunks))

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
