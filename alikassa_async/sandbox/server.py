"""Serve the sandbox (or any ASGI app) with uvicorn on a loopback port.

>>> async with SandboxServer(sandbox) as server:          # same event loop, port 0
...     print(server.url)                                  # http://127.0.0.1:53017
>>> with ThreadedSandboxServer(sandbox) as server:         # own thread + loop, for
...     requests.post(server.url + "/v1/account/balance")  # blocking clients

The listening socket is bound before uvicorn starts, so ``port=0`` gives a
free port known at once. The server leaves the process's signal handlers alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import threading
from collections.abc import Callable, Generator
from types import TracebackType
from typing import Any, TypeVar

import uvicorn
from starlette.types import ASGIApp
from uvicorn.config import LOGGING_CONFIG

from .app import Sandbox
from .faults import FaultPlan
from .state import SandboxState

__all__ = [
    "LoopbackServer",
    "SandboxServer",
    "ThreadedSandboxServer",
    "bind_socket",
    "ignore_upgrade_offers",
]

T = TypeVar("T")

# What uvicorn logs (twice per request, at WARNING) when a client offers to upgrade the
# connection -- Java's HttpClient offers h2c on every plain-http request -- and no
# WebSocket protocol is configured. The offer is simply declined and the request is
# answered over HTTP/1.1, which is what RFC 9110 §7.8 asks of a server that does not
# upgrade: nothing is wrong, so nothing should be logged.
_UPGRADE_NOISE = ("Unsupported upgrade request.", "No supported WebSocket library detected")


class _UpgradeOfferFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.msg if isinstance(record.msg, str) else ""
        return not message.startswith(_UPGRADE_NOISE)


_UPGRADE_FILTER = _UpgradeOfferFilter()


def ignore_upgrade_offers() -> None:
    """Keep uvicorn quiet about declined ``Upgrade:`` offers (h2c); idempotent."""
    target = logging.getLogger("uvicorn.error")
    if _UPGRADE_FILTER not in target.filters:
        target.addFilter(_UPGRADE_FILTER)


class _EmbeddedServer(uvicorn.Server):
    """A uvicorn server that runs inside someone else's event loop: no signal handling."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield

    def install_signal_handlers(self) -> None:  # uvicorn < 0.29
        return None


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening-ready TCP socket bound to ``host:port`` (``port=0``: a free one)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP explicitly: asyncio sets TCP_NODELAY on accepted connections only
    # when the listener says it is TCP; without it every answer waits ~40 ms for a
    # delayed ACK (Nagle).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host.strip("[]"), port))
    except OSError:
        sock.close()
        raise
    sock.setblocking(False)
    return sock


class LoopbackServer:
    """Any ASGI app under uvicorn in the current event loop (a notification receiver, ...).

    >>> async with LoopbackServer(receiver_app) as receiver:
    ...     url = receiver.url + "/notify"
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        log_level: str = "warning",
        access_log: bool = False,
        shutdown_timeout: int = 3,
        uvicorn_logging: bool = False,
    ) -> None:
        self.app = app
        self.host = host
        self.port = port
        self._config = uvicorn.Config(
            app,
            log_level=log_level,
            access_log=access_log,
            lifespan="on",
            http="h11",
            ws="none",
            timeout_graceful_shutdown=shutdown_timeout,
            log_config=LOGGING_CONFIG if uvicorn_logging else None,
        )
        ignore_upgrade_offers()  # after uvicorn.Config, which (re)configures its loggers
        self._server: _EmbeddedServer | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        """``http://host:port`` (no trailing slash)."""
        host = f"[{self.host}]" if ":" in self.host and not self.host.startswith("[") else self.host
        return f"http://{host}:{self.port}"

    async def start(self) -> None:
        if self._task is not None:
            raise RuntimeError("server already started")
        sock = bind_socket(self.host, self.port)
        self.port = sock.getsockname()[1]
        self._server = _EmbeddedServer(self._config)
        self._task = asyncio.create_task(self._server.serve(sockets=[sock]))
        while not self._server.started:
            if self._task.done():
                sock.close()
                await self._task  # raises the startup error
                raise RuntimeError("uvicorn stopped during startup")
            await asyncio.sleep(0.005)

    async def stop(self) -> None:
        server, task = self._server, self._task
        if server is None or task is None:
            return
        server.should_exit = True
        try:
            await task
        finally:
            self._server = self._task = None

    async def __aenter__(self) -> LoopbackServer:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()


class SandboxServer(LoopbackServer):
    """A :class:`Sandbox` on real loopback sockets, in the current event loop.

    >>> async with SandboxServer(sandbox) as server:
    ...     server.faults.add("v1/payout", Fault.drop_after_commit())
    ...     client = AliKassaClient(ACCOUNT, pay, out, base_url=server.url)
    """

    def __init__(
        self, sandbox: Sandbox, *, host: str = "127.0.0.1", port: int = 0, **options: Any
    ) -> None:
        super().__init__(sandbox, host=host, port=port, **options)
        self.sandbox = sandbox

    @property
    def state(self) -> SandboxState:
        return self.sandbox.state

    @property
    def faults(self) -> FaultPlan:
        return self.sandbox.faults

    async def stop(self) -> None:
        # Wake delayed requests first so uvicorn's graceful shutdown does not wait for them.
        await self.sandbox.aclose()
        await super().stop()
        await self.sandbox.aclose()

    async def __aenter__(self) -> SandboxServer:
        await self.start()
        return self


class ThreadedSandboxServer:
    """A :class:`Sandbox` served from its own thread and event loop.

    For blocking clients (``requests``, the vendor's PHP sample in a subprocess that you
    wait for synchronously). Touch the sandbox from the test thread only through
    :meth:`call`, which runs a function on the server's loop.

    >>> with ThreadedSandboxServer(sandbox) as server:
    ...     server.call(sandbox.finalise, "payout", order_id="P-1")
    """

    def __init__(
        self, sandbox: Sandbox, *, host: str = "127.0.0.1", port: int = 0, **options: Any
    ) -> None:
        self.sandbox = sandbox
        self._server = SandboxServer(sandbox, host=host, port=port, **options)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return self._server.url

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="alikassa-sandbox", daemon=True)
        self._thread.start()
        self._ready.wait(30)
        if self._error is not None:
            raise self._error
        if not self._ready.is_set():
            raise RuntimeError("the sandbox thread did not start in 30 s")

    def _run(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        try:
            await self._server.start()
        except BaseException as exc:  # reported to start() in the calling thread
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        try:
            await self._stop.wait()
        finally:
            await self._server.stop()

    def call(self, function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run ``function(*args, **kwargs)`` on the server's loop; return its result."""
        loop = self._loop
        if loop is None:
            raise RuntimeError("server not started")

        async def run() -> T:
            return function(*args, **kwargs)

        return asyncio.run_coroutine_threadsafe(run(), loop).result(30)

    def stop(self) -> None:
        loop, stop, thread = self._loop, self._stop, self._thread
        if loop is not None and stop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(stop.set)
        if thread is not None:
            thread.join(30)
        self._thread = None

    def __enter__(self) -> ThreadedSandboxServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
