"""An in-process fake gateway for the client's unit tests (httpx.MockTransport).

It verifies the ``Account`` header and the ``Sign`` header over the exact bytes
it received, with the public key of the certificate the route requires, and
answers with scripted responses. The loopback sandbox covers the same ground
over real sockets; this one lets a test script one precise answer.
"""

from __future__ import annotations

import json
from collections import defaultdict, deque
from collections.abc import Callable
from typing import Any

import httpx

from alikassa_async import Certificate, Verifier
from alikassa_async.errors import SignatureError

Answer = httpx.Response | Exception | Callable[[httpx.Request], httpx.Response]

DEFAULTS: dict[str, Any] = {
    "v1/payment": {"url": "https://pay-merchant.alikassa.com/u-1", "payment_status": "wait",
                   "id": 108465371, "uuid": "bd291fe1-0000-4000-8000-000000000001",
                   "success_redirect_url": None},
    "v1/payment/status": {"order_id": "A-1", "id": 108465371, "payment_status": "paid",
                          "amount": "300", "payment_amount": "350", "hold_at": None,
                          "account_payment_amount": "290", "commission_amount": "10",
                          "service_code": "payment_card_number_rub_hpp",
                          "account_old_balance": "93.84000000",
                          "account_new_balance": "383.84000000"},
    "v1/payment/history": {"data": [], "meta": {"current_page": 1, "last_page": 1}},
    "v1/payout": {"payment_status": "wait", "id": 100001524},
    "v1/payout/status": {"order_id": "P-1", "id": 100001524, "payment_status": "paid",
                         "amount": "3000.00", "payment_amount": "3000.00",
                         "is_partial_payment": False, "RRN": "11111111111",
                         "commission_amount": "10"},
    "v1/account/balance": {"currency": "RUB", "balance": "93.84000000", "hold": "0.00000000",
                           "rolling_reserve": "0.00000000", "pending_payouts": "1234.00000000"},
    "v1/account/info": {"is_allowed_payment": True, "is_allowed_payout": True,
                        "payments": [{"method": "payment_card", "currency": "RUB",
                                      "service_code": "payment_card_rub_hpp",
                                      "status": "active"}],
                        "payouts": [{"method": "payment_card", "currency": "RUB",
                                     "service_code": "payment_card_rub", "status": "active"}]},
}

ROUTE_CERT = {
    "v1/payment": "payment", "v1/payment/status": "payment", "v1/payment/history": "payment",
    "v1/payout": "payout", "v1/payout/status": "payout",
    "v1/account/balance": "payout", "v1/account/info": "payout",
}


def json_response(status: int, data: Any, headers: dict[str, str] | None = None
                  ) -> httpx.Response:
    return httpx.Response(status, content=json.dumps(data).encode(),
                          headers={"content-type": "application/json", **(headers or {})})


class FakeGateway:
    def __init__(self, account: str, payment: Certificate, payout: Certificate) -> None:
        self.account = account
        self.verifiers = {"payment": Verifier.from_pem(payment.public_key_pem()),
                          "payout": Verifier.from_pem(payout.public_key_pem())}
        self.script: dict[str, deque[Answer]] = defaultdict(deque)
        self.received: list[tuple[str, bytes, httpx.Headers, str]] = []

    def queue(self, path: str, *answers: Answer) -> None:
        self.script[path].extend(answers)

    def calls(self, path: str) -> int:
        return sum(1 for p, *_ in self.received if p == path)

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.handle)

    def handle(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path.lstrip("/")
        body = request.content
        if request.headers.get("account") != self.account:
            return json_response(403, {"message": "Unknown account"})
        try:
            hash_used = self.verifiers[ROUTE_CERT[path]].verify(body, request.headers["sign"])
        except (SignatureError, KeyError):
            return json_response(401, {"message": "Invalid signature"})
        self.received.append((path, body, request.headers, hash_used))
        if self.script[path]:
            answer = self.script[path].popleft()
            if isinstance(answer, Exception):
                raise answer
            if callable(answer) and not isinstance(answer, httpx.Response):
                return answer(request)
            return answer
        return json_response(200, DEFAULTS[path])
