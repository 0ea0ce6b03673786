"""The SQLite journal: durable intents, resume records, group commit, off the event loop."""

from __future__ import annotations

import asyncio
import sqlite3
from decimal import Decimal

import pytest

from alikassa_async import PayoutRequest
from alikassa_async.encoding import php_json_encode
from alikassa_async.journal import (
    Journal,
    JournalError,
    JournalState,
    SQLiteJournal,
    body_hash,
)


def _row(path, order_id):
    conn = sqlite3.connect(path)
    try:
        return conn.execute("SELECT state, sends, run_id, body_hash, payout_id FROM payouts "
                            "WHERE order_id = ?", (order_id,)).fetchone()
    finally:
        conn.close()


async def test_intent_is_committed_before_claim_returns(tmp_path):
    path = tmp_path / "j.db"
    async with SQLiteJournal(path) as journal:
        assert isinstance(journal, Journal)
        assert await journal.claim("P-1", "h1", "run-a") is None
        # Another connection (another process, after a crash) already sees it.
        assert _row(path, "P-1") == ("intent", 1, "run-a", "h1", None)
        conn = sqlite3.connect(path)
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        conn.close()


async def test_known_order_ids_come_back_as_they_were(tmp_path):
    path = tmp_path / "j.db"
    async with SQLiteJournal(path) as journal:
        await journal.claim("P-1", "h1", "run-a")
        await journal.record_outcome("P-1", JournalState.CREATED, payout_id=42)
    async with SQLiteJournal(path) as journal:  # a later run
        again = await journal.claim("P-1", "h1", "run-b")
        assert again is not None
        assert (again.state, again.payout_id, again.run_id, again.sends) == (
            JournalState.CREATED, 42, "run-a", 1)
        # claimed by run-b now: a second occurrence in run-b is recognisable
        twice = await journal.claim("P-1", "h1", "run-b")
        assert twice is not None and twice.run_id == "run-b"
        # a different body is reported and never overwritten
        other = await journal.claim("P-1", "h2", "run-c")
        assert other is not None and other.body_hash == "h1"
        assert _row(path, "P-1")[2:4] == ("run-b", "h1")


async def test_sends_and_outcomes(tmp_path):
    async with SQLiteJournal(tmp_path / "j.db") as journal:
        await journal.claim("P-1", "h", "r")
        await journal.record_outcome("P-1", JournalState.UNKNOWN, detail="ReadError")
        await journal.record_send("P-1")
        record = await journal.get("P-1")
        assert record is not None
        assert (record.state, record.sends, record.detail) == (JournalState.INTENT, 2,
                                                               "ReadError")
        await journal.record_outcome("P-1", JournalState.CREATED, payout_id=7)
        await journal.record_outcome("P-1", JournalState.PAID)  # keeps the payout id
        record = await journal.get("P-1")
        assert record is not None and (record.state, record.payout_id) == ("paid", 7)
        assert record.state.exists_at_gateway and not record.state.in_doubt
        assert await journal.get("nope") is None
        assert await journal.counts() == {JournalState.PAID: 1}


async def test_concurrent_writes_share_commits_and_all_land():
    async with SQLiteJournal(":memory:") as journal:
        results = await asyncio.gather(*(journal.claim(f"P-{i}", "h", "r")
                                         for i in range(2000)))
        assert results == [None] * 2000
        assert await journal.counts() == {JournalState.INTENT: 2000}


async def test_disk_waits_do_not_block_the_event_loop(tmp_path):
    path = tmp_path / "j.db"
    async with SQLiteJournal(path) as journal:
        await journal.claim("P-0", "h", "r")
        blocker = sqlite3.connect(path, isolation_level=None)
        blocker.execute("BEGIN EXCLUSIVE")  # the journal's next write must wait for this
        ticks = 0
        claim = asyncio.create_task(journal.claim("P-1", "h", "r"))
        while ticks < 20:
            await asyncio.sleep(0.005)
            ticks += 1  # the loop keeps running while the journal thread waits
        assert not claim.done()
        blocker.execute("COMMIT")
        blocker.close()
        assert await claim is None
        assert _row(path, "P-1")[0] == "intent"


async def test_unusable_journals_are_a_clear_error(tmp_path):
    with pytest.raises(JournalError, match="cannot open journal"):
        async with SQLiteJournal(tmp_path / "missing-dir" / "j.db"):
            pass
    journal = SQLiteJournal(tmp_path / "j.db")
    await journal.aclose()
    with pytest.raises(JournalError, match="closed"):
        await journal.get("P-1")
    conn = sqlite3.connect(tmp_path / "new.db")
    conn.execute("PRAGMA user_version = 99")
    conn.close()
    with pytest.raises(JournalError, match="newer version"):
        async with SQLiteJournal(tmp_path / "new.db"):
            pass


def test_body_hash_is_the_sha256_of_the_bytes_sent():
    import hashlib

    request = PayoutRequest(service="payment_card_rub", order_id="P-1", amount=Decimal("10"),
                            fields={"number": "4111111111111111"})
    wire = php_json_encode(request.to_wire())
    assert wire == (b'{"amount":"10.00","number":"4111111111111111","order_id":"P-1",'
                    b'"service":"payment_card_rub"}')
    assert body_hash(request) == hashlib.sha256(wire).hexdigest()
    changed = PayoutRequest(service="payment_card_rub", order_id="P-1", amount=Decimal("10.01"),
                            fields={"number": "4111111111111111"})
    assert body_hash(changed) != body_hash(request)
