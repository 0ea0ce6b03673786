"""The clients the harness measures, each behind one tiny interface.

Every client sends one signed ``POST v1/payout`` per :meth:`payout` call and
checks the answer is a 200 ``{"payment_status":"wait","id":N}``. They differ
only in how they hold the key, sign and talk HTTP:

===================  =============================================================
name                 what it is
===================  =============================================================
vendor               the vendor's Python sample: ``requests.post``, key re-read and
                     decrypted from disk on every call, sequential (1 in flight)
httpx                hand-written baseline: one ``httpx.AsyncClient``
                     (max_connections=100, httpx's default keep-alive 20), key
                     cached, body encoded and signed once, ``content=``
aiohttp              hand-written baseline: one ``aiohttp.ClientSession``
                     (limit=100), same signing
builtin-direct       hand-written on the SDK's built-in sender (no client pipeline),
                     same signing: the yardstick for the SDK's own per-call overhead
sdk                  ``AliKassaClient.create_payout`` with its defaults (the built-in
                     HTTP/1.1 sender)
sdk-httpx            ``AliKassaClient(http_backend="httpx")``: httpx on the lane pool
sdk-aiohttp          ``AliKassaClient`` on the aiohttp transport (see SDK_VARIANTS)
===================  =============================================================

Phase-2 prototypes (``PROTOTYPES``) are hand-written variants of the httpx client
used to choose the SDK's transport design; ``proposed_transport.py`` holds the
chosen design. ``sign_threads`` > 0 signs in a thread pool instead of on the loop.

Plug-in point for new SDK options: add an entry to :data:`SDK_VARIANTS`.
"""

from __future__ import annotations

import asyncio
import base64
import inspect
import json
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

__all__ = ["CLIENTS", "PROTOTYPES", "SDK_VARIANTS", "BenchClient", "make_client", "payout_payload"]

ACCOUNT = "93d5df06-996c-48c3-9847-348d6b580b80"
#: what ``fake_sign=1`` sends instead of a signature (the length of an RSA-2048 one)
FAKE_SIGN = "A" * 344
_HASHES = {"sha1": hashes.SHA1, "sha256": hashes.SHA256}


def payout_payload(order_id: str) -> dict[str, str]:
    """The documented payout body, in documented key order (about 140 bytes)."""
    return {
        "amount": "1000.44",
        "number": "4276000011112222",
        "order_id": order_id,
        "service": "payment_card_rub",
        "customer_phone": "79001112233",
    }


def _check_created(status: int, data: Any) -> None:
    if status != 200 or not isinstance(data, dict) or data.get("payment_status") != "wait":
        raise RuntimeError(f"unexpected answer: HTTP {status} {str(data)[:120]}")


def load_key(keydir: Path) -> rsa.RSAPrivateKey:
    """What every cached-key client does once at start-up (decrypt + consistency check)."""
    password = (keydir / "password.txt").read_bytes().strip()
    key = serialization.load_pem_private_key((keydir / "private.pem").read_bytes(), password)
    assert isinstance(key, rsa.RSAPrivateKey)
    return key


class BenchClient:
    """Interface: ``await start()``, ``await payout(order_id)`` many times, ``await close()``."""

    name = "?"
    #: clients that cannot run concurrently (the vendor sample) set this to 1
    max_inflight: int | None = None

    def __init__(self, url: str, keydir: Path, opts: dict[str, Any]) -> None:
        self.url = url.rstrip("/") + "/v1/payout"
        self.base_url = url
        self.keydir = keydir
        self.opts = opts
        self.hash = _HASHES[opts.get("hash", "sha1")]
        self._pool: ThreadPoolExecutor | None = None
        threads = int(opts.get("sign_threads", 0))
        if threads:
            self._pool = ThreadPoolExecutor(threads, thread_name_prefix="sign")

    async def start(self) -> None:
        self.key = load_key(self.keydir)

    def _sign_now(self, body: bytes) -> str:
        if self.opts.get("fake_sign"):  # instructions.py --no-sign: HTTP and SDK work only
            return FAKE_SIGN
        return base64.b64encode(self.key.sign(body, padding.PKCS1v15(), self.hash())).decode()

    async def sign(self, body: bytes) -> str:
        if self._pool is None:
            return self._sign_now(body)
        return await asyncio.get_running_loop().run_in_executor(self._pool, self._sign_now, body)

    async def _signed(self, order_id: str) -> tuple[bytes, dict[str, str]]:
        body = json.dumps(payout_payload(order_id), separators=(",", ":")).encode()
        headers = {
            "Content-Type": "application/json",
            "Account": ACCOUNT,
            "Sign": await self.sign(body),
        }
        return body, headers

    async def payout(self, order_id: str) -> None:
        raise NotImplementedError

    async def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)


class VendorClient(BenchClient):
    """The vendor's Python sample, as published: blocking, key loaded per call."""

    name = "vendor"
    max_inflight = 1

    async def start(self) -> None:
        import requests

        self._requests = requests

    async def payout(self, order_id: str) -> None:
        # Blocking on purpose: this is what the sample does (sequential by design).
        password = (self.keydir / "password.txt").read_text().strip()
        pem = (self.keydir / "private.pem").read_bytes()
        key = serialization.load_pem_private_key(pem, password=password.encode())
        assert isinstance(key, rsa.RSAPrivateKey)
        data = payout_payload(order_id)
        sign = base64.b64encode(
            key.sign(json.dumps(data).encode(), padding.PKCS1v15(), self.hash())
        ).decode()
        response = self._requests.post(
            self.url,
            json=data,
            timeout=30,
            headers={"Content-Type": "application/json", "Account": ACCOUNT, "Sign": sign},
        )
        _check_created(response.status_code, response.json())


class HttpxClient(BenchClient):
    """One or more ``httpx.AsyncClient``s (round-robin), optionally behind a semaphore."""

    name = "httpx"

    async def start(self) -> None:
        import httpx

        await super().start()
        shards = int(self.opts.get("shards", 1))
        max_conn = int(self.opts.get("max_connections", 100))
        keepalive = self.opts.get("max_keepalive_connections", 20)
        limits = httpx.Limits(max_connections=max_conn, max_keepalive_connections=keepalive)
        transport = self.opts.get("transport")
        self.clients = []
        for _ in range(shards):
            kwargs: dict[str, Any] = {"limits": limits, "trust_env": False}
            if transport == "aiohttp":
                from httpx_aiohttp import AiohttpTransport

                kwargs["transport"] = AiohttpTransport(limits=limits, trust_env=False)
            self.clients.append(httpx.AsyncClient(**kwargs))
        self._next = 0
        bound = self.opts.get("semaphore")
        self._sem = asyncio.Semaphore(int(bound)) if bound else None

    async def payout(self, order_id: str) -> None:
        body, headers = await self._signed(order_id)
        client = self.clients[self._next]
        self._next = (self._next + 1) % len(self.clients)
        if self._sem is not None:
            async with self._sem:
                response = await client.post(self.url, content=body, headers=headers)
        else:
            response = await client.post(self.url, content=body, headers=headers)
        _check_created(response.status_code, response.json())

    async def close(self) -> None:
        for client in self.clients:
            await client.aclose()
        await super().close()


class AiohttpClient(BenchClient):
    """One ``aiohttp.ClientSession`` with a 100-connection connector."""

    name = "aiohttp"

    async def start(self) -> None:
        import aiohttp

        await super().start()
        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=int(self.opts.get("max_connections", 100)))
        )

    async def payout(self, order_id: str) -> None:
        body, headers = await self._signed(order_id)
        async with self.session.post(self.url, data=body, headers=headers) as response:
            raw = await response.read()
            _check_created(response.status, json.loads(raw))

    async def close(self) -> None:
        await self.session.close()
        await super().close()


class BuiltinDirectClient(BenchClient):
    """Hand-written against the SDK's built-in sender: no AliKassaClient pipeline, same
    signing as the baselines. ``sdk`` minus this is the SDK's per-call overhead on the
    built-in backend, as ``sdk-aiohttp`` minus ``aiohttp`` is on aiohttp."""

    name = "builtin-direct"

    async def start(self) -> None:
        import httpx

        from alikassa_async._builtin_sender import BuiltinSender

        await super().start()
        self.sender = BuiltinSender(
            max_connections=100,
            max_keepalive_connections=None,
            keepalive_expiry=5.0,
            timeout=httpx.Timeout(30.0),
            ssl_context=True,
        )

    async def payout(self, order_id: str) -> None:
        body, headers = await self._signed(order_id)
        answer = await self.sender.post(self.url, body, headers, None, None)
        _check_created(answer.status_code, json.loads(answer.body))

    async def close(self) -> None:
        await self.sender.aclose()
        await super().close()


def _sdk_httpcore_pool() -> dict[str, Any]:
    """The SDK on httpx's own pooled transport: what the lane pool replaced."""
    import httpx

    return {
        "transport": httpx.AsyncHTTPTransport(
            limits=httpx.Limits(max_connections=100, max_keepalive_connections=20)
        )
    }


#: SDK configurations measured as "sdk-<name>". Each returns extra AliKassaClient kwargs;
#: it runs inside the event loop, so it may build transports.
SDK_VARIANTS: dict[str, Callable[[], dict[str, Any]]] = {
    "sdk": dict,
    "sdk-aiohttp": lambda: {"http_backend": "aiohttp"},
    "sdk-httpx": lambda: {"http_backend": "httpx"},
    "sdk-httpcore-pool": _sdk_httpcore_pool,
}


class SdkClient(BenchClient):
    """``AliKassaClient.create_payout`` with a PayoutRequest built per call."""

    name = "sdk"
    client_class: Any = None  # a prototype subclass may be plugged in here
    extra_kwargs: dict[str, Any] = {}  # noqa: RUF012 - replaced, never mutated

    async def start(self) -> None:
        from alikassa_async import AliKassaClient, Certificate, PayoutRequest

        if self.client_class is not None:
            AliKassaClient = self.client_class

        self._request_cls = PayoutRequest
        cert = Certificate.from_dir(self.keydir)
        kwargs = SDK_VARIANTS[self.opts["variant"]]()
        kwargs.update(self.opts.get("sdk_kwargs", {}))
        kwargs.update(self.extra_kwargs)
        if (
            self.opts.get("sign_threads")
            and "sign_threads" in inspect.signature(AliKassaClient).parameters
        ):
            kwargs["sign_threads"] = int(self.opts["sign_threads"])
        self.client = AliKassaClient(
            ACCOUNT,
            payout_cert=cert,
            base_url=self.base_url,
            signature_hash=self.opts.get("hash", "sha1"),
            **kwargs,
        )
        await self.client.__aenter__()
        if self.opts.get("fake_sign"):

            async def fake_signature(cert: Any, body: bytes) -> str:
                return FAKE_SIGN

            self.client._signature = fake_signature

    def request(self, order_id: str) -> Any:
        data = payout_payload(order_id)
        return self._request_cls(
            service=data["service"],
            order_id=order_id,
            amount=Decimal(data["amount"]),
            fields={"number": data["number"], "customer_phone": data["customer_phone"]},
        )

    async def payout(self, order_id: str) -> None:
        created = await self.client.create_payout(self.request(order_id))
        if created.id <= 0:
            raise RuntimeError(f"unexpected answer: {created!r}")

    async def close(self) -> None:
        await self.client.aclose()
        await super().close()


#: Hand-written transport designs that were tried (name -> (class, options)).
PROTOTYPES: dict[str, tuple[type[BenchClient], dict[str, Any]]] = {
    # fixes httpcore's keep-alive miscount (idle conns closed while > 20 are open)
    "httpx-ka100": (HttpxClient, {"max_keepalive_connections": 100}),
    # the "16 small clients": 16 x 7 connections, round-robin
    "httpx-shard16x7": (HttpxClient, {"shards": 16, "max_connections": 7}),
    "httpx-shard8x13": (
        HttpxClient,
        {"shards": 8, "max_connections": 13, "max_keepalive_connections": 13},
    ),
    "httpx-shard4x25": (
        HttpxClient,
        {"shards": 4, "max_connections": 25, "max_keepalive_connections": 25},
    ),
    # bound in-flight below the pool so httpcore never queues (its queue path is quadratic)
    "httpx-ka100-sem": (HttpxClient, {"max_keepalive_connections": 100, "semaphore": 100}),
    "httpx-sem32": (HttpxClient, {"max_keepalive_connections": 100, "semaphore": 32}),
    "httpx-aiohttp": (HttpxClient, {"transport": "aiohttp"}),
}

CLIENTS: dict[str, tuple[type[BenchClient], dict[str, Any]]] = {
    "vendor": (VendorClient, {}),
    "httpx": (HttpxClient, {}),
    "aiohttp": (AiohttpClient, {}),
    "builtin-direct": (BuiltinDirectClient, {}),
    **{name: (SdkClient, {"variant": name}) for name in SDK_VARIANTS},
    **PROTOTYPES,
}


def make_client(name: str, url: str, keydir: Path, opts: dict[str, Any]) -> BenchClient:
    """``name`` from CLIENTS, with per-run options (hash, sign_threads, ...) merged in."""
    if name == "proposed" or name.startswith("proposed-"):
        from proposed_transport import ProposedClient

        client: BenchClient = ProposedClient(url, keydir, opts, variant=name)
        return client
    cls, preset = CLIENTS[name]
    client = cls(url, keydir, {**preset, **opts})
    client.name = name
    return client
