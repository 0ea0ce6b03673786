"""Where a client's CPU goes, by component: py-spy samples grouped by the leaf frame's package.

    python benchmarks/profile_breakdown.py --clients sdk,sdk-httpx          # signing included
    python benchmarks/profile_breakdown.py --clients sdk,sdk-httpx --no-sign

Runs ``worker.py`` under ``py-spy record --format raw`` (sampling, out of process, so
the client runs at full speed) against ``server.py`` on 127.0.0.1, then attributes
each sample to the package of the innermost Python frame: ``httpcore``, ``h11``,
``anyio``, ``asyncio``, ``importlib`` (failed imports: httpcore retries
``import sniffio`` on every lock when it is absent), ``alikassa_async`` and so on.
Needs ``pip install py-spy`` (a dev tool, not a dependency).
"""

from __future__ import annotations

import argparse
import collections
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent

__all__ = ["main"]

_PACKAGES = (
    "alikassa_async",
    "httpx",
    "httpcore",
    "h11",
    "anyio",
    "aiohttp",
    "cryptography",
    "cattrs",
    "attr",
    "sniffio",
    "multidict",
    "yarl",
)


def component(frame: str) -> str:
    """The package a ``function (path:line)`` frame belongs to."""
    match = re.search(r"\((.*?)(?::\d+)?\)$", frame)
    path = match.group(1) if match else frame
    if "<frozen importlib" in path or "importlib" in path:
        return "importlib (failed imports)"
    for package in _PACKAGES:
        if f"/{package}/" in path or path.startswith(f"{package}/"):
            return package
    if "/asyncio/" in path or path.startswith("asyncio/"):
        return "asyncio (loop, socket calls)"
    if "/json/" in path:
        return "json"
    if "benchmarks/" in path or "worker.py" in path or "clients.py" in path:
        return "harness"
    return "other (stdlib, C)"


def breakdown(raw: Path) -> collections.Counter[str]:
    counts: collections.Counter[str] = collections.Counter()
    for line in raw.read_text().splitlines():
        stack, _, samples = line.rpartition(" ")
        if not stack or not samples.isdigit():
            continue
        frames = stack.split(";")
        # Per-payout work: the measured tasks (``one_worker``) and the loop's own callbacks
        # (socket reads, timers); not start-up, imports and key loading (``measure``).
        if "one_worker" not in stack and ("_run_once" not in stack or "measure (" in stack):
            continue
        # a native RSA call shows as its Python caller
        leaf = frames[-1]
        if "sign" in leaf and ("signing.py" in leaf or "clients.py" in leaf):
            counts["signing (RSA)"] += int(samples)
        else:
            counts[component(leaf)] += int(samples)
    return counts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", default="sdk,sdk-httpx")
    parser.add_argument("--n", type=int, default=3000)
    parser.add_argument("--inflight", type=int, default=64)
    parser.add_argument("--no-sign", action="store_true")
    parser.add_argument("--keep", default="", help="keep the raw py-spy stacks in this folder")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(HERE))
    from run import Server, make_keys

    with tempfile.TemporaryDirectory(prefix="alikassa-prof-") as tmp:
        keydir = make_keys(Path(tmp), 2048)
        server = Server(keydir / "public.pem", 0, 0 if args.no_sign else 1, False)
        try:
            for name in args.clients.split(","):
                raw = Path(args.keep or tmp) / f"{name}.raw"
                cfg = {
                    "client": name,
                    "url": server.url,
                    "keydir": str(keydir),
                    "inflight": args.inflight,
                    "n": args.n,
                    "rounds": 1,
                    "warmup": args.inflight,
                    "max_seconds": 60,
                    "opts": {"hash": "sha1", "fake_sign": 1 if args.no_sign else 0},
                }
                subprocess.run(
                    [
                        "py-spy",
                        "record",
                        "--format",
                        "raw",
                        "--rate",
                        "500",
                        "--output",
                        str(raw),
                        "--",
                        sys.executable,
                        str(HERE / "worker.py"),
                        json.dumps(cfg),
                    ],
                    capture_output=True,
                    timeout=600,
                    check=True,
                    cwd=HERE.parent,
                )
                counts = breakdown(raw)
                total = sum(counts.values()) or 1
                print(
                    f"{name} ({args.n} payouts, {args.inflight} in flight, "
                    f"{'signing stubbed' if args.no_sign else 'RSA-2048 signing'}): "
                    f"{total} samples in the event loop"
                )
                for what, samples in counts.most_common():
                    print(f"  {what:<28} {samples / total:6.1%}")
        finally:
            server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
