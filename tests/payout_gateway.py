"""A stateful in-memory payout gateway for fast batch and polling unit tests.

An ``httpx.MockTransport`` handler that verifies the ``Account`` and ``Sign``
headers over the bytes received, remembers every payout it created (by
``order_id``), answers status lookups from that memory (404 when absent) and
injects scripted faults per create call. ``creations`` counts how many times
each ``order_id`` was actually created — the number a test of "never paid
twice" checks. The loopback sandbox covers the same ground over real sockets.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import httpx

from alikassa_async import Certificate, Verifier
from alikassa_async.errors import SignatureError

# What to do with one create call: None (create normally) or one of
#   "reject"      400 on amount (nothing created)
#   "auth"        401 (nothing created)
#   "503-before"  503, nothing created           "503-after"   created, then 503
#   "drop-before" connection drops, not created  "drop-after"  created, then dropped
#   "429"         429 Retry-After, not created   "connect"     connection refused
#   "garbage-after" created, then a 200 that is not JSON
Fault = str | None


def _json(status: int, data: Any, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.Response(status, content=json.dumps(data).encode(),
                          headers={"content-type": "application/json", **(headers or {})})


class PayoutGateway:
    def __init__(self, account: str, payout_cert: Certificate) -> None:
        self.account = account
        self.verifier = Verifier.from_pem(payout_cert.public_key_pem())
        self.payouts: dict[str, dict[str, Any]] = {}
        self.by_id: dict[int, str] = {}
        self.creations: Counter[str] = Counter()
        self.create_calls: Counter[str] = Counter()
        self.status_calls: Counter[str] = Counter()
        #: (order_id, nth create call for it, from 1) -> fault
        self.fault: Callable[[str, int], Fault] = lambda order_id, n: None
        #: (order_id, nth status call for it) -> an httpx.Response to answer instead, or None
        self.status_fault: Callable[[str, int], httpx.Response | None] = lambda o, n: None
        #: order_id -> the final status it reaches, and after how many status polls
        self.final_status: Callable[[str], str] = lambda order_id: "paid"
        self.polls_until_final = 0
        #: status lookups answer 404 for this many seconds after a creation (index lag)
        self.invisible_for = 0.0
        self.delay = 0.0
        #: requests being handled right now, and the most at once
        self.in_flight = 0
        self.peak_in_flight = 0
        self._next_id = 100_000_000

    def transport(self) -> httpx.MockTransport:
        # Looked up per request, so a test may wrap `handle` after the client exists.
        return httpx.MockTransport(lambda request: self.handle(request))

    async def handle(self, request: httpx.Request) -> httpx.Response:
        self.in_flight += 1
        self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
        try:
            if self.delay:
                await asyncio.sleep(self.delay)
            return await self._handle(request)
        finally:
            self.in_flight -= 1

    async def _handle(self, request: httpx.Request) -> httpx.Response:
        body = await request.aread()
        if request.headers.get("account") != self.account:
            return _json(403, {"message": "Unknown account"})
        try:
            self.verifier.verify(body, request.headers["sign"])
        except (SignatureError, KeyError):
            return _json(401, {"message": "Invalid signature"})
        path = request.url.path.lstrip("/")
        data = json.loads(body)
        if path == "v1/payout":
            return self._create(data)
        if path == "v1/payout/status":
            return self._status(data)
        return _json(404, {"message": "Not Found"})

    def create(self, order_id: str, amount: str) -> dict[str, Any]:
        self._next_id += 1
        record = {"id": self._next_id, "order_id": order_id, "amount": amount, "polls": 0,
                  "created_at": time.monotonic()}
        self.payouts[order_id] = record
        self.by_id[self._next_id] = order_id
        self.creations[order_id] += 1
        return record

    def _create(self, data: dict[str, Any]) -> httpx.Response:
        order_id = data["order_id"]
        self.create_calls[order_id] += 1
        fault = self.fault(order_id, self.create_calls[order_id])
        if fault == "connect":
            raise httpx.ConnectError("connection refused")
        if fault == "reject":
            return _json(400, {"message": "The given data was invalid.",
                               "errors": {"amount": ["Insufficient funds."]}})
        if fault == "auth":
            return _json(401, {"message": "Invalid signature"})
        if fault == "503-before":
            return _json(503, {"message": "Service Unavailable"})
        if fault == "429":
            return _json(429, {"message": "Too Many Attempts."}, {"Retry-After": "0.05"})
        if fault == "drop-before":
            raise httpx.RemoteProtocolError("peer closed connection")
        if order_id in self.payouts:
            return _json(400, {"message": "The given data was invalid.",
                               "errors": {"order_id": ["The order id has already been taken."]}})
        record = self.create(order_id, data["amount"])
        if fault == "503-after":
            return _json(503, {"message": "Service Unavailable"})
        if fault == "drop-after":
            raise httpx.ReadError("connection reset by peer")
        if fault == "garbage-after":
            return httpx.Response(200, content=b"<html>oops</html>")
        return _json(200, {"payment_status": "wait", "id": record["id"]})

    def _status(self, data: dict[str, Any]) -> httpx.Response:
        if "id" in data:
            order_id = self.by_id.get(int(data["id"]), "")
        else:
            order_id = data["order_id"]
        self.status_calls[order_id] += 1
        scripted = self.status_fault(order_id, self.status_calls[order_id])
        if scripted is not None:
            return scripted
        record = self.payouts.get(order_id)
        if record is None:
            return _json(404, {"message": "Not Found"})
        if time.monotonic() - record["created_at"] < self.invisible_for:
            return _json(404, {"message": "Not Found"})
        record["polls"] += 1
        status = ("wait" if record["polls"] <= self.polls_until_final
                  else self.final_status(order_id))
        return _json(200, {"order_id": order_id, "id": record["id"], "payment_status": status,
                           "amount": record["amount"], "payment_amount": record["amount"],
                           "is_partial_payment": False, "service_code": "payment_card_rub"})
