"""Transport designs measured before the lane pool was chosen, as bench clients.

The design that won ships in the SDK: ``alikassa_async._transport.LanePoolTransport``
(one single-connection httpx transport per connection, called directly by the
client) and the opt-in aiohttp sender (``AliKassaClient(http_backend="aiohttp")``).
See ``alikassa_async/transport.py`` for why, and benchmarks/README.md for figures.

Kept here for comparison: :class:`ShardedTransport` (K ordinary httpx transports,
least busy first) and ``httpx-aiohttp`` under ``httpx.AsyncClient`` — both measured
and rejected (the second also reports a dropped, already-sent request as
``httpx.ConnectTimeout``, which would re-send a payout).
"""

from __future__ import annotations

import asyncio
import json
import ssl
from collections.abc import AsyncIterator
from typing import Any

import httpx

from alikassa_async._transport import LanePoolTransport

__all__ = ["LanePoolTransport", "ShardedTransport", "aiohttp_transport"]


class ShardedTransport(httpx.AsyncBaseTransport):
    """``shards`` ordinary httpx transports of ``per_shard`` connections, least busy first."""

    def __init__(
        self,
        *,
        shards: int = 8,
        per_shard: int = 13,
        verify: ssl.SSLContext | bool = True,
        **transport_kwargs: Any,
    ) -> None:
        context = (
            verify
            if isinstance(verify, ssl.SSLContext)
            else httpx.create_ssl_context(verify=verify)
        )
        limits = httpx.Limits(max_connections=per_shard, max_keepalive_connections=per_shard)
        self._shards = [
            httpx.AsyncHTTPTransport(verify=context, limits=limits, **transport_kwargs)
            for _ in range(shards)
        ]
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

        return httpx.Response(
            status_code=response.status_code,
            headers=response.headers,
            stream=_Stream(),
            extensions=response.extensions,
        )

    async def aclose(self) -> None:
        for shard in self._shards:
            await shard.aclose()


def aiohttp_transport(
    *,
    max_connections: int = 100,
    keepalive_expiry: float | None = 5.0,
    verify: ssl.SSLContext | bool = True,
) -> httpx.AsyncBaseTransport:
    """The opt-in fast path: ``httpx_aiohttp.AiohttpTransport`` (extra ``[aiohttp]``)."""
    from httpx_aiohttp import AiohttpTransport

    return AiohttpTransport(
        verify=verify,
        trust_env=False,
        limits=httpx.Limits(
            max_connections=max_connections,
            max_keepalive_connections=max_connections,
            keepalive_expiry=keepalive_expiry,
        ),
    )


# ------------------------------------------------------------------ bench clients

try:  # only when imported by the harness (benchmarks/ on sys.path)
    from clients import BenchClient, HttpxClient, SdkClient, _check_created
except ImportError:  # pragma: no cover - imported as a plain module elsewhere
    HttpxClient = None  # type: ignore[assignment,misc]


def _transport_for(variant: str, opts: dict[str, Any]) -> httpx.AsyncBaseTransport:
    max_conn = int(opts.get("max_connections", 100))
    if variant.endswith("sharded"):
        return ShardedTransport(
            shards=int(opts.get("shards", 8)), per_shard=int(opts.get("per_shard", 13))
        )
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
            transport = _transport_for(self.variant, self.opts)
            if "-sdk" in self.variant:
                self.sdk = SdkClient(
                    self.base_url,
                    self.keydir,
                    {**self.opts, "variant": "sdk", "sdk_kwargs": {"transport": transport}},
                )
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
            request = httpx.Request(
                "POST",
                self._target,
                content=body,
                headers=headers,
                extensions={"timeout": self._timeout},
            )
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
