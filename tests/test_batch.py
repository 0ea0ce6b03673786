"""Batch payouts against the in-process sandbox: outcomes, reconciliation, resume, laziness.

The gateway is the sandbox (tests/wire.py records what left the client and
scripts what only a socket or a lying gateway does); the loopback versions
(real sockets, injected faults, a SIGKILLed run) are in tests/test_batch_sandbox.py.
"""

from __future__ import annotations

import asyncio
import gc
import sys
import time
from collections import Counter
from contextlib import aclosing
from decimal import Decimal

import attrs
import httpx
import pytest

from alikassa_async import (
    AliKassaClient,
    AuthenticationError,
    BatchProgress,
    InvalidRequestError,
    JournalError,
    Outcome,
    OutcomeUnknownError,
    PaymentStatus,
    PayoutCreated,
    PayoutRequest,
    PayoutStatusResponse,
    PollingTimeoutError,
    ReconcilePolicy,
    RequestValidationError,
    ServerError,
    TransportError,
)
from alikassa_async._batch import RateLimiter, _paced, payouts_batch
from alikassa_async._retry import RETRY_PACE
from alikassa_async.journal import JournalState, OrderIdConflictError, SQLiteJournal
from alikassa_async.sandbox import Fault, Sandbox, SandboxConfig

from .conftest import ACCOUNT, CARD, FAST_RETRY
from .sandbox_helpers import eventually
from .wire import Wire, json_response

QUICK = ReconcilePolicy(lookups=4, settle=0.05, backoff_base=0.005, backoff_max=0.01, pause=0.01)
STATUS = "v1/payout/status"
#: more than the sandbox's balance: a real 400 on `amount` ("Insufficient funds")
TOO_MUCH = "2000000.00"
FOREVER = 10**6


def payout(i: int | str, amount: str = "10.00") -> PayoutRequest:
    return PayoutRequest(
        service="payment_card_rub",
        order_id=f"P-{i}",
        amount=Decimal(amount),
        fields={"number": CARD},
    )


@pytest.fixture
def sandbox_config() -> SandboxConfig:
    # the first status request already sees the final status (paid, by default)
    return SandboxConfig(wait_seconds=None, wait_polls=0)


async def run(client, items, **options):
    options.setdefault("reconcile", QUICK)
    return [r async for r in client.payouts_batch(items, **options)]


def by_order(results):
    return {r.order_id: r for r in results}


async def test_every_item_is_created_once_and_reported_once(client, wire: Wire, sandbox: Sandbox):
    sandbox.config.unique_order_ids = False  # a second send would be a second payout
    results = await run(client, (payout(i) for i in range(300)), concurrency=16)
    assert sorted(r.index for r in results) == list(range(300))
    assert {r.outcome for r in results} == {Outcome.CREATED}
    assert all(r.ok and r.attempts == 1 and not r.resumed for r in results)
    assert all(
        isinstance(r.response, PayoutCreated)
        and r.payout_id == r.response.id
        and r.response.order_id == r.order_id
        for r in results
    )
    created = sandbox.state.payouts_by_order_id
    assert all(r.payout_id == created[r.order_id].id for r in results)
    assert set(sandbox.state.payout_creations) == {f"P-{i}" for i in range(300)}
    assert set(sandbox.state.payout_creations.values()) == {1}
    assert set(wire.sends().values()) == {1}


async def test_async_iterables_and_mappings_are_items_and_bad_ones_reject_only_themselves(
    client, wire: Wire
):
    async def rows():
        yield {"service": "payment_card_rub", "order_id": "P-1", "amount": "10", "number": CARD}
        yield {
            "service": "payment_card_rub",
            "order_id": "P-2",
            "amount": "ten",
            "number": CARD,
        }  # bad amount
        yield {"order_id": "P-3", "amount": "10", "number": CARD}  # no service
        yield "P-4"  # not a payout
        yield payout(5)

    results = by_order(await run(client, rows()))
    assert results["P-1"].outcome == results["P-5"].outcome == Outcome.CREATED
    for order_id in ("P-2", "P-3", ""):
        assert results[order_id].outcome == Outcome.REJECTED
        assert isinstance(results[order_id].error, RequestValidationError)
        assert results[order_id].attempts == 0
    assert "amount" in results["P-2"].error.errors
    assert set(wire.sends()) == {"P-1", "P-5"}


async def test_gateway_refusals_are_rejected_and_never_resent(client, wire: Wire, sandbox: Sandbox):
    results = by_order(await run(client, [payout(1, TOO_MUCH), payout(2)]))
    assert results["P-1"].outcome == Outcome.REJECTED
    assert isinstance(results["P-1"].error, InvalidRequestError)
    assert "amount" in results["P-1"].error.errors
    assert results["P-2"].outcome == Outcome.CREATED
    assert wire.sends() == Counter({"P-1": 1, "P-2": 1})
    assert sandbox.state.payout_creations == {"P-2": 1}


async def test_a_401_stops_the_batch_and_leaves_the_rest_not_sent(
    wire: Wire, alikassa_certificates
):
    payment, _ = alikassa_certificates
    # payouts signed with the payment key: every row would fail
    async with AliKassaClient(
        ACCOUNT, payout_cert=payment, base_url="http://127.0.0.1", transport=wire, retry=FAST_RETRY
    ) as client:
        results = by_order(await run(client, [payout(i) for i in range(1, 201)]))
    assert wire.calls("v1/payout") == 1  # the first create goes alone
    refused = [r for r in results.values() if r.outcome == Outcome.REJECTED]
    assert len(refused) == 1 and isinstance(refused[0].error, AuthenticationError)
    not_sent = [r for r in results.values() if r.outcome == Outcome.NOT_SENT]
    assert len(not_sent) == 199
    assert all(isinstance(r.error, AuthenticationError) and r.attempts == 0 for r in not_sent)


AFTER_COMMIT = {
    "503-after": lambda: Fault.status(503, after_commit=True),
    "drop-after": Fault.drop_after_commit,
    "garbage-after": Fault.html_200,
}


@pytest.mark.parametrize("fault", AFTER_COMMIT)
async def test_doubt_after_the_gateway_committed_is_settled_by_lookup_not_resend(
    client, wire: Wire, sandbox: Sandbox, fault
):
    sandbox.config.unique_order_ids = False  # a re-send would be a second payout
    sandbox.faults.add("v1/payout", AFTER_COMMIT[fault](), order_id="P-1")
    [result] = await run(client, [payout(1)])
    assert result.outcome == Outcome.CREATED
    assert result.reconciled and result.attempts == 1
    assert isinstance(result.response, PayoutStatusResponse)
    assert result.payout_id == sandbox.state.payouts_by_order_id["P-1"].id
    assert wire.sends()["P-1"] == 1 and sandbox.state.payout_creations["P-1"] == 1


BEFORE_COMMIT = {
    "503-before": lambda: Fault.status(503),
    "drop-before": Fault.drop_before_commit,
    "429": lambda: Fault.status(429, retry_after=0.05),
}


@pytest.mark.parametrize("fault", BEFORE_COMMIT)
async def test_doubt_before_commit_is_resent_only_after_a_settled_404(
    client, wire: Wire, sandbox: Sandbox, fault
):
    sandbox.faults.add("v1/payout", BEFORE_COMMIT[fault](), order_id="P-1")
    [result] = await run(client, [payout(1)])
    assert result.outcome == Outcome.CREATED and result.attempts == 2
    assert sandbox.state.payout_creations["P-1"] == 1
    paths = [s.path for s in wire.sent]
    assert paths.count("v1/payout") == 2
    first, second = (i for i, p in enumerate(paths) if p == "v1/payout")
    assert STATUS in paths[first:second]  # looked up before the second send


async def test_an_unsettled_404_is_not_proof_of_absence(client, wire: Wire, sandbox: Sandbox):
    # Created, answer lost, and the status endpoint does not see it for a while.
    sandbox.faults.add("v1/payout", Fault.drop_after_commit())
    sandbox.config.status_visible_after = 0.15
    slow_settle = ReconcilePolicy(lookups=4, settle=0.3, backoff_base=0.005, backoff_max=0.01)
    [result] = await run(client, [payout(1)], reconcile=slow_settle)
    assert result.outcome == Outcome.CREATED and result.reconciled
    assert wire.sends()["P-1"] == 1  # the early 404s were "not yet", not "absent"
    assert wire.calls(STATUS) >= 2


async def test_already_taken_after_a_doubt_means_look_it_up(client, wire: Wire, sandbox: Sandbox):
    # The lost create landed, but status lookups lag past `settle`: the batch re-sends,
    # the gateway says "order id already taken"; from then on a 404 proves nothing and
    # the batch keeps looking until the payout shows up.
    sandbox.faults.add("v1/payout", Fault.drop_after_commit())
    sandbox.config.status_visible_after = 0.15
    patient = ReconcilePolicy(lookups=8, settle=0.02, backoff_base=0.02, backoff_max=0.05)
    [result] = await run(client, [payout(1)], reconcile=patient)
    assert result.outcome == Outcome.CREATED and result.reconciled
    assert wire.sends()["P-1"] == 2 and sandbox.state.payout_creations["P-1"] == 1


async def test_already_taken_but_never_found_stays_unknown(client, wire: Wire, sandbox: Sandbox):
    sandbox.faults.add("v1/payout", Fault.drop_after_commit())
    sandbox.config.status_visible_after = 3600
    [result] = await run(client, [payout(1)])
    assert result.outcome == Outcome.UNKNOWN
    assert wire.sends()["P-1"] == 2  # "taken" stops the re-sends for good
    assert sandbox.state.payout_creations["P-1"] == 1


async def test_already_taken_on_a_first_send_is_looked_up_never_rejected(client, sandbox: Sandbox):
    await client.create_payout(payout(1))  # sent earlier: by a lost journal, another process
    await client.create_payout(payout(2, "99.00"))  # ... or someone else, another amount
    results = by_order(await run(client, [payout(1), payout(2)]))
    assert results["P-1"].outcome == Outcome.CREATED and results["P-1"].reconciled
    assert results["P-1"].payout_id == sandbox.state.payouts_by_order_id["P-1"].id
    assert results["P-2"].outcome == Outcome.UNKNOWN  # exists, but not as sent: a human
    assert "amount" in str(results["P-2"].error)
    assert sandbox.state.payout_creations == Counter({"P-1": 1, "P-2": 1})


async def test_lookups_that_never_answer_leave_it_unknown_and_unsent(
    client, wire: Wire, sandbox: Sandbox
):
    sandbox.faults.add("v1/payout", Fault.status(503), times=FOREVER)
    sandbox.faults.add(STATUS, Fault.status(500), times=FOREVER)
    [result] = await run(client, [payout(1)])
    assert result.outcome == Outcome.UNKNOWN
    # the last lookup's failure is the reason given
    assert isinstance(result.error, ServerError) and result.error.status_code == 500
    assert wire.sends()["P-1"] == 1  # never re-sent without proof of absence
    assert wire.calls(STATUS) >= QUICK.lookups


@pytest.mark.parametrize(
    ("errors", "resent"),
    [
        ({"order_id": ["The selected order id is invalid."]}, True),  # Laravel `exists`: no row
        ({"order_id": ["The order id must be a string."]}, False),
        ({"order_id": ["The selected order id is invalid."], "id": ["required"]}, False),
        (None, True),  # the sandbox's own 400 for an unknown order_id (not_found_status=400)
    ],
)
async def test_which_400s_on_a_lookup_prove_absence(
    client, wire: Wire, sandbox: Sandbox, errors, resent
):
    sandbox.faults.add("v1/payout", Fault.status(503))
    if errors is None:
        sandbox.config.not_found_status = 400
    else:  # Laravel's default status and shapes the sandbox does not produce
        wire.script(
            STATUS,
            json_response(422, {"message": "The given data was invalid.", "errors": errors}),
            times=None,
        )
    [result] = await run(client, [payout(1)])
    if resent:
        assert result.outcome == Outcome.CREATED and result.attempts == 2
        assert sandbox.state.payout_creations["P-1"] == 1
    else:
        assert result.outcome == Outcome.UNKNOWN and wire.sends()["P-1"] == 1


async def test_found_with_another_amount_is_unknown_for_a_human(client, sandbox: Sandbox):
    await client.create_payout(payout(1, "99.00"))
    sandbox.faults.add("v1/payout", Fault.status(503), times=FOREVER)
    [result] = await run(client, [payout(1, "10.00")])
    assert result.outcome == Outcome.UNKNOWN
    assert "99" in str(result.error) and "check by hand" in str(result.error)


async def test_an_unreachable_gateway_is_not_sent_not_unknown(client, wire: Wire, sandbox: Sandbox):
    wire.script("v1/payout", httpx.ConnectError("connection refused"), times=None)
    [result] = await run(client, [payout(1)])
    assert result.outcome == Outcome.NOT_SENT
    assert isinstance(result.error, TransportError)
    assert sandbox.state.requests["v1/payout"] == 0
    wire.clear()
    wire.script("v1/payout", httpx.ConnectError("connection refused"), times=3)  # comes back
    [result] = await run(client, [payout(2)])
    assert result.outcome == Outcome.CREATED
    assert sandbox.state.payout_creations == {"P-2": 1}


async def test_every_send_lost_before_the_gateway_is_not_sent_after_max_sends(
    client, wire: Wire, sandbox: Sandbox
):
    sandbox.faults.add("v1/payout", Fault.status(503), times=FOREVER)  # each doubt: absent
    [result] = await run(client, [payout(1)], reconcile=attrs.evolve(QUICK, max_sends=3))
    assert result.outcome == Outcome.NOT_SENT and result.attempts == 3
    assert isinstance(result.error, OutcomeUnknownError)
    assert wire.sends()["P-1"] == 3 and sandbox.state.payout_creations["P-1"] == 0


async def test_duplicate_order_ids_in_one_batch_are_refused(client, sandbox: Sandbox, tmp_path):
    # at the same time (no journal needed) ...
    results = await run(client, [payout(1), payout(1, "20.00")], concurrency=4)
    outcomes = sorted(r.outcome for r in results)
    assert outcomes == [Outcome.CREATED, Outcome.REJECTED]
    assert isinstance(
        next(r for r in results if r.outcome == "rejected").error, OrderIdConflictError
    )
    # ... and one after the other, with a journal
    results = await run(
        client, [payout(2), payout(3), payout(2)], concurrency=1, journal=tmp_path / "j.db"
    )
    assert [r.outcome for r in results] == [Outcome.CREATED, Outcome.CREATED, Outcome.REJECTED]
    assert sandbox.state.payout_creations == {"P-1": 1, "P-2": 1, "P-3": 1}


async def test_resume_skips_created_reconciles_doubts_and_refuses_changed_bodies(
    client, wire: Wire, sandbox: Sandbox, tmp_path
):
    path = tmp_path / "payouts.db"
    items = [payout(i) for i in range(40)]
    # First run: 0-9 lose their answer after the gateway committed, 10-19 before it;
    # the status endpoint is down, so all twenty stay unknown.
    for i in range(20):
        fault = Fault.drop_after_commit() if i < 10 else Fault.status(503)
        sandbox.faults.add("v1/payout", fault, order_id=f"P-{i}")
    sandbox.faults.add(STATUS, Fault.status(503), times=FOREVER)
    first = by_order(await run(client, items, journal=path))
    assert Counter(r.outcome for r in first.values()) == {"unknown": 20, "created": 20}
    sends_after_first = wire.sends()

    # Second run, healthy gateway, one body changed by mistake.
    sandbox.faults.clear()
    changed = [*items[:39], payout(39, "11.00")]
    second = by_order(await run(client, changed, journal=path))
    assert all(r.resumed for r in second.values())
    for i in range(10):  # were created (and paid since): found, not re-sent
        r = second[f"P-{i}"]
        assert (r.outcome, r.attempts, r.reconciled, r.status) == ("created", 0, True, "paid")
    for i in range(10, 20):  # were not: proven absent, sent once
        assert (second[f"P-{i}"].outcome, second[f"P-{i}"].attempts) == ("created", 1)
    for i in range(20, 39):  # created last time: not even looked up
        r = second[f"P-{i}"]
        assert (r.outcome, r.attempts, r.reconciled) == ("created", 0, False)
        assert r.payout_id == sandbox.state.payouts_by_order_id[f"P-{i}"].id
    # created last time with the old body: not sent, and never reported "rejected" (which
    # says nothing was created, and invites paying it again by hand)
    changed_row = second["P-39"]
    assert (changed_row.outcome, changed_row.attempts) == (Outcome.UNKNOWN, 0)
    assert changed_row.payout_id == sandbox.state.payouts_by_order_id["P-39"].id
    assert isinstance(changed_row.error, OrderIdConflictError)
    assert "different request body" in str(changed_row.error)
    assert "this row was not sent" in str(changed_row.error)
    creations = sandbox.state.payout_creations
    assert set(creations.values()) == {1} and len(creations) == 40
    new_sends = wire.sends() - sends_after_first
    assert set(new_sends) == {f"P-{i}" for i in range(10, 20)}

    async with SQLiteJournal(path) as journal:
        assert await journal.counts() == {JournalState.CREATED: 30, JournalState.PAID: 10}
    # Only hashes are stored: no card number reaches the file.
    assert not any(CARD.encode() in p.read_bytes() for p in tmp_path.iterdir())


async def test_rejected_items_are_sent_again_on_a_rerun(client, sandbox: Sandbox, tmp_path):
    path = tmp_path / "payouts.db"
    account = sandbox.state.account(ACCOUNT)
    assert account is not None
    account.balance = Decimal("5.00")  # no funds yet: a real 400 on `amount`
    [first] = await run(client, [payout(1)], journal=path)
    account.balance = Decimal("1000.00")  # topped up
    [second] = await run(client, [payout(1)], journal=path)
    assert (first.outcome, second.outcome) == (Outcome.REJECTED, Outcome.CREATED)
    assert sandbox.state.payout_creations["P-1"] == 1


# the sandbox's outcome rule: the cents of the amount name the final status
FINAL_CENTS = {"paid": "10.00", "cancel": "10.91", "fail": "10.92"}


@pytest.mark.parametrize("final", FINAL_CENTS)
async def test_wait_final_reports_final_statuses_and_frees_send_slots(
    client, wire: Wire, sandbox: Sandbox, tmp_path, final
):
    # Nothing becomes final until all 20 exist: with one send slot, waits that held
    # the slot would never let the rest be sent, and the batch would time out.
    sandbox.config.wait_polls = None

    async def release() -> None:
        await eventually(lambda: len(sandbox.state.payout_creations) == 20)
        sandbox.config.wait_polls = 0

    releaser = asyncio.create_task(release())
    path = tmp_path / "payouts.db"
    items = [payout(i, FINAL_CENTS[final]) for i in range(20)]
    results = await run(
        client,
        items,
        concurrency=1,
        wait_final=True,
        wait_timeout=10,
        wait_interval=0.005,
        wait_max_interval=0.02,
        journal=path,
    )
    await releaser
    assert {r.outcome for r in results} == {Outcome(final)}
    assert all(r.response.payment_status == PaymentStatus(final) for r in results)
    assert {r.status for r in sandbox.state.payouts.values()} == {final}
    async with SQLiteJournal(path) as journal:
        assert await journal.counts() == {JournalState(final): 20}
    # A re-run knows they are final: no request at all.
    requests = len(wire.sent)
    again = await run(client, items, wait_final=True, journal=path)
    assert {r.outcome for r in again} == {Outcome(final)}
    assert len(wire.sent) == requests


async def test_wait_final_deadline_keeps_created_with_the_timeout(client, sandbox: Sandbox):
    sandbox.config.wait_polls = None  # never final
    [result] = await run(
        client,
        [payout(1)],
        wait_final=True,
        wait_timeout=0.1,
        wait_interval=0.005,
        wait_max_interval=0.01,
    )
    assert result.outcome == Outcome.CREATED
    assert isinstance(result.error, PollingTimeoutError) and not result.ok
    assert result.status == PaymentStatus.WAIT


async def test_progress_reports_done_total_counts_and_rate(client):
    seen: list[BatchProgress] = []
    items = [payout(i, TOO_MUCH if i == 3 else "10.00") for i in range(10)]
    await run(client, items, progress=seen.append)
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


async def test_a_batch_keeps_to_its_rate_at_the_gateway(client, wire: Wire, sandbox: Sandbox):
    # Measured where it matters: when the requests arrived at the sandbox (the wire sits
    # right in front of it, in the same process). Creates and
    # the lookups that settle doubts share the bucket. Only a lower bound on the time
    # taken is asserted (a slow machine only spreads the requests further apart).
    rate = 50
    for i in range(0, 20, 4):  # five doubts: each costs a lookup and a second create
        sandbox.faults.add("v1/payout", Fault.status(503), order_id=f"P-{i}")
    start = time.monotonic()
    results = await run(client, [payout(i) for i in range(20)], rate=rate, concurrency=16)
    assert {r.outcome for r in results} == {Outcome.CREATED}
    assert sandbox.state.requests["v1/payout"] == 25 and sandbox.state.requests[STATUS] >= 5
    times = sorted(s.at for s in wire.sent)
    assert len(times) == sum(sandbox.state.requests.values()) >= 30
    assert_paced(times, start, rate)


async def test_the_clients_own_retries_keep_to_the_batch_rate(client, wire: Wire, sandbox: Sandbox):
    # Each lookup meets two 503s that the client retries inside one call: the gateway
    # sees three requests, and every one of them takes its turn at the batch's rate.
    rate = 50
    for i in range(8):
        sandbox.faults.add("v1/payout", Fault.status(503), order_id=f"P-{i}")
        sandbox.faults.add(STATUS, Fault.status(503), times=2, order_id=f"P-{i}")
    start = time.monotonic()
    results = await run(client, [payout(i) for i in range(8)], rate=rate, concurrency=8)
    assert {r.outcome for r in results} == {Outcome.CREATED}
    assert sandbox.state.requests[STATUS] >= 24  # each item: 2 retried 503s, then an answer
    times = sorted(s.at for s in wire.sent)
    assert len(times) >= 40
    assert_paced(times, start, rate)  # unpaced, each retry arrives 1-2 ms after its call


async def test_a_retry_after_a_day_ahead_pauses_the_batch_only_up_to_max_pause(
    client, sandbox: Sandbox
):
    # A broken or hostile gateway: one 429 whose Retry-After is a day away.
    sandbox.faults.add("v1/payout", Fault.status(503), order_id="P-1")
    sandbox.faults.add(STATUS, Fault.status(429, retry_after=86_400), order_id="P-1")
    policy = attrs.evolve(QUICK, max_pause=0.2)
    async with asyncio.timeout(30):  # a bound on a hang: uncapped, the batch waits a day
        results = await run(client, [payout(i) for i in range(3)], reconcile=policy)
    assert {r.outcome for r in results} == {Outcome.CREATED}
    assert policy.pause_after(86_400) == 0.2 and policy.pause_after(None) == policy.pause


async def test_pacing_ends_with_the_call_it_was_set_for():
    # A task that a hook starts inside a batch's call inherits the pacing; once the call
    # is over, that task's own retries are not held by the batch's limiter any more.
    limiter = RateLimiter(0.001)  # one request, then the next in 1,000 s
    with _paced(limiter):
        pace = RETRY_PACE.get()
        assert pace is not None
        await asyncio.wait_for(pace(), 1)  # takes the one free slot
    assert RETRY_PACE.get() is None
    await asyncio.wait_for(pace(), 1)  # would wait 1,000 s if still paced


def assert_paced(times: list[float], start: float, rate: float) -> None:
    """The k-th request to arrive took one of the first k+1 slots of 1/rate: it cannot
    have arrived before start + k/rate (10 % slack for timer granularity). Only a lower
    bound: a stalled or slow machine only sends later, never sooner."""
    early = [(k, t - start) for k, t in enumerate(times) if t - start < 0.9 * k / rate]
    assert not early, f"requests ahead of the rate (index, seconds after start): {early[:5]}"


async def test_breaking_out_cancels_the_work_in_flight(
    client, wire: Wire, sandbox: Sandbox, tmp_path
):
    sandbox.faults.add("v1/payout", Fault.delay(0.05), times=FOREVER)
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
    calls = wire.calls("v1/payout")
    await asyncio.sleep(0.1)
    assert wire.calls("v1/payout") == calls  # nothing kept sending
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


async def test_an_error_in_the_input_stops_the_batch_after_what_runs(client):
    def items():
        yield payout(1)
        yield payout(2)
        raise LookupError("database went away")

    got = []
    with pytest.raises(LookupError, match="database went away"):
        async for result in client.payouts_batch(items()):
            got.append(result)
    assert sorted(r.order_id for r in got) == ["P-1", "P-2"]  # in-flight ones finished


async def test_a_changed_body_after_a_certain_refusal_is_still_refused(
    client, sandbox: Sandbox, tmp_path
):
    # Refused last time (insufficient funds): nothing exists under the order_id, so the
    # changed row is "rejected" (and not sent), which is the truth.
    path = tmp_path / "j.db"
    [first] = await run(client, [payout(1, TOO_MUCH)], journal=path)
    assert first.outcome == Outcome.REJECTED
    [second] = await run(client, [payout(1, "10.00")], journal=path)
    assert second.outcome == Outcome.REJECTED and second.attempts == 0
    assert isinstance(second.error, OrderIdConflictError)
    assert sandbox.state.payout_creations == {}


async def test_a_journal_failure_stops_the_batch_before_sending(client, wire: Wire, tmp_path):
    journal = SQLiteJournal(tmp_path / "j.db")
    await journal.aclose()  # unusable
    with pytest.raises(JournalError, match="closed"):
        await run(client, [payout(1)], journal=journal)
    assert wire.sent == []


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
        return PayoutStatusResponse(
            payment_status=PaymentStatus.WAIT, order_id=order_id, amount=Decimal("10.00")
        )

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
            yield PayoutRequest(
                service="payment_card_rub",
                order_id=f"P-{i}",
                amount=Decimal("10.00"),
                fields={"number": CARD},
            )

    async def growth(n: int) -> int:
        """Peak growth of live allocations (pymalloc blocks) while streaming n items."""
        nonlocal pulled, completed, ahead
        pulled = completed = ahead = 0
        gc.collect()
        baseline = peak = sys.getallocatedblocks()
        async for result in payouts_batch(
            _InstantClient(), items(n), concurrency=concurrency, reconcile=QUICK
        ):
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
