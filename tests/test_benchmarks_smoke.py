"""The benchmark harness keeps working: a tiny run of every client, in a subprocess.

Smoke only: it checks that each client completes and that the report is produced,
never how fast anything is (speed targets live in benchmarks/, as ratios).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_benchmark_harness_runs_every_client_end_to_end(tmp_path):
    report = tmp_path / "RESULTS.md"
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "run.py"),
            "--quick",
            "--n",
            "60",
            "--vendor-n",
            "3",
            "--clients",
            "vendor,httpx,aiohttp,builtin-direct,sdk,sdk-httpx,sdk-aiohttp",
            "--inflight",
            "4",
            "--delays",
            "0",
            "--memory-n",
            "200",
            "--target-inflight",
            "4",
            "--output",
            str(report),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    for label in (
        "vendor",
        "httpx",
        "aiohttp",
        "builtin-direct",
        "sdk",
        "sdk-httpx",
        "sdk-aiohttp",
    ):
        assert f"  {label} " in result.stdout
    assert "Ratios vs the baselines" in result.stdout
    assert "'done': 200, 'errors': 0" in result.stdout
    text = report.read_text()
    assert "## Summary" in text and "| sdk |" in text and "#16 default" in text
