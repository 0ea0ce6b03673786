"""Batch payouts shared on PostgreSQL: one worker against the SQLite runner, and 1/2/4 workers.

    python benchmarks/pg_workers.py                 # writes benchmarks/RESULTS-pg.md (~2 min)
    python benchmarks/pg_workers.py --n 600 --n-delay 600 --output ''   # a quick look

Everything is on this machine: a throwaway PostgreSQL cluster (the Debian
binaries, as in the tests), ``server.py`` on 127.0.0.1 (verifies every ``Sign``),
and the real CLI in processes of their own, as a user runs it:

1. ``alikassa payouts run`` (SQLite journal) against ``alikassa payouts work`` (one
   worker on PostgreSQL) on the same batch size, server answering at once. Both
   CLIs start, send every payout and exit; wall time per payout. The PostgreSQL
   ``load`` is timed apart (it is done once, before any worker starts).
2. The server answers after ``--delay-ms`` (50): 1, 2 and 4 workers, 64 in flight
   each, on one batch; payouts/s of the batch (load excluded).

The database's share of CPU is the PostgreSQL server's CPU time (postmaster, its
reaped backends and its helpers) over all CPU time spent in the run (workers,
the benchmark server and PostgreSQL). Targets: one worker >= 0.8x the SQLite
runner; two workers >= 1.7x one worker with the 50 ms delay.
"""

from __future__ import annotations

import argparse
import csv
import os
import platform
import resource
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import psutil

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]

from run import Server, make_keys  # noqa: E402  (benchmarks/run.py)

from tests.pg_server import Cluster, _binaries, fresh_database  # noqa: E402

PYTHON = sys.executable
ACCOUNT = "93d5df06-996c-48c3-9847-348d6b580b80"
CARD = "4111111111111111"


def write_csv(path: Path, prefix: str, n: int) -> Path:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["service", "order_id", "amount", "number"])
        writer.writerows(
            ["payment_card_rub", f"{prefix}-{i:06d}", "1000.44", CARD] for i in range(n)
        )
    return path


class Meter:
    """CPU of our children (workers, reaped) and of the PostgreSQL server, over a span."""

    def __init__(self, cluster: Cluster, server: Server) -> None:
        pid = int((cluster.data / "postmaster.pid").read_text().split()[0])
        self.postmaster = psutil.Process(pid)
        self.server = psutil.Process(server.proc.pid)

    def _db(self) -> float:
        total = 0.0
        for proc in [self.postmaster, *self.postmaster.children()]:
            try:
                t = proc.cpu_times()
            except psutil.NoSuchProcess:
                continue
            total += t.user + t.system
            if proc is self.postmaster:
                total += t.children_user + t.children_system  # backends that ended
        return total

    def _ours(self) -> float:
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        t = self.server.cpu_times()
        return usage.ru_utime + usage.ru_stime + t.user + t.system

    def __enter__(self) -> Meter:
        self.db0, self.ours0, self.t0 = self._db(), self._ours(), time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall = time.perf_counter() - self.t0
        self.db = self._db() - self.db0
        self.ours = self._ours() - self.ours0

    @property
    def cores(self) -> float:
        """CPU seconds per wall second: 2.0 is all of a 2-core machine."""
        return (self.db + self.ours) / self.wall if self.wall else 0.0

    @property
    def db_share(self) -> float:
        total = self.db + self.ours
        return self.db / total if total else 0.0


class Progress(threading.Thread):
    """Asks the benchmark server every 20 ms how many creates it received: when 5 % and
    95 % of the batch had arrived. Their span gives the steady-state rate, without process
    start-up (about a second per process here, which would otherwise dominate short runs
    and favour fewer processes). It asks the server, not the database, so measuring costs
    the database nothing."""

    def __init__(self, server: Server, total: int) -> None:
        super().__init__(daemon=True)
        self.server, self.total = server, total
        self.base = int(server.get("/_stats").get("ep_payout", 0))
        self.marks: dict[float, float] = {}

    def run(self) -> None:
        while True:
            done = int(self.server.get("/_stats").get("ep_payout", 0)) - self.base
            now = time.perf_counter()
            for share in (0.05, 0.95):
                if done >= share * self.total:
                    self.marks.setdefault(share, now)
            if done >= self.total:
                return
            time.sleep(0.02)

    @property
    def steady_rate(self) -> float:
        span = self.marks.get(0.95, 0.0) - self.marks.get(0.05, 0.0)
        return 0.9 * self.total / span if span > 0 else 0.0


def cli(*args: str, env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [PYTHON, "-m", "alikassa_async.cli", "payouts", *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=env,
        cwd=HERE.parent,
    )


def finish(*procs: subprocess.Popen[bytes]) -> None:
    for proc in procs:
        _, err = proc.communicate(timeout=600)
        if proc.returncode != 0:
            raise RuntimeError(f"{proc.args} exited {proc.returncode}: {err.decode()[-2000:]}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--n", type=int, default=4000, help="payouts in the SQLite comparison")
    parser.add_argument(
        "--n-delay", type=int, default=4000, help="payouts per run with the server delay"
    )
    parser.add_argument("--delay-ms", type=float, default=50.0)
    parser.add_argument("--workers", default="1,2,4")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of each cell (median)")
    parser.add_argument("--output", default=str(HERE / "RESULTS-pg.md"))
    parser.add_argument(
        "--http-backend",
        choices=("builtin", "httpx", "aiohttp"),
        default=None,
        help="the workers' HTTP backend (default: the client's)",
    )
    parser.add_argument(
        "--no-fsync",
        action="store_true",
        help="run PostgreSQL with fsync=off: what the disk's flushes cost "
        "(never do this with real payouts)",
    )
    args = parser.parse_args(argv)
    if _binaries() is None:
        print("needs Debian's postgresql package (/usr/lib/postgresql/*/bin)", file=sys.stderr)
        return 2
    lines: list[str] = []

    def say(text: str) -> None:
        print(text, flush=True)
        lines.append(text)

    with tempfile.TemporaryDirectory(prefix="alikassa-pgbench-") as tmp_name:
        tmp = Path(tmp_name)
        cert_dir = make_keys(tmp, 2048)
        cluster = Cluster(_binaries())  # type: ignore[arg-type]
        if args.no_fsync:
            with (cluster.data / "postgresql.conf").open("a") as conf:
                conf.write("fsync = off\n")
        cluster.start()
        fast = Server(cert_dir / "public.pem", 0.0, 1, False)
        slow = Server(cert_dir / "public.pem", args.delay_ms, 1, False)
        try:
            dsn = fresh_database(cluster.dsn)
            base = {
                **os.environ,
                "ALIKASSA_ACCOUNT": ACCOUNT,
                "ALIKASSA_PAYOUT_CERT_DIR": str(cert_dir),
                "ALIKASSA_DSN": dsn,
            }
            say("# Batch payouts on PostgreSQL: benchmark results\n")
            say(
                f"- Machine: {platform.machine()}, {os.cpu_count()} cores, Python "
                f"{platform.python_version()}, load average "
                f"{', '.join(f'{x:.2f}' for x in os.getloadavg())}"
            )
            say(
                f"- PostgreSQL: {cluster.bindir.parent.name} (throwaway cluster, "
                f"fsync {'OFF' if args.no_fsync else 'on'}, synchronous_commit on)"
            )
            command = " ".join(argv or sys.argv[1:])
            say(f"- Command: `python benchmarks/pg_workers.py {command}`".replace("  ", " "))
            say("")

            # -- 1. one worker vs the single-process SQLite runner ----------------------
            env = {**base, "ALIKASSA_BASE_URL": fast.url.rstrip("/")}
            sqlite_times: list[float] = []
            pg_times: list[float] = []
            shares: list[float] = []
            load_times: list[float] = []
            for r in range(args.rounds):
                csv_s = write_csv(tmp / f"s{r}.csv", f"S{r}", args.n)
                with Meter(cluster, fast) as m:
                    finish(
                        cli(
                            "run",
                            str(csv_s),
                            "--journal",
                            str(tmp / f"s{r}.db"),
                            "--concurrency",
                            "64",
                            "--no-progress",
                            env=env,
                        )
                    )
                sqlite_times.append(m.wall)
                batch = f"one-{r}"
                csv_p = write_csv(tmp / f"p{r}.csv", f"P{r}", args.n)
                started = time.perf_counter()
                finish(cli("load", str(csv_p), "--batch", batch, env=env))
                load_times.append(time.perf_counter() - started)
                with Meter(cluster, fast) as m:
                    finish(
                        cli(
                            "work",
                            "--batch",
                            batch,
                            "--concurrency",
                            "64",
                            "--no-progress",
                            env=env,
                        )
                    )
                pg_times.append(m.wall)
                shares.append(m.db_share)
            s_rate = args.n / sorted(sqlite_times)[len(sqlite_times) // 2]
            p_rate = args.n / sorted(pg_times)[len(pg_times) // 2]
            say(f"## 1. One worker vs `payouts run` (SQLite), {args.n:,} payouts, no delay\n")
            say("| runner | payouts/s (median of rounds) | rounds (s) | DB share of CPU |")
            say("| --- | ---: | --- | ---: |")
            say(
                f"| `payouts run` (SQLite journal) | {s_rate:,.0f} | "
                f"{', '.join(f'{t:.2f}' for t in sqlite_times)} | - |"
            )
            say(
                f"| `payouts work` (1 worker, PostgreSQL) | {p_rate:,.0f} | "
                f"{', '.join(f'{t:.2f}' for t in pg_times)} | "
                f"{sorted(shares)[len(shares) // 2]:.0%} |"
            )
            say(
                f"\n`payouts load` of the same file: "
                f"{', '.join(f'{t:.2f}' for t in load_times)} s (validate, seal, COPY).\n"
            )
            ratio_one = p_rate / s_rate

            # -- 2. 1/2/4 workers with a server delay ---------------------------------------
            env = {**base, "ALIKASSA_BASE_URL": slow.url.rstrip("/")}
            say(
                f"## 2. Workers sharing one batch, server delay {args.delay_ms:g} ms, "
                f"64 in flight each, {args.n_delay:,} payouts (median of {args.rounds} "
                "interleaved rounds; each round's figure in brackets)\n"
            )
            say(
                "| workers | payouts/s (5 %-95 % of the batch) | payouts/s (wall, start-up "
                "included) | wall (s) | CPU (cores busy) | DB share of CPU |"
            )
            say("| ---: | ---: | ---: | ---: | ---: | ---: |")
            samples: dict[int, list[tuple[float, float, float, float, float]]] = {}
            counts = [int(w) for w in args.workers.split(",")]
            for r in range(args.rounds):  # interleaved, so outside load hits every count alike
                for count in counts:
                    batch = f"many-{count}-{r}-{uuid.uuid4().hex[:6]}"
                    csv_d = write_csv(tmp / f"{batch}.csv", batch, args.n_delay)
                    finish(cli("load", str(csv_d), "--batch", batch, env=env))
                    backend = ["--http-backend", args.http_backend] if args.http_backend else []
                    progress = Progress(slow, args.n_delay)
                    progress.start()
                    with Meter(cluster, slow) as m:
                        finish(
                            *[
                                cli(
                                    "work",
                                    "--batch",
                                    batch,
                                    "--concurrency",
                                    "64",
                                    "--no-progress",
                                    *backend,
                                    env=env,
                                )
                                for _ in range(count)
                            ]
                        )
                    progress.join(5)
                    samples.setdefault(count, []).append(
                        (progress.steady_rate, args.n_delay / m.wall, m.wall, m.cores, m.db_share)
                    )
            rates: dict[int, float] = {}
            for count in counts:
                rows = sorted(samples[count])  # by steady rate: the median round
                steady, walled, wall, cores, share = rows[len(rows) // 2]
                rates[count] = steady
                each = ", ".join(f"{x[0]:,.0f}" for x in samples[count])
                say(
                    f"| {count} | {steady:,.0f} ({each}) | {walled:,.0f} | {wall:.2f} | "
                    f"{cores:.2f} | {share:.0%} |"
                )
            duplicates = sum(
                int(srv.get("/_stats").get("duplicate_order_id", 0)) for srv in (fast, slow)
            )
            say(
                f"\nCreates refused by the server as an `order_id` already used: {duplicates}. "
                f"Load average at the end: "
                f"{', '.join(f'{x:.2f}' for x in os.getloadavg())} (the machine is shared: "
                "'cores busy' counts only this benchmark's processes)."
            )
            say("\n## Targets\n")
            say(f"- one worker / SQLite runner: **{ratio_one:.2f}x** (target >= 0.8x)")

            def ratio(a: float, b: float) -> str:
                return f"{a / b:.2f}x" if a and b else "n/a (batch too small to measure)"

            if 1 in rates and 2 in rates:
                say(
                    f"- two workers / one worker, {args.delay_ms:g} ms delay: "
                    f"**{ratio(rates[2], rates[1])}** (target >= 1.7x)"
                )
            if 1 in rates and 4 in rates:
                say(
                    f"- four workers / one worker: {ratio(rates[4], rates[1])} (two cores: the "
                    "machine, not the protocol, is the limit)"
                )
        finally:
            fast.stop()
            slow.stop()
            cluster.destroy()
    if args.output:
        Path(args.output).write_text("\n".join(lines) + "\n")
        print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
