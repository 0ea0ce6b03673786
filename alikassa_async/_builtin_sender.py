"""The default sender: the SDK's own HTTP/1.1 client on asyncio, one request per connection.

Why its own: per signed payout, httpx + httpcore spend ~0.5 ms of CPU building
request/response objects, running their pool's bookkeeping and anyio's locks
(benchmarks/README.md). What the SDK needs is much smaller: POST a body
of a few hundred bytes to one origin and read a small JSON answer. This module does
exactly that with an ``asyncio.Protocol`` per connection, a strict response parser
(:mod:`alikassa_async._http1`) that runs in the protocol's ``data_received``, and
one timer per request. Everything constant is done once: the SSL context at
construction, the URL split and the origin's ``Host`` once per URL.

Delivery, as the client's retry rules need it (:mod:`alikassa_async._transport`):

- :class:`NotSent` — waiting for a free connection timed out, connecting failed or
  timed out (TLS handshake included), or a header could not be written: no byte of
  the request left this process;
- :class:`MaybeSent` — anything after the request was handed to the socket: a
  dropped or reset connection, a timeout, an answer that breaks HTTP/1.1 or its size
  cap. A reused keep-alive connection that dies before any answer byte is *also*
  ``MaybeSent``: the server may have read the request before it closed.

What keeps a stale keep-alive connection from turning a create into an unknown
outcome: the loop delivers the server's FIN to the idle connection's protocol as
soon as it arrives, so a connection the server closed is never picked; one idle
for longer than ``keepalive_expiry`` — or than the ``Keep-Alive: timeout=`` the
server announced, less a margin — is closed instead of reused.

Deadlines: ``deadline`` (the call's total timeout) bounds the whole attempt —
waiting for a connection, connecting, writing, every byte of the answer — so a
server trickling its headers or body cannot outlive it; a request whose deadline has
passed is not written at all. Within it, the pool and connect timeouts bound their
phases and the read timeout bounds each silence, counted from the request's single
``write`` (a request is a few hundred bytes, so there is no separate write phase).

Cancel safety: a request that did not read its answer to the end closes its
connection; the connection slot is an ``asyncio.Semaphore`` released in ``finally``.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import select
import ssl
import time
import zlib
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

import httpx

from ._http1 import ProtocolError, ResponseParser, TooLarge, request_head
from ._transport import MAX_RESPONSE_BYTES, Answer, MaybeSent, NotSent, SignedBody, _describe

__all__ = ["BuiltinSender"]

logger = logging.getLogger("alikassa_async.http")

_HAS_POLL = hasattr(select, "poll")
#: close a keep-alive connection this long before the server said it would
_KEEPALIVE_MARGIN = 1.0
#: sent with every request: answers are small JSON, compression buys nothing
_FIXED_HEADERS = "Accept-Encoding: identity\r\n"


class _Timeout(Exception):
    """Internal: the attempt's deadline or a read timeout passed."""


class _Wire(bytes):
    """The request's bytes (head, ``Sign``, body) with a redacted repr: tracebacks with
    captured locals and debuggers show only the size."""

    __slots__ = ()

    def __repr__(self) -> str:
        return f"<request: {len(self)} bytes, redacted>"


class _Connection(asyncio.Protocol):
    """One HTTP/1.1 connection; the parser runs as bytes arrive."""

    __slots__ = (
        "_end",
        "_expires",
        "_handle",
        "_idle_since",
        "_last",
        "_poller",
        "_read_timeout",
        "alive",
        "fd",
        "lost",
        "parser",
        "pool",
        "transport",
        "waiter",
    )

    def __init__(self, pool: _Pool) -> None:
        self.pool = pool
        self.parser = ResponseParser(pool.max_body)
        self.transport: asyncio.Transport | None = None
        self.fd = -1
        self._poller: Any = None
        self.waiter: asyncio.Future[None] | None = None
        #: set by ``_Pool.close`` to learn when the socket is gone
        self.lost: asyncio.Future[None] | None = None
        self.alive = True
        self._last = 0.0
        self._end = 0.0
        self._read_timeout: float | None = None
        self._handle: asyncio.TimerHandle | None = None
        self._idle_since = 0.0
        self._expires = float("inf")

    # -- asyncio callbacks ---------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        sock = transport.get_extra_info("socket")
        self.fd = -1 if sock is None else sock.fileno()

    def data_received(self, data: bytes) -> None:
        waiter = self.waiter
        if waiter is None or waiter.done():
            # Bytes nobody asked for (on an idle connection): out of step, never reuse.
            self._kill()
            return
        self._last = self.pool.loop.time()
        try:
            done = self.parser.feed(data)
        except ProtocolError as exc:
            self._fail(exc)
            return
        if done:
            waiter.set_result(None)

    def eof_received(self) -> bool:
        self.alive = False
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            try:
                if self.parser.feed_eof():
                    waiter.set_result(None)
            except ProtocolError as exc:
                waiter.set_exception(exc)
        return False  # let the transport close

    def connection_lost(self, exc: Exception | None) -> None:
        self.alive = False
        if self.lost is not None and not self.lost.done():
            self.lost.set_result(None)
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            error = ConnectionError(f"connection lost: {exc}" if exc else "connection closed")
            waiter.set_exception(error)
        self.pool.forget(self)

    # -- one exchange --------------------------------------------------------------

    async def exchange(
        self, payload: bytes, read_timeout: float | None, end: float | None, max_bytes: int
    ) -> None:
        """Write one request and wait until its answer is complete (or fails)."""
        loop = self.pool.loop
        transport = self.transport
        assert transport is not None
        self.parser.reset()
        self.parser.max_body = max_bytes
        waiter = self.waiter = loop.create_future()
        now = self._last = loop.time()
        self._read_timeout = read_timeout
        self._end = float("inf") if end is None else end
        fire = self._end if read_timeout is None else min(self._end, now + read_timeout)
        self._handle = loop.call_at(fire, self._on_timer) if fire != float("inf") else None
        try:
            transport.write(payload)
            await waiter
        finally:
            if self._handle is not None:
                self._handle.cancel()
                self._handle = None
            self.waiter = None
            if waiter.done() and not waiter.cancelled():
                waiter.exception()  # retrieved even when a cancellation won the race

    def _on_timer(self) -> None:
        now = self.pool.loop.time()
        timeout = self._read_timeout
        if now >= self._end:
            self._fail(_Timeout("the call's deadline passed before the answer was complete"))
        elif timeout is not None and now - self._last >= timeout:
            self._fail(_Timeout(f"no answer byte for {timeout:g} s (read timeout)"))
        else:
            fire = self._end if timeout is None else min(self._end, self._last + timeout)
            self._handle = self.pool.loop.call_at(fire, self._on_timer)

    def _fail(self, exc: Exception) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)
        self._kill()

    def _kill(self) -> None:
        self.alive = False
        if self.transport is not None:
            self.transport.abort()

    # -- reuse -----------------------------------------------------------------------

    def park(self, now: float) -> None:
        """Back to the idle stack after a complete answer; note the server's keep-alive."""
        self._idle_since = now
        self._expires = float("inf")
        announced = self.parser.headers.get("keep-alive")
        if announced:
            for part in announced.split(","):
                name, _, value = part.strip().partition("=")
                if name.lower() == "timeout" and value.strip().isdigit():
                    self._expires = now + int(value) - _KEEPALIVE_MARGIN

    def pending(self) -> bool:
        """Whether the kernel holds bytes or a FIN for this idle connection that the loop
        has not delivered yet (a server that answered and hung up at once)."""
        if self.fd < 0:
            return False
        try:
            if _HAS_POLL:  # no FD_SETSIZE limit, unlike select()
                poller = self._poller
                if poller is None:
                    poller = self._poller = select.poll()
                    poller.register(self.fd, select.POLLIN)
                return bool(poller.poll(0))
            readable, _, _ = select.select([self.fd], [], [], 0)
            return bool(readable)
        except (OSError, ValueError):
            return True  # unsure: let the loop run and look again

    def reusable(self, now: float, expiry: float | None) -> bool:
        transport = self.transport
        return (
            self.alive
            and transport is not None
            and not transport.is_closing()
            and now < self._expires
            and (expiry is None or now - self._idle_since <= expiry)
        )


class _Pool:
    """Connections to one origin: at most ``max_connections`` at once, idle ones reused
    warmest first."""

    def __init__(self, sender: BuiltinSender, scheme: str, host: str, port: int) -> None:
        self.loop = asyncio.get_running_loop()
        self.max_body = sender.max_response_bytes
        self.host = host
        self.port = port
        self.tls = sender.ssl_context if scheme == "https" else None
        self.slots = asyncio.Semaphore(sender.max_connections)
        self.idle: collections.deque[_Connection] = collections.deque()
        self.connections: set[_Connection] = set()
        self.max_idle = sender.max_keepalive_connections
        self.expiry = sender.keepalive_expiry

    def forget(self, conn: _Connection) -> None:
        self.connections.discard(conn)
        try:
            self.idle.remove(conn)
        except ValueError:
            pass

    async def take_idle(self) -> _Connection | None:
        """The warmest idle connection still fit to carry a request, or None."""
        idle = self.idle
        while idle:
            conn = idle.pop()
            if conn.pending():
                # Let the loop deliver what arrived (FIN, stray bytes, a TLS session
                # ticket) before deciding: two turns, as the read callback is queued
                # behind this task's first wake-up.
                try:
                    await asyncio.sleep(0)
                    await asyncio.sleep(0)
                except BaseException:
                    conn._kill()
                    self.connections.discard(conn)
                    raise
            if conn.reusable(self.loop.time(), self.expiry):
                return conn
            conn._kill()
            self.connections.discard(conn)
        return None

    def give_back(self, conn: _Connection) -> None:
        now = self.loop.time()
        conn.park(now)
        idle = self.idle
        idle.append(conn)
        expiry = self.expiry
        # Close surplus and long-idle connections, oldest first.
        while idle and (
            len(idle) > self.max_idle or (expiry is not None and now - idle[0]._idle_since > expiry)
        ):
            stale = idle.popleft()
            self.connections.discard(stale)
            stale._kill()

    async def connect(self, limit: float | None) -> _Connection:
        conn = _Connection(self)
        async with asyncio.timeout(limit):
            await self.loop.create_connection(
                lambda: conn,
                self.host,
                self.port,
                ssl=self.tls,
                server_hostname=self.host if self.tls is not None else None,
            )
        self.connections.add(conn)
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug(
                "connected to %s:%d (%s)",
                self.host,
                self.port,
                "TLS" if self.tls is not None else "plain",
            )
        return conn

    def abandon(self) -> None:
        """Drop the connections of an event loop that is gone (the client was used from a
        new one): aborting may fail once that loop is closed."""
        for conn in list(self.connections):
            try:
                conn._kill()
            except RuntimeError:  # "Event loop is closed": its sockets went with it
                conn.alive = False
        self.connections.clear()
        self.idle.clear()

    async def close(self) -> None:
        """Close every connection and wait (briefly) until their sockets are released."""
        lost = []
        for conn in list(self.connections):
            if conn.transport is not None and conn.alive:
                conn.lost = self.loop.create_future()
                lost.append(conn.lost)
            conn._kill()
        self.connections.clear()
        self.idle.clear()
        if lost:
            await asyncio.wait(lost, timeout=1.0)


class _Target:
    """What one URL needs on the wire, worked out once."""

    __slots__ = ("host_header", "origin", "path")

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {url!r}")
        default = 443 if parts.scheme == "https" else 80
        port = parts.port or default
        host = parts.hostname
        shown = f"[{host}]" if ":" in host else host
        self.host_header = shown if port == default else f"{shown}:{port}"
        self.origin = (parts.scheme, host, port)
        self.path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")


class BuiltinSender:
    """POST over the SDK's own HTTP/1.1 connections (the default; no extra dependency).

    >>> AliKassaClient(account, payout_cert=cert)                      # this sender
    >>> AliKassaClient(account, payout_cert=cert, http_backend="httpx")  # the lane pool

    ``timeout`` holds the defaults for a request's pool wait, connect and read
    phases (``httpx.Timeout``, the client's ``timeout=``); a request's own budget
    replaces them.
    """

    def __init__(
        self,
        *,
        max_connections: int,
        max_keepalive_connections: int | None,
        keepalive_expiry: float | None,
        timeout: httpx.Timeout,
        ssl_context: ssl.SSLContext | bool,
        max_response_bytes: int = MAX_RESPONSE_BYTES,
    ) -> None:
        if max_connections < 1:
            raise ValueError("max_connections must be at least 1")
        self.max_connections = max_connections
        self.max_keepalive_connections = (
            max_connections
            if max_keepalive_connections is None
            else min(max_keepalive_connections, max_connections)
        )
        self.keepalive_expiry = keepalive_expiry
        self.max_response_bytes = max_response_bytes
        self._timeout = timeout
        if not isinstance(ssl_context, ssl.SSLContext):
            # certifi's bundle, as httpx uses; no SSLKEYLOGFILE/SSL_CERT_* from the environment.
            ssl_context = httpx.create_ssl_context(verify=True, trust_env=False)
            ssl_context.keylog_filename = None  # type: ignore[assignment]
        if ssl_context.verify_mode != ssl.CERT_REQUIRED or not ssl_context.check_hostname:
            raise ValueError("the SSL context must verify certificates and host names")
        self.ssl_context = ssl_context
        self._targets: dict[str, _Target] = {}
        self._pools: dict[tuple[str, str, int], _Pool] = {}
        self._closed = False

    def pool_stats(self) -> tuple[int, int, int]:
        """(open connections, connections serving a request, requests waiting for one)."""
        opened = busy = waiting = 0
        for pool in self._pools.values():
            live = [c for c in pool.connections if c.alive]
            opened += len(live)
            busy += sum(1 for c in live if c.waiter is not None)
            waiting += len(getattr(pool.slots, "_waiters", None) or ())
        return opened, busy, waiting

    def _target(self, url: str) -> _Target:
        target = self._targets.get(url)
        if target is None:
            target = self._targets[url] = _Target(url)
        return target

    async def post(
        self,
        url: str,
        body: SignedBody,
        headers: Mapping[str, str],
        time_budget: httpx.Timeout | None,
        deadline: float | None,
        max_bytes: int = MAX_RESPONSE_BYTES,
    ) -> Answer:
        self._check_open()
        refused = ""
        try:
            target = self._target(url)
            payload = _Wire(_join(target, headers, body))
        except ValueError as exc:
            refused = f"request refused before sending: {exc}"
        if refused:  # raised outside the except block: no chain to the frames that held bytes
            raise NotSent(refused)
        failure: NotSent | MaybeSent
        cap = min(max_bytes, self.max_response_bytes)  # the endpoint's, within the sender's
        try:
            return await self._send(target, payload, body, time_budget, deadline, cap)
        except (NotSent, MaybeSent) as exc:
            failure = exc
        # Raised afresh outside the except block: no chain into this module's frames.
        raise type(failure)(str(failure))

    async def _send(
        self,
        target: _Target,
        payload: _Wire,
        body: SignedBody,
        time_budget: httpx.Timeout | None,
        deadline: float | None,
        max_bytes: int,
    ) -> Answer:
        budget = self._timeout if time_budget is None else time_budget
        loop = asyncio.get_running_loop()
        pool = self._pool(target, loop)
        end = _on_loop_clock(deadline, loop)
        slots = pool.slots
        if slots.locked():
            await _wait_for_slot(slots, _phase(budget.pool, end, loop))
        else:
            await slots.acquire()  # a free slot: returns without suspending
        conn: _Connection | None = None
        try:
            # Nothing is written before ``exchange``: every failure up to it is NotSent.
            self._check_open()
            conn = await pool.take_idle()
            if conn is None:
                conn = await _connect(pool, _phase(budget.connect, end, loop))
                self._check_open()  # closed while we connected
            if end is not None and loop.time() >= end:
                raise NotSent("the call's deadline passed before the request was sent")
            if isinstance(body, SignedBody):
                body.started = True  # from here on, the bytes may leave
            try:
                await conn.exchange(payload, budget.read, end, max_bytes)
            except Exception as exc:  # reset, timeout, bad framing, over the cap, ...
                raise MaybeSent(_describe(exc)) from exc
            answer = _answer(conn.parser, max_bytes)
            if self._reusable(conn):
                pool.give_back(conn)
                conn = None
            return answer
        finally:
            if conn is not None:
                # Not read to the end (failure, cancellation) or not reusable: close it.
                conn._kill()
                pool.connections.discard(conn)
            slots.release()

    def _check_open(self) -> None:
        if self._closed:
            raise NotSent("the HTTP connections have been closed")

    def _pool(self, target: _Target, loop: asyncio.AbstractEventLoop) -> _Pool:
        """The connection pool for the target's origin on this event loop."""
        pool = self._pools.get(target.origin)
        if pool is None or pool.loop is not loop:
            if pool is not None:  # used from a new event loop: the old one's sockets are void
                pool.abandon()
            pool = self._pools[target.origin] = _Pool(self, *target.origin)
        return pool

    def _reusable(self, conn: _Connection) -> bool:
        """Whether a connection that carried a complete answer may carry another."""
        return conn.parser.keep_alive and conn.alive and not self._closed

    async def aclose(self) -> None:
        self._closed = True
        pools, self._pools = list(self._pools.values()), {}
        for pool in pools:
            await pool.close()


def _join(target: _Target, headers: Mapping[str, str], body: SignedBody) -> bytes:
    """Head and body in one buffer (one write); the raw bytes live in no caller's frame."""
    data = body.data if isinstance(body, SignedBody) else bytes(body)
    return (
        request_head("POST", target.path, target.host_header, headers, len(data), _FIXED_HEADERS)
        + data
    )


def _on_loop_clock(deadline: float | None, loop: asyncio.AbstractEventLoop) -> float | None:
    """The call's deadline, which is on time.monotonic(), on the loop's clock: they may
    differ (uvloop)."""
    return None if deadline is None else loop.time() + (deadline - time.monotonic())


async def _wait_for_slot(slots: asyncio.Semaphore, limit: float | None) -> None:
    """Wait for a connection slot when all are taken, within the pool timeout."""
    try:
        async with asyncio.timeout(limit):
            await slots.acquire()
    except TimeoutError:
        raise NotSent("PoolTimeout: no connection free within the pool timeout") from None


async def _connect(pool: _Pool, limit: float | None) -> _Connection:
    """A new connection; every failure is NotSent (no byte of the request has left)."""
    try:
        return await pool.connect(limit)
    except TimeoutError:
        raise NotSent("ConnectTimeout: connecting timed out") from None
    except Exception as exc:  # refused, unreachable, DNS, TLS handshake
        raise NotSent(_describe(exc)) from exc


def _answer(parser: ResponseParser, max_bytes: int) -> Answer:
    """The complete answer, its body decoded if a proxy compressed it anyway."""
    content = parser.body
    coding = parser.headers.get("content-encoding")
    if coding is not None and coding.lower() != "identity":
        try:
            content = _decoded(content, coding, max_bytes)
        except ProtocolError as exc:
            raise MaybeSent(_describe(exc)) from exc
    return Answer(parser.status, parser.headers, content)


def _decoded(content: bytes, coding: str, cap: int) -> bytes:
    """A gzip/deflate body some proxy compressed although we asked for identity; the cap
    holds for the decoded size too (no decompression bomb)."""
    name = coding.strip().lower()
    if name not in ("gzip", "x-gzip", "deflate"):
        raise ProtocolError(f"unsupported content-encoding {coding[:40]!r}")
    wbits = 16 + zlib.MAX_WBITS if name != "deflate" else zlib.MAX_WBITS
    try:
        try:
            inflater = zlib.decompressobj(wbits)
            out = inflater.decompress(content, cap + 1)
        except zlib.error:
            if name != "deflate":
                raise
            inflater = zlib.decompressobj(-zlib.MAX_WBITS)  # raw deflate, as some servers send
            out = inflater.decompress(content, cap + 1)
    except zlib.error as exc:
        raise ProtocolError(f"undecodable {name} body") from exc
    if len(out) > cap or inflater.unconsumed_tail:
        raise TooLarge("decoded response body is too large")
    if not inflater.eof:
        raise ProtocolError(f"truncated {name} body")
    return out


def _phase(
    timeout: float | None, end: float | None, loop: asyncio.AbstractEventLoop
) -> float | None:
    """A phase's timeout, cut so it cannot run past the attempt's end."""
    if end is None:
        return timeout
    left = max(end - loop.time(), 0.0)
    return left if timeout is None else min(timeout, left)
