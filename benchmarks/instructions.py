"""CPU instructions per signed payout, counted by valgrind (noise-free, unlike wall time).

    python benchmarks/instructions.py                       # sdk, sdk-httpx, aiohttp, ...
    python benchmarks/instructions.py --clients sdk --n 300,900

For each client, ``worker.py`` runs twice under ``valgrind --tool=callgrind`` (the
server runs outside valgrind, on 127.0.0.1): once with the small and once with the
large payout count, both at ``--inflight`` in flight. Start-up, imports, key loading
and warm-up cost the same in both runs, so

    instructions per payout = (Ir(large) - Ir(small)) / (large - small)

is what one more payout costs, signing included (``--no-sign`` stubs RSA out with a
fixed signature and runs the server without checks, leaving only the HTTP and SDK
work). Needs valgrind (``apt-get install valgrind``); each run takes ~50x its
normal time.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEFAULT_CLIENTS = "aiohttp,builtin-direct,sdk,sdk-aiohttp,sdk-httpx"

__all__ = ["main"]


def instructions(cfg: dict[str, object], out: Path) -> int:
    cmd = [
        "valgrind",
        "--tool=callgrind",
        f"--callgrind-out-file={out}",
        "--trace-children=no",
        sys.executable,
        str(HERE / "worker.py"),
        json.dumps(cfg),
    ]
    proc = subprocess.run(
        cmd, capture_output=True, text=True, timeout=3600, cwd=HERE.parent, check=False
    )
    if "RESULT " not in proc.stdout:
        raise RuntimeError(f"worker failed: {proc.stderr[-800:]}")
    result = json.loads(proc.stdout.split("RESULT ", 1)[1].splitlines()[0])
    errors = sum(r["errors"] for r in result["rounds"])
    if errors:
        raise RuntimeError(f"{cfg['client']}: {errors} errors: {result['rounds'][0]}")
    match = re.search(r"^(?:summary|totals): (\d+)", out.read_text(), re.MULTILINE)
    if match is None:
        raise RuntimeError(f"no instruction total in {out}")
    return int(match.group(1))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", default=DEFAULT_CLIENTS)
    parser.add_argument("--n", default="200,600", help="small,large payout counts")
    parser.add_argument("--inflight", type=int, default=64)
    parser.add_argument(
        "--no-sign", action="store_true", help="stub RSA out: count only HTTP and SDK work"
    )
    parser.add_argument("--keep", default="", help="keep callgrind files in this folder")
    args = parser.parse_args(argv)
    small, large = (int(x) for x in args.n.split(","))
    sys.path.insert(0, str(HERE))
    from run import Server, make_keys

    with tempfile.TemporaryDirectory(prefix="alikassa-instr-") as tmp:
        folder = Path(args.keep or tmp)
        folder.mkdir(parents=True, exist_ok=True)
        keydir = make_keys(Path(tmp), 2048)
        server = Server(keydir / "public.pem", 0, 0 if args.no_sign else 1, False)
        try:
            print(
                f"instructions per payout (RSA-2048, {args.inflight} in flight, "
                f"{'signing stubbed' if args.no_sign else 'signing included'}):",
                flush=True,
            )
            for name in args.clients.split(","):
                counts = []
                for n in (small, large):
                    cfg = {
                        "client": name,
                        "url": server.url,
                        "keydir": str(keydir),
                        "inflight": args.inflight,
                        "n": n,
                        "rounds": 1,
                        "warmup": args.inflight,
                        "max_seconds": 1e9,
                        "opts": {"hash": "sha1", "fake_sign": 1 if args.no_sign else 0},
                    }
                    counts.append(instructions(cfg, folder / f"callgrind.{name}.{n}"))
                per = (counts[1] - counts[0]) / (large - small)
                print(
                    f"  {name:<16} {per / 1e6:8.3f} M instructions/payout "
                    f"({counts[0]:,} at {small}, {counts[1]:,} at {large})",
                    flush=True,
                )
        finally:
            server.stop()
            if not args.keep:
                for leftover in folder.glob("callgrind.*"):
                    os.unlink(leftover)
    return 0


if __name__ == "__main__":
    sys.exit(main())
