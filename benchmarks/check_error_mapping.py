"""Does a transport option keep "sent once, outcome unknown" when the server drops a payout?

    python benchmarks/check_error_mapping.py

A loopback server reads each payout request completely, then closes the
connection without answering (the request may have taken effect). The SDK
must raise ``OutcomeUnknownError`` and must not send the payout again. Also
checks that a refused connection (nothing sent) is reported as a transport
error. Prints one line per transport option; exits 1 if any option re-sends.
"""

from __future__ import annotations

import asyncio
import sys
from decimal import Decimal
from typing import Any

from alikassa_async import AliKassaClient, Certificate, PayoutRequest

ACCOUNT = "93d5df06-996c-48c3-9847-348d6b580b80"


def _options() -> dict[str, Any]:
    import httpx
    import httpx_aiohttp

    return {
        "default (lane pool)": lambda: {},
        'http_backend="aiohttp"': lambda: {"http_backend": "aiohttp"},
        "transport=httpx.AsyncHTTPTransport()": lambda: {"transport": httpx.AsyncHTTPTransport()},
        # Rejected: reports a dropped, already-sent request as httpx.ConnectTimeout.
        "transport=httpx_aiohttp.AiohttpTransport()": (
            lambda: {"transport": httpx_aiohttp.AiohttpTransport()}
        ),
    }


async def main() -> int:
    received = 0

    async def drop_after_reading(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        nonlocal received
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(
            (
                int(line.split(b":")[1])
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length:")
            ),
            0,
        )
        await reader.readexactly(length)
        received += 1
        writer.close()

    server = await asyncio.start_server(drop_after_reading, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    from cryptography.hazmat.primitives.asymmetric import rsa

    cert = Certificate(rsa.generate_private_key(public_exponent=65537, key_size=2048))
    request = PayoutRequest(
        service="payment_card_rub",
        order_id="check-1",
        amount=Decimal("10.00"),
        fields={"number": "4276000011112222"},
    )
    resent = False
    if True:
        for name, kwargs in _options().items():
            for target, label in (
                (f"http://127.0.0.1:{port}/", "dropped after receipt"),
                ("http://127.0.0.1:1/", "connection refused"),
            ):
                received = 0
                async with AliKassaClient(
                    ACCOUNT, payout_cert=cert, base_url=target, **kwargs()
                ) as client:
                    try:
                        await client.create_payout(request)
                        outcome = "no error?!"
                    except Exception as exc:
                        outcome = type(exc).__name__
                bad = label.startswith("dropped") and (
                    received > 1 or outcome != "OutcomeUnknownError"
                )
                resent = resent or bad
                print(
                    f"{'FAIL' if bad else 'ok  '} {name:<45} {label:<22} -> {outcome:<22}"
                    f" server received it {received}x"
                )
    server.close()
    await server.wait_closed()
    return 1 if resent else 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
