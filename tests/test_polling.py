"""Polling to a final status: backoff through trouble, deadline, cancellation, pool bound."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from alikassa_async import (
    AliKassaClient,
    PaymentStatus,
    PollingTimeoutError,
    RequestValidationError,
    RetryPolicy,
    ServerError,
)
from alikassa_async.polling import poll_until_final

from .conftest import ACCOUNT
from .fake_gateway import FakeGateway, json_response
from .payout_gateway import PayoutGateway

FAST_RETRY = RetryPolicy(max_attempts=2, backoff_base=0.001, backoff_max=0.002,
                         total_timeout=5.0)
QUICK = {"interval": 0.005, "max_interval": 0.02}


@pytest.fixture
def payouts(payout_cert) -> PayoutGateway:
    return PayoutGateway(ACCOUNT, payout_cert)


@pytest.fixture
async def client(payouts, payout_cert):
    async with AliKassaClient(ACCOUNT, payout_cert=payout_cert, transport=payouts.transport(),
                              retry=FAST_RETRY) as client:
        yield client


def _status(payment_status: str, order_id: str = "A-1") -> httpx.Response:
    return json_response(200, {"order_id": order_id, "id": 108465371,
                               "payment_status": payment_status, "amount": "300"})


@pytest.mark.parametrize("final", ["paid", "cancel", "fail"])
async def test_wait_for_payout_returns_each_final_status(client, payouts, final):
    payouts.create("P-1", "100.00")
    payouts.final_status = lambda order_id: final
    payouts.polls_until_final = 3
    status = await client.wait_for_payout(order_id="P-1", timeout=10, **QUICK)
    assert status.payment_status == PaymentStatus(final)
    assert status.payment_status.is_final
    assert status.order_id == "P-1"
    assert payouts.status_calls["P-1"] == 4  # three `wait` answers, then the final one


async def test_trouble_while_polling_never_ends_the_wait_or_reads_as_failure(client, payouts):
    payouts.create("P-1", "100.00")
    # 503, 429 with Retry-After, 404 (not visible yet), a garbled 200, 401, a dropped
    # connection, another 500: each one exhausts the client's own read retries.
    trouble = {
        1: json_response(503, {"message": "down"}), 2: json_response(503, {"message": "down"}),
        3: json_response(429, {}, {"Retry-After": "0.01"}),
        4: json_response(429, {}, {"Retry-After": "0.01"}),
        5: json_response(404, {"message": "Not Found"}),
        6: httpx.Response(200, content=b"<html>maintenance</html>"),
        7: httpx.Response(200, content=b"<html>maintenance</html>"),
        8: json_response(401, {"message": "Invalid signature"}),
        9: json_response(500, {}), 10: json_response(500, {}),
    }
    payouts.status_fault = lambda order_id, n: trouble.get(n)
    status = await client.wait_for_payout(order_id="P-1", timeout=10, **QUICK)
    assert status.payment_status == PaymentStatus.PAID
    assert payouts.status_calls["P-1"] == 11


async def test_wait_for_payment_polls_through_errors_to_final(payment_cert, payout_cert):
    gateway = FakeGateway(ACCOUNT, payment_cert, payout_cert)
    gateway.queue("v1/payment/status", _status("wait"), json_response(503, {}),
                  json_response(503, {}), httpx.ReadTimeout("slow"), httpx.ReadTimeout("slow"),
                  _status("wait"), _status("paid"))
    async with AliKassaClient(ACCOUNT, payment_cert, payout_cert, retry=FAST_RETRY,
                              transport=gateway.transport()) as client:
        status = await client.wait_for_payment(id=108465371, timeout=10, **QUICK)
    assert status.payment_status == PaymentStatus.PAID
    assert gateway.calls("v1/payment/status") == 7


async def test_watch_yields_each_change_once_final_last(payment_cert, payout_cert):
    gateway = FakeGateway(ACCOUNT, payment_cert, payout_cert)
    gateway.queue("v1/payment/status", _status("processing"), _status("processing"),
                  json_response(502, {}), json_response(502, {}), _status("wait"),
                  _status("wait"), _status("cancel"))
    async with AliKassaClient(ACCOUNT, payment_cert, payout_cert, retry=FAST_RETRY,
                              transport=gateway.transport()) as client:
        seen = [s.payment_status async for s in client.watch_payment(order_id="A-1", **QUICK)]
    assert [str(s) for s in seen] == ["processing", "wait", "cancel"]
    assert not seen[0].is_known and not seen[0].is_final  # a future status: keep waiting


async def test_deadline_raises_polling_timeout_with_the_last_status(client, payouts):
    payouts.create("P-1", "100.00")
    payouts.polls_until_final = 10**9  # never final
    with pytest.raises(PollingTimeoutError) as caught:
        await client.wait_for_payout(order_id="P-1", timeout=0.2, **QUICK)
    assert caught.value.last_status.payment_status == PaymentStatus.WAIT
    assert caught.value.last_status.order_id == "P-1"


async def test_deadline_after_only_errors_carries_the_last_error(client, payouts):
    payouts.status_fault = lambda order_id, n: json_response(503, {"message": "down"})
    with pytest.raises(PollingTimeoutError) as caught:
        await client.wait_for_payout(id=1, timeout=0.2, **QUICK)
    assert caught.value.last_status is None
    assert isinstance(caught.value.__cause__, ServerError)
    assert "ServerError" in str(caught.value)


async def test_deadline_cuts_a_request_that_hangs(client, payouts):
    payouts.create("P-1", "100.00")
    payouts.status_fault = lambda order_id, n: json_response(503, {}) if n <= 2 else None
    slow = payouts.handle

    async def hang_after_two_polls(request: httpx.Request) -> httpx.Response:
        if payouts.status_calls["P-1"] >= 2:
            await asyncio.sleep(30)  # this answer would take 30 s
        return await slow(request)

    payouts.handle = hang_after_two_polls  # type: ignore[method-assign]
    with pytest.raises(PollingTimeoutError) as caught:
        await client.wait_for_payout(order_id="P-1", timeout=0.3, **QUICK)
    assert isinstance(caught.value.__cause__, ServerError)  # the last error seen is kept


async def test_cancelling_the_wait_leaves_nothing_running(client, payouts):
    payouts.create("P-1", "100.00")
    payouts.polls_until_final = 10**9
    before = asyncio.all_tasks()
    waiter = asyncio.create_task(
        client.wait_for_payout(order_id="P-1", timeout=None, interval=0.005, max_interval=0.005))
    while payouts.status_calls["P-1"] < 3:  # noqa: ASYNC110 - polling a plain counter
        await asyncio.sleep(0.005)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    calls = payouts.status_calls["P-1"]
    await asyncio.sleep(0.1)
    assert payouts.status_calls["P-1"] == calls  # no poll after the cancellation
    assert asyncio.all_tasks() == before


async def test_leaving_a_watch_early_stops_polling(client, payouts):
    payouts.create("P-1", "100.00")
    payouts.polls_until_final = 10**9
    async for status in client.watch_payout(order_id="P-1", **QUICK):
        assert status.payment_status == PaymentStatus.WAIT
        break
    calls = payouts.status_calls["P-1"]
    await asyncio.sleep(0.05)
    assert payouts.status_calls["P-1"] == calls


async def test_thousands_of_waits_keep_a_bounded_number_of_requests_in_flight(
        client, payouts):
    client.max_status_in_flight = 8
    payouts.delay = 0.001
    for i in range(1000):
        payouts.create(f"P-{i}", "1.00")
    payouts.polls_until_final = 1
    results = await asyncio.gather(*(
        client.wait_for_payout(order_id=f"P-{i}", timeout=60, **QUICK) for i in range(1000)))
    assert {r.payment_status for r in results} == {PaymentStatus.PAID}
    assert payouts.peak_in_flight == 8  # reached, never exceeded


async def test_caller_mistakes_raise_at_once(client, payouts):
    with pytest.raises(RequestValidationError):
        await client.wait_for_payout(timeout=10)  # neither id nor order_id
    with pytest.raises(RequestValidationError):
        await client.wait_for_payout(id=1, order_id="P-1")
    with pytest.raises(ValueError, match="interval"):
        await client.wait_for_payout(id=1, interval=0)
    with pytest.raises(ValueError, match="max_interval"):
        await client.wait_for_payout(id=1, interval=5, max_interval=1)
    assert sum(payouts.status_calls.values()) == 0


async def test_poll_until_final_backs_off_exponentially_with_a_cap(monkeypatch):
    pauses: list[float] = []
    real_sleep = asyncio.sleep

    async def fake_sleep(seconds: float) -> None:
        pauses.append(seconds)
        await real_sleep(0)

    answers = iter(["wait"] * 12 + ["paid"])

    class Answer:
        def __init__(self, value: str) -> None:
            self.payment_status = PaymentStatus(value)

    async def fetch() -> Answer:
        return Answer(next(answers))

    monkeypatch.setattr(asyncio, "sleep", fake_sleep)
    changes = [a async for a in poll_until_final(fetch, timeout=None, interval=1.0,
                                                  max_interval=8.0)]
    assert [str(a.payment_status) for a in changes] == ["wait", "paid"]
    assert len(pauses) == 12
    ceilings = [min(8.0, 1.5**i) for i in range(12)]
    assert all(c / 2 <= p <= c for p, c in zip(pauses, ceilings, strict=True))
    assert max(pauses) <= 8.0 and pauses[-1] >= 4.0  # grew, then held at the cap
