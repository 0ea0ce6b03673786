"""Shared pieces of the sandbox tests: raw signed requests and typical bodies.

The sandbox is tested as a server, so most tests talk to it with plain httpx and
sign the bytes themselves — the SDK's client is only used where its behaviour
against the server is the point.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import httpx

from alikassa_async import Certificate, PaymentRequest, PayoutRequest
from alikassa_async._encoding import php_json_encode
from alikassa_async._signing import SignatureHash

ACCOUNT = "93d5df06-996c-48c3-9847-348d6b580b80"
INVALID = "The given data was invalid."
CARD = "4111111111111111"
PHONE = "79031112233"


def payment_body(
    order_id: str = "A-1",
    amount: object = "500.00",
    service: str = "payment_card_number_rub_hpp",
    **extra: object,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "amount": amount,
        "order_id": order_id,
        "service": service,
        "customer_ip": "18.191.80.10",
        "customer_user_id": "u-42",
    }
    body.update(extra)
    return {k: v for k, v in body.items() if v is not None}


def payout_body(
    order_id: str = "P-1",
    amount: object = "1000.00",
    service: str = "payment_card_rub",
    number: str | None = CARD,
    **extra: object,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "amount": amount,
        "number": number,
        "order_id": order_id,
        "service": service,
    }
    body.update(extra)
    return {k: v for k, v in body.items() if v is not None}


def payment_request(order_id: str = "A-1", amount: str = "500") -> PaymentRequest:
    """A valid hosted-page card payment, as the SDK sends it."""
    return PaymentRequest(
        service="payment_card_number_rub_hpp",
        order_id=order_id,
        amount=Decimal(amount),
        fields={
            "customer_ip": "18.191.80.10",
            "customer_user_id": "u-42",
            "success_redirect_url": "https://shop.example/ok?o=1",
            "desc": "Заказ / 1",
        },
    )


def payout_request(
    order_id: str = "P-1",
    number: str = CARD,
    amount: str = "3000",
    service: str = "payment_card_rub",
) -> PayoutRequest:
    """A valid card payout (or ``service``'s, with ``number``), as the SDK sends it."""
    return PayoutRequest(
        service=service, order_id=order_id, amount=Decimal(amount), fields={"number": number}
    )


class Api:
    """Signed raw requests: ``await api.call("v1/payout", payout_body())``."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        payment: Certificate,
        payout: Certificate,
        account: str = ACCOUNT,
    ) -> None:
        self.http = http
        self.payment = payment
        self.payout = payout
        self.account = account

    async def call(
        self,
        path: str,
        payload: object = None,
        *,
        body: bytes | None = None,
        cert: Certificate | None = None,
        account: str | None = None,
        hash: SignatureHash = "sha1",
        content_type: str = "application/json",
        sign: str | None = None,
        **kwargs: Any,
    ) -> httpx.Response:
        if body is None:
            body = php_json_encode([] if payload is None else payload)
        cert = cert or (self.payment if path.startswith("v1/payment") else self.payout)
        headers = {
            "Content-Type": content_type,
            "Account": account or self.account,
            "Sign": cert.sign(body, hash) if sign is None else sign,
        }
        return await self.http.post("/" + path, content=body, headers=headers, **kwargs)

    async def ok(self, path: str, payload: object = None, **kwargs: Any) -> dict[str, Any]:
        response = await self.call(path, payload, **kwargs)
        assert response.status_code == 200, response.text
        data: dict[str, Any] = response.json()
        return data


async def eventually(condition: Callable[[], bool], limit: float = 10.0) -> None:
    """Wait until ``condition()`` holds (for background work: timers, deliveries)."""
    async with asyncio.timeout(limit):
        while not condition():  # noqa: ASYNC110 - polling state the sandbox has no event for
            await asyncio.sleep(0.01)
