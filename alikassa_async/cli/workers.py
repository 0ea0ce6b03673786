"""``alikassa payouts load|work|status|results``: one batch, many workers, on PostgreSQL.

::

    alikassa payouts load payouts.csv --dsn postgresql://... --batch payroll-2026-12
    alikassa payouts work --dsn ... --batch payroll-2026-12 [--concurrency 64] [--rate 50]
    alikassa payouts status --dsn ... --batch payroll-2026-12 [--watch]
    alikassa payouts results --dsn ... --batch payroll-2026-12 --out results.csv

``load`` validates the whole CSV first (every bad row, with its line number)
and then enqueues it all or nothing; loading the same file again is a no-op,
an ``order_id`` already loaded with a different body (or in another batch) is
refused. Start ``work`` as many times as you like, on any machines; each exits
0 when the batch has nothing left to claim and nothing it owns is in doubt.
``--rate`` is the batch-wide limit, shared by the live workers. ``status``
counts by outcome across all workers; ``results`` writes the same columns as
``payouts run`` and exits 1 if any payout needs attention.

``--dsn`` defaults to ``ALIKASSA_DSN``; keep the password out of it with
``PGPASSWORD`` or ``~/.pgpass`` (libpq reads both). Account, certificate and
base URL come from the same flags and ``ALIKASSA_*`` variables as ``payouts run``
(``load`` needs the payout certificate too: the bodies are sealed with it).
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import os
import signal
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import IO, Any, TextIO

from .._batch import ReconcilePolicy
from .._client import AliKassaClient
from .._errors import (
    AliKassaError,
    AuthenticationError,
    ConfigurationError,
    RequestValidationError,
)
from .._retry import RetryPolicy
from .._signing import Certificate
from .._worker import WorkerPolicy
from . import payouts

__all__ = ["register", "register_payouts"]

EXIT_OK = payouts.EXIT_OK
EXIT_ATTENTION = payouts.EXIT_ATTENTION
EXIT_USAGE = payouts.EXIT_USAGE
EXIT_INTERRUPTED = payouts.EXIT_INTERRUPTED
EXIT_JOURNAL = 3  # the database refused or could not be reached
EXIT_TERMINATED = 143  # SIGTERM

_ATTENTION_FREE = ("created", "paid")


def register_payouts(subparsers: Any) -> argparse.ArgumentParser:
    """``alikassa payouts``: ``run`` (one process) and the four shared-batch commands."""
    return payouts.register(subparsers, more=register)


def register(commands: Any) -> None:
    """Add load / work / status / results to ``alikassa payouts``."""
    load = _command(
        commands, "load", "validate a CSV of payouts, then enqueue it as a batch", _load
    )
    load.add_argument("csv", type=Path, help="the payouts CSV (same format as `payouts run`)")
    payouts.add_client_arguments(load)

    work = _command(
        commands, "work", "work on a batch alongside any number of other workers", _work
    )
    work.add_argument(
        "--concurrency",
        type=payouts._positive_int,
        default=64,
        help="payouts this worker owns at once (default 64)",
    )
    work.add_argument(
        "--rate",
        type=payouts._positive_float,
        default=None,
        help="at most this many requests per second, for the whole batch "
        "(shared by the live workers)",
    )
    work.add_argument(
        "--settle",
        type=payouts._non_negative_float,
        default=ReconcilePolicy().settle,
        help="a 'no such payout' answer proves absence only this many seconds "
        "after the last moment a send could have left "
        f"(default {ReconcilePolicy().settle:g})",
    )
    work.add_argument(
        "--timeout",
        type=payouts._positive_float,
        default=None,
        help="give up one request after this many seconds, retries included "
        "(default: the client's, 30 per attempt and 60 in all)",
    )
    work.add_argument(
        "--lease",
        type=payouts._positive_float,
        default=None,
        help="seconds an item is owned between renewals (default: 2 x the request budget + 30)",
    )
    work.add_argument(
        "--heartbeat",
        type=payouts._positive_float,
        default=WorkerPolicy().heartbeat,
        help="seconds between heartbeats and lease renewals "
        f"(default {WorkerPolicy().heartbeat:g})",
    )
    work.add_argument(
        "--retry-unknown",
        type=payouts._non_negative_float,
        default=WorkerPolicy().retry_unknown,
        help="seconds before an `unknown` payout is reconciled again "
        f"(default {WorkerPolicy().retry_unknown:g}; at most "
        f"{WorkerPolicy().max_rounds} rounds)",
    )
    work.add_argument(
        "--http-backend",
        choices=("builtin", "httpx", "aiohttp"),
        default=None,
        help="the client's HTTP backend (default: the client's; aiohttp: extra [aiohttp])",
    )
    work.add_argument("--no-progress", action="store_true", help="no progress lines")
    payouts.add_client_arguments(work)

    status = _command(commands, "status", "counts by outcome across all workers", _status)
    status.add_argument(
        "--watch",
        nargs="?",
        type=payouts._positive_float,
        const=2.0,
        default=None,
        metavar="SECONDS",
        help="refresh every SECONDS (default 2) until the batch is done",
    )

    results = _command(commands, "results", "write the batch's results CSV", _results)
    results.add_argument("--out", type=Path, required=True, help="where to write the CSV")


def _command(commands: Any, name: str, help: str, func: Any) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = commands.add_parser(
        name,
        help=help,
        description=__doc__.split("::")[0].strip() if __doc__ else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--dsn",
        default=os.environ.get("ALIKASSA_DSN"),
        help="PostgreSQL connection string (env ALIKASSA_DSN)",
    )
    parser.add_argument(
        "--batch",
        required=True,
        type=payouts._batch_name,
        help="the batch's name, e.g. payroll-2026-12",
    )
    parser.set_defaults(func=lambda args: _run(func, args))
    return parser


def _run(func: Any, args: argparse.Namespace) -> int:
    """Common checks and error reporting of the four commands."""
    if not args.dsn:
        raise ConfigurationError("no database: pass --dsn or set ALIKASSA_DSN")
    try:
        from ..pg_journal import JournalUnavailableError
    except ImportError as exc:
        raise ConfigurationError(str(exc)) from None
    if func is _work:  # account, certificate, host: checked before anything else
        args.client_settings = payouts._client_settings(args)
        if args.http_backend is not None:
            args.client_settings["http_backend"] = args.http_backend
        if args.timeout is not None:
            args.client_settings["timeout"] = args.timeout
            args.client_settings["retry"] = RetryPolicy(total_timeout=args.timeout)
    try:
        return int(asyncio.run(func(args, sys.stdout, sys.stderr)))
    except KeyboardInterrupt:
        _say(sys.stderr, "interrupted; what this worker owned is reconciled by the next one")
        return EXIT_INTERRUPTED
    except JournalUnavailableError as exc:
        _say(sys.stderr, f"error: {exc}")
        return EXIT_JOURNAL
    except ConfigurationError:
        raise
    except RequestValidationError as exc:  # a changed body on reload, an order_id elsewhere
        _say(sys.stderr, f"error: {exc}")
        return EXIT_USAGE
    except AuthenticationError as exc:  # a 401: wrong for every payout; nothing more was sent
        _say(sys.stderr, f"error: the gateway refused the credentials: {exc}")
        return EXIT_USAGE
    except asyncio.CancelledError:  # SIGTERM: the worker released what it owned
        _say(sys.stderr, "stopped (SIGTERM); what this worker owned was released")
        return EXIT_TERMINATED
    except AliKassaError as exc:
        _say(sys.stderr, f"error: {exc}")
        return EXIT_JOURNAL if type(exc).__name__.startswith("Journal") else EXIT_ATTENTION


def _journal(args: argparse.Namespace, cert: Certificate | None = None) -> Any:
    from ..pg_journal import PostgresJournal

    return PostgresJournal(args.dsn, payout_cert=cert)


def _certificate(args: argparse.Namespace) -> Certificate:
    if args.payout_cert is None:
        raise ConfigurationError(
            "no payout certificate: pass --payout-cert DIR or set "
            "ALIKASSA_PAYOUT_CERT_DIR (the batch is sealed with it)"
        )
    return Certificate.from_dir(args.payout_cert)


# -- load ---------------------------------------------------------------------------


async def _load(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    path: Path = args.csv
    cert = _certificate(args)  # configuration first, before the file's report
    try:
        rows, problems, warnings = payouts.validate_file(path)
    except (OSError, UnicodeDecodeError, csv.Error, ConfigurationError) as exc:
        _say(err, f"error: cannot read {path}: {exc}")
        return EXIT_USAGE
    for warning in warnings:
        _say(err, f"warning: {warning}")
    if problems:
        for problem in problems:
            _say(err, problem)
        _say(err, f"{len(problems)} bad row(s) in {path}; nothing was loaded")
        return EXIT_USAGE

    async def numbered() -> AsyncIterator[tuple[int, object]]:
        for line, item in payouts.read_payouts(path):
            yield line, item

    async with _journal(args, cert) as journal:
        report = await journal.load_numbered(args.batch, numbered())
    _say(
        out,
        f"{path}: {rows:,} payout(s), all valid; batch {args.batch!r}: "
        f"{report.added:,} new, {report.unchanged:,} already loaded",
    )
    return EXIT_OK


# -- work ---------------------------------------------------------------------------


async def _work(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    # SIGTERM (a pod being stopped) ends the worker as Ctrl-C does: what it owned is
    # released at once for another worker, instead of waiting out the leases.
    main_task = asyncio.current_task()
    if main_task is not None:
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, main_task.cancel)
    client = AliKassaClient(**args.client_settings)
    counts: Counter[str] = Counter()
    started = time.monotonic()
    last = started
    policy = WorkerPolicy(
        lease=args.lease, heartbeat=args.heartbeat, retry_unknown=args.retry_unknown
    )
    async with client, _journal(args) as journal:
        async for result in client.payouts_worker(
            journal,
            batch=args.batch,
            concurrency=args.concurrency,
            rate=args.rate,
            reconcile=ReconcilePolicy(settle=args.settle),
            policy=policy,
        ):
            counts[result.outcome.value] += 1
            now = time.monotonic()
            if not args.no_progress and now - last >= 5.0:
                last = now
                _say(err, f"{sum(counts.values()):,} done by this worker: " + _counts(counts))
    elapsed = time.monotonic() - started
    _say(
        out,
        f"batch {args.batch!r}: nothing left to claim; this worker finished "
        f"{sum(counts.values()):,} in {elapsed:,.1f}s"
        + (f" ({_counts(counts)})" if counts else ""),
    )
    return EXIT_OK


def _counts(counts: Counter[str] | dict[str, int]) -> str:
    return ", ".join(f"{k} {v:,}" for k, v in sorted(counts.items()))


# -- status ---------------------------------------------------------------------------


async def _status(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    async with _journal(args) as journal:
        while True:
            status = await journal.status(args.batch)
            doubt = (
                "" if status.oldest_doubt is None else f", oldest doubt {status.oldest_doubt:,.0f}s"
            )
            _say(
                out,
                f"batch {args.batch!r}: {status.total:,} payout(s): "
                f"{_counts(dict(status.counts)) or 'none'}; in flight "
                f"{status.in_flight:,}, live workers {status.live_workers}{doubt}",
            )
            if args.watch is None or status.done:
                return EXIT_OK
            await asyncio.sleep(args.watch)


# -- results --------------------------------------------------------------------------


async def _results(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    attention = 0
    written = 0
    async with _journal(args) as journal:
        with args.out.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(payouts._RESULT_COLUMNS)
            async for row in journal.results(args.batch):
                final = row.state in ("paid", "cancel", "fail")
                writer.writerow(
                    [
                        str(row.line),
                        row.order_id,
                        row.state,
                        row.state if final else "",
                        "" if row.payout_id is None else str(row.payout_id),
                        str(row.sends),
                        "yes" if row.resumed else "",
                        "yes" if row.reconciled else "",
                        " ".join((row.detail or "").split()),
                    ]
                )
                written += 1
                if row.state not in _ATTENTION_FREE:
                    attention += 1
    _say(out, f"results: {args.out} ({written:,} payout(s))")
    if attention:
        _say(
            out,
            f"{attention:,} payout(s) need attention or are not finished "
            "(see the results file); `unknown` is never `failed`",
        )
        return EXIT_ATTENTION
    return EXIT_OK


def _say(stream: IO[str], text: str) -> None:
    stream.write(text + "\n")
    stream.flush()
