"""How long a big answer blocks the event loop while the SDK reads and parses it.

    python benchmarks/big_answers.py            # prints a table; nothing leaves the process

An ``httpx.MockTransport`` serves ``account_info`` and history answers of growing size;
a ticker coroutine sleeping 0.5 ms records the longest gap between its wake-ups while
one call runs (its baseline, with nothing else running, is ~1-2 ms). Answers over an
endpoint's cap are refused before parsing (``TransportError``); answers over 64 KiB
are parsed in a worker thread, so the loop is blocked only while json's C parser holds
the GIL. Median of three runs per size.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import time
from collections.abc import Awaitable, Callable

import httpx
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from alikassa_async import AliKassaClient, AliKassaError, Certificate, RetryPolicy

ACCOUNT = "93d5df06-996c-48c3-9847-348d6b580b80"
SERVICE = {
    "service_code": "payment_card_rub_hpp",
    "method": "card",
    "currency": "RUB",
    "status": "active",
}
ROW = {
    "id": 123456,
    "order_id": "A-1",
    "payment_status": "paid",
    "amount": "100.00",
    "payment_amount": "100.00",
    "service": "payment_card_rub_hpp",
    "created_at": "2024-01-01 00:00:00",
}


def account_info(size: int) -> bytes:
    count = size // (len(json.dumps(SERVICE)) + 2)
    return json.dumps(
        {
            "is_allowed_payment": True,
            "is_allowed_payout": True,
            "payments": [SERVICE] * count,
            "payouts": [],
        }
    ).encode()


def history(size: int) -> bytes:
    count = size // (len(json.dumps(ROW)) + 2)
    return json.dumps({"data": [ROW] * count, "meta": {"current_page": 1, "last_page": 1}}).encode()


async def one_call(
    cert: Certificate, body: bytes, call: Callable[[AliKassaClient], Awaitable[object]]
) -> tuple[float, str]:
    gaps: list[float] = []
    done = asyncio.Event()

    async def tick() -> None:
        last = time.perf_counter()
        while not done.is_set():
            await asyncio.sleep(0.0005)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    transport = httpx.MockTransport(lambda request: httpx.Response(200, content=body))
    async with AliKassaClient(
        ACCOUNT, cert, cert, transport=transport, retry=RetryPolicy.disabled()
    ) as client:
        ticker = asyncio.create_task(tick())
        await asyncio.sleep(0.02)
        try:
            await call(client)
            outcome = "parsed"
        except AliKassaError as exc:
            outcome = type(exc).__name__
        done.set()
        await ticker
    return max(gaps) * 1000, outcome


async def main() -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    cert = Certificate.from_pem(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    print("| endpoint | answer | longest loop block (median of 3) | outcome |")
    print("|---|---|---|---|")
    cases: list[tuple[str, Callable[[int], bytes], Callable[[AliKassaClient], Awaitable[object]]]]
    cases = [
        ("account_info", account_info, lambda c: c.account_info()),
        ("payment_history_page", history, lambda c: c.payment_history_page()),
    ]
    for name, make, call in cases:
        for size in (64 * 1024, 256 * 1024, 900 * 1024, 1800 * 1024, 7800 * 1024):
            body = make(size)
            runs = [await one_call(cert, body, call) for _ in range(3)]
            block = statistics.median(r[0] for r in runs)
            print(f"| {name} | {len(body) / 1048576:.2f} MiB | {block:.1f} ms | {runs[0][1]} |")


if __name__ == "__main__":
    asyncio.run(main())
