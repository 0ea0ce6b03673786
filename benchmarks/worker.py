"""Measure one client in one fresh process and print one JSON line (run by ``run.py``).

A fresh process per cell keeps peak RSS and CPU time attributable to that
client alone. ``in flight`` means that many tasks each send, await, send again
(a closed loop), so latency includes any wait for a pooled connection.

    python benchmarks/worker.py '{"client": "httpx", "url": "http://127.0.0.1:8080/",
                                  "keydir": "/tmp/k2048", "inflight": 64, "n": 2000}'
"""

from __future__ import annotations

import asyncio
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

__all__ = ["main"]


def _hide_sniffio() -> str:
    """Make ``import sniffio`` fail the way it does when it is not installed.

    httpcore imports sniffio inside every lock/event setup; when it is missing
    each attempt walks sys.path and fails. To reproduce that cost faithfully
    the site-packages entry is swapped for a mirror without sniffio.
    """
    import site

    for sp in site.getsitepackages():
        if sp in sys.path and Path(sp, "sniffio").exists():
            mirror = tempfile.mkdtemp(prefix="bench-nosniffio-")
            for entry in os.listdir(sp):
                if not entry.startswith("sniffio"):
                    os.symlink(os.path.join(sp, entry), os.path.join(mirror, entry))
            sys.path[sys.path.index(sp)] = mirror
            return mirror
    return ""


def _rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    index = min(len(sorted_values) - 1, max(0, round(q * len(sorted_values) + 0.5) - 1))
    return sorted_values[index]


async def _drive(
    client: Any, prefix: str, n: int, inflight: int, deadline: float
) -> tuple[list[float], int, str]:
    latencies: list[float] = []
    errors = 0
    first_error = ""
    next_index = 0

    async def one_worker() -> None:
        nonlocal next_index, errors, first_error
        perf = time.perf_counter
        while next_index < n and perf() < deadline:
            index = next_index
            next_index += 1
            started = perf()
            try:
                await client.payout(f"{prefix}-{index}")
            except Exception as exc:  # counted and reported, never hidden
                errors += 1
                first_error = first_error or f"{type(exc).__name__}: {str(exc)[:200]}"
                continue
            latencies.append(perf() - started)

    await asyncio.gather(*(one_worker() for _ in range(inflight)))
    return latencies, errors, first_error


async def measure(cfg: dict[str, Any]) -> dict[str, Any]:
    from clients import make_client

    client = make_client(cfg["client"], cfg["url"], Path(cfg["keydir"]), cfg.get("opts", {}))
    inflight = min(int(cfg["inflight"]), client.max_inflight or 1 << 30)
    t0 = time.perf_counter()
    await client.start()
    setup_ms = (time.perf_counter() - t0) * 1000
    pid = os.getpid()
    result: dict[str, Any] = {
        "client": cfg["client"],
        "inflight": inflight,
        "setup_ms": round(setup_ms, 1),
        "rounds": [],
    }
    try:
        warmup = int(cfg.get("warmup", inflight))
        if warmup:
            await _drive(client, f"warm-{pid}", warmup, inflight, time.perf_counter() + 30)
        result["rss_after_warmup_mb"] = round(_rss_mb(), 1)
        profiler = None
        if cfg.get("profile"):
            from pyinstrument import Profiler

            profiler = Profiler(interval=0.0005, async_mode="disabled")
        for round_no in range(int(cfg.get("rounds", 1))):
            deadline = time.perf_counter() + float(cfg.get("max_seconds", 1e9))
            if profiler is not None:
                profiler.start()
            cpu0, wall0 = time.process_time(), time.perf_counter()
            latencies, errors, first_error = await _drive(
                client, f"b-{pid}-{round_no}", int(cfg["n"]), inflight, deadline
            )
            wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
            if profiler is not None:
                profiler.stop()
            latencies.sort()
            done = len(latencies)
            result["rounds"].append(
                {
                    "done": done,
                    "errors": errors,
                    "first_error": first_error,
                    "seconds": round(wall, 3),
                    "rps": round(done / wall, 1) if wall else 0.0,
                    "p50_ms": round(_percentile(latencies, 0.50) * 1000, 2),
                    "p99_ms": round(_percentile(latencies, 0.99) * 1000, 2),
                    "cpu_us_per_req": round(cpu / max(done, 1) * 1e6, 1),
                    "cpu_util": round(cpu / wall, 2) if wall else 0.0,
                }
            )
        if profiler is not None:
            report = profiler.output_text(unicode=False, color=False, show_all=True)
            Path(cfg["profile"]).write_text(report)  # noqa: ASYNC240 - after measuring
    finally:
        await client.close()
    result["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    return result


async def memory(cfg: dict[str, Any]) -> dict[str, Any]:
    """N payouts streamed from a generator through the SDK at ``inflight`` concurrency."""
    from clients import make_client

    client = make_client(
        cfg.get("client", "sdk"), cfg["url"], Path(cfg["keydir"]), cfg.get("opts", {})
    )
    await client.start()
    holder: Any = getattr(client, "sdk", None) or client  # prototypes wrap an SdkClient
    sdk = holder.client
    n, inflight = int(cfg["n"]), int(cfg["inflight"])
    pid = os.getpid()
    items = (holder.request(f"m-{pid}-{i}") for i in range(n))
    rss0 = _rss_mb()
    cpu0, wall0 = time.process_time(), time.perf_counter()
    done = errors = 0
    batch = getattr(sdk, "payouts_batch", None)
    try:
        if batch is not None:
            import inspect

            params = inspect.signature(batch).parameters
            kwargs: dict[str, Any] = {"concurrency": inflight} if "concurrency" in params else {}
            if "journal" in params and cfg.get("journal") is None:
                kwargs["journal"] = None
            how = f"client.payouts_batch(generator, {kwargs})"
            async for outcome in batch(items, **kwargs):
                ok = getattr(outcome, "ok", None)
                if ok is False or getattr(outcome, "error", None) is not None:
                    errors += 1
                else:
                    done += 1
        else:
            how = f"{inflight} tasks pulling create_payout from a generator (no payouts_batch yet)"

            async def pull() -> None:
                nonlocal done, errors
                for request in items:
                    try:
                        await sdk.create_payout(request)
                        done += 1
                    except Exception:
                        errors += 1

            await asyncio.gather(*(pull() for _ in range(inflight)))
    finally:
        await client.close()
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    return {
        "how": how,
        "client": cfg.get("client", "sdk"),
        "n": n,
        "done": done,
        "errors": errors,
        "seconds": round(wall, 2),
        "rps": round(done / wall, 1),
        "cpu_us_per_req": round(cpu / max(done, 1) * 1e6, 1),
        "rss_before_mb": round(rss0, 1),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }


def main() -> None:
    cfg = json.loads(sys.argv[1])
    mirror = _hide_sniffio() if cfg.get("no_sniffio") else ""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    try:
        result = asyncio.run(memory(cfg) if cfg.get("mode") == "memory" else measure(cfg))
        import importlib.util

        result["sniffio_importable"] = importlib.util.find_spec("sniffio") is not None
    finally:
        if mirror:
            import shutil

            shutil.rmtree(mirror, ignore_errors=True)
    print("RESULT " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
