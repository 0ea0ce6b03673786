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
import sys
from collections.abc import Callable, Sequence
from typing import Any

from .. import __version__
from .._defaults import DEMO_ACCOUNT
from .._errors import AliKassaError, ConfigurationError
from . import lookup, verbosity, workers
from .keygen import register_keygen
from .sandbox import register_sandbox

__all__ = ["COMMANDS", "DEMO_ACCOUNT", "build_parser", "main"]


EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2


# -- demo ---------------------------------------------------------------------


def _demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    return asyncio.run(run_demo(verbose=args.verbose))


def register_demo(subparsers: Any) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "demo",
        help="payments, payouts, a notification and faults against a throwaway sandbox",
        description="Generate temporary certificates, start the sandbox on a free loopback "
        "port, create a payment per payment service family and a payout per "
        "payout family, wait for their final statuses, receive and verify a "
        "signed notification, and print a table.",
    )
    parser.set_defaults(func=_demo)
    return parser


# -- the command ----------------------------------------------------------------

#: every subcommand: a function adding its parser to the subparsers


COMMANDS: tuple[Callable[[Any], argparse.ArgumentParser], ...] = (
    register_demo,
    register_keygen,
    register_sandbox,
    workers.register_payouts,
    lookup.register_status,
    lookup.register_balance,
)

_VERBOSE_HELP = (
    "-v: the SDK's DEBUG lines (each request); -vv: also the connection-level "
    "lines (the built-in sender's, or httpx/httpcore's)"
)


def _add_verbose(parser: argparse.ArgumentParser, *, top: bool) -> None:
    # On each subcommand too (``alikassa demo -v``); SUPPRESS keeps a subcommand that was
    # not given -v from resetting the count given before it.
    parser.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=0 if top else argparse.SUPPRESS,
        help=_VERBOSE_HELP,
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="alikassa",
        description="AliKassa SDK tools: a local sandbox, keys, batch payouts, "
        "status and balance lookups.",
    )
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
    nested = [
        action for action in parser._actions if isinstance(action, argparse._SubParsersAction)
    ]
    if not nested:
        return [parser]
    return [
        leaf
        for action in nested
        for child in action.choices.values()
        for leaf in _leaf_parsers(child)
    ]


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``alikassa`` console script; returns the exit code."""
    args = build_parser().parse_args(list(argv) if argv is not None else None)
    verbosity.configure(args.verbose)
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
