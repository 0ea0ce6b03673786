"""Polling to a final status against the sandbox: backoff through trouble, deadline,
cancellation, pool bound."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from alikassa_async import PaymentStatus, PollingTimeoutError, RequestValidationError, ServerError
from alikassa_async._polling import poll_until_final
from alikassa_async.sandbox import Fault, Sandbox

from .conftest import FAST_RETRY
from .sandbox_helpers import eventually, payment_request, payout_request
from .wire import PASS, Wire, after, relabel

QUICK = {"interval": 0.005, "max_interval": 0.02}
STATUS = "v1/payout/status"


async def create(client, order_id: str = "P-1", amount: str = "100.00") -> int:
    created = await client.create_payout(payout_request(order_id, amount=amount))
    return created.id


@pytest.mark.parametrize("final", ["paid", "cancel", "fail"])
async def test_wait_for_payout_returns_each_final_status(
    client, wire: Wire, sandbox: Sandbox, final
):
    order_id = f"{final}-P-1"  # the sandbox's outcome rule: the prefix names the final status
    await create(client, order_id)
    sandbox.config.wait_polls = 3
    status = await client.wait_for_payout(order_id=order_id, timeout=10, **QUICK)
    assert status.payment_status == PaymentStatus(final)
    assert status.payment_status.is_final
    assert status.order_id == order_id
    assert wire.calls(STATUS) == 4  # three `wait` answers, then the final one


async def test_trouble_while_polling_never_ends_the_wait_or_reads_as_failure(
    client, wire: Wire, sandbox: Sandbox
):
    await create(client)
    sandbox.config.wait_polls = 0  # final at the first status request that gets through
    # 503, 429 with Retry-After, 404, an HTML 200, 401, another 500: the runs of retryable
    # trouble are as long as the client's own read retries, so each one exhausts them.
    n = FAST_RETRY.max_attempts
    for fault, times in (
        (Fault.status(503), n),
        (Fault.status(429, retry_after=0.01), n),
        (Fault.status(404), 1),
        (Fault.html_200(after_commit=False), n),
        (Fault.status(401), 1),
        (Fault.status(500), n),
    ):
        sandbox.faults.add(STATUS, fault, times=times)
    status = await client.wait_for_payout(order_id="P-1", timeout=10, **QUICK)
    assert status.payment_status == PaymentStatus.PAID
    assert wire.calls(STATUS) == 4 * n + 3
    assert sandbox.faults.pending() == 0


async def test_wait_for_payment_polls_through_errors_to_final(client, wire: Wire, sandbox: Sandbox):
    created = await client.create_payment(payment_request())
    sandbox.config.wait_polls = 2
    sandbox.faults.add("v1/payment/status", Fault.status(503), times=2)
    wire.script(
        "v1/payment/status", PASS, PASS, httpx.ReadTimeout("slow"), httpx.ReadTimeout("slow")
    )
    # 503, 503, timeout, timeout, wait, wait, paid
    status = await client.wait_for_payment(id=created.id, timeout=10, **QUICK)
    assert status.payment_status == PaymentStatus.PAID
    assert status.id == created.id
    assert wire.calls("v1/payment/status") == 7


async def test_watch_yields_each_change_once_final_last(client, wire: Wire, sandbox: Sandbox):
    # `review-`: the sandbox answers `processing` (a status the SDK does not know) while
    # pending. A gateway that goes back to `wait` is a lie only the wire can tell.
    await client.create_payment(payment_request("review-A-1"))
    sandbox.config.wait_polls = None

    def bad_gateway(request: httpx.Request) -> None:
        sandbox.faults.add("v1/payment/status", Fault.status(502))
        return PASS

    def cancel(request: httpx.Request) -> None:
        sandbox.finalise("payment", order_id="review-A-1", status="cancel")
        return PASS

    wire.script(
        "v1/payment/status",
        PASS,
        PASS,
        bad_gateway,
        bad_gateway,
        after(relabel("wait")),
        after(relabel("wait")),
        cancel,
    )
    seen = [s.payment_status async for s in client.watch_payment(order_id="review-A-1", **QUICK)]
    assert [str(s) for s in seen] == ["processing", "wait", "cancel"]
    assert not seen[0].is_known and not seen[0].is_final  # a future status: keep waiting
    assert wire.calls("v1/payment/status") == 7


async def test_deadline_raises_polling_timeout_with_the_last_status(client, sandbox: Sandbox):
    await create(client)
    sandbox.config.wait_polls = None  # never final
    with pytest.raises(PollingTimeoutError) as caught:
        await client.wait_for_payout(order_id="P-1", timeout=0.2, **QUICK)
    assert caught.value.last_status.payment_status == PaymentStatus.WAIT
    assert caught.value.last_status.order_id == "P-1"


async def test_deadline_after_only_errors_carries_the_last_error(client, sandbox: Sandbox):
    sandbox.faults.add(STATUS, Fault.status(503), times=10**6)
    with pytest.raises(PollingTimeoutError) as caught:
        await client.wait_for_payout(id=1, timeout=0.2, **QUICK)
    assert caught.value.last_status is None
    assert isinstance(caught.value.__cause__, ServerError)
    assert "ServerError" in str(caught.value)


async def test_deadline_cuts_a_request_that_hangs(client, wire: Wire, sandbox: Sandbox):
    await create(client)
    # one read fails (its every attempt answered 503), the next one hangs
    sandbox.faults.add(STATUS, Fault.status(503), times=FAST_RETRY.max_attempts)
    sandbox.faults.add(STATUS, Fault.delay(30), times=100)  # this answer would take 30 s
    with pytest.raises(PollingTimeoutError) as caught:
        await client.wait_for_payout(order_id="P-1", timeout=0.3, **QUICK)
    assert isinstance(caught.value.__cause__, ServerError)  # the last error seen is kept
    assert wire.in_flight == 0  # the hanging request was cut, not left behind


async def test_cancelling_the_wait_leaves_nothing_running(client, wire: Wire, sandbox: Sandbox):
    await create(client)
    sandbox.config.wait_polls = None
    before = asyncio.all_tasks()
    waiter = asyncio.create_task(
        client.wait_for_payout(order_id="P-1", timeout=None, interval=0.005, max_interval=0.005)
    )
    await eventually(lambda: wire.calls(STATUS) >= 3)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    calls = wire.calls(STATUS)
    await asyncio.sleep(0.1)
    assert wire.calls(STATUS) == calls  # no poll after the cancellation
    assert asyncio.all_tasks() == before


async def test_leaving_a_watch_early_stops_polling(client, wire: Wire, sandbox: Sandbox):
    await create(client)
    sandbox.config.wait_polls = None
    async for status in client.watch_payout(order_id="P-1", **QUICK):
        assert status.payment_status == PaymentStatus.WAIT
        break
    calls = wire.calls(STATUS)
    await asyncio.sleep(0.05)
    assert wire.calls(STATUS) == calls


async def test_thousands_of_waits_keep_a_bounded_number_of_requests_in_flight(
    client, wire: Wire, sandbox: Sandbox
):
    client.max_status_in_flight = 8
    for i in range(1000):
        await create(client, f"P-{i}", "1.00")
    sandbox.faults.add(STATUS, Fault.delay(0.001), times=10**6)  # answers take a while
    results = await asyncio.gather(
        *(client.wait_for_payout(order_id=f"P-{i}", timeout=60, **QUICK) for i in range(1000))
    )
    assert {r.payment_status for r in results} == {PaymentStatus.PAID}
    assert wire.peak_in_flight == 8  # reached, never exceeded
    assert wire.calls(STATUS) == 2000  # wait_polls=1: one `wait`, then `paid`


async def test_caller_mistakes_raise_at_once(client, wire: Wire):
    with pytest.raises(RequestValidationError):
        await client.wait_for_payout(timeout=10)  # neither id nor order_id
    with pytest.raises(RequestValidationError):
        await client.wait_for_payout(id=1, order_id="P-1")
    with pytest.raises(ValueError, match="interval"):
        await client.wait_for_payout(id=1, interval=0)
    with pytest.raises(ValueError, match="max_interval"):
        await client.wait_for_payout(id=1, interval=5, max_interval=1)
    assert wire.sent == []


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
    changes = [
        a async for a in poll_until_final(fetch, timeout=None, interval=1.0, max_interval=8.0)
    ]
    assert [str(a.payment_status) for a in changes] == ["wait", "paid"]
    assert len(pauses) == 12
    ceilings = [min(8.0, 1.5**i) for i in range(12)]
    assert all(c / 2 <= p <= c for p, c in zip(pauses, ceilings, strict=True))
    assert max(pauses) <= 8.0 and pauses[-1] >= 4.0  # grew, then held at the cap
