"""Batch payouts and polling against the loopback sandbox: real sockets, faults, a SIGKILL.

What "never paid twice" means here: the sandbox's own records show every
order_id created exactly once, and — stronger — that the create handler saw
each order_id exactly once (``payout_create_requests``), so no payout was
ever re-sent to a gateway that already had it. (The sandbox refuses a
duplicate order_id, so ``payout_creations`` alone could not catch a re-send.)
"""

from __future__ import annotations

import asyncio
import csv
import os
import signal
import sqlite3
import sys
from collections import Counter
from decimal import Decimal
from pathlib import Path

import httpx
import pytest

from alikassa_async import (
    AliKassaClient,
    PaymentStatus,
    PayoutRequest,
    PollingTimeoutError,
    RetryPolicy,
    build_payout,
)
from alikassa_async._batch import Outcome, ReconcilePolicy
from alikassa_async.sandbox import Fault, SandboxConfig

CARD = "4111111111111111"


@pytest.fixture
def alikassa_sandbox_config() -> SandboxConfig:
    return SandboxConfig(wait_seconds=0.5, wait_polls=1)


def payout(order_id: str, amount: str = "10.00") -> PayoutRequest:
    return build_payout("payment_card_rub", order_id=order_id, amount=amount, number=CARD)


# -- (a) 2,000 payouts through injected faults -------------------------------------


# The client gives up reading after 0.45 s; a "delay" fault sleeps 0.9 s and then
# commits (before) or has committed (after): a read timeout on a payout the gateway
# creates. ReconcilePolicy.settle (1.5 s) must outlast it: a 404 seen while the
# gateway is still working on the request proves nothing.
_CREATE_FAULTS = (
    lambda: Fault.status(503),  # not created
    lambda: Fault.status(503, after_commit=True),  # created, answer lost
    lambda: Fault.status(429, retry_after=0.2),  # not created, slow down
    Fault.drop_before_commit,  # connection dropped, not created
    Fault.drop_after_commit,  # created, connection dropped
    lambda: Fault.delay(0.9),  # read timeout, then created
    lambda: Fault.delay(0.9, after_commit=True),  # created, read timeout
)
_STATUS_FAULTS = (
    lambda: Fault.status(503),
    lambda: Fault.status(429, retry_after=0.1),
    Fault.drop_before_commit,
    Fault.html_200,
)


async def test_2000_payouts_through_faults_end_definite_and_created_exactly_once(
    alikassa_sandbox, alikassa_account, alikassa_certificates
):
    server = alikassa_sandbox
    server.faults.set_random(0.05, seed=20261124, choices=_CREATE_FAULTS, endpoints=["v1/payout"])
    for fault in _STATUS_FAULTS:  # the lookups that settle doubts hurt too
        server.faults.add("v1/payout/status", fault(), times=5)
    payment_cert, payout_cert = alikassa_certificates
    n, concurrency = 2000, 24
    pulled = completed = ahead = 0

    def items():
        nonlocal pulled, ahead
        for i in range(n):
            pulled += 1
            ahead = max(ahead, pulled - completed)
            yield payout(f"F-{i:05d}")

    outcomes: Counter[str] = Counter()
    reconciled = 0
    async with AliKassaClient(
        alikassa_account,
        payment_cert,
        payout_cert,
        base_url=server.url,
        timeout=httpx.Timeout(0.45, connect=2.0),
        max_connections=concurrency + 8,
        max_keepalive_connections=concurrency + 8,
        retry=RetryPolicy(backoff_base=0.02, backoff_max=0.2, total_timeout=10),
    ) as client:
        async for result in client.payouts_batch(
            items(),
            concurrency=concurrency,
            max_waiting=concurrency,
            reconcile=ReconcilePolicy(
                settle=1.5, backoff_base=0.05, backoff_max=0.5, lookups=8, pause=0.2
            ),
        ):
            completed += 1
            outcomes[result.outcome] += 1
            reconciled += result.reconciled
    fired = Counter(
        f.fault.kind + "/" + f.fault.phase for f in server.faults.fired if f.endpoint == "v1/payout"
    )
    assert sum(fired.values()) > 80 and len(fired) == 6  # every kind, both phases
    assert reconciled > 30
    assert outcomes == {Outcome.CREATED: n}  # every item definite, and created
    ids = {f"F-{i:05d}" for i in range(n)}
    state = server.state
    assert set(state.payout_creations) == ids
    assert set(state.payout_creations.values()) == {1}
    assert set(state.payout_create_requests.values()) == {1}  # never re-sent to a gateway
    # that had it; pulled lazily (items settling a doubt give their send slot up)
    assert ahead <= 2 * concurrency + 1


async def test_a_404_decided_before_the_settle_point_proves_nothing_however_late_it_arrives(
    alikassa_client, alikassa_sandbox
):
    # The gateway looks the payout up at once (still invisible: index lag), but its 404
    # reaches the client only after the settle point. What it proves is as of when it was
    # asked, not when it arrived: the next lookup finds the payout, and nothing is re-sent.
    config = alikassa_sandbox.sandbox.config
    config.status_visible_after = 0.3
    alikassa_sandbox.faults.add("v1/payout", Fault.drop_after_commit(), order_id="L-1")
    alikassa_sandbox.faults.add(
        "v1/payout/status", Fault.delay(1.2, after_commit=True), order_id="L-1"
    )
    results = [
        r
        async for r in alikassa_client.payouts_batch(
            [payout("L-1")],
            reconcile=ReconcilePolicy(settle=0.6, backoff_base=0.05, backoff_max=0.2),
        )
    ]
    assert [(r.outcome, r.reconciled, r.attempts) for r in results] == [(Outcome.CREATED, True, 1)]
    assert alikassa_sandbox.state.payout_create_requests["L-1"] == 1


@pytest.mark.parametrize("not_found_status", [404, 400])
async def test_absence_and_index_lag_as_the_gateway_may_answer_them(
    alikassa_client, alikassa_sandbox, not_found_status
):
    # 404, or Laravel's 400 "The selected order id is invalid.", for an unknown order_id;
    # and new payouts invisible to lookups for 0.4 s.
    config = alikassa_sandbox.sandbox.config
    config.not_found_status = not_found_status
    config.status_visible_after = 0.4
    for i in range(5):  # lost before the gateway: must be re-sent once proven absent
        alikassa_sandbox.faults.add("v1/payout", Fault.status(503), order_id=f"B-{i}")
    for i in range(5, 10):  # created, answer lost; a lookup sees 404/400 at first
        alikassa_sandbox.faults.add("v1/payout", Fault.drop_after_commit(), order_id=f"B-{i}")
    results = {
        r.order_id: r
        async for r in alikassa_client.payouts_batch(
            [payout(f"B-{i}") for i in range(12)],
            reconcile=ReconcilePolicy(settle=0.8, backoff_base=0.05, backoff_max=0.2),
        )
    }
    assert {r.outcome for r in results.values()} == {Outcome.CREATED}
    assert [results[f"B-{i}"].attempts for i in range(12)] == [2] * 5 + [1] * 7
    reconciled = [results[f"B-{i}"].reconciled for i in range(12)]
    assert reconciled == [False] * 5 + [True] * 5 + [False] * 2  # found, never re-sent
    assert set(alikassa_sandbox.state.payout_creations.values()) == {1}
    assert set(alikassa_sandbox.state.payout_create_requests.values()) == {1}


# -- (b) crash and resume ------------------------------------------------------------


def _cli(csv_path: Path, journal: Path, server_url: str, account: str, cert_dir: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "alikassa_async.cli",
        "payouts",
        "run",
        str(csv_path),
        "--journal",
        str(journal),
        "--concurrency",
        "16",
        "--no-progress",
        "--account",
        account,
        "--payout-cert",
        str(cert_dir),
        "--base-url",
        server_url,
        "--settle",
        "1",
    ]


async def test_sigkilled_batch_resumes_without_paying_twice_or_missing_one(
    alikassa_sandbox, alikassa_account, alikassa_certs, tmp_path
):
    server, n = alikassa_sandbox, 5000
    csv_path = tmp_path / "payroll.csv"
    with csv_path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["service", "order_id", "amount", "number"])
        writer.writerows(
            ["payment_card_rub", f"K-{i:05d}", f"{10 + i % 90}.00", CARD] for i in range(n)
        )
    journal = tmp_path / "payroll.db"
    command = _cli(csv_path, journal, server.url, alikassa_account, alikassa_certs.payout_dir)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}

    first = await asyncio.create_subprocess_exec(
        *command, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE, env=env
    )
    try:
        async with asyncio.timeout(60):
            while sum(server.state.payout_creations.values()) < n * 2 // 5:
                assert first.returncode is None, "the first run ended before it was killed"
                await asyncio.sleep(0.01)
    finally:
        first.send_signal(signal.SIGKILL)
        await first.wait()
    assert first.returncode == -signal.SIGKILL
    created_before = sum(server.state.payout_creations.values())
    assert created_before < n
    conn = sqlite3.connect(journal)  # the killed run left intents, maybe in flight
    journaled = dict(conn.execute("SELECT state, COUNT(*) FROM payouts GROUP BY state").fetchall())
    conn.close()
    assert journaled.get("created", 0) >= created_before - 200

    second = await asyncio.create_subprocess_exec(
        *command, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env
    )
    async with asyncio.timeout(90):
        out, err = await second.communicate()
    assert second.returncode == 0, err.decode()
    assert "already known to the journal" in out.decode()

    ids = {f"K-{i:05d}" for i in range(n)}
    assert set(server.state.payout_creations) == ids  # none missing
    assert set(server.state.payout_creations.values()) == {1}  # none twice
    assert set(server.state.payout_create_requests.values()) == {1}  # none re-sent
    with (tmp_path / "payroll.results.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == n and {r["outcome"] for r in rows} == {"created"}
    assert {r["order_id"] for r in rows} == ids
    resumed = sum(r["resumed"] == "yes" for r in rows)
    assert resumed >= created_before
    by_id = {r.order_id: r.id for r in server.state.payouts.values()}
    assert all(int(r["payout_id"]) == by_id[r["order_id"]] for r in rows)
    assert all(r["line"] == str(int(r["order_id"][2:]) + 2) for r in rows)


# -- (c) polling against the sandbox --------------------------------------------------

QUICK = {"interval": 0.02, "max_interval": 0.1}


@pytest.mark.parametrize("final", ["paid", "cancel", "fail"])
async def test_wait_for_payout_reaches_each_final_status(alikassa_client, alikassa_sandbox, final):
    alikassa_sandbox.faults.add("v1/payout/status", Fault.status(503), times=3)
    alikassa_sandbox.faults.add("v1/payout/status", Fault.drop_before_commit())
    created = await alikassa_client.create_payout(payout(f"{final}-1"))
    status = await alikassa_client.wait_for_payout(id=created.id, timeout=20, **QUICK)
    assert status.payment_status == PaymentStatus(final)
    assert status.id == created.id and status.order_id == f"{final}-1"


async def test_watch_payout_sees_wait_then_final(alikassa_client, alikassa_sandbox):
    await alikassa_client.create_payout(payout("review-1"))  # 'processing' while pending
    seen = [
        str(s.payment_status)
        async for s in alikassa_client.watch_payout(order_id="review-1", timeout=20, **QUICK)
    ]
    assert seen == ["processing", "paid"]


async def test_a_payout_that_never_finishes_hits_the_deadline(alikassa_client):
    created = await alikassa_client.create_payout(payout("wait-1"))
    with pytest.raises(PollingTimeoutError) as caught:
        await alikassa_client.wait_for_payout(id=created.id, timeout=0.5, **QUICK)
    assert caught.value.last_status.payment_status == PaymentStatus.WAIT


async def test_cancelling_a_wait_stops_polling_the_sandbox(alikassa_client, alikassa_sandbox):
    created = await alikassa_client.create_payout(payout("wait-2"))
    waiter = asyncio.create_task(
        alikassa_client.wait_for_payout(id=created.id, timeout=None, **QUICK)
    )
    while alikassa_sandbox.state.requests["v1/payout/status"] < 3:  # noqa: ASYNC110
        await asyncio.sleep(0.01)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    polls = alikassa_sandbox.state.requests["v1/payout/status"]
    await asyncio.sleep(0.3)
    assert alikassa_sandbox.state.requests["v1/payout/status"] == polls


async def test_wait_final_batch_reports_final_statuses(alikassa_client, alikassa_sandbox):
    items = [payout(f"W-{i}", amount) for i, amount in enumerate(["10.00", "10.91", "10.92"] * 10)]
    results = [
        r
        async for r in alikassa_client.payouts_batch(
            items,
            concurrency=8,
            wait_final=True,
            wait_timeout=20,
            wait_interval=0.05,
            wait_max_interval=0.2,
        )
    ]
    assert Counter(r.outcome for r in results) == {"paid": 10, "cancel": 10, "fail": 10}
    assert all(r.response.payment_status == r.outcome for r in results)
    assert {r.order_id: r.outcome for r in results}["W-1"] == "cancel"
    assert Decimal(alikassa_sandbox.state.payouts_by_order_id["W-0"].amount) == Decimal("10")
