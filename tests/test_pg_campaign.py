"""The proof: worker processes share a batch on PostgreSQL while they are SIGKILLed and the
database crashes; every payout is created exactly once.

The sandbox runs in this process with its ``order_id`` uniqueness check off (a re-send
is a second payout, counted in ``state.payout_creations``) and random faults on the
create endpoint: answers dropped after the commit, answers delayed past the client's
timeout, 5xx before and after the commit. Everything is scaled down (1 s request
budget, 3 s leases, 0.5 s settle) so the campaign takes well under a minute.
"""

from __future__ import annotations

import asyncio
import csv
import os
import random
import signal
import sys
from pathlib import Path

import pytest

from alikassa_async.sandbox import Fault, SandboxConfig
from tests.pg_server import Cluster, own_cluster, wait_until_up
from tests.test_pg_journal import CARDS

CHILD = str(Path(__file__).with_name("pg_worker_child.py"))
SEED = 1412


@pytest.fixture
def alikassa_sandbox_config() -> SandboxConfig:
    return SandboxConfig(wait_seconds=0.5, wait_polls=1, unique_order_ids=False)


def _faults(server, rate: float, seed: int) -> None:
    server.faults.set_random(
        rate,
        seed,
        endpoints=["v1/payout"],
        choices=[
            Fault.drop_after_commit,
            lambda: Fault.delay(1.5, after_commit=True),  # past the 1 s budget: outcome unknown
            lambda: Fault.status(503),
            lambda: Fault.status(503, after_commit=True),
            lambda: Fault.status(502),
        ],
    )


def _write_csv(path: Path, n: int) -> set[str]:
    ids = [f"C-{i:05d}" for i in range(n)]
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["service", "order_id", "amount", "number"])
        writer.writerows(
            ["payment_card_rub", oid, f"{10 + i % 90}.00", CARDS[i % len(CARDS)]]
            for i, oid in enumerate(ids)
        )
    return set(ids)


class Campaign:
    def __init__(
        self,
        dsn: str,
        server,
        account: str,
        cert_dir: Path,
        batch: str,
        broken: bool = False,
        concurrency: int = 32,
    ) -> None:
        self.dsn = dsn
        self.batch = batch
        self.env = {
            **os.environ,
            "PYTHONUNBUFFERED": "1",
            "ALIKASSA_TEST_BROKEN_TAKEOVER": "1" if broken else "0",
            "ALIKASSA_ACCOUNT": account,
            "ALIKASSA_PAYOUT_CERT_DIR": str(cert_dir),
            "ALIKASSA_BASE_URL": server.url,
            "ALIKASSA_DSN": dsn,
        }
        self.concurrency = concurrency
        self.server = server
        self.created_at_crash = 0
        self.created_at_last_kill = 0
        self.db_restarts = 0
        self.kills = 0
        self.starts = 0

    async def cli(self, *args: str) -> tuple[int, str, str]:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            CHILD,
            "payouts",
            *args,
            "--batch",
            self.batch,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=self.env,
        )
        out, err = await proc.communicate()
        assert proc.returncode is not None
        return proc.returncode, out.decode(), err.decode()

    async def start_worker(self) -> asyncio.subprocess.Process:
        self.starts += 1
        return await asyncio.create_subprocess_exec(
            sys.executable,
            CHILD,
            "payouts",
            "work",
            "--batch",
            self.batch,
            "--concurrency",
            str(self.concurrency),
            "--timeout",
            "1",
            "--lease",
            "3",
            "--heartbeat",
            "0.25",
            "--settle",
            "0.5",
            "--retry-unknown",
            "0.3",
            "--no-progress",
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
            env=self.env,
        )

    def created(self) -> int:
        return sum(self.server.state.payout_creations.values())

    async def run(
        self,
        workers: int,
        *,
        total: int,
        kill_every: tuple[float, float],
        cluster: Cluster | None,
        limit: float,
    ) -> list[int]:
        """SIGKILL a random worker every ``kill_every`` seconds (and start a new one) until
        95 % of ``total`` exist; crash the database once, a third of the way in."""
        rng = random.Random(SEED)
        procs = [await self.start_worker() for _ in range(workers)]
        exits: list[int] = []
        async with asyncio.timeout(limit):
            while True:
                await asyncio.sleep(rng.uniform(*kill_every))
                for i, proc in enumerate(procs):  # a worker that failed is started again
                    if proc.returncode not in (None, 0):
                        exits.append(proc.returncode)
                        procs[i] = await self.start_worker()
                if all(p.returncode == 0 for p in procs):
                    return exits
                live = [i for i, p in enumerate(procs) if p.returncode is None]
                if live and self.created() < total * 0.95:
                    i = rng.choice(live)
                    procs[i].send_signal(signal.SIGKILL)
                    await procs[i].wait()
                    self.kills += 1
                    self.created_at_last_kill = self.created()
                    procs[i] = await self.start_worker()
                if cluster is not None and not self.db_restarts and self.created() > total / 3:
                    self.created_at_crash = self.created()
                    await asyncio.to_thread(cluster.stop, "immediate")  # a crash
                    await asyncio.sleep(1.0)
                    await asyncio.to_thread(cluster.start)
                    await asyncio.to_thread(wait_until_up, cluster.dsn)
                    self.db_restarts += 1


@pytest.mark.timeout(300)  # bounds a hang; the campaign itself takes 25-50 s
async def test_four_workers_killed_at_random_and_a_database_crash_pay_each_once(
    alikassa_sandbox, alikassa_account, alikassa_certs, tmp_path
):
    server, n = alikassa_sandbox, 3000
    _faults(server, 0.08, SEED)
    ids = _write_csv(tmp_path / "payroll.csv", n)
    cluster = own_cluster()
    try:
        campaign = Campaign(
            cluster.dsn, server, alikassa_account, alikassa_certs.payout_dir, "payroll-2026-12"
        )
        code, out, err = await campaign.cli("load", str(tmp_path / "payroll.csv"))
        assert code == 0, err
        assert "3,000 new" in out
        exits = await campaign.run(4, total=n, kill_every=(0.1, 0.35), cluster=cluster, limit=240)
        code, out, err = await campaign.cli("status")
        assert code == 0, err
        code, out, err = await campaign.cli("results", "--out", str(tmp_path / "results.csv"))
        assert code == 0, (out, err)
        with (tmp_path / "results.csv").open(newline="") as handle:
            rows = list(csv.DictReader(handle))
    finally:
        cluster.destroy()
    creations = server.state.payout_creations
    fired = len(server.faults.fired)
    print(
        f"\ncampaign: 4 workers, {campaign.kills} SIGKILLs, {campaign.starts} worker starts, "
        f"{campaign.db_restarts} database crash, {n} payouts, {fired} faults, "
        f"{sum(creations.values())} created, "
        f"duplicates {sum(c - 1 for c in creations.values())}, failed exits {exits}, "
        f"created at the crash {campaign.created_at_crash}, at the last kill "
        f"{campaign.created_at_last_kill}"
    )
    assert campaign.kills >= 8 and campaign.db_restarts == 1
    assert n / 3 < campaign.created_at_crash < n  # the database died mid-batch
    assert n / 2 < campaign.created_at_last_kill < n  # workers died all along the batch
    assert set(creations) == ids  # none missing
    assert set(creations.values()) == {1}  # none paid twice
    assert len(rows) == n and {r["order_id"] for r in rows} == ids
    assert {r["outcome"] for r in rows} <= {"created", "paid"}  # nothing left in intent
    by_id = {r.order_id: r.id for r in server.state.payouts.values()}
    assert all(int(r["payout_id"]) == by_id[r["order_id"]] for r in rows)
    assert fired > 100
    assert sum(r["reconciled"] == "yes" for r in rows) > 0


async def test_negative_control_a_takeover_that_ignores_the_lease_pays_twice(
    alikassa_sandbox, alikassa_account, alikassa_certs, tmp_path, pg_dsn
):
    server, n = alikassa_sandbox, 400
    _faults(server, 0.08, SEED)
    _write_csv(tmp_path / "payroll.csv", n)
    campaign = Campaign(
        pg_dsn,
        server,
        alikassa_account,
        alikassa_certs.payout_dir,
        "neg",
        broken=True,
        concurrency=16,
    )
    code, _out, err = await campaign.cli("load", str(tmp_path / "payroll.csv"))
    assert code == 0, err
    await campaign.run(2, total=n, kill_every=(0.5, 1.0), cluster=None, limit=60)
    duplicates = sum(c - 1 for c in server.state.payout_creations.values())
    print(f"\nnegative control: {duplicates} payouts created twice or more")
    assert duplicates > 0
