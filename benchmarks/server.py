"""A minimal verifying AliKassa stand-in for benchmarks: raw asyncio HTTP/1.1, loopback only.

Run by ``run.py`` in its own process (so its CPU never counts against a client)::

    python benchmarks/server.py --public-key /tmp/k/public.pem --delay-ms 50 --verify-every 1

It prints ``PORT <n>`` once listening on 127.0.0.1, answers every ``POST /v1/...``
with the documented JSON after checking the ``Sign`` header over the raw body
(every request, every K-th, or never: ``--verify-every``), and counts what it saw.
``GET /_stats`` returns the counters and the server's own CPU time; ``POST /_reset``
zeroes them. It exits when its stdin closes, so it cannot outlive ``run.py``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import time
from collections import Counter
from typing import Any

from alikassa_async._errors import SignatureError
from alikassa_async._signing import Verifier

__all__ = ["BenchServer", "main"]

MAX_HEAD = 64 * 1024
MAX_BODY = 1024 * 1024
_INVALID = b'{"message":"The given data was invalid.","errors":{"order_id":["%s"]}}'


def _payout_status(order_id: str, ident: int) -> dict[str, Any]:
    return {
        "order_id": order_id,
        "id": ident,
        "payment_status": "wait",
        "amount": "1000.44",
        "payment_amount": "1000.44",
        "is_partial_payment": False,
        "account_payment_amount": "1010.44",
        "commission_amount": "10.00",
        "service_code": "payment_card_rub",
        "rrn": None,
    }


class BenchServer:
    """Shared state: verifier, delay, counters, and the documented answers."""

    def __init__(self, verifier: Verifier | None, delay: float, verify_every: int) -> None:
        self.verifier = verifier
        self.delay = delay
        self.verify_every = verify_every
        self.counts: Counter[str] = Counter()
        self.order_ids: set[str] = set()
        self.next_id = 100_000_000
        self.connections = 0
        self.open_connections = 0

    def reset(self) -> None:
        self.counts.clear()
        self.order_ids.clear()
        self.connections = 0

    def stats(self) -> dict[str, Any]:
        return {
            **self.counts,
            "cpu_seconds": time.process_time(),
            "connections": self.connections,
            "open_connections": self.open_connections,
            "pid": os.getpid(),
            "delay_ms": self.delay * 1000,
            "verify_every": self.verify_every,
        }

    def answer(
        self, method: str, path: str, headers: dict[bytes, bytes], body: bytes
    ) -> tuple[int, bytes]:
        if method == "GET" and path == "/_stats":
            return 200, json.dumps(self.stats()).encode()
        if method == "POST" and path == "/_reset":
            self.reset()
            return 200, b"{}"
        if method != "POST" or not path.startswith("/v1/"):
            return 404, b'{"message":"Not Found"}'
        counts = self.counts
        counts["requests"] += 1
        if not headers.get(b"account"):
            counts["no_account"] += 1
            return 401, b'{"message":"Account header missing"}'
        if (
            self.verifier is not None
            and self.verify_every
            and (counts["requests"] % self.verify_every == 0)
        ):
            try:
                counts["verified_" + self.verifier.verify(body, headers.get(b"sign", b""))] += 1
            except SignatureError:
                counts["bad_sign"] += 1
                return 401, b'{"message":"Invalid sign"}'
        try:
            payload = json.loads(body) if body else []
        except ValueError:
            counts["bad_json"] += 1
            return 400, b'{"message":"The given data was invalid.","errors":{"body":["json"]}}'
        self.next_id += 1
        endpoint = path[4:]
        counts["ep_" + endpoint] += 1
        if endpoint in ("payout", "payment"):
            order_id = payload.get("order_id") if isinstance(payload, dict) else None
            if not isinstance(order_id, str):
                return 400, _INVALID % b"required"
            if order_id in self.order_ids:
                counts["duplicate_order_id"] += 1  # a client that re-sent a create
                return 400, _INVALID % b"used"
            self.order_ids.add(order_id)
            if endpoint == "payout":
                return 200, b'{"payment_status":"wait","id":%d}' % self.next_id
            return 200, json.dumps(
                {
                    "url": f"https://pay-merchant.alikassa.com/bench-{self.next_id}",
                    "payment_status": "wait",
                    "id": self.next_id,
                    "uuid": f"00000000-0000-4000-8000-{self.next_id:012d}",
                    "success_redirect_url": None,
                }
            ).encode()
        if endpoint in ("payout/status", "payment/status"):
            key = payload if isinstance(payload, dict) else {}
            return 200, json.dumps(
                _payout_status(str(key.get("order_id", "o")), int(key.get("id", self.next_id)))
            ).encode()
        if endpoint == "account/balance":
            return 200, (
                b'{"currency":"RUB","balance":"93.84000000","hold":"0.00000000",'
                b'"rolling_reserve":"0.00000000","pending_payouts":"0.00000000"}'
            )
        if endpoint == "account/info":
            return 200, (
                b'{"is_allowed_payment":true,"is_allowed_payout":true,"payments":'
                b'[{"method":"payment_card","currency":"RUB","service_code":'
                b'"payment_card_rub_hpp","status":"active"}],"payouts":[{"method":'
                b'"payment_card","currency":"RUB","service_code":"payment_card_rub",'
                b'"status":"active"}]}'
            )
        if endpoint == "payment/history":
            return 200, b'{"data":[],"current_page":1,"last_page":1}'
        return 404, b'{"message":"Not Found"}'


_REASONS = {
    200: b"OK",
    400: b"Bad Request",
    401: b"Unauthorized",
    404: b"Not Found",
    411: b"Length Required",
    413: b"Payload Too Large",
}


class HTTPProtocol(asyncio.Protocol):
    """HTTP/1.1 keep-alive with Content-Length bodies; that is all the clients send."""

    def __init__(self, server: BenchServer) -> None:
        self.server = server
        self.buf = bytearray()
        self.head: tuple[str, str, dict[bytes, bytes], bool] | None = None
        self.need = 0
        self.transport: asyncio.Transport | None = None
        self.last_due = 0.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.server.connections += 1
        self.server.open_connections += 1

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.open_connections -= 1
        self.transport = None

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while self.transport is not None:
            if self.head is None:
                end = self.buf.find(b"\r\n\r\n")
                if end < 0:
                    if len(self.buf) > MAX_HEAD:
                        self._fail(413)
                    return
                lines = bytes(self.buf[:end]).split(b"\r\n")
                del self.buf[: end + 4]
                try:
                    method, target, _version = lines[0].decode("latin-1").split(" ", 2)
                except ValueError:
                    self._fail(400)
                    return
                headers: dict[bytes, bytes] = {}
                for line in lines[1:]:
                    name, _, value = line.partition(b":")
                    headers[name.strip().lower()] = value.strip()
                if b"transfer-encoding" in headers:
                    self._fail(411)
                    return
                self.need = int(headers.get(b"content-length", b"0") or 0)
                if self.need > MAX_BODY:
                    self._fail(413)
                    return
                close = headers.get(b"connection", b"").lower() == b"close"
                self.head = (method, target.split("?", 1)[0], headers, close)
            if len(self.buf) < self.need:
                return
            body = bytes(self.buf[: self.need])
            del self.buf[: self.need]
            method, path, headers, close = self.head
            self.head = None
            status, payload = self.server.answer(method, path, headers, body)
            response = b"".join(
                (
                    b"HTTP/1.1 %d %s\r\nContent-Type: application/json\r\n"
                    % (status, _REASONS.get(status, b"Error")),
                    b"Content-Length: %d\r\n" % len(payload),
                    b"Connection: close\r\n\r\n" if close else b"\r\n",
                    payload,
                )
            )
            if self.server.delay and path.startswith("/v1/"):
                loop = asyncio.get_running_loop()
                # Keep answers on one connection in order even if a client pipelines.
                due = max(loop.time() + self.server.delay, self.last_due + 1e-6)
                self.last_due = due
                loop.call_at(due, self._write, response, close)
            else:
                self._write(response, close)

    def _write(self, response: bytes, close: bool) -> None:
        if self.transport is None:
            return
        self.transport.write(response)
        if close:
            self.transport.close()

    def _fail(self, status: int) -> None:
        self._write(
            b"HTTP/1.1 %d %s\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            % (status, _REASONS.get(status, b"Error")),
            True,
        )


async def serve(args: argparse.Namespace) -> None:
    verifier = Verifier.from_file(args.public_key) if args.public_key else None
    state = BenchServer(verifier, args.delay_ms / 1000.0, args.verify_every)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: HTTPProtocol(state), "127.0.0.1", args.port, backlog=4096, reuse_address=True
    )
    port = server.sockets[0].getsockname()[1]
    print(f"PORT {port}", flush=True)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    # Exit when the parent goes away (stdin closes), even if it was SIGKILLed.
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    watch = asyncio.create_task(reader.read())
    waiter = asyncio.create_task(stop.wait())
    await asyncio.wait({watch, waiter}, return_when=asyncio.FIRST_COMPLETED)
    server.close()
    watch.cancel()
    waiter.cancel()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--public-key", help="public.pem to verify Sign with (omit: no checks)")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--delay-ms", type=float, default=0.0)
    parser.add_argument(
        "--verify-every",
        type=int,
        default=1,
        help="verify every K-th request's signature (0: never)",
    )
    parser.add_argument("--uvloop", action="store_true", help="use uvloop if installed")
    args = parser.parse_args(argv)
    if args.uvloop:
        try:
            import uvloop
        except ImportError:
            print("uvloop not installed; using asyncio", file=sys.stderr)
        else:
            uvloop.install()
    asyncio.run(serve(args))


if __name__ == "__main__":
    main()
