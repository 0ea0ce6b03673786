"""``alikassa sandbox``: serve the local AliKassa until interrupted (``--tls``, faults)."""

from __future__ import annotations

import argparse
import asyncio
import errno
import socket
import uuid
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from .._defaults import DEMO_ACCOUNT
from .._errors import ConfigurationError

if TYPE_CHECKING:
    from ..sandbox.keys import SandboxCerts

__all__ = ["register_sandbox"]

EXIT_OK = 0


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
    from ..sandbox import generate_certs, load_certs

    if not (certs_dir / "payment" / "public.pem").exists():
        try:
            generate_certs(certs_dir)
        except OSError as exc:
            raise ConfigurationError(
                f"cannot write certificates to {certs_dir}/: {exc.strerror or exc}"
            ) from None
        print(f"generated certificates in {certs_dir}/ (alikassa keygen)")
    try:
        return load_certs(certs_dir)
    except OSError as exc:
        raise ConfigurationError(
            f"cannot read certificates in {certs_dir}/: {exc.strerror or exc}"
        ) from None


def _listen(host: str, port: int) -> socket.socket:
    from ..sandbox.server import bind_socket

    try:
        return bind_socket(host, port)
    except OSError as exc:
        hint = (
            " (in use: stop the other server, or --port 0 picks a free port)"
            if (exc.errno == errno.EADDRINUSE)
            else ""
        )
        raise ConfigurationError(
            f"cannot listen on {host}:{port}: {exc.strerror or exc}{hint}"
        ) from None


def _tls(args: argparse.Namespace) -> tuple[dict[str, Any], Path]:
    """uvicorn's TLS options for a throwaway CA beside the certificates, and the CA's path."""
    from ..sandbox.tls import ensure_tls

    names = [args.host] + ([urlsplit(args.public_url).hostname or ""] if args.public_url else [])
    try:
        tls = ensure_tls(args.certs, names)
    except OSError as exc:
        raise ConfigurationError(
            f"cannot write TLS certificates to {args.certs}/tls/: {exc.strerror or exc}"
        ) from None
    return {"ssl_certfile": str(tls.cert_path), "ssl_keyfile": str(tls.key_path)}, tls.ca_path


def _print_banner(
    args: argparse.Namespace,
    port: int,
    certs: SandboxCerts,
    accounts: list[str],
    ca_path: Path | None,
) -> None:
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
    print(
        f"  sign with     {certs.payment_dir}/ (payments), {certs.payout_dir}/ "
        "(payouts, balance, info)"
    )
    print(
        f"  notifications signed with {certs.notification_dir}/private.pem; "
        "verify with its public.pem"
    )
    print(
        "  outcomes      cents .91 cancel, .92 fail, .93 stays wait, .94 partial, "
        ".95 'processing'; order_id prefixes paid-/cancel-/fail-/wait-; else paid"
    )
    if args.fault_rate:
        print(f"  faults        {args.fault_rate:.0%} of requests (seed {args.seed})")
    print("Press Ctrl+C to stop.", flush=True)


async def _serve_sandbox(args: argparse.Namespace) -> None:
    import uvicorn

    from ..sandbox import Sandbox, SandboxConfig
    from ..sandbox.config import LOOPBACK_HOSTS
    from ..sandbox.server import ignore_upgrade_offers

    certs_dir: Path = args.certs
    certs = _load_sandbox_certs(certs_dir)
    tls_options, ca_path = _tls(args) if args.tls else ({}, None)
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
    server = uvicorn.Server(
        uvicorn.Config(
            sandbox,
            log_level="info" if args.access_log else "warning",
            access_log=args.access_log,
            lifespan="on",
            http="h11",
            ws="none",
            timeout_graceful_shutdown=2,
            **tls_options,
        )
    )
    ignore_upgrade_offers()
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started and not task.done():  # noqa: ASYNC110 - uvicorn has no event
        await asyncio.sleep(0.01)
    if server.started:
        _print_banner(args, port, certs, accounts, ca_path)
    await task


def _sandbox(args: argparse.Namespace) -> int:
    try:
        asyncio.run(_serve_sandbox(args))
    except KeyboardInterrupt:
        pass
    return EXIT_OK


def register_sandbox(subparsers: Any) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "sandbox",
        help="run the local AliKassa sandbox until interrupted",
        description="Serve the AliKassa merchant API locally: signature checks, validation, "
        "payment/payout lifecycle, balances, signed notifications, faults.",
    )
    parser.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on (default 127.0.0.1; 0.0.0.0 for every interface)",
    )
    parser.add_argument("--port", type=int, default=8080, help="0 picks a free port")
    parser.add_argument(
        "--certs",
        type=Path,
        default=Path("certs"),
        help="certificate tree from `alikassa keygen` (created if missing)",
    )
    parser.add_argument(
        "--account",
        type=_account,
        action="append",
        help=f"account UUID (repeatable; default {DEMO_ACCOUNT})",
    )
    parser.add_argument("--currency", default="RUB", help="currency of the accounts")
    parser.add_argument(
        "--balance",
        type=_money,
        default=Decimal("1000000.00"),
        help="starting balance of each account",
    )
    parser.add_argument(
        "--wait-seconds",
        type=_non_negative,
        default=2.0,
        help="seconds until a payment/payout is final (0: only by polls)",
    )
    parser.add_argument(
        "--wait-polls",
        type=int,
        default=1,
        help="status requests answered 'wait' before the final status "
        "(default 1; -1: only by time)",
    )
    parser.add_argument(
        "--fault-rate",
        type=_probability,
        default=0.0,
        help="probability of a random fault per request (0..1)",
    )
    parser.add_argument("--seed", type=int, default=None, help="seed for --fault-rate")
    parser.add_argument(
        "--notify-host",
        action="append",
        default=[],
        help="also deliver notifications to this host (default: loopback only)",
    )
    parser.add_argument("--access-log", action="store_true", help="log every request")
    parser.add_argument(
        "--tls",
        action="store_true",
        help="serve HTTPS with a throwaway CA written to CERTS/tls/ca.pem "
        "(made once, reused; give it to the client to trust)",
    )
    parser.add_argument(
        "--public-url",
        type=_public_url,
        default=None,
        metavar="URL",
        help="the URL clients reach the sandbox by (behind a proxy or TLS "
        "front): payment answers' hosted-page urls and history links "
        "use it (default: the URL each request came to)",
    )
    parser.set_defaults(func=_sandbox)
    return parser
