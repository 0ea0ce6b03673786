"""Proposed transport layer for ``AliKassaClient`` (phase 2 of issue #7), with bench clients.

Why: httpcore 1.0's ``AsyncConnectionPool`` re-scans every connection and every
queued request on each request start and finish (``_assign_requests_to_connections``),
polls each idle socket (``has_expired`` -> ``select``), hands one idle
connection to several waiting requests at once (the losers wake, fail with
``ConnectionNotAvailable`` and rescan), and compares *all* connections, not idle
ones, with ``max_keepalive_connections`` (encode/httpcore#1035). Cost per
request grows with the number of open connections; at 64 in flight one
``httpx.AsyncClient`` spends ~2-3 ms of CPU per request.

:class:`LanePoolTransport` keeps httpx's own transport but gives each
connection its own ``httpx.AsyncHTTPTransport`` of one connection (a "lane").
A LIFO free-list hands a whole lane to one request at a time, an
``asyncio.Semaphore`` bounds lanes at ``max_connections``, so every httpcore
pool only ever sees one connection and one request: each pass is O(1), nobody
is double-assigned, and httpx's exception mapping, timeouts, stale-connection
check and TLS stay exactly as they are. Only public httpx API is used.

    transport = LanePoolTransport(max_connections=100, verify=ssl_context)
    async with httpx.AsyncClient(transport=transport) as http: ...

:class:`ShardedTransport` (K ordinary transports, least-busy first) is kept for
comparison; it was measured and is not recommended (see README).

Recommended wiring in ``AliKassaClient`` (what ``proposed_sdk_class`` prototypes):

* ``_attempt`` posts through a *sender* (``post(url, body, headers, time_budget)
  -> Answer``) that raises only :class:`NotSent` (safe to retry a create) or
  :class:`MaybeSent` (outcome unknown); retries and unknown-outcome rules stay
  in the client, independent of the HTTP library.
* default, no new dependency: ``HttpxSender(transport=LanePoolTransport(...))``,
  calling the transport directly; ``http2=True`` -> a plain
  ``httpx.AsyncHTTPTransport(http2=True)``; ``transport=`` -> that transport
  (e.g. ``httpx.ASGITransport``); ``http_client=`` -> ``HttpxSender(client=...)``
  (the user's hooks, auth, proxies stay in force).
* opt-in, one argument: ``http_backend="aiohttp"`` -> :class:`AiohttpSender`
  (extra ``[aiohttp]`` = ``aiohttp>=3.10``; ``httpx-aiohttp`` is not needed and
  must not be used for creates: it reports a dropped, already-sent request as
  ``httpx.ConnectTimeout``).
* ``sign_threads=None`` (auto): sign in a 2-thread pool when the key is
  >= 3072 bits, inline otherwise; ``0`` = always inline.
"""

from __future__ import annotations

import asyncio
import collections
import json
import ssl
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx

__all__ = ["AiohttpSender", "Answer", "HttpxSender", "LanePoolTransport", "MaybeSent", "NotSent",
           "ShardedTransport", "aiohttp_transport"]


class _LaneStream(httpx.AsyncByteStream):
    """The lane's response body; closing it gives the lane back exactly once."""

    __slots__ = ("_inner", "_lane", "_pool")

    def __init__(self, inner: httpx.AsyncByteStream, pool: LanePoolTransport,
                 lane: httpx.AsyncBaseTransport | None) -> None:
        self._inner = inner
        self._pool = pool
        self._lane = lane

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

    ``max_keepalive_connections`` idle lanes are kept (LIFO, so the warmest is
    reused and the coldest ages out after ``keepalive_expiry``). Waiting for a
    lane honours the request's ``pool`` timeout and raises ``httpx.PoolTimeout``
    (nothing was sent). Other keyword arguments go to every
    ``httpx.AsyncHTTPTransport`` (``verify`` is turned into one shared SSLContext).
    """

    def __init__(
        self,
        *,
        max_connections: int = 100,
        max_keepalive_connections: int | None = None,
        keepalive_expiry: float | None = 5.0,
        verify: ssl.SSLContext | bool = True,
        lane_factory: Callable[[], httpx.AsyncBaseTransport] | None = None,
        **transport_kwargs: Any,
    ) -> None:
        if max_connections < 1:
            raise ValueError("max_connections must be at least 1")
        self._max_idle = max_connections if max_keepalive_connections is None else min(
            max_keepalive_connections, max_connections)
        self._expiry = keepalive_expiry
        if lane_factory is None:
            # One SSLContext for all lanes: building one loads the CA bundle (~10 ms).
            context = verify if isinstance(verify, ssl.SSLContext) else httpx.create_ssl_context(
                verify=verify)
            limits = httpx.Limits(max_connections=1, max_keepalive_connections=1,
                                  keepalive_expiry=keepalive_expiry)

            def lane_factory() -> httpx.AsyncBaseTransport:
                return httpx.AsyncHTTPTransport(verify=context, limits=limits,
                                                **transport_kwargs)
        self._new_lane = lane_factory
        self._slots = asyncio.Semaphore(max_connections)
        self._idle: collections.deque[tuple[float, httpx.AsyncBaseTransport]] = (
            collections.deque())
        self._lanes: set[httpx.AsyncBaseTransport] = set()
        self._closed = False

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
            await self._slots.acquire()  # free slot: returns without suspending
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
        self._lanes.add(lane)
        return lane

    async def _give_back(self, lane: httpx.AsyncBaseTransport) -> None:
        try:
            if self._closed:
                return
            now = time.monotonic()
            self._idle.append((now, lane))
            # Close surplus and long-idle lanes (oldest first); O(1) amortised.
            while self._idle and (
                len(self._idle) > self._max_idle
                or (self._expiry is not None and now - self._idle[0][0] > self._expiry)
            ):
                _, stale = self._idle.popleft()
                self._lanes.discard(stale)
                await stale.aclose()
        finally:
            self._slots.release()

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        lanes, self._lanes = list(self._lanes), set()
        self._idle.clear()
        for lane in lanes:
            await lane.aclose()


class ShardedTransport(httpx.AsyncBaseTransport):
    """``shards`` ordinary httpx transports of ``per_shard`` connections, least busy first."""

    def __init__(self, *, shards: int = 8, per_shard: int = 13,
                 verify: ssl.SSLContext | bool = True, **transport_kwargs: Any) -> None:
        context = verify if isinstance(verify, ssl.SSLContext) else httpx.create_ssl_context(
            verify=verify)
        limits = httpx.Limits(max_connections=per_shard, max_keepalive_connections=per_shard)
        self._shards = [httpx.AsyncHTTPTransport(verify=context, limits=limits,
                                                 **transport_kwargs) for _ in range(shards)]
        self._busy = [0] * shards
        self._slots = asyncio.Semaphore(shards * per_shard)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        await self._slots.acquire()
        index = min(range(len(self._busy)), key=self._busy.__getitem__)
        self._busy[index] += 1
        done = False

        def release() -> None:
            nonlocal done
            if not done:
                done = True
                self._busy[index] -= 1
                self._slots.release()

        try:
            response = await self._shards[index].handle_async_request(request)
        except BaseException:
            release()
            raise
        inner = response.stream
        assert isinstance(inner, httpx.AsyncByteStream)

        class _Stream(httpx.AsyncByteStream):
            async def __aiter__(self) -> AsyncIterator[bytes]:
                async for chunk in inner:
                    yield chunk

            async def aclose(self) -> None:
                try:
                    await inner.aclose()
                finally:
                    release()

        return httpx.Response(status_code=response.status_code, headers=response.headers,
                              stream=_Stream(), extensions=response.extensions)

    async def aclose(self) -> None:
        for shard in self._shards:
            await shard.aclose()


def aiohttp_transport(*, max_connections: int = 100, keepalive_expiry: float | None = 5.0,
                      verify: ssl.SSLContext | bool = True) -> httpx.AsyncBaseTransport:
    """The opt-in fast path: ``httpx_aiohttp.AiohttpTransport`` (extra ``[aiohttp]``)."""
    from httpx_aiohttp import AiohttpTransport

    return AiohttpTransport(
        verify=verify, trust_env=False,
        limits=httpx.Limits(max_connections=max_connections,
                            max_keepalive_connections=max_connections,
                            keepalive_expiry=keepalive_expiry),
    )


# ------------------------------------------------------------------ senders
#
# The SDK pipeline only needs (status, headers, body) and one fact about a
# failure: could the request have reached the server? A "sender" answers
# exactly that, so ``_attempt`` stops depending on which HTTP library (and
# which exception mapping) is underneath.


class NotSent(Exception):
    """The request cannot have reached the server: a create may be retried."""


class MaybeSent(Exception):
    """The request may have reached the server: a create's outcome is unknown."""


class Answer:
    """What the pipeline needs from a response; ``headers`` is case-insensitive."""

    __slots__ = ("body", "headers", "status_code")

    def __init__(self, status_code: int, headers: Any, body: bytes) -> None:
        self.status_code = status_code
        self.headers = headers
        self.body = body


_DEFAULT_TIMEOUT = httpx.Timeout(30.0, connect=10.0)
_HTTPX_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)


def _httpx_not_sent(exc: BaseException) -> bool:
    """httpx's connect errors mean "not sent" only when httpx (httpcore) raised them.

    httpx-aiohttp maps aiohttp's ``ServerDisconnectedError`` (request already
    written) to ``httpx.ConnectTimeout``; trusting the class would re-send a payout.
    """
    if not isinstance(exc, _HTTPX_NOT_SENT):
        return False
    cause = exc.__cause__
    if cause is None or type(cause).__module__.startswith("httpcore"):
        return True
    if type(cause).__module__.startswith("aiohttp"):
        import aiohttp

        return isinstance(cause, aiohttp.ClientConnectorError | aiohttp.ConnectionTimeoutError)
    return False


class HttpxSender:
    """POST through an httpx transport directly (SDK-owned) or a user's ``AsyncClient``.

    Calling the transport skips AsyncClient's per-request machinery (cookie
    jar, auth and redirect generators, event hooks, URL merging), none of which
    the SDK uses: ~115 µs of CPU per request measured.
    """

    def __init__(self, *, transport: httpx.AsyncBaseTransport | None = None,
                 client: httpx.AsyncClient | None = None,
                 timeout: httpx.Timeout = _DEFAULT_TIMEOUT,
                 max_body: int = 8 * 1024 * 1024) -> None:
        if (transport is None) == (client is None):
            raise ValueError("give exactly one of transport or client")
        self._transport = transport
        self._client = client
        self._timeout = {"timeout": timeout.as_dict()}
        self._max_body = max_body

    async def post(self, url: str, body: bytes, headers: dict[str, str],
                   time_budget: httpx.Timeout | None = None) -> Answer:
        """``time_budget`` overrides the sender's timeouts (e.g. cut to a call deadline)."""
        try:
            if self._transport is not None:
                extensions = (self._timeout if time_budget is None
                              else {"timeout": time_budget.as_dict()})
                request = httpx.Request("POST", url, content=body, headers=headers,
                                        extensions=extensions)
                response = await self._transport.handle_async_request(request)
                try:
                    raw = await self._read(response)
                finally:
                    await response.aclose()
            else:
                assert self._client is not None
                async with self._client.stream(
                    "POST", url, content=body, headers=headers,
                    timeout=httpx.USE_CLIENT_DEFAULT if time_budget is None else time_budget,
                ) as response:
                    raw = await self._read(response)
        except (httpx.HTTPError, OSError) as exc:
            raise (NotSent if _httpx_not_sent(exc) else MaybeSent)(
                f"{type(exc).__name__}: {exc}") from exc
        return Answer(response.status_code, response.headers, raw)

    async def _read(self, response: httpx.Response) -> bytes:
        chunks: list[bytes] = []
        size = 0
        async for chunk in response.aiter_bytes():
            size += len(chunk)
            if size > self._max_body:
                raise httpx.DecodingError("response body is too large")
            chunks.append(chunk)
        return b"".join(chunks)

    async def aclose(self) -> None:
        if self._transport is not None:
            await self._transport.aclose()


class AiohttpSender:
    """POST with one ``aiohttp.ClientSession`` (extra ``[aiohttp]``), no httpx in between.

    aiohttp only raises ``ClientConnectorError`` (DNS, refused, TLS handshake)
    or ``ConnectionTimeoutError`` (pool wait + connect) before writing the
    request; every other failure may follow a complete send.
    """

    def __init__(self, *, max_connections: int = 100, keepalive_expiry: float | None = 5.0,
                 timeout: httpx.Timeout = _DEFAULT_TIMEOUT,
                 ssl_context: ssl.SSLContext | None = None,
                 max_body: int = 8 * 1024 * 1024) -> None:
        import aiohttp

        self._aiohttp = aiohttp
        self._timeout = self._client_timeout(timeout)
        self._limit = max_connections
        self._keepalive = keepalive_expiry
        self._ssl: ssl.SSLContext | bool = ssl_context if ssl_context is not None else True
        self._max_body = max_body
        self._session: Any = None

    def _client_timeout(self, timeout: httpx.Timeout) -> Any:
        # aiohttp's ``connect`` covers waiting for a pooled connection plus connecting.
        connect = None if timeout.connect is None else timeout.connect + (timeout.pool or 0)
        return self._aiohttp.ClientTimeout(total=None, connect=connect,
                                           sock_connect=timeout.connect, sock_read=timeout.read)

    def _open(self) -> Any:
        # Created on first use: a ClientSession must be built inside the running loop.
        aiohttp = self._aiohttp
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=self._limit, ssl=self._ssl,
                                           keepalive_timeout=self._keepalive or 0),
            timeout=self._timeout, trust_env=False, auto_decompress=False,
            skip_auto_headers=("User-Agent",),
        )
        return self._session

    async def post(self, url: str, body: bytes, headers: dict[str, str],
                   time_budget: httpx.Timeout | None = None) -> Answer:
        aiohttp = self._aiohttp
        session = self._session or self._open()
        per_call = {} if time_budget is None else {"timeout": self._client_timeout(time_budget)}
        try:
            async with session.post(url, data=body, headers=headers, allow_redirects=False,
                                    **per_call) as response:
                if (response.content_length or 0) > self._max_body:
                    raise MaybeSent("response body is too large")
                chunks: list[bytes] = []
                size = 0
                async for chunk in response.content.iter_any():
                    size += len(chunk)
                    if size > self._max_body:
                        raise MaybeSent("response body is too large")
                    chunks.append(chunk)
                return Answer(response.status, response.headers, b"".join(chunks))
        except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError) as exc:
            raise NotSent(f"{type(exc).__name__}: {exc}") from exc
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise MaybeSent(f"{type(exc).__name__}: {exc}") from exc

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()


# ------------------------------------------------------------------ bench clients

try:  # only when imported by the harness (benchmarks/ on sys.path)
    from clients import BenchClient, HttpxClient, SdkClient, _check_created
except ImportError:  # pragma: no cover - imported as a plain module elsewhere
    HttpxClient = None  # type: ignore[assignment,misc]


def proposed_sdk_class() -> Any:
    """AliKassaClient with ``_attempt`` on a sender: a PROTOTYPE of the recommended design
    (uses client.py internals; the lead implements the real thing)."""
    from concurrent.futures import ThreadPoolExecutor

    from alikassa_async import client as client_module
    from alikassa_async.signing import Certificate

    deferred = "deferred-sign"

    class _DeferredCert(Certificate):
        """Prototype hack: ``_call`` signs on the loop; defer the work to ``_attempt``."""

        __slots__ = ("real",)

        def __init__(self, real: Certificate) -> None:
            super().__init__(real._key, name=real.name)
            self.real = real

        def sign(self, data: bytes, signature_hash: Any = "sha1") -> str:
            return deferred

    class ProposedAliKassaClient(client_module.AliKassaClient):
        def __init__(self, *args: Any, backend: str = "lanes", sign_threads: int = 0,
                     **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._sign_pool = None
            if sign_threads:
                self._sign_pool = ThreadPoolExecutor(sign_threads, thread_name_prefix="sign")
                self._certs = {k: (_DeferredCert(c) if c is not None else None)
                               for k, c in self._certs.items()}
            self._sender: HttpxSender | AiohttpSender
            if backend == "aiohttp":
                self._sender = AiohttpSender(max_connections=100)
            else:
                self._sender = HttpxSender(transport=LanePoolTransport(max_connections=100))

        async def _attempt(self, endpoint: Any, url: str, body: bytes, headers: Any,
                           order_id: str | None, time_budget: Any = None) -> Any:
            if headers.get("Sign") == deferred:
                cert = self._certs[endpoint.cert]
                headers["Sign"] = await asyncio.get_running_loop().run_in_executor(
                    self._sign_pool, cert.real.sign, body, self.signature_hash)
            try:
                answer = await self._sender.post(url, body, dict(headers), time_budget)
            except NotSent as exc:
                raise client_module._Retryable(client_module.TransportError(
                    str(exc), endpoint=endpoint.path)) from None
            except MaybeSent as exc:
                if endpoint.creates:
                    raise self._unknown(endpoint, order_id, str(exc), exc) from None
                raise client_module._Retryable(client_module.TransportError(
                    str(exc), endpoint=endpoint.path)) from None
            return self._classify(endpoint, answer, answer.body, order_id)  # type: ignore[arg-type]

        async def aclose(self) -> None:
            if not self.is_closed:
                await self._sender.aclose()
                if self._sign_pool is not None:
                    self._sign_pool.shutdown()
            await super().aclose()

    return ProposedAliKassaClient


def _transport_for(variant: str, opts: dict[str, Any]) -> httpx.AsyncBaseTransport:
    max_conn = int(opts.get("max_connections", 100))
    if variant.endswith("sharded"):
        return ShardedTransport(shards=int(opts.get("shards", 8)),
                                per_shard=int(opts.get("per_shard", 13)))
    return LanePoolTransport(max_connections=max_conn)


if HttpxClient is not None:

    class ProposedClient(HttpxClient):  # type: ignore[misc,valid-type]
        """``proposed``/``proposed-sharded``: the hand-written httpx client on the new
        transport; ``proposed-sdk``/``proposed-sdk-sharded``: AliKassaClient(transport=...)."""

        def __init__(self, url: str, keydir: Any, opts: dict[str, Any], variant: str) -> None:
            super().__init__(url, keydir, opts)
            self.variant = variant
            self.name = variant
            self.sdk: Any = None

        async def start(self) -> None:
            if self.variant.startswith("proposed-sdk2"):
                # proposed-sdk2 (lanes) / proposed-sdk2-aiohttp: the full recommended design
                self.sdk = SdkClient(self.base_url, self.keydir, {**self.opts, "variant": "sdk"})
                self.sdk.client_class = proposed_sdk_class()
                self.sdk.extra_kwargs = {
                    "backend": "aiohttp" if self.variant.endswith("aiohttp") else "lanes"}
                await self.sdk.start()
                return
            transport = _transport_for(self.variant, self.opts)
            if "-sdk" in self.variant:
                self.sdk = SdkClient(self.base_url, self.keydir,
                                     {**self.opts, "variant": "sdk",
                                      "sdk_kwargs": {"transport": transport}})
                await self.sdk.start()
                return
            await BenchClient.start(self)  # load the key; no httpx.AsyncClient of its own
            self.transport = transport
            self.clients = [httpx.AsyncClient(transport=transport, trust_env=False)]
            self._next = 0
            self._sem = None
            self._direct = "-direct" in self.variant
            self._target = httpx.URL(self.url)
            self._timeout = httpx.Timeout(30.0, connect=10.0).as_dict()

        async def payout(self, order_id: str) -> None:
            if self.sdk is not None:
                await self.sdk.payout(order_id)
                return
            body, headers = await self._signed(order_id)
            if not self._direct:
                response = await self.clients[0].post(self.url, content=body, headers=headers)
                _check_created(response.status_code, response.json())
                return
            # Skip httpx.AsyncClient (cookies, auth, redirects, hooks): the SDK needs none.
            request = httpx.Request("POST", self._target, content=body, headers=headers,
                                    extensions={"timeout": self._timeout})
            response = await self.transport.handle_async_request(request)
            try:
                raw = await response.aread()
            finally:
                await response.aclose()
            _check_created(response.status_code, json.loads(raw))

        async def close(self) -> None:
            if self.sdk is not None:
                await self.sdk.close()
                return
            await super().close()
