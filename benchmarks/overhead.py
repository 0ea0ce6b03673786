"""Per-call SDK overhead beyond signing and HTTP, on every backend (loopback only).

    python benchmarks/overhead.py                 # 3,000 sequential payouts per backend
    python benchmarks/overhead.py --n 500 --backends builtin

Starts ``server.py`` on 127.0.0.1 (no signature checks: only the client is measured),
then, in this process, runs ``create_payout`` one at a time on each backend with the
signer and the sender's ``post`` wrapped in ``perf_counter`` clocks. Per call:

    overhead = wall(create_payout) - wall(sign) - wall(sender.post)

i.e. building the body, headers, retry loop, logging, classification and parsing the
answer into a model; ``PayoutRequest`` construction is timed on its own. The median
and p90 of the per-call figures are printed (sequential calls on a quiet loop, so the
median is robust to the shared machine's noise). Complementary figure, in
``run.py``'s output: ``sdk`` CPU minus ``builtin-direct`` CPU, and ``sdk-aiohttp`` minus
``aiohttp`` — the whole SDK cost above a hand-written client on the same HTTP code.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import tempfile
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ACCOUNT = "93d5df06-996c-48c3-9847-348d6b580b80"

__all__ = ["main"]


async def measure(url: str, keydir: Path, backend: str, n: int) -> dict[str, Any]:
    from alikassa_async import AliKassaClient, Certificate, PayoutRequest

    cert = Certificate.from_dir(keydir)
    client = AliKassaClient(
        ACCOUNT, payout_cert=cert, base_url=url, http_backend=backend, sign_threads=0
    )  # type: ignore[arg-type]
    clock = time.perf_counter
    spent = {"sign": 0.0, "post": 0.0}
    real_signature = client._signature
    real_post = client._sender.post

    async def timed_signature(*args: Any) -> str:
        t = clock()
        try:
            return await real_signature(*args)
        finally:
            spent["sign"] += clock() - t

    async def timed_post(*args: Any) -> Any:
        t = clock()
        try:
            return await real_post(*args)
        finally:
            spent["post"] += clock() - t

    client._signature = timed_signature  # type: ignore[method-assign]
    client._sender.post = timed_post  # type: ignore[method-assign]

    def request(i: int) -> PayoutRequest:
        return PayoutRequest(
            service="payment_card_rub",
            order_id=f"oh-{backend}-{i}",
            amount=Decimal("1000.44"),
            fields={"number": "4276000011112222", "customer_phone": "79001112233"},
        )

    overheads: list[float] = []
    builds: list[float] = []
    async with client:
        for i in range(-200, n):  # 200 warm-up calls
            t0 = clock()
            req = request(i)
            t1 = clock()
            spent["sign"] = spent["post"] = 0.0
            await client.create_payout(req)
            total = clock() - t1
            if i >= 0:
                builds.append(t1 - t0)
                overheads.append(total - spent["sign"] - spent["post"])
    overheads.sort()
    return {
        "backend": backend,
        "n": n,
        "overhead_median_us": round(statistics.median(overheads) * 1e6, 1),
        "overhead_p90_us": round(overheads[int(len(overheads) * 0.9)] * 1e6, 1),
        "build_median_us": round(statistics.median(builds) * 1e6, 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=3000)
    parser.add_argument("--backends", default="builtin,httpx,aiohttp")
    parser.add_argument(
        "--without-otel",
        action="store_true",
        help="hide opentelemetry-api, as in an install without the otel extra",
    )
    args = parser.parse_args(argv)
    if args.without_otel:
        sys.modules["opentelemetry"] = None  # type: ignore[assignment]
    sys.path.insert(0, str(HERE))
    from run import make_keys

    with tempfile.TemporaryDirectory(prefix="alikassa-overhead-") as tmp:
        keydir = make_keys(Path(tmp), 2048)
        server = subprocess.Popen(
            [sys.executable, str(HERE / "server.py"), "--verify-every", "0"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=HERE.parent,
        )
        try:
            assert server.stdout is not None
            line = server.stdout.readline()
            if not line.startswith("PORT "):
                raise RuntimeError(f"benchmark server did not start: {line!r}")
            url = f"http://127.0.0.1:{int(line.split()[1])}/"
            for backend in args.backends.split(","):
                result = asyncio.run(measure(url, keydir, backend, args.n))
                print(
                    f"{backend:<8} overhead beyond sign + HTTP: median "
                    f"{result['overhead_median_us']:.1f} µs, p90 {result['overhead_p90_us']:.1f}"
                    f" µs per call; PayoutRequest built in {result['build_median_us']:.1f} µs"
                    f" ({result['n']} sequential calls)",
                    flush=True,
                )
        finally:
            server.terminate()
            server.wait(timeout=10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
