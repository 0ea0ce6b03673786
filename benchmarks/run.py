"""Benchmark harness: signed payouts against a loopback verifying server.

    python benchmarks/run.py                 # full matrix (< 10 min on 2 cores)
    python benchmarks/run.py --quick         # smoke run for CI (a few hundred requests)
    python benchmarks/run.py --clients httpx,aiohttp:sign_threads=2 --bits 4096 --inflight 64

It generates throw-away RSA keys (legacy encrypted PKCS#1 + password.txt, like
the vendor's archive) in a temp dir, starts ``server.py`` in its own process on
127.0.0.1 for each (key size, server delay) pair, runs every client in a fresh
``worker.py`` process per cell, prints each cell as it finishes, then ratios
against the baselines measured in the same run, and writes ``RESULTS.md``.
Only 127.0.0.1 is ever contacted; the server process is stopped on every exit
path (and stops by itself if this process dies: it watches its stdin).

A client spec is ``name[:key=value,...]``; names are in ``clients.CLIENTS``
(plus ``proposed``/``proposed-*`` from ``proposed_transport.py``). Options go to
the client (``sign_threads=2``, ``hash=sha256``, ``shards=8``, ...), except
``no_sniffio=1``, which runs the worker with sniffio hidden from imports.
"""

from __future__ import annotations

import argparse
import datetime as dt
import http.client
import json
import os
import platform
import select
import shlex
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
PYTHON = sys.executable
DEFAULT_CLIENTS = "vendor,httpx,aiohttp,builtin-direct,sdk,sdk-httpx,sdk-aiohttp,sdk-httpcore-pool"
QUICK_CLIENTS = "vendor,httpx,aiohttp,sdk,sdk-httpx,sdk-aiohttp"
BASELINES = ("httpx", "aiohttp", "vendor")
PASSWORD = b"bench-only-password"  # throw-away keys in a temp dir, deleted on exit

__all__ = ["main"]


# --------------------------------------------------------------------- keys / server


def make_keys(root: Path, bits: int) -> Path:
    """private.pem (legacy encrypted PKCS#1), password.txt, public.pem: the vendor layout."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    folder = root / f"rsa{bits}"
    folder.mkdir()
    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    (folder / "private.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.BestAvailableEncryption(PASSWORD),
        )
    )
    (folder / "password.txt").write_bytes(PASSWORD)
    (folder / "public.pem").write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM,
            serialization.PublicFormat.SubjectPublicKeyInfo,
        )
    )
    return folder


class Server:
    """``server.py`` in a child process; ``stop()`` is safe to call more than once."""

    def __init__(self, public_key: Path, delay_ms: float, verify_every: int, uvloop: bool) -> None:
        cmd = [
            PYTHON,
            str(HERE / "server.py"),
            "--public-key",
            str(public_key),
            "--delay-ms",
            str(delay_ms),
            "--verify-every",
            str(verify_every),
        ]
        if uvloop:
            cmd.append("--uvloop")
        # stdin stays open: the server exits when it closes (i.e. when we die).
        self.proc = subprocess.Popen(
            cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=HERE.parent
        )
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], 30)
        line = self.proc.stdout.readline() if ready else ""
        if not line.startswith("PORT "):
            self.stop()
            raise RuntimeError(f"benchmark server did not start: {line!r}")
        self.port = int(line.split()[1])
        self.url = f"http://127.0.0.1:{self.port}/"

    def get(self, path: str) -> dict[str, Any]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            conn.request("GET" if path == "/_stats" else "POST", path)
            data: dict[str, Any] = json.loads(conn.getresponse().read())
            return data
        finally:
            conn.close()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


# --------------------------------------------------------------------- running cells


def parse_spec(spec: str) -> tuple[str, str, dict[str, Any]]:
    """``aiohttp:sign_threads=2`` -> (label, client name, options)."""
    name, _, rest = spec.partition(":")
    opts: dict[str, Any] = {}
    for item in filter(None, rest.split(",")):
        key, _, value = item.partition("=")
        opts[key] = int(value) if value.lstrip("-").isdigit() else value
    return spec, name, opts


def run_worker(cfg: dict[str, Any], timeout: float) -> dict[str, Any]:
    proc = subprocess.run(
        [PYTHON, str(HERE / "worker.py"), json.dumps(cfg)],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=HERE.parent,
    )
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            result: dict[str, Any] = json.loads(line[7:])
            return result
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
    return {"failed": " | ".join(tail) or f"exit {proc.returncode}"}


def run_once(
    server: Server,
    args: argparse.Namespace,
    keydir: Path,
    bits: int,
    delay: float,
    inflight: int,
    spec: str,
) -> dict[str, Any]:
    """One round of one client in a fresh worker process, with the server's view of it."""
    label, name, opts = parse_spec(spec)
    vendor = name == "vendor"
    no_sniffio = bool(opts.pop("no_sniffio", 0))
    cfg = {
        "client": name,
        "url": server.url,
        "keydir": str(keydir),
        "inflight": inflight,
        "n": args.vendor_n if vendor else args.n,
        "rounds": 1,
        "max_seconds": args.max_seconds,
        "warmup": 2 if vendor else inflight,
        "opts": {"hash": args.hash, **opts},
        "no_sniffio": no_sniffio,
    }
    if args.profile and label in args.profile.split(","):
        cfg["profile"] = str(
            Path(args.profile_dir) / f"profile-{label}-{bits}-{delay:g}ms-{inflight}.txt"
        )
    if bits == 2048 and (vendor or inflight == args.target_inflight):
        cfg["max_seconds"] = args.target_max_seconds  # the targets: all 2,000
    load = os.getloadavg()[0]
    before = server.get("/_stats")
    result = run_worker(cfg, timeout=cfg["max_seconds"] + 120)
    after = server.get("/_stats")
    served = after.get("requests", 0) - before.get("requests", 0)
    result.update(
        {
            "label": label,
            "client": name,
            "load1": load,
            "server_cpu": after["cpu_seconds"] - before["cpu_seconds"],
            "served": served,
            "server_connections": after.get("connections", 0) - before.get("connections", 0),
            "duplicates": after.get("duplicate_order_id", 0) - before.get("duplicate_order_id", 0),
            "bad_sign": after.get("bad_sign", 0) - before.get("bad_sign", 0),
        }
    )
    return result


def merge_rounds(
    parts: list[dict[str, Any]], bits: int, delay: float, inflight: int
) -> dict[str, Any]:
    """One cell from interleaved single-round runs: the median round by payouts/s."""
    first = parts[0]
    cell: dict[str, Any] = {
        "label": first["label"],
        "client": first["client"],
        "bits": bits,
        "delay_ms": delay,
        "requested_inflight": inflight,
        "inflight": first.get("inflight", inflight),
    }
    failed = [p["failed"] for p in parts if "failed" in p]
    rounds = [r for p in parts for r in p.get("rounds", [])]
    if failed or not rounds:
        cell["failed"] = failed[0] if failed else "no rounds"
        return cell
    best = sorted(rounds, key=lambda r: r["rps"])[len(rounds) // 2]
    cell.update(best)
    cell["rounds_rps"] = [r["rps"] for r in rounds]
    cell["peak_rss_mb"] = max(p["peak_rss_mb"] for p in parts)
    cell["setup_ms"] = statistics.median(p["setup_ms"] for p in parts)
    cell["load1"] = max(p["load1"] for p in parts)
    served = sum(p["served"] for p in parts)
    cell["server_us_per_req"] = round(sum(p["server_cpu"] for p in parts) / max(served, 1) * 1e6, 1)
    cell["server_connections"] = max(p["server_connections"] for p in parts)
    for key in ("duplicates", "bad_sign"):
        cell[key] = sum(p[key] for p in parts)
    cell["sniffio_importable"] = first.get("sniffio_importable")
    return cell


def run_group(
    server: Server,
    args: argparse.Namespace,
    keydir: Path,
    bits: int,
    delay: float,
    inflight: int,
    specs: list[str],
) -> list[dict[str, Any]]:
    """Every client at one in-flight level; rounds interleaved (A B C A B C ...) so that
    outside load on the shared machine hits all clients alike."""
    target = inflight == args.target_inflight and bits == 2048
    rounds = args.target_rounds if target else args.rounds
    parts: dict[str, list[dict[str, Any]]] = {spec: [] for spec in specs}
    for round_no in range(rounds):
        for spec in specs:
            if spec.startswith("vendor") and round_no:
                continue  # one round: it is slow and sequential
            parts[spec].append(run_once(server, args, keydir, bits, delay, inflight, spec))
    return [merge_rounds(parts[spec], bits, delay, inflight) for spec in specs]


def print_cell(cell: dict[str, Any]) -> None:
    if "failed" in cell:
        print(f"  {cell['label']:<28} FAILED: {cell['failed']}", flush=True)
        return
    extra = f" errors={cell['errors']} ({cell['first_error']})" if cell.get("errors") else ""
    extra += f" load {cell['load1']:.1f}" if cell.get("load1", 0) > 0.5 else ""
    print(
        f"  {cell['label']:<28} {cell['inflight']:>4} in flight  {cell['rps']:>8.1f}/s  "
        f"p50 {cell['p50_ms']:>8.2f} ms  p99 {cell['p99_ms']:>8.2f} ms  "
        f"cpu {cell['cpu_us_per_req']:>7.0f} us/req  rss {cell['peak_rss_mb']:>5.1f} MB  "
        f"srv {cell['server_us_per_req']:>4.0f} us/req  conns {cell['server_connections']}"
        f"{extra}",
        flush=True,
    )


# --------------------------------------------------------------------- reporting


def machine_info() -> dict[str, str]:
    cpu = platform.processor() or "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions = []
    for pkg in (
        "alikassa-async",
        "httpx",
        "httpcore",
        "h11",
        "anyio",
        "sniffio",
        "aiohttp",
        "httpx-aiohttp",
        "cryptography",
        "requests",
        "uvloop",
    ):
        try:
            versions.append(f"{pkg} {metadata.version(pkg)}")
        except metadata.PackageNotFoundError:
            versions.append(f"{pkg} (not installed)")
    return {
        "cpu": f"{cpu}, {os.cpu_count()} logical CPUs",
        "os": platform.platform(),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "packages": ", ".join(versions),
        "load": "{:.2f} {:.2f} {:.2f}".format(*os.getloadavg()),
    }


def _key(cell: dict[str, Any]) -> tuple[int, float, int]:
    return cell["bits"], cell["delay_ms"], cell["requested_inflight"]


def find(
    cells: list[dict[str, Any]], label: str, bits: int, delay: float, inflight: int | None
) -> dict[str, Any] | None:
    for cell in cells:
        if (
            cell["label"] == label
            and cell["bits"] == bits
            and cell["delay_ms"] == delay
            and (inflight is None or cell["requested_inflight"] == inflight)
            and "rps" in cell
        ):
            return cell
    return None


def ratio(cell: dict[str, Any] | None, base: dict[str, Any] | None) -> float | None:
    if not cell or not base or not base.get("rps"):
        return None
    return float(cell["rps"]) / float(base["rps"])


def fmt_ratio(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}x"


def targets(cells: list[dict[str, Any]], inflight: int) -> list[tuple[str, str, str, str]]:
    """The acceptance figures from this run's cells (RSA-2048, ``inflight``): the default
    against hand-tuned aiohttp and the SDK's own per-call CPU; and against httpx and the
    vendor sample."""
    rows: list[tuple[str, str, str, str]] = []

    def at(label: str, delay: float) -> dict[str, Any] | None:
        return find(cells, label, 2048, delay, inflight)

    def check(
        what: str,
        value: float | None,
        goal: float,
        *,
        at_most: bool = False,
        unit: str = "x",
        note: str = "",
    ) -> None:
        if value is None:
            rows.append((what, "—", f"{'<=' if at_most else '>='} {goal:g}{unit}", "—"))
            return
        ok = value <= goal if at_most else value >= goal
        shown = f"{value:.2f}x" if unit == "x" else f"{value:,.0f}{unit}"
        rows.append(
            (
                what,
                shown,
                f"{'<=' if at_most else '>='} {goal:g}{unit}",
                ("met" if ok else "NOT met") + note,
            )
        )

    def p99_ratio(a: dict[str, Any] | None, b: dict[str, Any] | None) -> float | None:
        return a["p99_ms"] / b["p99_ms"] if a and b and b.get("p99_ms") else None

    def cpu_gap(a: dict[str, Any] | None, b: dict[str, Any] | None) -> float | None:
        return a["cpu_us_per_req"] - b["cpu_us_per_req"] if a and b else None

    sdk0, sdk50 = at("sdk", 0), at("sdk", 50)
    if sdk0 or sdk50:
        check("#16 default (`sdk`) vs `aiohttp`, no delay", ratio(sdk0, at("aiohttp", 0)), 0.6)
        check(
            "#16 default (`sdk`) vs `aiohttp`, 50 ms server delay",
            ratio(sdk50, at("aiohttp", 50)),
            0.95,
        )
        check(
            "#16 default (`sdk`) p99 / `aiohttp` p99, 50 ms server delay",
            p99_ratio(sdk50, at("aiohttp", 50)),
            1.3,
            at_most=True,
        )
        for label, base in (("sdk", "builtin-direct"), ("sdk-aiohttp", "aiohttp")):
            for delay in (0, 50):
                gap = cpu_gap(at(label, delay), at(base, delay))
                if gap is not None:
                    check(
                        f"#16 SDK CPU per payout above `{base}` (`{label}`, {delay:g} ms)",
                        gap,
                        50,
                        at_most=True,
                        unit=" µs",
                        note=" (whole-process CPU: noisy; benchmarks/overhead.py measures it "
                        "per call)",
                    )
    httpx0, httpx50 = at("httpx", 0), at("httpx", 50)
    if sdk0:
        ceiling = (
            f"; the ideal at {inflight} in flight ({inflight / 0.05:,.0f}/s) would be "
            f"{inflight / 0.05 / httpx50['rps']:.2f}x"
            if httpx50
            else ""
        )
        found = [
            c
            for c in (
                at(lb, 0) for lb in dict.fromkeys(c["label"] for c in cells) if lb.startswith("sdk")
            )
            if c
        ]
        top = max(found, key=lambda c: c["rps"]) if found else None
        check(
            f"#7 SDK best transport (`{top['label'] if top else '?'}`) vs `aiohttp`",
            ratio(top, at("aiohttp", 0)),
            0.8,
        )
        check("#7 default (`sdk`) vs `httpx`", ratio(sdk0, httpx0), 3.0)
        check(
            "#7 default (`sdk`) vs `httpx`, 50 ms server delay",
            ratio(sdk50, httpx50),
            6.0,
            note=ceiling,
        )
        check(
            "#7 default (`sdk`) vs `vendor`",
            ratio(sdk0, find(cells, "vendor", 2048, 0, None)),
            50.0,
        )
    return rows


def summary_table(cells: list[dict[str, Any]], inflight: int) -> str:
    """The summary table: each client at 0 and 50 ms against hand-tuned aiohttp."""
    labels = list(dict.fromkeys(c["label"] for c in cells))
    out = [
        f"## Summary: RSA-2048, {inflight} in flight, against hand-tuned aiohttp\n",
        "| client | payouts/s, no delay | × aiohttp | CPU µs/payout | payouts/s, 50 ms "
        "delay | × aiohttp | CPU µs/payout | p99 ms at 50 ms | p99 × aiohttp |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    base0 = find(cells, "aiohttp", 2048, 0, inflight)
    base50 = find(cells, "aiohttp", 2048, 50, inflight)
    for label in labels:
        c0 = find(cells, label, 2048, 0, inflight)
        c50 = find(cells, label, 2048, 50, inflight)
        if not c0 and not c50:
            continue
        row = [label]
        for cell, base in ((c0, base0), (c50, base50)):
            row += (
                [
                    f"{cell['rps']:,.0f}",
                    fmt_ratio(ratio(cell, base)),
                    f"{cell['cpu_us_per_req']:,.0f}",
                ]
                if cell
                else ["", "", ""]
            )
        if c50:
            p99 = f"{c50['p99_ms'] / base50['p99_ms']:.2f}x" if base50 and base50["p99_ms"] else "—"
            row += [f"{c50['p99_ms']:,.1f}", p99]
        else:
            row += ["", ""]
        out.append("| " + " | ".join(row) + " |")
    return "\n".join(out) + "\n"


def render(
    cells: list[dict[str, Any]],
    args: argparse.Namespace,
    info: dict[str, str],
    command: str,
    started: float,
    memory_result: dict[str, Any] | None,
    load_after: str,
) -> str:
    out: list[str] = []
    add = out.append
    add("# Benchmark results\n")
    add(
        f"Generated by `benchmarks/run.py` on {dt.datetime.now().strftime('%Y-%m-%d %H:%M')}"
        f" in {time.monotonic() - started:.0f} s. All figures come from this one run.\n"
    )
    add("```\n" + command + "\n```\n")
    add("## Machine\n")
    add(f"- CPU: {info['cpu']}")
    add(f"- OS: {info['os']}")
    add(f"- Python: {info['python']}")
    add(f"- Packages: {info['packages']}")
    add(f"- Load average before / after: {info['load']} / {load_after}")
    add(
        "- Noise: this machine's 2 cores are shared with other engineers running test suites;"
        " the client and the server each need about one core, so any outside load shows up"
        " directly. Compare ratios within this run, not absolute figures across runs.\n"
    )
    add("## Setup\n")
    every = args.verify_every
    checked = (
        "on every request" if every == 1 else f"on every {every}th request" if every else "never"
    )
    loop_name = "uvloop" if args.server_uvloop else "stdlib asyncio loop"
    add(
        f"- Server: `benchmarks/server.py` (raw asyncio HTTP/1.1 keep-alive, {loop_name}), "
        f"separate process on 127.0.0.1; verifies the `Sign` header over the raw body {checked}"
        ' with the public key; answers `v1/payout` with `{"payment_status":"wait","id":N}`;'
        " refuses a repeated `order_id` (counted as a duplicate)."
    )
    add(
        f"- Payout body: ~140 bytes; signature RSA PKCS#1 v1.5 / {args.hash.upper()}; keys "
        f"generated at start (legacy encrypted PKCS#1 + password.txt), deleted at exit."
    )
    add(
        f"- Each cell: a fresh client process; warm-up of one request per in-flight slot "
        f"(opens the pool), then {args.n} payouts (vendor sample: {args.vendor_n}), stopped early "
        f"after {args.max_seconds:g} s ({args.target_max_seconds:g} s for the RSA-2048 cells at "
        f"{args.target_inflight} in flight and the vendor sample). RSA-2048 cells at "
        f"{args.target_inflight} in flight "
        f"report the median of {args.target_rounds} rounds run interleaved across clients "
        f"(A B C A B C, so outside load hits every client alike); other cells {args.rounds}."
    )
    add(
        "- payouts/s = completed / wall time; latency = one `await` of a payout, queueing "
        "included; CPU = client process CPU time (all threads) / payouts; peak RSS = client "
        "process `ru_maxrss`; srv = server CPU per request (if it nears 1 s/s the server, "
        "not the client, is the limit).\n"
    )
    add(
        "Clients: `vendor` = the vendor's Python sample (requests, key re-read per call, "
        "sequential: 1 in flight whatever the column says); `httpx` = one hand-written "
        "`httpx.AsyncClient(limits=Limits(max_connections=100))`, key cached, body signed once; "
        "`aiohttp` = one hand-written `aiohttp.ClientSession` (limit=100), same signing; "
        "`builtin-direct` = the same hand-written client on the SDK's built-in sender (the "
        "yardstick for the SDK's own overhead); "
        "`sdk*` = `AliKassaClient.create_payout` (PayoutRequest built per call) in each "
        "transport configuration: `sdk` the default (built-in HTTP/1.1 sender), `sdk-httpx` "
        "httpx on the lane pool (the previous default), `sdk-aiohttp` "
        '`http_backend="aiohttp"`, `sdk-httpcore-pool` httpx\'s own pool. Other labels are '
        "phase-2 prototypes (see README).\n"
    )

    add(summary_table(cells, args.target_inflight))
    groups = sorted({(c["bits"], c["delay_ms"]) for c in cells})
    labels = list(dict.fromkeys(c["label"] for c in cells))
    inflights = sorted({c["requested_inflight"] for c in cells})
    for bits, delay in groups:
        add(f"## RSA-{bits}, server delay {delay:g} ms\n")
        add("payouts/s (ratio vs the `httpx` baseline of the same column):\n")
        add("| client | " + " | ".join(f"{i} in flight" for i in inflights) + " |")
        add("| --- |" + " ---: |" * len(inflights))
        for label in labels:
            row = []
            for inflight in inflights:
                cell = find(cells, label, bits, delay, inflight)
                if cell is None:
                    row.append("")
                    continue
                r = ratio(cell, find(cells, "httpx", bits, delay, inflight))
                row.append(
                    f"{cell['rps']:,.0f}" + (f" ({r:.2f}x)" if r and label != "httpx" else "")
                )
            if any(row):
                add(f"| {label} | " + " | ".join(row) + " |")
        add("")
        add("Details:\n")
        add(
            "| client | in flight | payouts/s | rounds | p50 ms | p99 ms | CPU µs/payout | "
            "peak RSS MB | srv µs/req | conns opened | load | vs httpx | vs aiohttp | vs vendor |"
        )
        add(
            "| --- | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: "
            "| ---: | ---: |"
        )
        for label in labels:
            for inflight in inflights:
                cell = find(cells, label, bits, delay, inflight)
                if cell is None:
                    continue
                rounds = "/".join(f"{x:,.0f}" for x in cell.get("rounds_rps", []))
                vs = [
                    fmt_ratio(
                        ratio(
                            cell,
                            find(cells, base, bits, delay, None if base == "vendor" else inflight),
                        )
                    )
                    for base in BASELINES
                ]
                err = f" ({cell['errors']} errors)" if cell.get("errors") else ""
                add(
                    f"| {label} | {cell['inflight']} | {cell['rps']:,.1f}{err} | {rounds} | "
                    f"{cell['p50_ms']:.2f} | {cell['p99_ms']:.2f} | "
                    f"{cell['cpu_us_per_req']:,.0f} | {cell['peak_rss_mb']:.1f} | "
                    f"{cell['server_us_per_req']:.0f} | {cell['server_connections']} | "
                    f"{cell.get('load1', 0):.1f} | {' | '.join(vs)} |"
                )
        add("")
    failed = [c for c in cells if "failed" in c]
    if failed:
        add("## Failed cells\n")
        for c in failed:
            add(
                f"- {c['label']} RSA-{c['bits']} {c['delay_ms']:g} ms "
                f"{c['requested_inflight']} in flight: {c['failed']}"
            )
        add("")
    bad = [c for c in cells if c.get("duplicates") or c.get("bad_sign")]
    add("## Integrity\n")
    add(
        "Server-side counts over the whole run: "
        + (
            "; ".join(
                f"{c['label']} {c['bits']}/{c['delay_ms']:g}/{c['requested_inflight']}: "
                f"{c.get('duplicates')} duplicate order_id, {c.get('bad_sign')} bad Sign"
                for c in bad
            )
            if bad
            else "no duplicate `order_id`, no signature failures."
        )
        + "\n"
    )
    target_rows = targets(cells, args.target_inflight)
    if target_rows:
        add(f"## Targets (RSA-2048, {args.target_inflight} in flight)\n")
        add("| target | measured | goal | |")
        add("| --- | ---: | ---: | --- |")
        for row in target_rows:
            add("| " + " | ".join(row) + " |")
        add("")
    if memory_result:
        add("## Memory: payouts streamed from a generator\n")
        m = memory_result
        if "failed" in m:
            add(f"Failed: {m['failed']}\n")
        else:
            add(
                f"{m['done']:,} of {m['n']:,} payouts ({m['errors']} errors), client "
                f"`{m.get('client', 'sdk')}`, via {m['how']}, "
                f"RSA-2048, no server delay: {m['rps']:,.0f}/s, CPU {m['cpu_us_per_req']:.0f} "
                f"µs/payout, RSS {m['rss_before_mb']:.1f} MB before, **peak RSS "
                f"{m['peak_rss_mb']:.1f} MB** (target < 70 MB: "
                f"{'met' if m['peak_rss_mb'] < 70 else 'NOT met'}).\n"
            )
    return "\n".join(out) + "\n"


# --------------------------------------------------------------------- main


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Signed-payout benchmark harness (loopback only).")
    p.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: 300 payouts, RSA-2048, 1 and 64 in flight, small memory run",
    )
    p.add_argument("--clients", default=DEFAULT_CLIENTS, help="comma list of client specs")
    p.add_argument("--n", type=int, default=2000, help="payouts per cell (default 2000)")
    p.add_argument("--vendor-n", type=int, default=100, help="payouts for the vendor sample")
    p.add_argument("--inflight", default="1,16,64,256")
    p.add_argument("--delays", default="0,50", help="server delays in ms")
    p.add_argument("--bits", default="2048,4096")
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--target-inflight", type=int, default=64)
    p.add_argument(
        "--target-rounds",
        type=int,
        default=3,
        help="rounds (median reported) at the target in-flight level",
    )
    p.add_argument("--max-seconds", type=float, default=2.5, help="cap per round")
    p.add_argument(
        "--target-max-seconds",
        type=float,
        default=10.0,
        help="cap per round for the target cells (RSA-2048 at --target-inflight, "
        "and the vendor sample)",
    )
    p.add_argument("--hash", default="sha1", choices=("sha1", "sha256"))
    p.add_argument(
        "--verify-every",
        type=int,
        default=1,
        help="server verifies every K-th signature (1 = all, 0 = none)",
    )
    p.add_argument("--server-uvloop", action="store_true")
    p.add_argument(
        "--memory-n", type=int, default=100_000, help="payouts in the memory scenario (0 = skip)"
    )
    p.add_argument("--memory-inflight", type=int, default=64)
    p.add_argument("--memory-client", default="sdk", help="sdk, or another client label")
    p.add_argument("--profile", default="", help="comma list of client names to profile")
    p.add_argument("--profile-dir", default=str(HERE / "profiles"))
    p.add_argument(
        "--output",
        default=str(HERE / "RESULTS.md"),
        help="markdown report path ('' = do not write)",
    )
    p.add_argument("--json", default="", help="also dump raw cells as JSON here")
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    if args.quick:
        given = set(a.split("=")[0] for a in argv)
        defaults = {
            "--clients": QUICK_CLIENTS,
            "--n": 300,
            "--vendor-n": 20,
            "--inflight": "1,64",
            "--bits": "2048",
            "--target-rounds": 1,
            "--max-seconds": 2.0,
            "--target-max-seconds": 2.0,
            "--memory-n": 2000,
        }
        for flag, value in defaults.items():
            if flag not in given:
                setattr(args, flag[2:].replace("-", "_"), value)
    command = "python benchmarks/run.py " + " ".join(shlex.quote(a) for a in argv)
    started = time.monotonic()
    info = machine_info()
    specs = [s for s in args.clients.split(",") if s]
    inflights = [int(x) for x in args.inflight.split(",")]
    delays = [float(x) for x in args.delays.split(",")]
    bits_list = [int(x) for x in args.bits.split(",")]
    if args.profile:
        Path(args.profile_dir).mkdir(parents=True, exist_ok=True)

    def on_term(signum: int, frame: object) -> None:
        raise KeyboardInterrupt  # unwind through the finally blocks below

    signal.signal(signal.SIGTERM, on_term)
    cells: list[dict[str, Any]] = []
    memory_result: dict[str, Any] | None = None
    server: Server | None = None
    print(f"{info['cpu']} | {info['python']} | load {info['load']}")
    try:
        with tempfile.TemporaryDirectory(prefix="alikassa-bench-") as tmp:
            for bits in bits_list:
                keydir = make_keys(Path(tmp), bits)
                for delay in delays:
                    print(f"RSA-{bits}, server delay {delay:g} ms", flush=True)
                    server = Server(
                        keydir / "public.pem", delay, args.verify_every, args.server_uvloop
                    )
                    try:
                        for inflight in inflights:
                            group = [
                                sp
                                for sp in specs
                                if not sp.startswith("vendor") or inflight == inflights[0]
                            ]
                            for cell in run_group(
                                server, args, keydir, bits, delay, inflight, group
                            ):
                                cells.append(cell)
                                print_cell(cell)
                    finally:
                        server.stop()
                        server = None
                if bits == 2048 and args.memory_n:
                    server = Server(keydir / "public.pem", 0, args.verify_every, args.server_uvloop)
                    try:
                        cfg = {
                            "mode": "memory",
                            "url": server.url,
                            "keydir": str(keydir),
                            "client": args.memory_client,
                            "n": args.memory_n,
                            "inflight": args.memory_inflight,
                            "opts": {"variant": "sdk", "hash": args.hash},
                        }
                        memory_result = run_worker(cfg, timeout=900)
                        print(f"memory: {memory_result}", flush=True)
                    finally:
                        server.stop()
                        server = None
    except KeyboardInterrupt:
        print("interrupted; partial results not written", file=sys.stderr)
        return 130
    finally:
        if server is not None:
            server.stop()
    load_after = "{:.2f} {:.2f} {:.2f}".format(*os.getloadavg())
    print()
    print_ratios(cells, args)
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {"cells": cells, "memory": memory_result, "machine": info, "command": command},
                indent=1,
            )
        )
    if args.output:
        Path(args.output).write_text(
            render(cells, args, info, command, started, memory_result, load_after)
        )
        print(f"wrote {args.output}")
    return 0


def print_ratios(cells: list[dict[str, Any]], args: argparse.Namespace) -> None:
    print("Ratios vs the baselines of this run (payouts/s):")
    for cell in cells:
        if "rps" not in cell or cell["label"] in BASELINES:
            continue
        parts = []
        for base in BASELINES:
            b = find(
                cells,
                base,
                cell["bits"],
                cell["delay_ms"],
                None if base == "vendor" else cell["requested_inflight"],
            )
            r = ratio(cell, b)
            if r is not None:
                parts.append(f"{r:6.2f}x {base}")
        print(
            f"  RSA-{cell['bits']} {cell['delay_ms']:>3g} ms {cell['requested_inflight']:>4} "
            f"{cell['label']:<28} " + "  ".join(parts)
        )
    rows = targets(cells, args.target_inflight)
    if rows:
        print(f"Targets (RSA-2048, {args.target_inflight} in flight):")
        for what, value, goal, verdict in rows:
            print(f"  {what:<62} {value:>8} (goal {goal}) {verdict}")


if __name__ == "__main__":
    sys.exit(main())
