"""The ``alikassa`` command (also ``python -m alikassa_async``).

::

    alikassa demo                              # everything end to end, in a few seconds
    alikassa keygen certs                      # certs/payment, certs/payout, certs/notification
    alikassa sandbox --certs certs --port 8080 --account 93d5df06-996c-48c3-9847-348d6b580b80
    alikassa payouts run payouts.csv ...       # batch payouts (see `alikassa payouts run -h`)

Each subcommand lives in a ``register(subparsers)`` function that adds its
parser and sets ``func`` (``args -> exit code``); adding a command is adding
one function to :data:`COMMANDS`.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import uuid
from collections.abc import Callable, Sequence
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from . import __version__, cli_workers
from .errors import AliKassaError, ConfigurationError

__all__ = ["COMMANDS", "DEMO_ACCOUNT", "build_parser", "main"]

#: the account UUID of the API reference's examples; the sandbox's default account
DEMO_ACCOUNT = "93d5df06-996c-48c3-9847-348d6b580b80"

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2


# -- keygen -------------------------------------------------------------------


def _keygen(args: argparse.Namespace) -> int:
    from .sandbox.keys import generate_certs

    certs = generate_certs(args.dir, overwrite=args.force, key_size=args.key_size)
    print(f"wrote {certs.root}/")
    for role, what in (("payment", "sign v1/payment* requests"),
                       ("payout", "sign v1/payout* and v1/account/* requests"),
                       ("notification", "the sandbox signs notifications; verify with "
                                        "public.pem")):
        files = ", ".join(sorted(p.name for p in (certs.root / role).iterdir()))
        print(f"  {role}/  {files}  ({what})")
    print(f"next: alikassa sandbox --certs {certs.root}")
    return EXIT_OK


def register_keygen(subparsers: Any) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "keygen", help="write sandbox certificate archives (payment, payout, notification)",
        description="Write DIR/payment, DIR/payout (private.pem as legacy encrypted PKCS#1, "
                    "password.txt, public.pem) and DIR/notification (private.pem, public.pem), "
                    "laid out like the archives from the AliKassa cabinet.")
    parser.add_argument("dir", type=Path, metavar="DIR")
    parser.add_argument("--force", action="store_true", help="replace existing keys")
    parser.add_argument("--key-size", type=int, default=2048, choices=(2048, 3072, 4096))
    parser.set_defaults(func=_keygen)
    return parser


# -- sandbox ------------------------------------------------------------------


def _account(text: str) -> str:
    try:
        return str(uuid.UUID(text))
    except ValueError:
        raise argparse.ArgumentTypeError("must be a UUID") from None


def _probability(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError("must be between 0 and 1")
    return value


def _money(text: str) -> Decimal:
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise argparse.ArgumentTypeError("must be a decimal amount") from None
    if not value.is_finite() or value < 0:
        raise argparse.ArgumentTypeError("must be a non-negative amount")
    return value


def _non_negative(text: str) -> float:
    value = float(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError("must be >= 0")
    return value


async def _serve_sandbox(args: argparse.Namespace) -> None:
    import uvicorn

    from .sandbox import Sandbox, SandboxConfig, generate_certs, load_certs
    from .sandbox.config import LOOPBACK_HOSTS
    from .sandbox.server import bind_socket

    certs_dir: Path = args.certs
    if not (certs_dir / "payment" / "public.pem").exists():
        generate_certs(certs_dir)
        print(f"generated certificates in {certs_dir}/ (alikassa keygen)")
    certs = load_certs(certs_dir)
    config = SandboxConfig(
        wait_seconds=None if args.wait_seconds == 0 else args.wait_seconds,
        wait_polls=None if args.wait_polls < 0 else args.wait_polls,
        initial_balance=args.balance,
        notification_hosts=LOOPBACK_HOSTS | frozenset(args.notify_host),
    )
    accounts = args.account or [DEMO_ACCOUNT]
    sandbox = Sandbox.from_certs(certs, accounts, config=config, currency=args.currency)
    if args.fault_rate:
        sandbox.faults.set_random(args.fault_rate, args.seed)
    sock = bind_socket(args.host, args.port)
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(
        sandbox, log_level="info" if args.access_log else "warning", access_log=args.access_log,
        lifespan="on", http="h11", ws="none", timeout_graceful_shutdown=2))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started and not task.done():  # noqa: ASYNC110 - uvicorn has no event
        await asyncio.sleep(0.01)
    if server.started:
        host = f"[{args.host}]" if ":" in args.host else args.host
        print(f"AliKassa sandbox on http://{host}:{port}")
        print(f"  base_url      http://{host}:{port}")
        for account in accounts:
            print(f"  account       {account} ({args.currency}, balance {args.balance})")
        print(f"  sign with     {certs.payment_dir}/ (payments), {certs.payout_dir}/ "
              "(payouts, balance, info)")
        print(f"  notifications signed with {certs.notification_dir}/private.pem; "
              "verify with its public.pem")
        print("  outcomes      cents .91 cancel, .92 fail, .93 stays wait, .94 partial, "
              ".95 'processing'; order_id prefixes paid-/cancel-/fail-/wait-; else paid")
        if args.fault_rate:
            print(f"  faults        {args.fault_rate:.0%} of requests (seed {args.seed})")
        print("Press Ctrl+C to stop.", flush=True)
    await task


def _sandbox(args: argparse.Namespace) -> int:
    try:
        asyncio.run(_serve_sandbox(args))
    except KeyboardInterrupt:
        pass
    return EXIT_OK


def register_sandbox(subparsers: Any) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "sandbox", help="run the local AliKassa sandbox until interrupted",
        description="Serve the AliKassa merchant API locally: signature checks, validation, "
                    "payment/payout lifecycle, balances, signed notifications, faults.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080, help="0 picks a free port")
    parser.add_argument("--certs", type=Path, default=Path("certs"),
                        help="certificate tree from `alikassa keygen` (created if missing)")
    parser.add_argument("--account", type=_account, action="append",
                        help=f"account UUID (repeatable; default {DEMO_ACCOUNT})")
    parser.add_argument("--currency", default="RUB", help="currency of the accounts")
    parser.add_argument("--balance", type=_money, default=Decimal("1000000.00"),
                        help="starting balance of each account")
    parser.add_argument("--wait-seconds", type=_non_negative, default=2.0,
                        help="seconds until a payment/payout is final (0: only by polls)")
    parser.add_argument("--wait-polls", type=int, default=1,
                        help="status requests answered 'wait' before the final status "
                             "(default 1; -1: only by time)")
    parser.add_argument("--fault-rate", type=_probability, default=0.0,
                        help="probability of a random fault per request (0..1)")
    parser.add_argument("--seed", type=int, default=None, help="seed for --fault-rate")
    parser.add_argument("--notify-host", action="append", default=[],
                        help="also deliver notifications to this host (default: loopback only)")
    parser.add_argument("--access-log", action="store_true", help="log every request")
    parser.set_defaults(func=_sandbox)
    return parser


# -- demo ---------------------------------------------------------------------


def _demo(args: argparse.Namespace) -> int:
    from .sandbox.demo import run_demo

    return asyncio.run(run_demo(verbose=args.verbose))


def register_demo(subparsers: Any) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "demo", help="payments, payouts, a notification and faults against a throwaway sandbox",
        description="Generate temporary certificates, start the sandbox on a free loopback "
                    "port, create a payment per payment service family and a payout per "
                    "payout family, wait for their final statuses, receive and verify a "
                    "signed notification, and print a table.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log HTTP calls")
    parser.set_defaults(func=_demo)
    return parser


# -- the command ----------------------------------------------------------------

#: every subcommand: a function adding its parser to the subparsers
COMMANDS: tuple[Callable[[Any], argparse.ArgumentParser], ...] = (
    register_demo, register_keygen, register_sandbox, cli_workers.register_payouts,
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="alikassa", description="AliKassa SDK tools: a local sandbox, keys, batch payouts.")
    parser.add_argument("--version", action="version", version=f"alikassa-async {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    subparsers.required = True
    for register in COMMANDS:
        register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``alikassa`` console script; returns the exit code."""
    args = build_parser().parse_args(list(argv) if argv is not None else None)
    try:
        return int(args.func(args))
    except ConfigurationError as exc:
        print(f"alikassa: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except ImportError as exc:
        print(f"alikassa: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except AliKassaError as exc:
        print(f"alikassa: error: {exc}", file=sys.stderr)
        return EXIT_FAILED


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
