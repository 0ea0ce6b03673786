"""The SQLite journal: durable intents, resume records, group commit, off the event loop."""

from __future__ import annotations

import asyncio
import os
import socket
import sqlite3
from decimal import Decimal

import pytest

from alikassa_async import PayoutRequest
from alikassa_async._encoding import php_json_encode
from alikassa_async.journal import (
    Journal,
    JournalError,
    JournalInUseError,
    JournalState,
    SQLiteJournal,
    body_hash,
)


def _row(path, order_id):
    conn = sqlite3.connect(path)
    try:
        return conn.execute(
            "SELECT state, sends, run_id, body_hash, payout_id FROM payouts WHERE order_id = ?",
            (order_id,),
        ).fetchone()
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
            JournalState.CREATED,
            42,
            "run-a",
            1,
        )
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
        assert (record.state, record.sends, record.detail) == (JournalState.INTENT, 2, "ReadError")
        await journal.record_outcome("P-1", JournalState.CREATED, payout_id=7)
        await journal.record_outcome("P-1", JournalState.PAID)  # keeps the payout id
        record = await journal.get("P-1")
        assert record is not None and (record.state, record.payout_id) == ("paid", 7)
        assert record.state.exists_at_gateway and not record.state.in_doubt
        assert await journal.get("nope") is None
        assert await journal.counts() == {JournalState.PAID: 1}


async def test_concurrent_writes_share_commits_and_all_land():
    async with SQLiteJournal(":memory:") as journal:
        results = await asyncio.gather(*(journal.claim(f"P-{i}", "h", "r") for i in range(2000)))
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

    request = PayoutRequest(
        service="payment_card_rub",
        order_id="P-1",
        amount=Decimal("10"),
        fields={"number": "4111111111111111"},
    )
    wire = php_json_encode(request.to_wire())
    assert wire == (
        b'{"amount":"10.00","number":"4111111111111111","order_id":"P-1",'
        b'"service":"payment_card_rub"}'
    )
    assert body_hash(request) == hashlib.sha256(wire).hexdigest()
    changed = PayoutRequest(
        service="payment_card_rub",
        order_id="P-1",
        amount=Decimal("10.01"),
        fields={"number": "4111111111111111"},
    )
    assert body_hash(changed) != body_hash(request)


async def test_one_owner_at_a_time_and_the_holder_is_named(tmp_path):
    path = tmp_path / "j.db"
    async with SQLiteJournal(path) as first, SQLiteJournal(path) as second:
        await first.acquire("run-a")
        with pytest.raises(JournalInUseError) as caught:
            await second.acquire("run-b")
        holder = caught.value.holder
        assert holder is not None and holder.run_id == "run-a"
        assert holder.pid == os.getpid() and holder.host == socket.gethostname()
        assert f"pid {os.getpid()}" in str(caught.value)
        await first.release()
        await second.acquire("run-b")  # free again
    async with SQLiteJournal(path) as third:  # closing released it
        await third.acquire("run-c")


@pytest.mark.parametrize("alias", ["symlink", "hard link", "sidecar deleted"])
async def test_the_same_journal_by_another_name_has_the_same_one_owner(tmp_path, alias):
    # The lock is on the file, not on its name: a second run reaching the same journal
    # through a symlink or a hard link, or after someone deleted a "stale" .lock, is
    # refused; it would otherwise send the first run's intents as never sent.
    path = tmp_path / "j.db"
    async with SQLiteJournal(path) as first:
        await first.acquire("run-a")
        other = tmp_path / "other.db"
        if alias == "symlink":
            other.symlink_to(path)
        elif alias == "hard link":
            os.link(path, other)
        else:
            os.unlink(f"{path}.lock")
            other = path
        if alias == "hard link":
            # SQLite itself refuses a live WAL database under another name: no run at all
            with pytest.raises(JournalError):
                async with SQLiteJournal(other) as second:
                    await second.acquire("run-b")
            return
        async with SQLiteJournal(other) as second:
            with pytest.raises(JournalInUseError, match="nothing was sent"):
                await second.acquire("run-b")
        await first.release()
        async with SQLiteJournal(other) as third:
            await third.acquire("run-c")  # free once the owner let go


async def test_a_wall_clock_step_does_not_age_an_earlier_runs_send(tmp_path, monkeypatch):
    # An NTP step or a VM resume moves time.time() an hour on; the settle period of a send
    # an earlier run may still have in flight counts from this run's start, unmoved.
    import time

    path = tmp_path / "j.db"
    async with SQLiteJournal(path) as journal:
        await journal.acquire("run-a")
        await journal.claim("P-1", "h", "run-a")
        await journal.record_sent("P-1")
    async with SQLiteJournal(path) as journal:
        await journal.acquire("run-b")
        wall = time.time
        monkeypatch.setattr(time, "time", lambda: wall() + 3600)
        again = await journal.claim("P-1", "h", "run-b")
        monkeypatch.undo()
        assert again is not None and again.idle_for < 60


async def test_a_send_is_recorded_as_intended_then_as_left(tmp_path):
    path = tmp_path / "j.db"
    async with SQLiteJournal(path) as journal:
        await journal.acquire("run-a")
        await journal.claim("P-1", "h", "run-a")
        record = await journal.get("P-1")
        assert (record.sends, record.sent, record.last_send_left) == (1, 0, False)
        await journal.record_sent("P-1")
        record = await journal.get("P-1")
        assert (record.sends, record.sent, record.last_send_left) == (1, 1, True)
        assert record.sent_at is not None
        await journal.record_send("P-1")  # a second intent, not left yet
        assert not (await journal.get("P-1")).last_send_left
    async with SQLiteJournal(path) as journal:
        await journal.acquire("run-b")
        await asyncio.sleep(0.05)
        again = await journal.claim("P-1", "h", "run-b")
        # An earlier run's sends ended before this run took over, 0.05 s ago or more.
        assert again is not None and 0.05 <= again.idle_for < 5


async def test_a_schema_1_journal_is_migrated_taking_every_send_as_gone(tmp_path):
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path)
    conn.execute(
        "CREATE TABLE payouts (order_id TEXT PRIMARY KEY, body_hash TEXT NOT NULL, "
        "state TEXT NOT NULL, payout_id INTEGER, sends INTEGER NOT NULL DEFAULT 0, "
        "run_id TEXT NOT NULL, created_at REAL NOT NULL, updated_at REAL NOT NULL, "
        "detail TEXT)"
    )
    conn.execute("INSERT INTO payouts VALUES ('P-1', 'h', 'intent', NULL, 2, 'r', 1, 1, NULL)")
    conn.execute("PRAGMA user_version = 1")
    conn.commit()
    conn.close()
    async with SQLiteJournal(path) as journal:
        record = await journal.get("P-1")
    assert record.state is JournalState.INTENT and record.last_send_left  # still in doubt
