"""``alikassa payouts run``: a CSV of payouts, sent as a resumable batch.

::

    alikassa payouts run payouts.csv --journal payouts.db --concurrency 64 --rate 50

The CSV has a header row with ``service``, ``order_id``, ``amount`` and the
other payout fields the service needs (``number``, ``customer_code``, …;
``extra.card_holder``-style columns fill the ``extra`` object). Empty cells
are left out. The whole file is validated first and every bad row reported
with its line number before anything is sent. The run shows a progress bar
on stderr, prints a summary by outcome, writes a results CSV and exits 1 if
any payout was rejected, not sent, unknown or (with ``--wait-final``) not
paid. Running the same command again resumes from the journal: nothing
created is sent twice.

Account and certificate come from ``--account`` / ``--payout-cert`` or the
``ALIKASSA_ACCOUNT`` / ``ALIKASSA_PAYOUT_CERT_DIR`` environment variables;
``--base-url`` / ``ALIKASSA_BASE_URL`` points at another host (a sandbox).
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import math
import os
import signal
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any, TextIO

from .._batch import BatchResult, Outcome, ReconcilePolicy
from .._client import DEFAULT_BASE_URL, AliKassaClient
from .._defaults import DEFAULT_CONCURRENCY, DEFAULT_MAX_STATUS_IN_FLIGHT, DEFAULT_SETTLE
from .._errors import (
    AliKassaError,
    AuthenticationError,
    ConfigurationError,
    RequestValidationError,
)
from .._models import PayoutRequest
from .._signing import Certificate
from ..journal import JournalError
from ..services import build_payout, get_service
from .progress import PROGRESS_MODES, make_progress

__all__ = ["main", "read_payouts", "register", "sniff_delimiter", "validate_file"]

EXIT_OK = 0
EXIT_ATTENTION = 1  # something needs a human: rejected / not sent / unknown / not paid
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 143  # SIGTERM

_REQUIRED_COLUMNS = ("service", "order_id", "amount")
_RESULT_COLUMNS = (
    "line",
    "order_id",
    "outcome",
    "status",
    "payout_id",
    "attempts",
    "resumed",
    "reconciled",
    "error",
)


_RUN_DESCRIPTION = """\
Validate a CSV of payouts, then send it as a resumable batch.

The CSV has a header row with service, order_id, amount and the other payout
fields each service needs (number, customer_code, ...; extra.card_holder-style
columns fill the extra object). Comma- or semicolon-separated; empty cells are
left out. The configuration is checked first, then the whole file: every bad
row is reported with its line number before anything is sent. Running the
same command again resumes from the journal: nothing created is sent twice.

exit codes: 0 all created (with --wait-final: paid); 1 something needs
attention (see the results file); 2 usage, file or configuration error, a
journal in use, credentials refused; 130 interrupted.

example:
  alikassa payouts run payouts.csv --concurrency 64 --rate 50
"""


def register(
    subparsers: Any, *, more: Callable[[Any], None] | None = None
) -> argparse.ArgumentParser:
    """Add ``payouts run`` to the ``alikassa`` command's subparsers (``more`` adds other
    ``payouts`` subcommands: :func:`alikassa_async.cli.workers.register_payouts`)."""
    payouts: argparse.ArgumentParser = subparsers.add_parser(
        "payouts",
        help="batch payouts from a CSV file",
        description="Batch payouts from a CSV file.",
    )
    commands = payouts.add_subparsers(dest="payouts_command", metavar="COMMAND")
    commands.required = True
    run = commands.add_parser(
        "run",
        help="validate a CSV of payouts, then send it as a resumable batch",
        description=_RUN_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    run.add_argument(
        "csv",
        type=Path,
        help="the payouts CSV (header: service,order_id,amount,…; comma- or semicolon-separated)",
    )
    run.add_argument(
        "--journal",
        type=Path,
        default=None,
        help="SQLite journal that makes re-runs resume (default: the CSV's name "
        "+ .journal.db, e.g. payouts.csv.journal.db)",
    )
    run.add_argument(
        "--results",
        type=Path,
        default=None,
        help="where to write the results CSV (default: beside the CSV, "
        "payouts.csv -> payouts.results.csv)",
    )
    run.add_argument(
        "--concurrency",
        type=_positive_int,
        default=DEFAULT_CONCURRENCY,
        help=f"payouts sent at once (default {DEFAULT_CONCURRENCY})",
    )
    run.add_argument(
        "--rate",
        type=_positive_float,
        default=None,
        help="at most this many requests per second (default: no limit)",
    )
    run.add_argument(
        "--wait-final", action="store_true", help="report each payout once paid / cancel / fail"
    )
    run.add_argument(
        "--wait-timeout",
        type=_positive_float,
        default=600.0,
        help="seconds to wait for a final status with --wait-final (default 600)",
    )
    run.add_argument(
        "--settle",
        type=_non_negative_float,
        default=DEFAULT_SETTLE,
        help="a 'no such payout' answer proves absence only this many seconds "
        "after a doubtful send could last have been processed "
        f"(default {DEFAULT_SETTLE:g})",
    )
    run.add_argument(
        "--check",
        action="store_true",
        help="only validate the file; send nothing (no credentials needed)",
    )
    run.add_argument(
        "--progress",
        choices=PROGRESS_MODES,
        default="auto",
        help="progress on stderr: rich (live, on a terminal), plain (a line "
        "every few seconds), none; auto (default): rich on a terminal when "
        "installed, else plain. NO_COLOR turns colour off",
    )
    run.add_argument("--no-progress", action="store_true", help="same as --progress=none")
    add_client_arguments(run)
    run.set_defaults(func=run_command, handler=run_command)
    if more is not None:
        more(commands)
    return payouts


def add_client_arguments(parser: argparse.ArgumentParser) -> None:
    """Account, certificate and host flags (and their ``ALIKASSA_*`` variables)."""
    parser.add_argument(
        "--account",
        default=os.environ.get("ALIKASSA_ACCOUNT"),
        help="account UUID (env ALIKASSA_ACCOUNT)",
    )
    parser.add_argument(
        "--payout-cert",
        type=Path,
        default=_env_path("ALIKASSA_PAYOUT_CERT_DIR"),
        help="payout certificate dir: private.pem, password.txt (env ALIKASSA_PAYOUT_CERT_DIR)",
    )
    parser.add_argument(
        "--base-url",
        default=os.environ.get("ALIKASSA_BASE_URL", DEFAULT_BASE_URL),
        help=f"API host (env ALIKASSA_BASE_URL; default {DEFAULT_BASE_URL})",
    )
    parser.add_argument(
        "--allow-plain-http",
        action="store_true",
        help="allow an http:// --base-url on a host other than this machine "
        "(a sandbox you control; never the real gateway)",
    )
    parser.add_argument(
        "--ca-bundle",
        type=Path,
        default=_env_path("ALIKASSA_CA_BUNDLE"),
        help="CA file to trust for --base-url (env ALIKASSA_CA_BUNDLE)",
    )
    parser.add_argument(
        "--signature-hash",
        choices=("sha1", "sha256"),
        default="sha1",
        help="hash the request signature uses (default sha1, as the vendor's PHP sample)",
    )


def main(argv: list[str] | None = None) -> int:
    """Just the ``payouts`` commands (the ``alikassa`` command hosts them too)."""
    parser = argparse.ArgumentParser(prog="alikassa")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return int(args.func(args))


def _env_path(name: str) -> Path | None:
    value = os.environ.get(name)
    return Path(value) if value else None


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _non_negative_float(text: str) -> float:
    value = float(text)
    if not (math.isfinite(value) and value >= 0):
        raise argparse.ArgumentTypeError("must be a finite number, zero or more")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError("must be a finite number above zero")
    return value


def _batch_name(text: str) -> str:
    if not text.strip() or len(text) > 200:
        raise argparse.ArgumentTypeError("must be a non-empty name of at most 200 characters")
    return text


# -- reading the file ----------------------------------------------------------


def _row_fields(row: dict[str, str | None]) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    for column, value in row.items():
        if column is None or value is None or not value.strip():
            continue
        name = column.strip()
        if name.startswith("extra."):
            fields.setdefault("extra", {})[name[len("extra.") :]] = value.strip()
        else:
            fields[name] = value.strip()
    return fields


_DELIMITER_NAMES = {",": "comma", ";": "semicolon", "\t": "tab"}


def sniff_delimiter(header: str) -> str:
    """The header's delimiter: ``;`` is Excel's default in Russian locales, ``,`` elsewhere."""
    return max(_DELIMITER_NAMES, key=lambda d: (header.count(d), d == ","))


def read_payouts(path: Path) -> Iterator[tuple[int, PayoutRequest | RequestValidationError]]:
    """``(line number, request or its validation error)`` for each data row, streaming."""
    with path.open(newline="", encoding="utf-8-sig") as handle:
        delimiter = sniff_delimiter(handle.readline())
        handle.seek(0)
        reader = csv.DictReader(handle, delimiter=delimiter)
        missing = [c for c in _REQUIRED_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise ConfigurationError(
                f"{path}: header lacks column(s) {', '.join(missing)} (needs "
                f"{', '.join(_REQUIRED_COLUMNS)}, and the fields of each service, e.g. "
                f"number; read as {_DELIMITER_NAMES[delimiter]}-separated)"
            )
        for row in reader:
            line = reader.line_num
            if None in row:
                yield line, RequestValidationError({"row": ["has more cells than the header"]})
                continue
            fields = _row_fields(row)
            service = fields.pop("service", "")
            try:
                yield line, build_payout(service, **fields)
            except RequestValidationError as exc:
                yield line, exc


def validate_file(path: Path) -> tuple[int, list[str], list[str]]:
    """Rows, problems (``"line N: ..."``) and warnings, reading the whole file once."""
    problems: list[str] = []
    warnings: list[str] = []
    first_line: dict[str, int] = {}
    unknown_services: set[str] = set()
    rows = 0
    for line, item in read_payouts(path):
        rows += 1
        if isinstance(item, RequestValidationError):
            details = "; ".join(
                f"{field}: {', '.join(msgs)}" for field, msgs in item.errors.items()
            )
            problems.append(f"line {line}: {details}")
            continue
        seen = first_line.setdefault(item.order_id, line)
        if seen != line:
            problems.append(f"line {line}: order_id: {item.order_id!r} already used on line {seen}")
        if get_service(item.service) is None and item.service not in unknown_services:
            unknown_services.add(item.service)
            warnings.append(
                f"line {line}: service {item.service!r} is not in the SDK's "
                "registry; only the shared rules were checked"
            )
    return rows, problems, warnings


# -- the run ------------------------------------------------------------------------


def _client_settings(args: argparse.Namespace) -> dict[str, Any]:
    """Everything the client needs, checked (``ConfigurationError``) before any row is read."""
    if not args.account:
        raise ConfigurationError("no account: pass --account or set ALIKASSA_ACCOUNT")
    if args.payout_cert is None:
        raise ConfigurationError(
            "no payout certificate: pass --payout-cert DIR or set ALIKASSA_PAYOUT_CERT_DIR"
        )
    settings: dict[str, Any] = {
        "account": args.account,
        "payout_cert": Certificate.from_dir(args.payout_cert),
        "base_url": args.base_url,
        "signature_hash": args.signature_hash,
        "allow_plain_http": args.allow_plain_http,
        "max_connections": args.concurrency + DEFAULT_MAX_STATUS_IN_FLIGHT,
        "max_keepalive_connections": args.concurrency + DEFAULT_MAX_STATUS_IN_FLIGHT,
    }
    if args.ca_bundle is not None:
        settings["verify"] = args.ca_bundle
    try:
        asyncio.run(AliKassaClient(**settings).aclose())  # checks every setting; opens nothing
    except ConfigurationError as exc:  # name the flag, not the Python argument
        raise ConfigurationError(
            str(exc).replace("allow_plain_http=True", "--allow-plain-http")
        ) from None
    return settings


def _result_row(line: int, result: BatchResult) -> list[str]:
    error = "" if result.error is None else f"{type(result.error).__name__}: {result.error}"
    return [
        str(line),
        result.order_id,
        result.outcome.value,
        "" if result.status is None else str(result.status),
        "" if result.payout_id is None else str(result.payout_id),
        str(result.attempts),
        "yes" if result.resumed else "",
        "yes" if result.reconciled else "",
        " ".join(error.split()),
    ]


def _needs_attention(result: BatchResult, wait_final: bool) -> bool:
    if wait_final:
        return result.outcome is not Outcome.PAID
    return not (result.outcome is Outcome.CREATED and result.error is None)


class _RunState:
    """What a ``payouts run`` got to: whether any payout was handed to the batch (after
    it owned the journal), so an error can say truthfully whether something was sent."""

    started = False


async def _send(
    args: argparse.Namespace,
    settings: dict[str, Any],
    rows: int,
    journal: Path,
    results_path: Path,
    err: TextIO,
    run: _RunState,
) -> Counter[str]:
    # SIGTERM (a job runner stopping it) ends the run as Ctrl-C does: what was in flight
    # is journaled for the next run, and the results so far are written.
    main_task = asyncio.current_task()
    if main_task is not None:
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, main_task.cancel)
    lines: dict[int, int] = {}  # index -> CSV line, for items in flight only

    def items() -> Iterator[PayoutRequest]:
        run.started = True  # pulled only once the run owns the journal
        for index, (line, item) in enumerate(read_payouts(args.csv)):
            if not isinstance(item, PayoutRequest):  # valid when checked: edited since
                raise ConfigurationError(
                    f"{args.csv} changed while this run was reading it (line {line}: {item})"
                )
            lines[index] = line
            yield item

    counts: Counter[str] = Counter()
    bar = make_progress("none" if args.no_progress else args.progress, err, rows)
    # The results go to a file of this process first, and take the real name when the run
    # ends: a second run refused the journal, or a crash, never leaves it half-written.
    partial = results_path.with_name(f".{results_path.name}.{os.getpid()}.partial")
    try:
        await _write_results(args, settings, rows, journal, partial, items, lines, counts, bar)
    finally:
        if run.started:
            os.replace(partial, results_path)
        else:
            partial.unlink(missing_ok=True)
    return counts


async def _write_results(
    args: argparse.Namespace,
    settings: dict[str, Any],
    rows: int,
    journal: Path,
    partial: Path,
    items: Callable[[], Iterator[PayoutRequest]],
    lines: dict[int, int],
    counts: Counter[str],
    bar: Any,
) -> None:
    async with AliKassaClient(**settings) as client:
        with partial.open("w", newline="", encoding="utf-8") as out:
            writer = csv.writer(out)
            writer.writerow(_RESULT_COLUMNS)
            try:
                async for result in client.payouts_batch(
                    items(),
                    concurrency=args.concurrency,
                    rate=args.rate,
                    journal=journal,
                    wait_final=args.wait_final,
                    wait_timeout=args.wait_timeout,
                    progress=bar,
                    total=rows,
                    reconcile=ReconcilePolicy(settle=args.settle),
                ):
                    writer.writerow(_result_row(lines.pop(result.index, 0), result))
                    counts[result.outcome.value] += 1
                    if isinstance(result.error, AuthenticationError):
                        counts["(credentials refused)"] += 1
                    if result.resumed:
                        counts["(resumed from journal)"] += 1
                    if _needs_attention(result, args.wait_final):
                        counts["(needs attention)"] += 1
            finally:
                if bar is not None:
                    bar.close()


def run_command(
    args: argparse.Namespace, *, out: TextIO | None = None, err: TextIO | None = None
) -> int:
    """Check the configuration, validate the CSV, then send it as a batch; the exit code."""
    out = out or sys.stdout
    err = err or sys.stderr
    path: Path = args.csv
    settings: dict[str, Any] = {}
    if not args.check:  # the configuration first: a wrong one makes the file report moot
        try:
            settings = _client_settings(args)
        except ConfigurationError as exc:
            _say(err, f"error: {exc}")
            return EXIT_USAGE
    rows = _validated_rows(path, err)
    if rows is None:
        return EXIT_USAGE
    _say(out, f"{path}: {rows:,} payout(s), all valid")
    if args.check or rows == 0:
        return EXIT_OK
    journal = args.journal or path.with_name(path.name + ".journal.db")
    results_path = args.results or path.with_name(path.stem + ".results.csv")
    started = time.monotonic()
    run = _RunState()
    try:
        counts = asyncio.run(_send(args, settings, rows, journal, results_path, err, run))
    except KeyboardInterrupt:
        _say(err, f"interrupted; run the same command again to resume (journal: {journal})")
        return EXIT_INTERRUPTED
    except asyncio.CancelledError:  # SIGTERM
        _say(err, f"stopped (SIGTERM); run the same command again to resume (journal: {journal})")
        return EXIT_TERMINATED
    except (ConfigurationError, JournalError) as exc:
        _say(err, f"error: {exc}")
        if not run.started:  # refused before any payout was handed to the batch
            return EXIT_USAGE
        # A journal that failed mid-run (a full disk): payouts were sent before it did.
        _say(
            err,
            f"payouts were sent before this: fix it, then re-run to resume (journal: {journal})",
        )
        return EXIT_ATTENTION
    except AliKassaError as exc:
        _say(err, f"error: {exc}")
        _say(err, f"nothing in flight was lost: re-run to resume (journal: {journal})")
        return EXIT_ATTENTION
    return _summarise(counts, time.monotonic() - started, journal, results_path, out, err)


def _validated_rows(path: Path, err: TextIO) -> int | None:
    """The number of rows, or None after reporting every bad one."""
    try:
        rows, problems, warnings = validate_file(path)
    except (OSError, UnicodeDecodeError, csv.Error, ConfigurationError) as exc:
        _say(err, f"error: cannot read {path}: {exc}")
        return None
    for warning in warnings:
        _say(err, f"warning: {warning}")
    if not problems:
        return rows
    for problem in problems:
        _say(err, problem)
    _say(err, f"{len(problems)} bad row(s) in {path}; nothing was sent")
    return None


def _summarise(
    counts: Counter[str],
    elapsed: float,
    journal: Path,
    results_path: Path,
    out: TextIO,
    err: TextIO,
) -> int:
    attention = counts.pop("(needs attention)", 0)
    resumed = counts.pop("(resumed from journal)", 0)
    refused = counts.pop("(credentials refused)", 0)
    _say(
        out,
        f"done in {elapsed:,.1f}s: "
        + ", ".join(f"{outcome} {n:,}" for outcome, n in sorted(counts.items())),
    )
    if resumed:
        _say(out, f"{resumed:,} already known to the journal {journal}")
    _say(out, f"results: {results_path}")
    if refused:
        _say(
            err,
            f"error: the gateway refused the account or payout certificate "
            f"({refused:,} payout(s) refused or not sent); check --account and "
            "--payout-cert, then run the same command again",
        )
        return EXIT_USAGE
    if not attention:
        return EXIT_OK
    hint = (
        "; `unknown` is never `failed`: re-run to reconcile, or ask support"
        if counts.get(Outcome.UNKNOWN.value)
        else ""
    )
    _say(out, f"{attention:,} payout(s) need attention (see the results file){hint}")
    return EXIT_ATTENTION


def _say(stream: IO[str], text: str) -> None:
    stream.write(text + "\n")
    stream.flush()
