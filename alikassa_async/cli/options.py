"""The connection options every ``alikassa`` command that calls the gateway shares.

Same names and environment variables as ``alikassa payouts run``:
``--account`` / ``ALIKASSA_ACCOUNT``, ``--payment-cert`` / ``ALIKASSA_PAYMENT_CERT_DIR``,
``--payout-cert`` / ``ALIKASSA_PAYOUT_CERT_DIR``, ``--base-url`` / ``ALIKASSA_BASE_URL``,
``--ca-bundle`` / ``ALIKASSA_CA_BUNDLE``, plus ``--allow-plain-http`` (a sandbox on
another host) and ``--signature-hash``.

>>> add_connection_options(parser, payment=True, payout=True)
>>> async with client_from_args(args) as client: ...
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any, Literal

from .._client import DEFAULT_BASE_URL, AliKassaClient
from .._errors import ConfigurationError
from .._signing import Certificate
from .payouts import _env_path

__all__ = ["add_connection_options", "client_from_args"]


def add_connection_options(
    parser: argparse.ArgumentParser, *, payment: bool = False, payout: bool = True
) -> None:
    """Add the account, certificate(s), host and TLS options to ``parser``."""
    group = parser.add_argument_group("connection (defaults from ALIKASSA_* variables)")
    group.add_argument(
        "--account",
        default=os.environ.get("ALIKASSA_ACCOUNT"),
        help="account UUID (env ALIKASSA_ACCOUNT)",
    )
    if payment:
        group.add_argument(
            "--payment-cert",
            type=Path,
            metavar="DIR",
            default=_env_path("ALIKASSA_PAYMENT_CERT_DIR"),
            help="payment certificate dir: private.pem, password.txt "
            "(env ALIKASSA_PAYMENT_CERT_DIR)",
        )
    if payout:
        group.add_argument(
            "--payout-cert",
            type=Path,
            metavar="DIR",
            default=_env_path("ALIKASSA_PAYOUT_CERT_DIR"),
            help="payout certificate dir: private.pem, password.txt (env ALIKASSA_PAYOUT_CERT_DIR)",
        )
    group.add_argument(
        "--base-url",
        default=os.environ.get("ALIKASSA_BASE_URL", DEFAULT_BASE_URL),
        help=f"API host (env ALIKASSA_BASE_URL; default {DEFAULT_BASE_URL})",
    )
    group.add_argument(
        "--ca-bundle",
        type=Path,
        metavar="FILE",
        default=_env_path("ALIKASSA_CA_BUNDLE"),
        help="CA file to trust for --base-url, e.g. the sandbox's "
        "certs/tls/ca.pem (env ALIKASSA_CA_BUNDLE)",
    )
    group.add_argument(
        "--allow-plain-http",
        action="store_true",
        help="allow an http:// --base-url that is not loopback (a sandbox on "
        "another host you control; never the real gateway)",
    )
    group.add_argument(
        "--signature-hash",
        choices=("sha1", "sha256"),
        default="sha1",
        help="what requests are signed with (default sha1, like the vendor's clients)",
    )


def _certificate(
    args: argparse.Namespace, role: Literal["payment", "payout"]
) -> Certificate | None:
    folder = getattr(args, f"{role}_cert", None)
    if folder is None:
        return None
    return Certificate.from_dir(folder)


def client_from_args(
    args: argparse.Namespace, *, needs: Literal["payment", "payout"] = "payout", **options: Any
) -> AliKassaClient:
    """An :class:`AliKassaClient` from the parsed options; ``needs`` names the required cert.

    Raises :class:`ConfigurationError` (the CLI's exit 2) naming the flag and the variable
    when the account or the needed certificate is missing.
    """
    if not args.account:
        raise ConfigurationError("no account: pass --account or set ALIKASSA_ACCOUNT")
    if getattr(args, f"{needs}_cert", None) is None:
        raise ConfigurationError(
            f"no {needs} certificate: pass --{needs}-cert DIR or set "
            f"ALIKASSA_{needs.upper()}_CERT_DIR"
        )
    if args.ca_bundle is not None:
        options["verify"] = args.ca_bundle
    try:
        return AliKassaClient(
            args.account,
            payment_cert=_certificate(args, "payment"),
            payout_cert=_certificate(args, "payout"),
            base_url=args.base_url,
            signature_hash=args.signature_hash,
            allow_plain_http=args.allow_plain_http,
            **options,
        )
    except ConfigurationError as exc:  # name the flag, not the Python argument
        raise ConfigurationError(
            str(exc).replace("allow_plain_http=True", "--allow-plain-http")
        ) from None
