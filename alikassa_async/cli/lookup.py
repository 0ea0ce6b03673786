"""``alikassa status`` and ``alikassa balance``: one look at the gateway from a shell.

::

    alikassa status --payout --order-id P-1          # or --id 12345
    alikassa status --payment --id 100000536 --json  # the gateway's answer as JSON
    alikassa balance

Account, certificate and host come from the same flags and ``ALIKASSA_*``
variables as ``alikassa payouts run``. Payment lookups are signed with the payment
certificate, payout lookups and the balance with the payout certificate. Exit 0
with an answer, 1 when the gateway refused (no such payment/payout: 404), 2 for
usage or configuration errors.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import Any, TextIO

import attrs

from .._client import AliKassaClient
from .options import add_connection_options, client_from_args
from .payouts import _positive_int

__all__ = ["register_balance", "register_status", "render"]

EXIT_OK = 0


def _order_id(text: str) -> str:
    if not text or text != text.strip():
        raise argparse.ArgumentTypeError("must be non-empty, without surrounding spaces")
    return text


def register_status(subparsers: Any) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "status",
        help="the status of one payment or payout",
        description="Look up one payment or payout by AliKassa id or by your order_id and "
        "print its status and amounts (--json: the gateway's answer).",
    )
    kind = parser.add_mutually_exclusive_group(required=True)
    kind.add_argument(
        "--payout",
        dest="kind",
        action="store_const",
        const="payout",
        help="a payout (signed with the payout certificate)",
    )
    kind.add_argument(
        "--payment",
        dest="kind",
        action="store_const",
        const="payment",
        help="a payment (signed with the payment certificate)",
    )
    key = parser.add_mutually_exclusive_group(required=True)
    key.add_argument("--id", type=_positive_int, help="the AliKassa id")
    key.add_argument("--order-id", type=_order_id, help="your order_id")
    parser.add_argument(
        "--json", action="store_true", help="print the gateway's answer as JSON instead of a table"
    )
    add_connection_options(parser, payment=True, payout=True)
    parser.set_defaults(func=status_command)
    return parser


def register_balance(subparsers: Any) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "balance",
        help="the account's balance",
        description="Print the account's balance, hold, rolling reserve and pending payouts "
        "(signed with the payout certificate).",
    )
    parser.add_argument(
        "--json", action="store_true", help="print the gateway's answer as JSON instead of a table"
    )
    add_connection_options(parser, payment=False, payout=True)
    parser.set_defaults(func=balance_command)
    return parser


def render(answer: Any) -> list[str]:
    """``name  value`` lines for an attrs response: every field that has a value."""
    rows: list[tuple[str, str]] = []
    for field in attrs.fields(type(answer)):
        value = getattr(answer, field.name)
        if field.name == "raw" or value is None or not field.repr:
            continue
        if isinstance(value, bool):
            text = "yes" if value else "no"
        elif isinstance(value, Decimal):
            text = format(value, "f")
        else:
            text = str(value)
        rows.append((field.name, text))
    width = max((len(name) for name, _ in rows), default=0)
    return [f"{name.ljust(width)}  {text}" for name, text in rows]


def _print(answer: Any, as_json: bool, out: TextIO) -> None:
    if as_json:
        out.write(json.dumps(dict(answer.raw), ensure_ascii=False, indent=2, default=str) + "\n")
    else:
        out.write("\n".join(render(answer)) + "\n")
    out.flush()


def _run(
    args: argparse.Namespace, needs: Any, call: Callable[[AliKassaClient], Awaitable[Any]]
) -> Any:
    async def main() -> Any:
        async with client_from_args(args, needs=needs) as client:
            return await call(client)

    return asyncio.run(main())


def status_command(args: argparse.Namespace, *, out: TextIO | None = None) -> int:
    key: dict[str, Any] = {"id": args.id} if args.id is not None else {"order_id": args.order_id}

    async def lookup(client: AliKassaClient) -> Any:
        if args.kind == "payment":
            return await client.payment_status(**key)
        return await client.payout_status(**key)

    answer = _run(args, args.kind, lookup)
    _print(answer, args.json, out or sys.stdout)
    return EXIT_OK


def balance_command(args: argparse.Namespace, *, out: TextIO | None = None) -> int:
    async def balance(client: AliKassaClient) -> Any:
        return await client.balance()

    _print(_run(args, "payout", balance), args.json, out or sys.stdout)
    return EXIT_OK
