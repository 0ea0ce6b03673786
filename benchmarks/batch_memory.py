"""Items/s and peak memory of ``payouts_batch`` streaming N payouts to the loopback sandbox.

A measurement of its own (not part of ``benchmarks/run.py``)::

    python benchmarks/batch_memory.py --items 100000 --concurrency 16
    python benchmarks/batch_memory.py --items 100000 --journal      # + SQLite journal

The sandbox runs in its own process (``alikassa sandbox``), so its memory — it
keeps every payout — is not counted, and it has its own core. This process
streams the payouts from a generator, so its memory should not depend on the
number of items: compare the peak RSS of ``--items 10000`` and ``--items 100000``.
Prints one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx

from alikassa_async import AliKassaClient, Certificate, PayoutRequest, build_payout
from alikassa_async.sandbox import generate_certs

ACCOUNT = "93d5df06-996c-48c3-9847-348d6b580b80"


def rss_kib() -> int:
    """Current resident set size of this process, KiB (Linux /proc)."""
    with open("/proc/self/statm") as handle:
        pages = int(handle.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") // 1024


# `alikassa sandbox` binds its listening socket itself, created without IPPROTO_TCP, so
# asyncio skips TCP_NODELAY on accepted connections and every answer (headers, then body)
# waits ~40 ms for a delayed ACK (Nagle). Set TCP_NODELAY on the listener (inherited by
# accepted sockets) so this measures the SDK, not that stall; a no-op once it is fixed.
_LAUNCH = """
import socket, sys
import alikassa_async.sandbox.server as server
_bind = server.bind_socket
def bind_socket(host, port):
    sock = _bind(host, port)
    if SET_NODELAY:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock
server.bind_socket = bind_socket
from alikassa_async.cli import main
sys.exit(main(sys.argv[1:]))
"""


def start_sandbox(certs: Path, nodelay: bool = True) -> tuple[subprocess.Popen[str], str]:
    launch = _LAUNCH.replace("SET_NODELAY", str(nodelay))
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            launch,
            "sandbox",
            "--certs",
            str(certs),
            "--port",
            "0",
            "--wait-seconds",
            "0",
            "--balance",
            "1000000000000",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    for line in proc.stdout:
        match = re.search(r"base_url\s+(http://\S+)", line)
        if match:
            return proc, match.group(1)
    raise RuntimeError("the sandbox did not start")


def payouts(n: int) -> Iterator[PayoutRequest]:
    for i in range(n):
        yield build_payout(
            "payment_card_rub", order_id=f"M-{i:07d}", amount="10.00", number="4111111111111111"
        )


async def run(
    url: str, cert: Certificate, args: argparse.Namespace, workdir: Path
) -> dict[str, object]:
    counts: Counter[str] = Counter()
    samples: list[int] = []
    journal = str(workdir / "journal.db") if args.journal else None
    async with AliKassaClient(
        ACCOUNT,
        payout_cert=cert,
        base_url=url,
        timeout=httpx.Timeout(30.0, connect=10.0),
        max_connections=args.concurrency + 8,
        max_keepalive_connections=args.concurrency + 8,
    ) as client:
        await client.balance()  # warm the pool
        rss_before = rss_kib()
        started = time.perf_counter()
        cpu_started = time.process_time()
        async for result in client.payouts_batch(
            payouts(args.items), concurrency=args.concurrency, journal=journal
        ):
            counts[result.outcome] += 1
            if sum(counts.values()) % 1000 == 0:
                samples.append(rss_kib())
        elapsed = time.perf_counter() - started
        cpu = time.process_time() - cpu_started
    done = sum(counts.values())
    return {
        "items": done,
        "concurrency": args.concurrency,
        "journal": bool(journal),
        "sandbox_tcp_nodelay": not args.sandbox_as_shipped,
        "seconds": round(elapsed, 2),
        "items_per_s": round(done / elapsed, 1),
        "client_cpu_ms_per_item": round(cpu * 1000 / done, 3),
        "rss_before_batch_mib": round(rss_before / 1024, 1),
        "rss_max_during_batch_mib": round(max(samples, default=rss_before) / 1024, 1),
        "rss_growth_mib": round((max(samples, default=rss_before) - rss_before) / 1024, 1),
        "peak_rss_process_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "outcomes": dict(counts),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--journal", action="store_true", help="with a SQLite journal file")
    parser.add_argument(
        "--sandbox-as-shipped",
        action="store_true",
        help="do not set TCP_NODELAY on the sandbox's listening socket",
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="alikassa-batchmem-") as tmp:
        workdir = Path(tmp)
        certs = generate_certs(workdir / "certs")
        proc, url = start_sandbox(certs.root, nodelay=not args.sandbox_as_shipped)
        try:
            result = asyncio.run(run(url, certs.payout_certificate(), args, workdir))
        finally:
            proc.terminate()
            proc.wait(10)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
