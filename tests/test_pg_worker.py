"""payouts_worker on a real PostgreSQL server and the loopback sandbox (uniqueness off).

With the sandbox's ``order_id`` uniqueness check off, a payout sent twice is
*created* twice, so ``state.payout_creations`` is the honest count.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from alikassa_async import AliKassaClient, RetryPolicy, build_payout
from alikassa_async._batch import Outcome, ReconcilePolicy
from alikassa_async._worker import WorkerPolicy
from alikassa_async.journal import JournalInUseError
from alikassa_async.pg_journal import PostgresJournal
from alikassa_async.sandbox import Fault, SandboxConfig
from tests.pg_server import own_cluster, wait_until_up
from tests.test_pg_journal import CARDS

#: everything scaled down: a 1 s send budget, 3 s leases, 0.5 s settle
POLICY = WorkerPolicy(lease=3.0, heartbeat=0.25, retry_unknown=0.3, idle_poll=0.1)
RECONCILE = ReconcilePolicy(settle=0.5, lookups=4, backoff_base=0.05, backoff_max=0.2, pause=0.1)


@pytest.fixture
def alikassa_sandbox_config() -> SandboxConfig:
    return SandboxConfig(wait_seconds=0.5, wait_polls=1, unique_order_ids=False)


def client_for(server, account, certs) -> AliKassaClient:
    return AliKassaClient(
        account,
        payout_cert=certs.payout_certificate(),
        base_url=server.url,
        timeout=1.0,
        retry=RetryPolicy(total_timeout=1.0, backoff_base=0.05),
    )


def items(n: int, prefix: str = "W") -> list:
    return [
        build_payout(
            "payment_card_rub",
            order_id=f"{prefix}-{i:05d}",
            amount=f"{10 + i % 50}.00",
            number=CARDS[i % len(CARDS)],
        )
        for i in range(n)
    ]


async def work(client, journal, batch="b1", **options):
    options.setdefault("policy", POLICY)
    options.setdefault("reconcile", RECONCILE)
    return [r async for r in client.payouts_worker(journal, batch=batch, **options)]


async def test_two_workers_share_a_batch_with_faults_and_pay_each_once(
    pg_dsn, alikassa_sandbox, alikassa_account, alikassa_certs
):
    server = alikassa_sandbox
    n = 300
    for i in range(0, n, 7):
        server.faults.add("v1/payout", Fault.drop_after_commit(), order_id=f"W-{i:05d}")
    for i in range(3, n, 11):
        server.faults.add("v1/payout", Fault.status(503), order_id=f"W-{i:05d}")
    for i in range(5, n, 13):
        server.faults.add("v1/payout", Fault.delay(1.5, after_commit=True), order_id=f"W-{i:05d}")
    cert = alikassa_certs.payout_certificate()
    async with PostgresJournal(pg_dsn, payout_cert=cert) as loader:
        await loader.load("b1", items(n))
    async with (
        client_for(server, alikassa_account, alikassa_certs) as c1,
        client_for(server, alikassa_account, alikassa_certs) as c2,
        PostgresJournal(pg_dsn, payout_cert=cert) as j1,
        PostgresJournal(pg_dsn, payout_cert=cert) as j2,
    ):
        first, second = await asyncio.gather(
            work(c1, j1, concurrency=16), work(c2, j2, concurrency=16)
        )
        status = await j1.status("b1")
        rows = [r async for r in j1.results("b1")]
    assert first and second  # both took part
    results = {r.order_id: r for r in [*first, *second]}
    assert len(results) == len(first) + len(second) == n  # each reported once
    ids = {f"W-{i:05d}" for i in range(n)}
    assert set(server.state.payout_creations) == ids
    assert set(server.state.payout_creations.values()) == {1}  # nobody paid twice
    assert {r.outcome for r in results.values()} == {Outcome.CREATED}
    # a lookup may already see the final status; the journal keeps the best it knows
    assert set(status.counts) <= {"created", "paid"} and status.total == n
    assert status.in_flight == 0
    by_id = {r.order_id: r.id for r in server.state.payouts.values()}
    assert all(row.payout_id == by_id[row.order_id] for row in rows)
    assert sum(row.reconciled for row in rows) >= n // 7  # the dropped answers were looked up


async def test_takeover_reconciles_and_resends_only_after_settle(
    pg_dsn, alikassa_sandbox, alikassa_account, alikassa_certs
):
    """A worker died owning 10 items whose sends had left; 5 reached the gateway."""
    server = alikassa_sandbox
    cert = alikassa_certs.payout_certificate()
    lease = 1.0
    async with (
        PostgresJournal(pg_dsn, payout_cert=cert) as journal,
        client_for(server, alikassa_account, alikassa_certs) as client,
    ):
        await journal.load("b1", items(10))
        before = time.monotonic()
        dead = await journal.claim_items("b1", "dead-worker", 10, lease=lease, max_rounds=3)
        await journal.mark_sent("dead-worker", [(c.order_id, c.token) for c in dead], lease=lease)
        expires = before + lease  # no later than this, on this machine's clock
        for claim in dead[:5]:
            await client.create_payout(journal.open_claim("b1", claim))
        created_by_dead = {c.order_id for c in dead[:5]}
        results = await work(client, journal)
    assert len(results) == 10
    assert set(server.state.payout_creations.values()) == {1}
    assert all(server.state.payout_create_requests[oid] == 1 for oid in created_by_dead)
    reconciled = {r.order_id for r in results if r.reconciled}
    assert reconciled == created_by_dead
    resent = [
        r for oid, r in server.state.payouts_by_order_id.items() if oid not in created_by_dead
    ]
    assert len(resent) == 5
    # the absence rule: a re-send only `settle` after the dead owner's lease ended
    assert min(r.created_monotonic for r in resent) >= expires + RECONCILE.settle


async def test_losing_the_database_stops_sending_and_resumes(
    alikassa_sandbox, alikassa_account, alikassa_certs
):
    server = alikassa_sandbox
    server.faults.add("v1/payout", Fault.delay(0.05), times=10_000)  # a realistic round trip
    cluster = own_cluster()
    cert = alikassa_certs.payout_certificate()
    n = 400
    try:
        async with PostgresJournal(cluster.dsn, payout_cert=cert) as loader:
            await loader.load("b1", items(n))
        async with (
            PostgresJournal(cluster.dsn, payout_cert=cert) as journal,
            client_for(server, alikassa_account, alikassa_certs) as client,
        ):
            task = asyncio.create_task(work(client, journal, concurrency=8))
            while sum(server.state.payout_create_requests.values()) < n // 4:  # noqa: ASYNC110
                await asyncio.sleep(0.01)
            await asyncio.to_thread(cluster.stop, "immediate")
            # sends already under way may end (each within the 1 s budget, with room for a
            # loaded machine); nothing new starts
            await asyncio.sleep(3.0)
            during = sum(server.state.payout_create_requests.values())
            await asyncio.sleep(2.0)
            assert sum(server.state.payout_create_requests.values()) == during
            assert during < n
            await asyncio.to_thread(cluster.start)
            await asyncio.to_thread(wait_until_up, cluster.dsn)
            async with asyncio.timeout(60):
                results = await task
            status = await journal.status("b1")
    finally:
        cluster.destroy()
    assert set(server.state.payout_creations) == {f"W-{i:05d}" for i in range(n)}
    assert set(server.state.payout_creations.values()) == {1}
    assert set(status.counts) <= {"created", "paid"} and status.total == n
    assert len({r.order_id for r in results}) == len(results)


async def test_rate_is_shared_by_the_live_workers(
    pg_dsn, alikassa_sandbox, alikassa_account, alikassa_certs
):
    server = alikassa_sandbox
    cert = alikassa_certs.payout_certificate()
    rate, n = 20.0, 60
    async with PostgresJournal(pg_dsn, payout_cert=cert) as loader:
        await loader.load("b1", items(n))
    async with (
        client_for(server, alikassa_account, alikassa_certs) as c1,
        client_for(server, alikassa_account, alikassa_certs) as c2,
        PostgresJournal(pg_dsn, payout_cert=cert) as j1,
        PostgresJournal(pg_dsn, payout_cert=cert) as j2,
    ):
        start = time.monotonic()
        first, second = await asyncio.gather(
            work(c1, j1, rate=rate, concurrency=8), work(c2, j2, rate=rate, concurrency=8)
        )
    assert len(first) + len(second) == n and first and second
    times = sorted(r.created_monotonic for r in server.state.payouts.values())
    # The k-th creation cannot come before start + (k - 4)/rate: each worker keeps to its
    # half, give or take the two being out of step and one heartbeat of overshoot. A lower
    # bound only (a slow machine only creates later); at the full rate each, creation 59
    # would come at about 1.5 s, not 2.75 s.
    early = [(k, t - start) for k, t in enumerate(times) if t - start < (k - 4) / rate]
    assert not early, early[:5]


async def test_a_worker_with_another_certificate_claims_nothing(
    pg_dsn, alikassa_sandbox, alikassa_account, alikassa_certs, rsa_keys
):
    from alikassa_async import Certificate
    from alikassa_async._sealing import SealError

    async with PostgresJournal(pg_dsn, payout_cert=alikassa_certs.payout_certificate()) as j:
        await j.load("b1", items(3))
    async with (
        PostgresJournal(pg_dsn, payout_cert=Certificate(rsa_keys["other"])) as journal,
        client_for(alikassa_sandbox, alikassa_account, alikassa_certs) as client,
    ):
        with pytest.raises(SealError, match="another payout certificate"):
            await work(client, journal)
        assert (await journal.status("b1")).counts == {"pending": 3}
    assert not alikassa_sandbox.state.payout_create_requests


@pytest.mark.parametrize("wrong", ["certificate", "account"])
async def test_refused_credentials_hand_every_payout_to_a_worker_with_the_right_ones(
    pg_dsn, alikassa_sandbox, alikassa_account, alikassa_certs, rsa_keys, wrong
):
    # A misconfigured worker (another signing key: 401; an account the gateway does not
    # know: 403), started again and again by its supervisor, must neither make a payout
    # "rejected" nor use up its rounds: a right worker then pays all of them.
    from alikassa_async import AuthenticationError, Certificate

    server = alikassa_sandbox
    cert = alikassa_certs.payout_certificate()
    async with PostgresJournal(pg_dsn, payout_cert=cert) as loader:
        await loader.load("b1", items(20))
    for _ in range(4):  # more restarts than max_rounds
        misconfigured = AliKassaClient(
            alikassa_account if wrong == "certificate" else "0b0e5a6c-1d2e-4f30-8a9b-0c1d2e3f4a5b",
            payout_cert=Certificate(rsa_keys["other"]) if wrong == "certificate" else cert,
            base_url=server.url,
            timeout=1.0,
            retry=RetryPolicy(total_timeout=1.0, backoff_base=0.05),
        )
        async with misconfigured, PostgresJournal(pg_dsn, payout_cert=cert) as journal:
            with pytest.raises(AuthenticationError):
                await work(misconfigured, journal, concurrency=4)
            counts = (await journal.status("b1")).counts
            assert "rejected" not in counts, counts
    assert server.state.payout_creations == {}
    async with (
        client_for(server, alikassa_account, alikassa_certs) as client,
        PostgresJournal(pg_dsn, payout_cert=cert) as journal,
    ):
        results = await work(client, journal, concurrency=4)
        assert {r.outcome for r in results} <= {Outcome.CREATED, Outcome.PAID}
        assert (await journal.status("b1")).total == 20
    assert set(server.state.payout_creations) == {f"W-{i:05d}" for i in range(20)}
    assert set(server.state.payout_creations.values()) == {1}


async def test_payouts_batch_takes_a_postgresql_dsn_and_one_owner(
    pg_dsn, alikassa_sandbox, alikassa_account, alikassa_certs
):
    server = alikassa_sandbox
    async with client_for(server, alikassa_account, alikassa_certs) as client:
        results = [
            r
            async for r in client.payouts_batch(items(20, "S"), journal=pg_dsn, reconcile=RECONCILE)
        ]
        assert {r.outcome for r in results} == {Outcome.CREATED}
        again = [
            r
            async for r in client.payouts_batch(items(20, "S"), journal=pg_dsn, reconcile=RECONCILE)
        ]
        assert all(r.resumed and r.attempts == 0 for r in again)
        async with PostgresJournal(pg_dsn) as holder:
            await holder.acquire("run-1")
            with pytest.raises(JournalInUseError, match="in use by pid"):
                async for _ in client.payouts_batch(items(3, "T"), journal=pg_dsn):
                    pass
    assert set(server.state.payout_creations.values()) == {1}
    assert len(server.state.payout_creations) == 20


async def test_a_worker_that_stops_releases_what_it_owned(
    pg_dsn, alikassa_sandbox, alikassa_account, alikassa_certs
):
    from contextlib import aclosing

    server = alikassa_sandbox
    server.faults.add("v1/payout", Fault.delay(0.3), times=10_000)
    cert = alikassa_certs.payout_certificate()
    async with (
        PostgresJournal(pg_dsn, payout_cert=cert) as journal,
        client_for(server, alikassa_account, alikassa_certs) as client,
    ):
        await journal.load("b1", items(100))
        async with aclosing(
            client.payouts_worker(
                journal, batch="b1", concurrency=8, policy=POLICY, reconcile=RECONCILE
            )
        ) as run:
            async for _ in run:
                break  # the consumer leaves: the worker stops with items owned
        import psycopg

        async with await psycopg.AsyncConnection.connect(pg_dsn) as conn:
            cur = await conn.execute(
                "SELECT count(*), bool_and(lease_until <= now()) FROM "
                "alikassa.payouts WHERE state = 'intent'"
            )
            owned, released = await cur.fetchone()
        assert owned > 0 and released  # taken over at once, not after the 3 s lease
        rest = await work(client, journal)
    assert len(rest) + 1 >= 100
    assert set(server.state.payout_creations.values()) == {1}
    assert len(server.state.payout_creations) == 100


async def test_a_doubt_longer_than_the_lease_keeps_its_owner(
    pg_dsn, alikassa_sandbox, alikassa_account, alikassa_certs
):
    """A doubt (3.6 s until the payout is visible) outlasts the lease (3 s): renewals keep
    the item with its owner, so the second worker never takes it over; sent once."""
    server = alikassa_sandbox
    server.sandbox.config.status_visible_after = 3.6  # lookups see nothing past the lease
    for i in range(4):
        server.faults.add("v1/payout", Fault.drop_after_commit(), order_id=f"W-{i:05d}")
    cert = alikassa_certs.payout_certificate()
    async with PostgresJournal(pg_dsn, payout_cert=cert) as loader:
        await loader.load("b1", items(4))
    slow = ReconcilePolicy(settle=5.0, lookups=8, backoff_base=0.1, backoff_max=0.3)
    async with (
        client_for(server, alikassa_account, alikassa_certs) as c1,
        client_for(server, alikassa_account, alikassa_certs) as c2,
        PostgresJournal(pg_dsn, payout_cert=cert) as j1,
        PostgresJournal(pg_dsn, payout_cert=cert) as j2,
    ):
        first = asyncio.create_task(work(c1, j1, reconcile=slow))
        while not server.state.payout_creations:  # noqa: ASYNC110
            await asyncio.sleep(0.01)
        second = await work(c2, j2, reconcile=slow)  # starts while the doubts run
        results = [*await first, *second]
    assert sorted(r.order_id for r in results) == [f"W-{i:05d}" for i in range(4)]
    assert not any(r.resumed for r in results)  # no takeover
    assert all(r.reconciled for r in results)
    assert set(server.state.payout_create_requests.values()) == {1}


async def test_a_lease_too_short_for_a_send_is_refused(
    pg_dsn, alikassa_sandbox, alikassa_account, alikassa_certs
):
    from alikassa_async import ConfigurationError

    async with (
        PostgresJournal(pg_dsn, payout_cert=alikassa_certs.payout_certificate()) as j,
        client_for(alikassa_sandbox, alikassa_account, alikassa_certs) as client,
    ):
        with pytest.raises(ConfigurationError, match=r"lease 1\.5s is too short"):
            await work(client, j, policy=WorkerPolicy(lease=1.5, heartbeat=0.25))
        no_deadline = AliKassaClient(
            alikassa_account,
            payout_cert=alikassa_certs.payout_certificate(),
            base_url=alikassa_sandbox.url,
            retry=RetryPolicy(total_timeout=None),
        )
        async with no_deadline:
            with pytest.raises(ConfigurationError, match="total_timeout"):
                await work(no_deadline, j)
