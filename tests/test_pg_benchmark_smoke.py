"""The PostgreSQL benchmark keeps working: a tiny run, in a subprocess (never a timing check;
the targets live in benchmarks/pg_workers.py as ratios)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.pg_server import require_binaries

ROOT = Path(__file__).resolve().parents[1]


def test_the_postgresql_benchmark_runs_end_to_end():
    require_binaries()
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "pg_workers.py"),
            "--n",
            "40",
            "--n-delay",
            "60",
            "--rounds",
            "1",
            "--workers",
            "1,2",
            "--output",
            "",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "| `payouts work` (1 worker, PostgreSQL) |" in result.stdout
    assert "as an `order_id` already used: 0." in result.stdout
    assert "two workers / one worker" in result.stdout
