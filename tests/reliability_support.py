"""Helpers for the reliability suite: fd and pool accounting, a raw loopback HTTP server.

``open_fds()`` counts this process's file descriptors (psutil); ``pool_state(client)``
reads the httpcore pool behind an ``AliKassaClient`` built without a custom transport.
``RawServer`` is a bare asyncio server on 127.0.0.1 for faults an ASGI server cannot
produce (half-written answers, a socket that never answers).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import importlib.metadata
import ipaddress
import ssl
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Literal

import attrs
import h2.config
import h2.connection
import h2.events
import psutil
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from alikassa_async import AliKassaClient
from alikassa_async._builtin_sender import BuiltinSender
from alikassa_async._transport import LanePoolTransport

__all__ = [
    "BACKENDS",
    "Backend",
    "H2Server",
    "PoolState",
    "RawServer",
    "http_response",
    "open_fds",
    "pool_state",
    "read_request",
    "settled_fds",
]


Backend = Literal["builtin", "httpx", "aiohttp"]
#: every sender the client can run on; reliability tests run on each
BACKENDS: tuple[Backend, ...] = ("builtin", "httpx", "aiohttp")


def open_fds() -> int:
    """File descriptors this process holds right now."""
    return psutil.Process().num_fds()


async def settled_fds(baseline: int, *, slack: int = 0, wait: float = 2.0) -> int:
    """The fd count once it is back to ``baseline + slack`` (or after ``wait`` seconds).

    Closed sockets are released by the event loop a tick or two after ``aclose``;
    polling briefly avoids a flaky count without hiding a real leak.
    """
    loop = asyncio.get_running_loop()
    give_up = loop.time() + wait
    count = open_fds()
    while count > baseline + slack and loop.time() < give_up:
        await asyncio.sleep(0.02)
        count = open_fds()
    return count


@attrs.frozen
class PoolState:
    connections: int
    #: connections with a socket that serve (or are stuck on) a request right now
    busy: int
    #: requests the pool still tracks (active or queued)
    requests: int
    #: slots held by a connection that never connected and that no request will use
    #: (what a cancellation in httpcore's pool-wait window leaves: encode/httpcore#1093)
    orphans: int = 0


#: the releases whose private pool attributes ``pool_state`` reads (``_pool``, ``_requests``,
#: ``_connection``; aiohttp's ``_conns``, ``_acquired``, ``_waiters``): the one place tests
#: reach into other libraries' internals, guarded so a new major release fails loudly here
#: instead of quietly measuring nothing
_INTERNALS_TESTED = {"httpcore": "1.", "aiohttp": "3."}


def _guard_internals(package: str) -> None:
    version = importlib.metadata.version(package)
    if not version.startswith(_INTERNALS_TESTED[package]):
        raise AssertionError(
            f"pool_state reads private attributes of {package} "
            f"{_INTERNALS_TESTED[package]}x, but {package} {version} is installed: check "
            "tests/reliability_support.py against its source before trusting these tests"
        )


def pool_state(client: AliKassaClient) -> PoolState:
    """What the connection pools of ``client`` hold: the built-in sender's connections;
    on httpx, the lanes of ``LanePoolTransport`` (one single-connection pool each) or
    one plain httpcore pool; on the aiohttp backend, what its connector holds."""
    sender = client._sender
    if isinstance(sender, BuiltinSender):
        opened, busy, waiting = sender.pool_stats()
        return PoolState(opened, busy, busy + waiting)
    if client._http is None:
        return _aiohttp_state(client)
    _guard_internals("httpcore")
    transport: Any = client._http._transport
    pools = (
        [lane._pool for lane in transport.lanes]
        if isinstance(transport, LanePoolTransport)
        else [transport._pool]
    )
    connections = [c for pool in pools for c in pool.connections]
    requests = [r for pool in pools for r in pool._requests]
    unconnected = [
        c for c in connections if getattr(c, "_connection", True) is None and not c.is_closed()
    ]
    assigned = {id(r.connection) for r in requests if r.connection is not None}
    busy = sum(
        1 for c in connections if not c.is_closed() and not c.is_idle() and c not in unconnected
    )
    orphans = sum(1 for c in unconnected if id(c) not in assigned)
    return PoolState(len(connections), busy, len(requests), orphans)


def _aiohttp_state(client: AliKassaClient) -> PoolState:
    _guard_internals("aiohttp")
    session: Any = client._sender._session  # type: ignore[attr-defined]
    if session is None or session.closed:
        return PoolState(0, 0, 0)
    connector = session.connector
    idle = sum(len(conns) for conns in connector._conns.values())
    busy = len(connector._acquired)
    waiting = sum(len(w) for w in connector._waiters.values())
    return PoolState(idle + busy, busy, busy + waiting)


# -- a raw HTTP/1.1 server on loopback ----------------------------------------------------

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def read_request(reader: asyncio.StreamReader) -> tuple[bytes, dict[str, str], bytes]:
    """One request: (request line, lower-cased headers, body)."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    return lines[0].encode("latin-1"), headers, body


def http_response(
    status: int,
    body: bytes = b"",
    headers: dict[str, str] | None = None,
    *,
    reason: str = "X",
    length: int | None = None,
) -> bytes:
    """A complete HTTP/1.1 answer; ``length`` lies about Content-Length when given."""
    all_headers = {
        "Content-Type": "application/json",
        "Content-Length": str(len(body) if length is None else length),
        **(headers or {}),
    }
    head = (
        f"HTTP/1.1 {status} {reason}\r\n"
        + "".join(f"{k}: {v}\r\n" for k, v in all_headers.items())
        + "\r\n"
    )
    return head.encode("latin-1") + body


class RawServer:
    """``async with RawServer(handler) as server: server.url``; every connection is closed
    on exit, so a handler that never answers cannot outlive its test."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.connections = 0
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._server: asyncio.Server | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self._writers.add(writer)
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            await self.handler(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass  # the client hung up first: that is what several faults are about
        except asyncio.CancelledError:
            pass  # shutdown; a cancelled handler task would be logged by asyncio.streams
        finally:
            self._tasks.discard(task)
            self._writers.discard(writer)
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    async def __aenter__(self) -> RawServer:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        for writer in list(self._writers):
            writer.close()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()


# -- an HTTP/2 server over TLS on loopback ------------------------------------------------

Responder = Callable[[dict[str, str], bytes], tuple[int, bytes]]


def self_signed_ca(folder: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 that is its own CA: (cert.pem, key.pem)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "h2-cert.pem", folder / "h2-key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


class H2Server:
    """``async with H2Server(respond, folder) as server``: TLS + ALPN ``h2`` only, so a
    client that succeeds really spoke HTTP/2. ``server.ca`` is the file to trust."""

    def __init__(self, respond: Responder, folder: Path) -> None:
        self.respond = respond
        self.ca, self._key = self_signed_ca(folder)
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.port = 0

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        conn = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=False, header_encoding="utf-8")
        )
        conn.initiate_connection()
        writer.write(conn.data_to_send())
        streams: dict[int, tuple[dict[str, str], bytearray]] = {}
        try:
            while data := await reader.read(65536):
                for event in conn.receive_data(data):
                    if isinstance(event, h2.events.RequestReceived):
                        streams[event.stream_id] = (dict(event.headers), bytearray())  # type: ignore[arg-type]
                    elif isinstance(event, h2.events.DataReceived):
                        streams[event.stream_id][1].extend(event.data)
                        conn.acknowledge_received_data(
                            event.flow_controlled_length, event.stream_id
                        )
                    elif isinstance(event, h2.events.StreamEnded):
                        headers, body = streams.pop(event.stream_id)
                        status, payload = self.respond(headers, bytes(body))
                        conn.send_headers(
                            event.stream_id,
                            [
                                (":status", str(status)),
                                ("content-type", "application/json"),
                                ("content-length", str(len(payload))),
                            ],
                        )
                        conn.send_data(event.stream_id, payload, end_stream=True)
                writer.write(conn.data_to_send())
                await writer.drain()
        except (ConnectionError, ssl.SSLError, asyncio.CancelledError):
            pass  # the client hung up, or the server is shutting down
        finally:
            self._tasks.discard(task)
            writer.close()
            with contextlib.suppress(ConnectionError, ssl.SSLError):
                await writer.wait_closed()

    async def __aenter__(self) -> H2Server:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.ca, self._key)
        context.set_alpn_protocols(["h2"])
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=context)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()
