"""Batch payouts against a stateful in-memory gateway: outcomes, reconciliation, resume, laziness.

The loopback-sandbox versions (real sockets, injected faults, a SIGKILLed run)
are in tests/test_batch_sandbox.py.
"""

from __future__ import annotations

import asyncio
import gc
import sys
from collections import Counter
from contextlib import aclosing
from decimal import Decimal

import attrs
import pytest

from alikassa_async import (
    AliKassaClient,
    AuthenticationError,
    InvalidRequestError,
    OutcomeUnknownError,
    PaymentStatus,
    PayoutCreated,
    PayoutRequest,
    PayoutStatusResponse,
    PollingTimeoutError,
    RequestValidationError,
    RetryPolicy,
    TransportError,
)
from alikassa_async.batch import (
    BatchProgress,
    Outcome,
    RateLimiter,
    ReconcilePolicy,
    payouts_batch,
)
from alikassa_async.journal import JournalState, OrderIdConflictError, SQLiteJournal

from .conftest import ACCOUNT
from .fake_gateway import json_response
from .payout_gateway import PayoutGateway

FAST_RETRY = RetryPolicy(max_attempts=2, backoff_base=0.001, backoff_max=0.002,
                         total_timeout=5.0)
QUICK = ReconcilePolicy(lookups=4, settle=0.05, backoff_base=0.005, backoff_max=0.01,
                        pause=0.01)
CARD = "4111111111111111"


def payout(i: int | str, amount: str = "10.00") -> PayoutRequest:
    return PayoutRequest(service="payment_card_rub", order_id=f"P-{i}", amount=Decimal(amount),
                         fields={"number": CARD})


@pytest.fixture
def gateway(payout_cert) -> PayoutGateway:
    return PayoutGateway(ACCOUNT, payout_cert)


@pytest.fixture
async def client(gateway, payout_cert):
    async with AliKassaClient(ACCOUNT, payout_cert=payout_cert, transport=gateway.transport(),
                              retry=FAST_RETRY) as client:
        yield client


async def run(client, items, **options):
    options.setdefault("reconcile", QUICK)
    return [r async for r in client.payouts_batch(items, **options)]


def by_order(results):
    return {r.order_id: r for r in results}


async def test_every_item_is_created_once_and_reported_once(client, gateway):
    results = await run(client, (payout(i) for i in range(300)), concurrency=16)
    assert sorted(r.index for r in results) == list(range(300))
    assert {r.outcome for r in results} == {Outcome.CREATED}
    assert all(r.ok and r.attempts == 1 and not r.resumed for r in results)
    assert all(isinstance(r.response, PayoutCreated) and r.payout_id == r.response.id
               and r.response.order_id == r.order_id for r in results)
    assert set(gateway.creations) == {f"P-{i}" for i in range(300)}
    assert set(gateway.creations.values()) == {1}


async def test_async_iterables_and_mappings_are_items_and_bad_ones_reject_only_themselves(
        client, gateway):
    async def rows():
        yield {"service": "payment_card_rub", "order_id": "P-1", "amount": "10",
               "number": CARD}
        yield {"service": "payment_card_rub", "order_id": "P-2", "amount": "ten",
               "number": CARD}                                           # bad amount
        yield {"order_id": "P-3", "amount": "10", "number": CARD}        # no service
        yield "P-4"                                                       # not a payout
        yield payout(5)

    results = by_order(await run(client, rows()))
    assert results["P-1"].outcome == results["P-5"].outcome == Outcome.CREATED
    for order_id in ("P-2", "P-3", ""):
        assert results[order_id].outcome == Outcome.REJECTED
        assert isinstance(results[order_id].error, RequestValidationError)
        assert results[order_id].attempts == 0
    assert "amount" in results["P-2"].error.errors
    assert set(gateway.create_calls) == {"P-1", "P-5"}


async def test_gateway_refusals_are_rejected_and_never_resent(client, gateway):
    gateway.fault = lambda order_id, n: {"P-1": "reject"}.get(order_id)
    results = by_order(await run(client, [payout(1), payout(2)]))
    assert results["P-1"].outcome == Outcome.REJECTED
    assert isinstance(results["P-1"].error, InvalidRequestError)
    assert results["P-2"].outcome == Outcome.CREATED
    assert gateway.create_calls == Counter({"P-1": 1, "P-2": 1})


async def test_a_401_stops_the_batch_and_leaves_the_rest_not_sent(client, gateway):
    gateway.fault = lambda order_id, n: "auth"  # wrong certificate: every row would fail
    results = by_order(await run(client, [payout(i) for i in range(1, 201)]))
    assert sum(gateway.create_calls.values()) == 1  # the first create goes alone
    refused = [r for r in results.values() if r.outcome == Outcome.REJECTED]
    assert len(refused) == 1 and isinstance(refused[0].error, AuthenticationError)
    not_sent = [r for r in results.values() if r.outcome == Outcome.NOT_SENT]
    assert len(not_sent) == 199
    assert all(isinstance(r.error, AuthenticationError) and r.attempts == 0 for r in not_sent)


@pytest.mark.parametrize("fault", ["503-after", "drop-after", "garbage-after"])
async def test_doubt_after_the_gateway_committed_is_settled_by_lookup_not_resend(
        client, gateway, fault):
    gateway.fault = lambda order_id, n: fault if n == 1 else None
    [result] = await run(client, [payout(1)])
    assert result.outcome == Outcome.CREATED
    assert result.reconciled and result.attempts == 1
    assert isinstance(result.response, PayoutStatusResponse)
    assert result.payout_id == gateway.payouts["P-1"]["id"]
    assert gateway.create_calls["P-1"] == 1 and gateway.creations["P-1"] == 1


@pytest.mark.parametrize("fault", ["503-before", "drop-before", "429"])
async def test_doubt_before_commit_is_resent_only_after_a_settled_404(client, gateway, fault):
    gateway.fault = lambda order_id, n: fault if n == 1 else None
    [result] = await run(client, [payout(1)])
    assert result.outcome == Outcome.CREATED and result.attempts == 2
    assert gateway.creations["P-1"] == 1
    assert gateway.status_calls["P-1"] >= 1  # looked up before the second send


async def test_an_unsettled_404_is_not_proof_of_absence(client, gateway):
    # Created, answer lost, and the status endpoint does not see it for a while.
    gateway.fault = lambda order_id, n: "drop-after" if n == 1 else None
    gateway.invisible_for = 0.15
    slow_settle = ReconcilePolicy(lookups=4, settle=0.3, backoff_base=0.005,
                                  backoff_max=0.01)
    [result] = await run(client, [payout(1)], reconcile=slow_settle)
    assert result.outcome == Outcome.CREATED and result.reconciled
    assert gateway.create_calls["P-1"] == 1  # the early 404s were "not yet", not "absent"
    assert gateway.status_calls["P-1"] >= 2


async def test_already_taken_after_a_doubt_means_look_it_up(client, gateway):
    # The lost create landed, but status lookups lag past `settle`: the batch re-sends,
    # the gateway says "order id already taken"; from then on a 404 proves nothing and
    # the batch keeps looking until the payout shows up.
    gateway.fault = lambda order_id, n: "drop-after" if n == 1 else None
    gateway.invisible_for = 0.15
    patient = ReconcilePolicy(lookups=8, settle=0.02, backoff_base=0.02, backoff_max=0.05)
    [result] = await run(client, [payout(1)], reconcile=patient)
    assert result.outcome == Outcome.CREATED and result.reconciled
    assert gateway.create_calls["P-1"] == 2 and gateway.creations["P-1"] == 1


async def test_already_taken_but_never_found_stays_unknown(client, gateway):
    gateway.fault = lambda order_id, n: "drop-after" if n == 1 else None
    gateway.invisible_for = 3600
    [result] = await run(client, [payout(1)])
    assert result.outcome == Outcome.UNKNOWN
    assert gateway.create_calls["P-1"] == 2  # "taken" stops the re-sends for good
    assert gateway.creations["P-1"] == 1


async def test_already_taken_on_a_first_send_is_looked_up_never_rejected(client, gateway):
    gateway.create("P-1", "10.00")  # sent earlier: by a lost journal, another process...
    gateway.create("P-2", "99.00")  # ... or someone else, with another amount
    results = by_order(await run(client, [payout(1), payout(2)]))
    assert results["P-1"].outcome == Outcome.CREATED and results["P-1"].reconciled
    assert results["P-1"].payout_id is not None
    assert results["P-2"].outcome == Outcome.UNKNOWN  # exists, but not as sent: a human
    assert "amount" in str(results["P-2"].error)
    assert gateway.creations == Counter({"P-1": 1, "P-2": 1})


async def test_lookups_that_never_answer_leave_it_unknown_and_unsent(client, gateway):
    gateway.fault = lambda order_id, n: "503-before"
    gateway.status_fault = lambda order_id, n: json_response(500, {"message": "boom"})
    [result] = await run(client, [payout(1)])
    assert result.outcome == Outcome.UNKNOWN
    assert result.error is not None
    assert gateway.create_calls["P-1"] == 1  # never re-sent without proof of absence


@pytest.mark.parametrize(("errors", "resent"), [
    ({"order_id": ["The selected order id is invalid."]}, True),  # Laravel `exists`: no row
    ({"order_id": ["The order id must be a string."]}, False),
    ({"order_id": ["The selected order id is invalid."], "id": ["required"]}, False),
])
async def test_which_400s_on_a_lookup_prove_absence(client, gateway, errors, resent):
    gateway.fault = lambda order_id, n: "503-before" if n == 1 else None
    gateway.status_fault = lambda order_id, n: json_response(
        422, {"message": "The given data was invalid.", "errors": errors})
    [result] = await run(client, [payout(1)])
    if resent:
        assert result.outcome == Outcome.CREATED and result.attempts == 2
    else:
        assert result.outcome == Outcome.UNKNOWN and gateway.create_calls["P-1"] == 1


async def test_found_with_another_amount_is_unknown_for_a_human(client, gateway):
    gateway.create("P-1", "99.00")
    gateway.fault = lambda order_id, n: "503-before"
    [result] = await run(client, [payout(1, "10.00")])
    assert result.outcome == Outcome.UNKNOWN
    assert "99" in str(result.error) and "check by hand" in str(result.error)


async def test_an_unreachable_gateway_is_not_sent_not_unknown(client, gateway):
    gateway.fault = lambda order_id, n: "connect"
    [result] = await run(client, [payout(1)])
    assert result.outcome == Outcome.NOT_SENT
    assert isinstance(result.error, TransportError)
    assert gateway.creations["P-1"] == 0
    gateway.fault = lambda order_id, n: "connect" if n <= 3 else None  # comes back
    [result] = await run(client, [payout(2)])
    assert result.outcome == Outcome.CREATED


async def test_every_send_lost_before_the_gateway_is_not_sent_after_max_sends(
        client, gateway):
    gateway.fault = lambda order_id, n: "503-before"  # each doubt settles as "no payout"
    [result] = await run(client, [payout(1)],
                         reconcile=attrs.evolve(QUICK, max_sends=3))
    assert result.outcome == Outcome.NOT_SENT and result.attempts == 3
    assert isinstance(result.error, OutcomeUnknownError)
    assert gateway.create_calls["P-1"] == 3 and gateway.creations["P-1"] == 0


async def test_duplicate_order_ids_in_one_batch_are_refused(client, gateway, tmp_path):
    # at the same time (no journal needed) ...
    results = await run(client, [payout(1), payout(1, "20.00")], concurrency=4)
    outcomes = sorted(r.outcome for r in results)
    assert outcomes == [Outcome.CREATED, Outcome.REJECTED]
    assert isinstance(next(r for r in results if r.outcome == "rejected").error,
                      OrderIdConflictError)
    # ... and one after the other, with a journal
    results = await run(client, [payout(2), payout(3), payout(2)], concurrency=1,
                        journal=tmp_path / "j.db")
    assert [r.outcome for r in results] == [Outcome.CREATED, Outcome.CREATED, Outcome.REJECTED]
    assert gateway.creations["P-2"] == 1


async def test_resume_skips_created_reconciles_doubts_and_refuses_changed_bodies(
        client, gateway, tmp_path):
    path = tmp_path / "payouts.db"
    items = [payout(i) for i in range(40)]
    # First run: 0-9 lose their answer after the gateway committed, 10-19 before it;
    # the status endpoint is down, so all twenty stay unknown.
    gateway.fault = lambda order_id, n: (
        "drop-after" if int(order_id[2:]) < 10 else "503-before" if int(order_id[2:]) < 20
        else None)
    gateway.status_fault = lambda order_id, n: json_response(503, {})
    first = by_order(await run(client, items, journal=path))
    assert Counter(r.outcome for r in first.values()) == {"unknown": 20, "created": 20}
    calls_after_first = Counter(gateway.create_calls)

    # Second run, healthy gateway, one body changed by mistake.
    gateway.fault = lambda order_id, n: None
    gateway.status_fault = lambda order_id, n: None
    changed = [*items[:39], payout(39, "11.00")]
    second = by_order(await run(client, changed, journal=path))
    assert all(r.resumed for r in second.values())
    for i in range(10):          # were created (and paid since): found, not re-sent
        r = second[f"P-{i}"]
        assert (r.outcome, r.attempts, r.reconciled, r.status) == ("created", 0, True, "paid")
    for i in range(10, 20):      # were not: proven absent, sent once
        assert (second[f"P-{i}"].outcome, second[f"P-{i}"].attempts) == ("created", 1)
    for i in range(20, 39):      # created last time: not even looked up
        r = second[f"P-{i}"]
        assert (r.outcome, r.attempts, r.reconciled) == ("created", 0, False)
        assert r.payout_id == gateway.payouts[f"P-{i}"]["id"]
    assert second["P-39"].outcome == Outcome.REJECTED
    assert isinstance(second["P-39"].error, OrderIdConflictError)
    assert "different request body" in str(second["P-39"].error)
    assert set(gateway.creations.values()) == {1} and len(gateway.creations) == 40
    new_sends = gateway.create_calls - calls_after_first
    assert set(new_sends) == {f"P-{i}" for i in range(10, 20)}

    async with SQLiteJournal(path) as journal:
        assert await journal.counts() == {JournalState.CREATED: 30, JournalState.PAID: 10}
    # Only hashes are stored: no card number reaches the file.
    assert not any(CARD.encode() in p.read_bytes() for p in tmp_path.iterdir())


async def test_rejected_items_are_sent_again_on_a_rerun(client, gateway, tmp_path):
    path = tmp_path / "payouts.db"
    gateway.fault = lambda order_id, n: "reject" if n == 1 else None  # e.g. no funds yet
    [first] = await run(client, [payout(1)], journal=path)
    [second] = await run(client, [payout(1)], journal=path)
    assert (first.outcome, second.outcome) == (Outcome.REJECTED, Outcome.CREATED)
    assert gateway.creations["P-1"] == 1


@pytest.mark.parametrize("final", ["paid", "cancel", "fail"])
async def test_wait_final_reports_final_statuses_and_frees_send_slots(
        client, gateway, tmp_path, final):
    # Nothing becomes final until all 20 exist: with one send slot, waits that held
    # the slot would never let the rest be sent, and the batch would time out.
    gateway.final_status = lambda order_id: final
    gateway.polls_until_final = 10**9

    def release(order_id: str, n: int):
        if len(gateway.creations) == 20:
            gateway.polls_until_final = 0
        return None

    gateway.status_fault = release
    path = tmp_path / "payouts.db"
    results = await run(client, [payout(i) for i in range(20)], concurrency=1, wait_final=True,
                        wait_timeout=10, wait_interval=0.005, wait_max_interval=0.02,
                        journal=path)
    assert {r.outcome for r in results} == {Outcome(final)}
    assert all(r.response.payment_status == PaymentStatus(final) for r in results)
    async with SQLiteJournal(path) as journal:
        assert await journal.counts() == {JournalState(final): 20}
    # A re-run knows they are final: no request at all.
    calls = sum(gateway.status_calls.values()) + sum(gateway.create_calls.values())
    again = await run(client, [payout(i) for i in range(20)], wait_final=True, journal=path)
    assert {r.outcome for r in again} == {Outcome(final)}
    assert sum(gateway.status_calls.values()) + sum(gateway.create_calls.values()) == calls


async def test_wait_final_deadline_keeps_created_with_the_timeout(client, gateway):
    gateway.polls_until_final = 10**9
    [result] = await run(client, [payout(1)], wait_final=True, wait_timeout=0.1,
                         wait_interval=0.005, wait_max_interval=0.01)
    assert result.outcome == Outcome.CREATED
    assert isinstance(result.error, PollingTimeoutError) and not result.ok
    assert result.status == PaymentStatus.WAIT


async def test_progress_reports_done_total_counts_and_rate(client, gateway):
    gateway.fault = lambda order_id, n: "reject" if order_id == "P-3" else None
    seen: list[BatchProgress] = []
    await run(client, [payout(i) for i in range(10)], progress=seen.append)
    assert [p.done for p in seen] == list(range(1, 11))
    assert {p.total for p in seen} == {10}
    assert seen[-1].counts == {"created": 9, "rejected": 1}
    assert seen[-1].rate > 0 and seen[-1].elapsed > 0
    seen.clear()
    await run(client, (payout(i) for i in range(10, 13)), progress=seen.append)
    assert {p.total for p in seen} == {None}  # a generator has no length


async def test_rate_caps_requests_per_second(monkeypatch):
    # Fake clock: the limiter's waits are computed, not slept, so this asserts arithmetic.
    loop = asyncio.get_running_loop()
    now = [1000.0]
    monkeypatch.setattr(loop, "time", lambda: now[0])
    waits: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        waits.append(seconds)
        now[0] += seconds

    monkeypatch.setattr(asyncio, "sleep", fake_sleep)
    limiter = RateLimiter(50)
    for _ in range(100):
        await limiter.acquire()
    assert now[0] - 1000.0 == pytest.approx(99 / 50)
    limiter.pause(5)
    start = now[0]
    await limiter.acquire()
    assert now[0] - start == pytest.approx(5)
    with pytest.raises(ValueError):
        RateLimiter(0)


async def test_rate_limit_applies_across_the_batch(client, gateway, monkeypatch):
    acquired = 0
    real_acquire = RateLimiter.acquire

    async def counting(self):
        nonlocal acquired
        acquired += 1
        await real_acquire(self)

    monkeypatch.setattr(RateLimiter, "acquire", counting)
    results = await run(client, [payout(i) for i in range(20)], rate=1000)
    assert len(results) == 20 and acquired == 20  # every send went through the bucket


async def test_breaking_out_cancels_the_work_in_flight(client, gateway, tmp_path):
    gateway.delay = 0.05
    before = asyncio.all_tasks()
    pulled = 0

    def items():
        nonlocal pulled
        for i in range(10_000):
            pulled += 1
            yield payout(i)

    path = tmp_path / "payouts.db"
    async with aclosing(client.payouts_batch(items(), concurrency=8, journal=path)) as results:
        async for result in results:
            assert result.outcome == Outcome.CREATED
            break
    assert asyncio.all_tasks() == before
    assert pulled <= 8 + 1 + 1
    calls = sum(gateway.create_calls.values())
    await asyncio.sleep(0.1)
    assert sum(gateway.create_calls.values()) == calls  # nothing kept sending
    # Everything pulled was journaled before it was sent; what was cut off mid-flight
    # is "unknown" (the next run reconciles it before sending anything), what was cut
    # off before it left is "not_sent".
    async with SQLiteJournal(path) as journal:
        counts = await journal.counts()
        records = [await journal.get(f"P-{i}") for i in range(pulled)]
    assert counts[JournalState.CREATED] >= 1
    assert sum(counts.values()) == pulled
    for record in records:
        if record.state is JournalState.INTENT:  # cut off while its intent was committed
            assert not record.last_send_left
        elif record.state is not JournalState.CREATED:
            assert record.state in (JournalState.UNKNOWN, JournalState.NOT_SENT)
            assert "cancelled" in record.detail


async def test_an_error_in_the_input_stops_the_batch_after_what_runs(client, gateway):
    def items():
        yield payout(1)
        yield payout(2)
        raise LookupError("database went away")

    got = []
    with pytest.raises(LookupError, match="database went away"):
        async for result in client.payouts_batch(items()):
            got.append(result)
    assert sorted(r.order_id for r in got) == ["P-1", "P-2"]  # in-flight ones finished


async def test_a_journal_failure_stops_the_batch_before_sending(client, gateway, tmp_path):
    journal = SQLiteJournal(tmp_path / "j.db")
    await journal.aclose()  # unusable
    with pytest.raises(Exception, match="closed"):
        await run(client, [payout(1)], journal=journal)
    assert not gateway.create_calls


# -- laziness: memory proportional to concurrency, not to the number of items --------


class _InstantClient:
    """Just enough of AliKassaClient for the scheduler: answers at once, no HTTP.

    The real client costs ~0.5 ms per payout (signing, httpx), which would make
    100,000 items a minute-long test; the laziness under test is the scheduler's.
    The loopback test in test_batch_sandbox.py checks the same bound with the
    real client.
    """

    def __init__(self) -> None:
        self.ids = 0
        self.semaphore = asyncio.Semaphore(8)

    async def create_payout(self, request: PayoutRequest) -> PayoutCreated:
        await asyncio.sleep(0)
        self.ids += 1
        if self.ids % 1000 == 0:
            raise OutcomeUnknownError(request.order_id, endpoint="v1/payout", reason="test")
        return PayoutCreated(id=self.ids, order_id=request.order_id)

    async def payout_status(self, *, id=None, order_id=None) -> PayoutStatusResponse:
        await asyncio.sleep(0)
        return PayoutStatusResponse(payment_status=PaymentStatus.WAIT, order_id=order_id,
                                    amount=Decimal("10.00"))

    @property
    def status_slots(self) -> asyncio.Semaphore:
        return self.semaphore


async def test_100k_items_from_a_generator_are_pulled_lazily_in_bounded_memory():
    concurrency = 32
    pulled = completed = ahead = 0

    def items(n: int):
        nonlocal pulled, ahead
        for i in range(n):
            pulled += 1
            ahead = max(ahead, pulled - completed)
            yield PayoutRequest(service="payment_card_rub", order_id=f"P-{i}",
                                amount=Decimal("10.00"), fields={"number": CARD})

    async def growth(n: int) -> int:
        """Peak growth of live allocations (pymalloc blocks) while streaming n items."""
        nonlocal pulled, completed, ahead
        pulled = completed = ahead = 0
        gc.collect()
        baseline = peak = sys.getallocatedblocks()
        async for result in payouts_batch(_InstantClient(), items(n), concurrency=concurrency,
                                          reconcile=QUICK):
            completed += 1
            assert result.outcome == Outcome.CREATED
            if completed % 100 == 0:
                peak = max(peak, sys.getallocatedblocks())
        return peak - baseline

    small = await growth(10_000)
    big = await growth(100_000)
    assert completed == pulled == 100_000
    assert ahead <= concurrency + 1  # pulled, not yet reported: the workers' items only
    # Ten times the items, about the same memory; keeping one object per item would
    # add 100,000+ blocks.
    assert big < 2 * small + 20_000
