"""``alikassa keygen DIR``: certificate archives like the vendor's, for the sandbox and tests."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

__all__ = ["register_keygen"]

EXIT_OK = 0
EXIT_USAGE = 2


def _keygen(args: argparse.Namespace) -> int:
    from ..sandbox.keys import generate_certs

    try:
        certs = generate_certs(args.dir, overwrite=args.force, key_size=args.key_size)
    except OSError as exc:  # unwritable, missing parent, a file in the way: one line
        print(f"error: cannot write keys to {args.dir}: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_USAGE
    print(f"wrote {certs.root}/")
    for role, what in (
        ("payment", "sign v1/payment* requests"),
        ("payout", "sign v1/payout* and v1/account/* requests"),
        ("notification", "the sandbox signs notifications; verify with public.pem"),
    ):
        files = ", ".join(sorted(p.name for p in (certs.root / role).iterdir()))
        print(f"  {role}/  {files}  ({what})")
    print(f"next: alikassa sandbox --certs {certs.root}")
    return EXIT_OK


def register_keygen(subparsers: Any) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "keygen",
        help="write sandbox certificate archives (payment, payout, notification)",
        description="Write DIR/payment, DIR/payout (private.pem as legacy encrypted PKCS#1, "
        "password.txt, public.pem) and DIR/notification (private.pem, public.pem), "
        "laid out like the archives from the AliKassa cabinet.",
    )
    parser.add_argument("dir", type=Path, metavar="DIR", help="where to write the three archives")
    parser.add_argument("--force", action="store_true", help="replace existing keys")
    parser.add_argument(
        "--key-size",
        type=int,
        default=2048,
        choices=(2048, 3072, 4096),
        help="RSA key size in bits (default 2048)",
    )
    parser.set_defaults(func=_keygen)
    return parser
