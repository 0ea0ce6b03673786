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
from collections.abc import AsyncIterator, Callable, Mapping
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
    "Sender",
]

#: Bodies above this are refused: no documented answer comes close.
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
    async def post(self, url: str, body: bytes, headers: Mapping[str, str],
                   time_budget: httpx.Timeout | None, deadline: float | None) -> Answer: ...

    async def aclose(self) -> None: ...


# -- httpx ----------------------------------------------------------------------------

_HTTPX_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)


def _httpx_not_sent(exc: BaseException) -> bool:
    """httpx's connect errors mean "not sent" only when httpx's own stack raised them."""
    if not isinstance(exc, _HTTPX_NOT_SENT):
        return False
    cause = exc.__cause__
    # A third-party transport may reuse these classes for failures after the send.
    return cause is None or type(cause).__module__.split(".")[0] in ("httpcore", "httpx")


class HttpxSender:
    """POST through an ``httpx.AsyncClient`` (the SDK's own or the caller's).

    When the SDK owns the client and its transport (``direct``), requests go to
    that transport straight away: the client's cookie jar, auth and redirect
    generators and event hooks do nothing for us and cost ~0.2 ms a request.
    """

    def __init__(self, client: httpx.AsyncClient, *, owned: bool,
                 direct: httpx.AsyncBaseTransport | None = None) -> None:
        self.client = client
        self._owned = owned
        self._direct = direct
        self._timeout = client.timeout

    async def post(self, url: str, body: bytes, headers: Mapping[str, str],
                   time_budget: httpx.Timeout | None, deadline: float | None) -> Answer:
        try:
            if self._direct is not None:
                timeout = (self._timeout if time_budget is None else time_budget).as_dict()
                request = httpx.Request("POST", url, content=body, headers=headers,
                                        extensions={"timeout": timeout})
                response = await self._direct.handle_async_request(request)
                try:
                    raw = await _within(deadline, _read_capped(response))
                finally:
                    await response.aclose()
            else:
                async with self.client.stream(
                    "POST", url, content=body, headers=headers,
                    timeout=httpx.USE_CLIENT_DEFAULT if time_budget is None else time_budget,
                ) as response:
                    raw = await _within(deadline, _read_capped(response))
        except (httpx.HTTPError, OSError) as exc:
            raise (NotSent if _httpx_not_sent(exc) else MaybeSent)(_describe(exc)) from exc
        return Answer(response.status_code, response.headers, raw)

    async def aclose(self) -> None:
        if self._owned:
            await self.client.aclose()


async def _within(deadline: float | None, read: Any) -> bytes:
    """The body, within the call's deadline: httpx's read timeout bounds each chunk,
    not their sum, so a trickling body could otherwise outlive the deadline. Only the
    body read is bounded here: the lane pool makes pool waits cancel-safe, but a
    caller's own transport may not be (encode/httpcore#1093)."""
    if deadline is None:
        result: bytes = await read
        return result
    try:
        async with asyncio.timeout(max(deadline - time.monotonic(), 0.001)):
            result = await read
            return result
    except TimeoutError:
        raise httpx.ReadTimeout("the answer did not arrive within the call's deadline") from None


async def _read_capped(response: httpx.Response) -> bytes:
    declared = response.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > MAX_RESPONSE_BYTES:
        raise httpx.DecodingError(f"response body of {declared} bytes is too large")
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.aiter_bytes():
        size += len(chunk)
        if size > MAX_RESPONSE_BYTES:
            raise httpx.DecodingError("response body is too large")
        chunks.append(chunk)
    return b"".join(chunks)


def _describe(exc: BaseException) -> str:
    text = " ".join((str(exc) or type(exc).__name__).split())
    return f"{type(exc).__name__}: {text[:120]}"


class _LaneStream(httpx.AsyncByteStream):
    """A lane's response body; closing it gives the lane back exactly once."""

    __slots__ = ("_inner", "_lane", "_pool")

    def __init__(self, inner: httpx.AsyncByteStream, pool: LanePoolTransport,
                 lane: httpx.AsyncBaseTransport) -> None:
        self._inner = inner
        self._pool = pool
        self._lane: httpx.AsyncBaseTransport | None = lane

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self._inner:
            yield chunk

    async def aclose(self) -> None:
        lane, self._lane = self._lane, None
        try:
            await self._inner.aclose()
        finally:
            if lane is not None:
                await self._pool._give_back(lane)


class LanePoolTransport(httpx.AsyncBaseTransport):
    """``max_connections`` single-connection httpx transports, one request per lane.

    >>> httpx.AsyncClient(transport=LanePoolTransport(max_connections=100))

    Idle lanes are reused last-in first-out (the warmest connection first); at
    most ``max_keepalive_connections`` stay open, and one idle for longer than
    ``keepalive_expiry`` is closed. Waiting for a lane honours the request's
    ``pool`` timeout with ``httpx.PoolTimeout`` (nothing was sent). Every lane is
    a plain ``httpx.AsyncHTTPTransport``, so TLS, timeouts, the stale-connection
    check and httpx's exception mapping are exactly httpx's.
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
        if max_connections < 1:
            raise ValueError("max_connections must be at least 1")
        self._max_idle = max_connections if max_keepalive_connections is None else min(
            max_keepalive_connections, max_connections)
        self._expiry = keepalive_expiry
        if lane_factory is None:
            # One SSLContext for every lane: building one loads the CA bundle (~10 ms).
            context = verify if isinstance(verify, ssl.SSLContext) else (
                httpx.create_ssl_context(verify=verify))
            limits = httpx.Limits(max_connections=1, max_keepalive_connections=1,
                                  keepalive_expiry=keepalive_expiry)

            def lane_factory() -> httpx.AsyncBaseTransport:
                return httpx.AsyncHTTPTransport(verify=context, limits=limits)

        self._new_lane = lane_factory
        self._slots = asyncio.Semaphore(max_connections)
        self._idle: collections.deque[tuple[float, httpx.AsyncBaseTransport]] = (
            collections.deque())
        self.lanes: set[httpx.AsyncBaseTransport] = set()
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
                raise httpx.PoolTimeout("no connection free within the pool timeout",
                                        request=request) from None
        else:
            await self._slots.acquire()  # a free slot: returns without suspending
        lane = self._idle.pop()[1] if self._idle else self._create_lane()
        try:
            response = await lane.handle_async_request(request)
        except BaseException:
            await self._give_back(lane)
            raise
        assert isinstance(response.stream, httpx.AsyncByteStream)
        return httpx.Response(
            status_code=response.status_code, headers=response.headers,
            stream=_LaneStream(response.stream, self, lane), extensions=response.extensions,
        )

    def _create_lane(self) -> httpx.AsyncBaseTransport:
        lane = self._new_lane()
        self.lanes.add(lane)
        return lane

    async def _give_back(self, lane: httpx.AsyncBaseTransport) -> None:
        try:
            if self._closed:
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
                await stale.aclose()
        finally:
            self._slots.release()

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        lanes, self.lanes = list(self.lanes), set()
        self._idle.clear()
        for lane in lanes:
            await lane.aclose()


# -- aiohttp --------------------------------------------------------------------------


class AiohttpSender:
    """POST with one ``aiohttp.ClientSession`` (extra ``[aiohttp]``), no httpx in between.

    aiohttp raises only ``ClientConnectorError`` (DNS, refused, TLS handshake) or
    ``ConnectionTimeoutError`` (pool wait + connect) before writing a request;
    every other failure may follow a complete send.
    """

    def __init__(self, *, max_connections: int, keepalive_expiry: float | None,
                 timeout: httpx.Timeout, ssl_context: ssl.SSLContext | bool) -> None:
        try:
            import aiohttp
        except ImportError:
            from .errors import ConfigurationError

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
        return self._aiohttp.ClientTimeout(total=None, connect=connect,
                                           sock_connect=timeout.connect, sock_read=timeout.read)

    def _open(self) -> Any:
        # Made on first use: a ClientSession must be built inside the running loop.
        aiohttp = self._aiohttp
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=self._limit, ssl=self._ssl,
                                           keepalive_timeout=self._keepalive or 0),
            timeout=self._timeout, trust_env=False, auto_decompress=False,
            skip_auto_headers=("User-Agent",),
        )
        return self._session

    async def post(self, url: str, body: bytes, headers: Mapping[str, str],
                   time_budget: httpx.Timeout | None, deadline: float | None) -> Answer:
        aiohttp = self._aiohttp
        session = self._session or self._open()
        timeout = self._timeout if time_budget is None else self._client_timeout(time_budget)
        if deadline is not None:
            timeout = aiohttp.ClientTimeout(
                total=max(deadline - time.monotonic(), 0.001), connect=timeout.connect,
                sock_connect=timeout.sock_connect, sock_read=timeout.sock_read)
        try:
            async with session.post(url, data=body, headers=dict(headers),
                                    allow_redirects=False, timeout=timeout) as response:
                if (response.content_length or 0) > MAX_RESPONSE_BYTES:
                    raise MaybeSent("response body is too large")
                chunks: list[bytes] = []
                size = 0
                async for chunk in response.content.iter_any():
                    size += len(chunk)
                    if size > MAX_RESPONSE_BYTES:
                        raise MaybeSent("response body is too large")
                    chunks.append(chunk)
                return Answer(response.status, response.headers, b"".join(chunks))
        except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError) as exc:
            raise NotSent(_describe(exc)) from exc
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise MaybeSent(_describe(exc)) from exc

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
