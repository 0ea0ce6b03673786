"""The ``alikassa`` command (also ``python -m alikassa_async``).

::

    alikassa demo                              # everything end to end, in a few seconds
    alikassa keygen certs                      # certs/payment, certs/payout, certs/notification
    alikassa sandbox --certs certs --port 8080 --account 93d5df06-996c-48c3-9847-348d6b580b80
    alikassa payouts run payouts.csv ...       # batch payouts (see `alikassa payouts run -h`)
    alikassa status --payout --order-id P-1    # one status (--payment, --id N, --json)
    alikassa balance                           # the account's balance
    alikassa -v ...                            # the SDK's DEBUG lines; -vv adds connections

Each subcommand lives in a ``register(subparsers)`` function that adds its
parser and sets ``func`` (``args -> exit code``); adding a command is adding
one function to :data:`COMMANDS`.
"""

from __future__ import annotations

import argparse
import asyncio
import errno
import socket
import sys
import uuid
from collections.abc import Callable, Sequence
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from . import __version__, cli_logging, cli_lookup, cli_workers
from .errors import AliKassaError, ConfigurationError

if TYPE_CHECKING:
    from .sandbox.keys import SandboxCerts

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
    parser.add_argument("dir", type=Path, metavar="DIR", help="where to write the three archives")
    parser.add_argument("--force", action="store_true", help="replace existing keys")
    parser.add_argument("--key-size", type=int, default=2048, choices=(2048, 3072, 4096),
                        help="RSA key size in bits (default 2048)")
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


def _public_url(text: str) -> str:
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise argparse.ArgumentTypeError("must be an http(s) URL, e.g. https://sandbox.example")
    return text.rstrip("/")


def _load_sandbox_certs(certs_dir: Path) -> SandboxCerts:
    from .sandbox import generate_certs, load_certs

    if not (certs_dir / "payment" / "public.pem").exists():
        try:
            generate_certs(certs_dir)
        except OSError as exc:
            raise ConfigurationError(f"cannot write certificates to {certs_dir}/: "
                                     f"{exc.strerror or exc}") from None
        print(f"generated certificates in {certs_dir}/ (alikassa keygen)")
    try:
        return load_certs(certs_dir)
    except OSError as exc:
        raise ConfigurationError(f"cannot read certificates in {certs_dir}/: "
                                 f"{exc.strerror or exc}") from None


def _listen(host: str, port: int) -> socket.socket:
    from .sandbox.server import bind_socket

    try:
        return bind_socket(host, port)
    except OSError as exc:
        hint = " (in use: stop the other server, or --port 0 picks a free port)" if (
            exc.errno == errno.EADDRINUSE) else ""
        raise ConfigurationError(f"cannot listen on {host}:{port}: "
                                 f"{exc.strerror or exc}{hint}") from None


async def _serve_sandbox(args: argparse.Namespace) -> None:
    import uvicorn

    from .sandbox import Sandbox, SandboxConfig
    from .sandbox.config import LOOPBACK_HOSTS
    from .sandbox.server import ignore_upgrade_offers

    certs_dir: Path = args.certs
    certs = _load_sandbox_certs(certs_dir)
    tls_options: dict[str, Any] = {}
    ca_path: Path | None = None
    if args.tls:
        from .sandbox.tls import ensure_tls

        names = [args.host] + ([urlsplit(args.public_url).hostname or ""]
                               if args.public_url else [])
        try:
            tls = ensure_tls(certs_dir, names)
        except OSError as exc:
            raise ConfigurationError(f"cannot write TLS certificates to {certs_dir}/tls/: "
                                     f"{exc.strerror or exc}") from None
        tls_options = {"ssl_certfile": str(tls.cert_path), "ssl_keyfile": str(tls.key_path)}
        ca_path = tls.ca_path
    config = SandboxConfig(
        wait_seconds=None if args.wait_seconds == 0 else args.wait_seconds,
        wait_polls=None if args.wait_polls < 0 else args.wait_polls,
        initial_balance=args.balance,
        notification_hosts=LOOPBACK_HOSTS | frozenset(args.notify_host),
        public_url=args.public_url,
    )
    accounts = args.account or [DEMO_ACCOUNT]
    sandbox = Sandbox.from_certs(certs, accounts, config=config, currency=args.currency)
    if args.fault_rate:
        sandbox.faults.set_random(args.fault_rate, args.seed)
    sock = _listen(args.host, args.port)
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(
        sandbox, log_level="info" if args.access_log else "warning", access_log=args.access_log,
        lifespan="on", http="h11", ws="none", timeout_graceful_shutdown=2, **tls_options))
    ignore_upgrade_offers()
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started and not task.done():  # noqa: ASYNC110 - uvicorn has no event
        await asyncio.sleep(0.01)
    if server.started:
        host = f"[{args.host}]" if ":" in args.host else args.host
        scheme = "https" if args.tls else "http"
        listening = f"{scheme}://{host}:{port}"
        print(f"AliKassa sandbox on {listening}")
        print(f"  base_url      {args.public_url or listening}")
        if args.public_url:
            print(f"  listening on  {listening} (payment urls use --public-url)")
        if ca_path is not None:
            print(f"  TLS CA        {ca_path} (have the client trust this file)")
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
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (default 127.0.0.1; 0.0.0.0 for every "
                             "interface)")
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
    parser.add_argument("--tls", action="store_true",
                        help="serve HTTPS with a throwaway CA written to CERTS/tls/ca.pem "
                             "(made once, reused; give it to the client to trust)")
    parser.add_argument("--public-url", type=_public_url, default=None, metavar="URL",
                        help="the URL clients reach the sandbox by (behind a proxy or TLS "
                             "front): payment answers' hosted-page urls and history links "
                             "use it (default: the URL each request came to)")
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
    parser.set_defaults(func=_demo)
    return parser


# -- the command ----------------------------------------------------------------

#: every subcommand: a function adding its parser to the subparsers
COMMANDS: tuple[Callable[[Any], argparse.ArgumentParser], ...] = (
    register_demo, register_keygen, register_sandbox, cli_workers.register_payouts,
    cli_lookup.register_status, cli_lookup.register_balance,
)

_VERBOSE_HELP = ("-v: the SDK's DEBUG lines (each request); -vv: also the connection-level "
                 "lines (the built-in sender's, or httpx/httpcore's)")


def _add_verbose(parser: argparse.ArgumentParser, *, top: bool) -> None:
    # On each subcommand too (``alikassa demo -v``); SUPPRESS keeps a subcommand that was
    # not given -v from resetting the count given before it.
    parser.add_argument("-v", "--verbose", action="count",
                        default=0 if top else argparse.SUPPRESS, help=_VERBOSE_HELP)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="alikassa", description="AliKassa SDK tools: a local sandbox, keys, batch payouts, "
                                    "status and balance lookups.")
    parser.add_argument("--version", action="version", version=f"alikassa-async {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    subparsers.required = True
    _add_verbose(parser, top=True)
    for register in COMMANDS:
        for command in _leaf_parsers(register(subparsers)):
            if not any("-v" in action.option_strings for action in command._actions):
                _add_verbose(command, top=False)
    return parser


def _leaf_parsers(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    """``parser`` itself, or the commands below it (``payouts`` -> ``payouts run``)."""
    nested = [action for action in parser._actions
              if isinstance(action, argparse._SubParsersAction)]
    if not nested:
        return [parser]
    return [leaf for action in nested for child in action.choices.values()
            for leaf in _leaf_parsers(child)]


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``alikassa`` console script; returns the exit code."""
    args = build_parser().parse_args(list(argv) if argv is not None else None)
    cli_logging.configure(args.verbose)
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
