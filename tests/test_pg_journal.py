"""PostgresJournal against a real PostgreSQL server: schema, load, sealing, claim/lease/fence."""

from __future__ import annotations

import asyncio
import hashlib
import subprocess
from pathlib import Path

import psycopg
import pytest

from alikassa_async import Certificate, RequestValidationError, build_payout
from alikassa_async._encoding import php_json_encode
from alikassa_async._sealing import SealError
from alikassa_async.journal import Journal, JournalError, JournalState, OrderIdConflictError
from alikassa_async.pg_journal import (
    SCHEMA_VERSION,
    JournalUnavailableError,
    LeaseLostError,
    Outcome,
    PostgresJournal,
)
from tests.pg_server import _binaries, own_cluster, wait_until_up


def luhn(prefix: str) -> str:
    """``prefix`` plus its Luhn check digit."""
    total = 0
    for i, ch in enumerate(reversed(prefix)):
        d = int(ch) * (2 if i % 2 == 0 else 1)
        total += d - 9 if d > 9 else d
    return prefix + str((10 - total % 10) % 10)


CARDS = [luhn(f"4111{n:011d}") for n in range(7000001, 7000041)]
PHONE = "79031112233"


def payouts(n: int = 20, prefix: str = "P", amount: str = "100.00") -> list:
    items = [
        build_payout(
            "payment_card_rub",
            order_id=f"{prefix}-{i}",
            amount=amount,
            number=CARDS[i % len(CARDS)],
        )
        for i in range(n)
    ]
    items.append(
        build_payout(
            "payment_card_sbp_rub",
            order_id=f"{prefix}-sbp",
            amount="50",
            number="+" + PHONE,
            customer_code="100000000111",
        )
    )
    return items


@pytest.fixture
async def journal(pg_dsn: str, payout_cert: Certificate):
    async with PostgresJournal(pg_dsn, payout_cert=payout_cert) as j:
        yield j


def _sql(dsn: str, query: str, *args: object) -> list[tuple]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        cur = conn.execute(query, args or None)
        return cur.fetchall() if cur.description else []


# -- schema -----------------------------------------------------------------------------


async def test_schema_is_created_once_and_versioned(pg_dsn, payout_cert):
    async with PostgresJournal(pg_dsn, payout_cert=payout_cert) as journal:
        assert isinstance(journal, Journal)
        assert await journal.schema_version() == SCHEMA_VERSION
    async with PostgresJournal(pg_dsn, payout_cert=payout_cert) as journal:  # idempotent
        assert await journal.schema_version() == SCHEMA_VERSION
    rows = _sql(pg_dsn, "SELECT version, sdk FROM alikassa.schema_version")
    assert [r[0] for r in rows] == list(range(1, SCHEMA_VERSION + 1))
    assert rows[0][1].startswith("alikassa-async ")


async def test_concurrent_first_opens_migrate_once(pg_dsn, payout_cert):
    journals = [PostgresJournal(pg_dsn, payout_cert=payout_cert) for _ in range(4)]
    await asyncio.gather(*(j.open() for j in journals))
    for j in journals:
        await j.aclose()
    assert _sql(pg_dsn, "SELECT count(*) FROM alikassa.schema_version") == [(SCHEMA_VERSION,)]


async def test_an_older_sdk_refuses_a_newer_schema(pg_dsn, payout_cert):
    async with PostgresJournal(pg_dsn, payout_cert=payout_cert) as journal:
        await journal.load("b1", payouts(2))
    _sql(
        pg_dsn,
        "INSERT INTO alikassa.schema_version (version, sdk) VALUES (%s, 'future')",
        SCHEMA_VERSION + 1,
    )
    journal = PostgresJournal(pg_dsn, payout_cert=payout_cert)
    with pytest.raises(JournalError, match=rf"version {SCHEMA_VERSION + 1}.*upgrade") as info:
        await journal.open()
    assert "password" not in str(info.value)
    await journal.aclose()
    # nothing was touched
    assert _sql(pg_dsn, "SELECT count(*) FROM alikassa.payouts") == [(3,)]


async def test_unreachable_database_is_a_clear_error(payout_cert):
    journal = PostgresJournal(
        "postgresql://u:hunter2@127.0.0.1:1/x", payout_cert=payout_cert, connect_timeout=1
    )
    with pytest.raises(JournalUnavailableError) as info:
        await journal.open()
    assert "hunter2" not in str(info.value) and "hunter2" not in repr(journal)
    await journal.aclose()


# -- load ---------------------------------------------------------------------------------


async def test_rejected_rows_are_all_reported_and_nothing_is_loaded(journal, pg_dsn):
    items = [
        *payouts(3),
        {"service": "payment_card_rub", "order_id": "BAD-1", "amount": "-5", "number": CARDS[0]},
        {"service": "payment_card_rub", "order_id": "P-0", "amount": "1", "number": CARDS[1]},
        {"order_id": "BAD-3", "amount": "1"},
    ]
    with pytest.raises(RequestValidationError) as info:
        await journal.load("b1", items)
    problems = info.value.errors
    assert set(problems) == {"line 5", "line 6", "line 7"}
    assert "amount" in " ".join(problems["line 5"])
    assert "already used on line 1" in " ".join(problems["line 6"])
    assert "service" in " ".join(problems["line 7"])
    assert _sql(pg_dsn, "SELECT count(*) FROM alikassa.payouts") == [(0,)]


async def test_reload_is_a_no_op_and_a_changed_body_is_refused(journal, pg_dsn):
    first = await journal.load("b1", payouts(10))
    assert (first.added, first.unchanged) == (11, 0)
    again = await journal.load("b1", payouts(10))
    assert (again.added, again.unchanged) == (0, 11)
    more = await journal.load("b1", payouts(12))  # two new rows appended
    assert (more.added, more.unchanged) == (2, 11)
    changed = payouts(13)
    changed[4] = build_payout("payment_card_rub", order_id="P-4", amount="100.01", number=CARDS[4])
    with pytest.raises(OrderIdConflictError, match="'P-4' was loaded before with a different"):
        await journal.load("b1", changed)
    # all or nothing: P-12 (new in that load) was not added
    assert _sql(pg_dsn, "SELECT count(*) FROM alikassa.payouts") == [(13,)]


async def test_two_batches_share_a_database_but_never_an_order_id(journal, pg_dsn):
    await journal.load("payroll-a", payouts(5, prefix="A"))
    await journal.load("payroll-b", payouts(7, prefix="B"))
    with pytest.raises(OrderIdConflictError, match="'A-1' is in batch 'payroll-a'"):
        await journal.load("payroll-b", payouts(3, prefix="A"))
    a = await journal.status("payroll-a")
    b = await journal.status("payroll-b")
    assert (a.total, b.total) == (6, 8)
    claims = await journal.claim_items("payroll-b", "w1", 100, lease=30, max_rounds=3)
    assert {c.order_id[0] for c in claims} == {"B"} and len(claims) == 8
    assert (await journal.status("payroll-a")).counts == {"pending": 6}
    with pytest.raises(JournalError, match="no batch 'nope'"):
        await journal.status("nope")


async def test_database_holds_no_card_or_phone_in_clear(journal, pg_dsn, pg_server, tmp_path):
    items = payouts(len(CARDS))
    await journal.load("b1", items)
    claims = await journal.claim_items("b1", "w1", 5, lease=30, max_rounds=3)
    # a worker with the certificate gets the exact request back
    for claim in claims:
        request = journal.open_claim("b1", claim)
        original = next(i for i in items if i.order_id == claim.order_id)
        assert php_json_encode(request.to_wire()) == php_json_encode(original.to_wire())
    dump = _dump(pg_dsn, tmp_path)
    assert b"P-3" in dump  # the dump is real and has the rows
    for secret in [*CARDS, PHONE]:
        assert secret.encode() not in dump
    # nor a plain SHA-256 of any body (brute-forceable for a 16-digit card)
    for item in items:
        assert hashlib.sha256(php_json_encode(item.to_wire())).hexdigest().encode() not in dump
    # final items lose even the ciphertext
    written = await journal.write_outcomes(
        "w1", [Outcome(c.order_id, c.token, "created", payout_id=1) for c in claims[:3]]
    )
    assert len(written) == 3
    rows = _sql(
        pg_dsn,
        "SELECT order_id, sealed IS NULL FROM alikassa.payouts WHERE order_id = ANY(%s)",
        [c.order_id for c in claims],
    )
    assert {oid: erased for oid, erased in rows} == {
        c.order_id: i < 3 for i, c in enumerate(claims)
    }


def _dump(dsn: str, tmp_path: Path) -> bytes:
    bindir = _binaries()
    if bindir is None:  # an outside server: select every column as text instead
        rows = _sql(dsn, "SELECT p::text FROM alikassa.payouts p")
        return "\n".join(r[0] for r in rows).encode()
    out = tmp_path / "dump.sql"
    subprocess.run(
        [str(bindir / "pg_dump"), "--dbname", dsn, "--file", str(out)], check=True, timeout=60
    )
    return out.read_bytes()


async def test_a_sealed_row_moved_or_altered_does_not_open(journal, pg_dsn, rsa_keys):
    await journal.load("b1", payouts(3))
    # swap the ciphertexts of two rows: each is bound to its own order_id
    _sql(
        pg_dsn,
        "UPDATE alikassa.payouts SET sealed = (SELECT sealed FROM alikassa.payouts "
        "WHERE order_id = 'P-1') WHERE order_id = 'P-0'",
    )
    claims = {
        c.order_id: c for c in await journal.claim_items("b1", "w1", 10, lease=30, max_rounds=3)
    }
    with pytest.raises(SealError, match="'P-0'"):
        journal.open_claim("b1", claims["P-0"])
    journal.open_claim("b1", claims["P-1"])


async def test_another_certificate_is_refused_before_claiming(pg_dsn, payout_cert, rsa_keys):
    async with PostgresJournal(pg_dsn, payout_cert=payout_cert) as journal:
        await journal.load("b1", payouts(2))
    other = Certificate(rsa_keys["other"])
    async with PostgresJournal(pg_dsn, payout_cert=other) as journal:
        with pytest.raises(SealError, match="another payout certificate"):
            await journal.check_batch("b1")
        with pytest.raises(SealError):
            await journal.load("b1", payouts(2))


# -- claim, lease, fence -------------------------------------------------------------------


async def test_concurrent_claims_never_share_an_item(journal, pg_dsn, payout_cert):
    await journal.load("b1", payouts(60))
    others = [PostgresJournal(pg_dsn, payout_cert=payout_cert) for _ in range(3)]
    try:
        results = await asyncio.gather(
            *(
                j.claim_items("b1", f"w{i}", 7, lease=30, max_rounds=3)
                for i, j in enumerate([journal, *others] * 3)
            )
        )
    finally:
        for j in others:
            await j.aclose()
    claimed = [c.order_id for batch in results for c in batch]
    assert len(claimed) == len(set(claimed)) == 61  # 12 claims of 7 cover all 61, once each
    tokens = [c.token for batch in results for c in batch]
    assert len(set(tokens)) == len(tokens)
    assert all(not c.in_doubt and c.sent_ago is None for batch in results for c in batch)
    # each claim is a committed intent with an owner and a lease on the database clock
    rows = _sql(
        pg_dsn,
        "SELECT count(*) FROM alikassa.payouts WHERE state = 'intent' AND "
        "owner IS NOT NULL AND lease_until > now() + interval '20 seconds'",
    )
    assert rows == [(61,)]


async def test_a_live_lease_is_never_taken_over(journal):
    await journal.load("b1", payouts(3))
    mine = await journal.claim_items("b1", "w1", 10, lease=30, max_rounds=3)
    assert len(mine) == 4
    assert await journal.claim_items("b1", "w2", 10, lease=30, max_rounds=3) == []
    assert await journal.pending_later("b1", max_rounds=3) == pytest.approx(30, abs=2)


async def test_expired_lease_is_taken_over_in_doubt_and_the_old_owner_is_fenced(journal, pg_dsn):
    await journal.load("b1", payouts(2))
    old = {
        c.order_id: c for c in await journal.claim_items("b1", "w1", 10, lease=1.0, max_rounds=3)
    }
    marked, _ = await journal.mark_sent("w1", [("P-0", old["P-0"].token)], lease=1.0)  # P-0 left
    assert marked == {old["P-0"].token}
    await asyncio.sleep(2.0)
    new = {c.order_id: c for c in await journal.claim_items("b1", "w2", 10, lease=30, max_rounds=3)}
    assert set(new) == set(old)
    claim = new["P-0"]
    assert claim.in_doubt and claim.previous == "intent"
    # P-1's intent never left (no sent mark): nothing to reconcile, its claim is the intent
    assert not new["P-1"].in_doubt and new["P-1"].sends == 1
    # the old owner could last have sent at its lease expiry: ~1 s ago, database clock
    assert claim.sent_ago is not None and 0.3 <= claim.sent_ago <= 4.0
    # every write of the old owner is now fenced off
    stale = old["P-0"]
    assert await journal.write_outcomes("w1", [Outcome("P-0", stale.token, "rejected")]) == set()
    with pytest.raises(LeaseLostError):
        await journal.mark_resend("w1", "P-0", stale.token, lease=30)
    renewed, _ = await journal.renew("w1", [("P-0", stale.token)], lease=30)
    assert renewed == set()
    # ... and a stale token stays fenced even when the same worker id owns it again
    assert await journal.write_outcomes("w2", [Outcome("P-0", stale.token, "rejected")]) == set()
    assert _sql(pg_dsn, "SELECT state, owner FROM alikassa.payouts WHERE order_id = 'P-0'") == [
        ("intent", "w2")
    ]
    assert await journal.write_outcomes(
        "w2", [Outcome("P-0", claim.token, "created", payout_id=7)]
    ) == {"P-0"}
    record = await journal.get("P-0")
    assert record is not None and (record.state, record.payout_id) == (JournalState.CREATED, 7)


async def test_renewal_keeps_a_long_running_item(journal):
    await journal.load("b1", payouts(1))
    claims = await journal.claim_items("b1", "w1", 10, lease=1.5, max_rounds=3)
    for _ in range(8):  # 2.4 s in all: the item outlives its first lease only by renewal
        await asyncio.sleep(0.3)
        renewed, _deadline = await journal.renew(
            "w1", [(c.order_id, c.token) for c in claims], lease=1.5
        )
        assert renewed == {c.token for c in claims}
    assert await journal.claim_items("b1", "w2", 10, lease=30, max_rounds=3) == []


async def test_unknown_items_come_back_for_reconcile_a_bounded_number_of_times(journal):
    await journal.load("b1", payouts(0))  # just P-sbp
    rounds = 0
    while True:
        claims = await journal.claim_items("b1", "w1", 10, lease=30, max_rounds=2)
        if not claims:
            break
        rounds += 1
        (claim,) = claims
        assert claim.in_doubt == (rounds > 1)
        written = await journal.write_outcomes(
            "w1", [Outcome(claim.order_id, claim.token, "unknown", detail="x", retry_in=0.0)]
        )
        assert written == {claim.order_id}
    assert rounds == 3  # the first claim, then two reconcile rounds
    assert await journal.pending_later("b1", max_rounds=2) is None


async def test_a_resend_is_a_durable_fenced_intent(journal, pg_dsn):
    await journal.load("b1", payouts(0))
    (claim,) = await journal.claim_items("b1", "w1", 10, lease=30, max_rounds=3)
    await journal.mark_resend("w1", claim.order_id, claim.token, lease=30)
    assert _sql(pg_dsn, "SELECT state, sends FROM alikassa.payouts") == [("intent", 2)]


async def test_claims_survive_an_immediate_server_stop(payout_cert):
    cluster = own_cluster()
    try:
        async with PostgresJournal(cluster.dsn, payout_cert=payout_cert) as journal:
            await journal.load("b1", payouts(5))
            claims = await journal.claim_items("b1", "w1", 3, lease=60, max_rounds=3)
            cluster.stop("immediate")
            with pytest.raises(JournalUnavailableError):
                await journal.claim_items("b1", "w1", 3, lease=60, max_rounds=3)
            cluster.start()
            wait_until_up(cluster.dsn)
            for _ in range(3):  # the pool drops its dead connections, then reconnects
                try:
                    status = await journal.status("b1")
                    break
                except JournalUnavailableError:
                    await asyncio.sleep(0.2)
            assert status.counts == {"intent": 3, "pending": 3}
            assert status.in_flight == 3
            renewed, _ = await journal.renew(
                "w1", [(c.order_id, c.token) for c in claims], lease=60
            )
            assert renewed == {c.token for c in claims}
    finally:
        cluster.destroy()


# -- the plain Journal protocol (payouts_batch) ---------------------------------------------


async def test_protocol_claim_and_outcome_like_sqlite(journal):
    assert await journal.claim("J-1", "h1", "run-a") is None
    await journal.record_outcome("J-1", JournalState.CREATED, payout_id=42)
    again = await journal.claim("J-1", "h1", "run-b")
    assert again is not None and (again.state, again.payout_id, again.run_id) == (
        JournalState.CREATED,
        42,
        "run-a",
    )
    other = await journal.claim("J-1", "h2", "run-c")
    assert other is not None and other.body_hash == "h1"
    assert await journal.counts() == {JournalState.CREATED: 1}


class _SlowMarks(PostgresJournal):
    """Each sent mark takes its snapshot, then waits before it reaches a row: a statement
    the server started just before a release and finishes after it."""

    def _mark_sql(self) -> str:
        return (
            super()
            ._mark_sql()
            .replace("WHERE order_id", "WHERE (SELECT 1 FROM pg_sleep(2)) = 1 AND order_id", 1)
        )


async def test_a_release_fences_a_sent_mark_that_raced_it(pg_dsn, payout_cert):
    async with _SlowMarks(pg_dsn, payout_cert=payout_cert) as journal:
        await journal.load("b1", payouts(0))
        (claim,) = await journal.claim_items("b1", "w1", 10, lease=30, max_rounds=3)
        mark = asyncio.create_task(
            journal.mark_sent("w1", [(claim.order_id, claim.token)], lease=30)
        )
        async with await psycopg.AsyncConnection.connect(pg_dsn, autocommit=True) as watch:
            while not await (  # noqa: ASYNC110 - wait until the server runs the mark
                await watch.execute(
                    "SELECT 1 FROM pg_stat_activity WHERE state = 'active' "
                    "AND query LIKE '%pg_sleep%' AND pid <> pg_backend_pid()"
                )
            ).fetchall():
                await asyncio.sleep(0.02)
        assert await journal.release_owned("w1", "b1") == 1
        marked, _ = await mark
        assert marked == set()  # the mark lost the race: its bytes must not leave
        assert _sql(pg_dsn, "SELECT lease_until <= now() FROM alikassa.payouts") == [(True,)]
        # released: another worker takes it over at once, as an intent never sent
        (again,) = await journal.claim_items("b1", "w2", 10, lease=30, max_rounds=3)
        assert again.order_id == claim.order_id and not again.in_doubt


async def test_a_load_racing_another_is_checked_against_what_that_one_commits(journal, pg_dsn):
    # Another load has inserted P-0 with another body and not committed yet: this load must
    # wait for it and then refuse, not skip P-0 as "already loaded" (it would pay the
    # other file's amount while reporting this one loaded).
    await journal.load("b1", payouts(2, prefix="Q"))  # the batch exists
    async with await psycopg.AsyncConnection.connect(pg_dsn) as other:
        load_lock = int.from_bytes(
            hashlib.sha256(b"alikassa/load").digest()[:8], "big", signed=True
        )
        await other.execute("SELECT pg_advisory_xact_lock(%s)", (load_lock,))  # as a load does
        await other.execute(
            "INSERT INTO alikassa.payouts (order_id, batch, body_digest, state) "
            "VALUES ('P-0', 'b1', 'another body', 'pending')"
        )
        racing = asyncio.create_task(journal.load("b1", payouts(3)))
        await asyncio.sleep(0.5)  # it copied its rows and waits for the other load
        assert not racing.done()
        await other.commit()
    with pytest.raises(OrderIdConflictError, match="'P-0' was loaded before with a different"):
        await racing
    assert _sql(pg_dsn, "SELECT count(*) FROM alikassa.payouts WHERE order_id LIKE 'P-%%'") == [
        (1,)
    ]


def test_a_malformed_dsn_is_refused_without_its_password(payout_cert):
    with pytest.raises(JournalError) as caught:
        PostgresJournal("postgresql://app:Zq9SecretPW%ZZ@127.0.0.1/pay", payout_cert=payout_cert)
    assert "Zq9SecretPW" not in str(caught.value) and "%25" in str(caught.value)


class _CancelDroppingPool:
    """psycopg_pool on 3.11 waits with asyncio.wait_for, which drops a cancellation that
    arrives as the connection does. This wrapper makes that race happen every time."""

    def __init__(self, pool):
        self._pool = pool

    def __getattr__(self, name):
        return getattr(self._pool, name)

    def connection(self):
        real = self._pool.connection()

        class Dropping:
            async def __aenter__(self):
                asyncio.current_task().cancel()  # a SIGTERM, say, while waiting
                try:
                    await asyncio.sleep(0)
                except asyncio.CancelledError:
                    pass  # ... and dropped, the connection handed over all the same
                return await real.__aenter__()

            async def __aexit__(self, *exc):
                return await real.__aexit__(*exc)

        return Dropping()


async def test_a_cancellation_the_pool_drops_still_cancels_the_caller(journal):
    pool = journal._pool
    journal._pool = _CancelDroppingPool(pool)
    try:
        call = asyncio.create_task(journal.schema_version())
        with pytest.raises(asyncio.CancelledError):
            await call
    finally:
        journal._pool = pool
    assert await journal.schema_version() == SCHEMA_VERSION  # the connection went back
    assert pool.get_stats().get("pool_available", 1) >= 1
