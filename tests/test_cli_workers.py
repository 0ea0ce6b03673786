"""``alikassa payouts load|status|results`` as a user runs them (real PostgreSQL).

``payouts work`` as a process is exercised by tests/test_pg_campaign.py.
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from alikassa_async.cli.payouts import _RESULT_COLUMNS
from tests.test_pg_journal import CARDS


def payouts_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "alikassa_async.cli", "payouts", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
    )


def write_csv(path: Path, rows: list[str]) -> Path:
    path.write_text("\n".join(["service,order_id,amount,number", *rows]) + "\n")
    return path


def good_rows(n: int, amount: str = "100.00") -> list[str]:
    return [f"payment_card_rub,L-{i},{amount},{CARDS[i]}" for i in range(n)]


def test_load_reports_every_bad_row_with_its_line_and_loads_nothing(tmp_path, pg_dsn, cert_dir):
    path = write_csv(
        tmp_path / "p.csv",
        [
            *good_rows(3),
            "payment_card_rub,L-9,ten," + CARDS[9],
            "payment_card_rub,L-0,5," + CARDS[1],
        ],
    )
    proc = payouts_cli(
        "load",
        str(path),
        "--dsn",
        pg_dsn,
        "--batch",
        "b1",
        "--payout-cert",
        str(cert_dir / "payout"),
    )
    assert proc.returncode == 2
    assert "line 5: amount" in proc.stderr
    assert "line 6: order_id: 'L-0' already used on line 2" in proc.stderr
    assert "nothing was loaded" in proc.stderr
    with psycopg.connect(pg_dsn) as conn:  # not even the schema was created
        assert conn.execute("SELECT to_regclass('alikassa.payouts')").fetchone() == (None,)


def test_load_twice_is_a_no_op_and_a_changed_body_is_refused(tmp_path, pg_dsn, cert_dir):
    flags = ["--dsn", pg_dsn, "--batch", "b1", "--payout-cert", str(cert_dir / "payout")]
    path = write_csv(tmp_path / "p.csv", good_rows(5))
    first = payouts_cli("load", str(path), *flags)
    assert first.returncode == 0, first.stderr
    assert "5 new, 0 already loaded" in first.stdout
    again = payouts_cli("load", str(path), *flags)
    assert again.returncode == 0 and "0 new, 5 already loaded" in again.stdout
    changed = write_csv(tmp_path / "q.csv", good_rows(5, amount="100.50"))
    refused = payouts_cli("load", str(changed), *flags)
    assert refused.returncode == 2
    assert "'L-0' was loaded before with a different body" in refused.stderr
    other = payouts_cli("load", str(path), *flags[:2], "--batch", "b2", *flags[4:])
    assert other.returncode == 2 and "'L-0' is in batch 'b1'" in other.stderr


def test_status_and_results_of_a_batch(tmp_path, pg_dsn, cert_dir):
    path = write_csv(tmp_path / "p.csv", good_rows(4))
    assert (
        payouts_cli(
            "load",
            str(path),
            "--dsn",
            pg_dsn,
            "--batch",
            "b1",
            "--payout-cert",
            str(cert_dir / "payout"),
        ).returncode
        == 0
    )
    status = payouts_cli("status", "--dsn", pg_dsn, "--batch", "b1")
    assert status.returncode == 0, status.stderr
    assert "4 payout(s): pending 4; in flight 0, live workers 0" in status.stdout
    out = tmp_path / "results.csv"
    results = payouts_cli(
        "results", "--batch", "b1", "--out", str(out), env={"ALIKASSA_DSN": pg_dsn}
    )
    assert results.returncode == 1  # not finished: needs attention
    with out.open(newline="") as handle:
        rows = list(csv.reader(handle))
    assert tuple(rows[0]) == _RESULT_COLUMNS  # the same columns as `payouts run`
    assert [(r[0], r[1], r[2]) for r in rows[1:]] == [
        (str(i + 2), f"L-{i}", "pending") for i in range(4)
    ]
    missing = payouts_cli("status", "--dsn", pg_dsn, "--batch", "nope")
    assert missing.returncode == 3 and "no batch 'nope'" in missing.stderr


def test_configuration_is_checked_first(tmp_path, pg_dsn):
    path = write_csv(tmp_path / "p.csv", ["payment_card_rub,X,ten,"])  # bad row too
    no_dsn = payouts_cli("status", "--batch", "b1", env={"ALIKASSA_DSN": ""})
    assert no_dsn.returncode == 2 and "no database" in no_dsn.stderr
    no_cert = payouts_cli(
        "load", str(path), "--dsn", pg_dsn, "--batch", "b1", env={"ALIKASSA_PAYOUT_CERT_DIR": ""}
    )
    assert no_cert.returncode == 2 and "no payout certificate" in no_cert.stderr
    assert "line 2" not in no_cert.stderr
    no_account = payouts_cli("work", "--dsn", pg_dsn, "--batch", "b1", env={"ALIKASSA_ACCOUNT": ""})
    assert no_account.returncode == 2 and "no account" in no_account.stderr


def test_a_newer_schema_is_refused_by_the_cli(tmp_path, pg_dsn, cert_dir):
    path = write_csv(tmp_path / "p.csv", good_rows(1))
    assert (
        payouts_cli(
            "load",
            str(path),
            "--dsn",
            pg_dsn,
            "--batch",
            "b1",
            "--payout-cert",
            str(cert_dir / "payout"),
        ).returncode
        == 0
    )
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute("INSERT INTO alikassa.schema_version (version, sdk) VALUES (99, 'x')")
    proc = payouts_cli("status", "--dsn", pg_dsn, "--batch", "b1")
    assert proc.returncode == 3
    assert "version 99" in proc.stderr and "upgrade alikassa-async" in proc.stderr


async def test_sigterm_stops_a_worker_and_releases_what_it_owned(
    tmp_path, pg_dsn, alikassa_sandbox, alikassa_account, alikassa_certs
):
    import asyncio
    import signal

    from alikassa_async.sandbox import Fault

    alikassa_sandbox.faults.add("v1/payout", Fault.delay(0.5), times=10_000)
    env = {
        **os.environ,
        "ALIKASSA_DSN": pg_dsn,
        "ALIKASSA_ACCOUNT": alikassa_account,
        "ALIKASSA_PAYOUT_CERT_DIR": str(alikassa_certs.payout_dir),
        "ALIKASSA_BASE_URL": alikassa_sandbox.url,
    }
    rows = [f"payment_card_rub,G-{i},10.00,{CARDS[i % len(CARDS)]}" for i in range(200)]
    path = write_csv(tmp_path / "p.csv", rows)
    load = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "alikassa_async.cli",
        "payouts",
        "load",
        str(path),
        "--batch",
        "b1",
        env=env,
    )
    assert await load.wait() == 0
    work = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "alikassa_async.cli",
        "payouts",
        "work",
        "--batch",
        "b1",
        "--concurrency",
        "8",
        "--timeout",
        "2",
        "--no-progress",
        env=env,
        stderr=asyncio.subprocess.PIPE,
    )
    while sum(alikassa_sandbox.state.payout_create_requests.values()) < 10:  # noqa: ASYNC110
        await asyncio.sleep(0.02)
    work.send_signal(signal.SIGTERM)
    _, err = await work.communicate()
    assert work.returncode == 143, err.decode()
    assert "released" in err.decode()
    async with await psycopg.AsyncConnection.connect(pg_dsn) as conn:
        cur = await conn.execute(
            "SELECT count(*), bool_and(lease_until <= now()) FROM "
            "alikassa.payouts WHERE state = 'intent'"
        )
        owned, released = await cur.fetchone()
    assert owned > 0 and released


@pytest.mark.parametrize(
    "bad", [["--rate", "inf"], ["--lease", "inf"], ["--rate", "nan"], ["--batch", " "]]
)
def test_an_impossible_argument_is_a_usage_error_before_the_database(bad):
    args = ["work", "--dsn", "postgresql://nobody@127.0.0.1:1/none", "--batch", "b1", *bad]
    done = payouts_cli(*args)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr and "error: argument" in done.stderr
