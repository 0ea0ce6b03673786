"""Certificate archives for the sandbox, laid out like the vendor's (API reference §3).

``generate_certs(DIR)`` writes::

    DIR/payment/       private.pem  password.txt  public.pem
    DIR/payout/        private.pem  password.txt  public.pem
    DIR/notification/  private.pem               public.pem

``private.pem`` of payment/payout is the legacy OpenSSL-encrypted PKCS#1 layout
(``BEGIN RSA PRIVATE KEY`` + ``Proc-Type``/``DEK-Info``) that the vendor's Go and
Java samples require; ``password.txt`` has no trailing newline, because the PHP
sample passes it to OpenSSL untrimmed (§3.3). The notification pair is the one
the sandbox signs notifications with; your app verifies with its ``public.pem``.

>>> certs = generate_certs("certs")
>>> client = AliKassaClient(ACCOUNT, certs.payment_certificate(), certs.payout_certificate(),
...                         base_url=server.url)
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

import attrs
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from .._errors import ConfigurationError
from .._signing import Certificate, Verifier

__all__ = ["ROLES", "SandboxCerts", "generate_certs", "load_certs", "write_archive"]

#: the three archives: two the merchant signs with, one AliKassa (the sandbox) signs with
ROLES = ("payment", "payout", "notification")


def _private_write(path: Path, data: bytes) -> None:
    """Write a secret readable by the owner only (0600 from the first byte)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        os.fchmod(fd, 0o600)  # an existing file (keygen --force) keeps its mode otherwise
        handle.write(data)


def write_archive(
    folder: str | Path,
    key: rsa.RSAPrivateKey | None = None,
    *,
    password: bytes | None = None,
    encrypted: bool = True,
    key_size: int = 2048,
) -> Path:
    """Write one archive (``private.pem``, ``password.txt`` if encrypted, ``public.pem``).

    >>> write_archive("certs/payout")          # new RSA-2048 key, random password
    """
    target = Path(folder)
    target.mkdir(parents=True, exist_ok=True)
    key = key or rsa.generate_private_key(public_exponent=65537, key_size=key_size)
    if encrypted:
        password = password or secrets.token_urlsafe(24).encode("ascii")
        encryption: serialization.KeySerializationEncryption = (
            serialization.BestAvailableEncryption(password)
        )
        _private_write(target / "password.txt", password)  # no trailing newline (§3.3)
    else:
        encryption = serialization.NoEncryption()
    # TraditionalOpenSSL + a password = "BEGIN RSA PRIVATE KEY" with Proc-Type/DEK-Info.
    _private_write(
        target / "private.pem",
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, encryption
        ),
    )
    (target / "public.pem").write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return target


@attrs.frozen
class SandboxCerts:
    """Paths of a generated certificate tree, with loaders for each part."""

    root: Path

    @property
    def payment_dir(self) -> Path:
        return self.root / "payment"

    @property
    def payout_dir(self) -> Path:
        return self.root / "payout"

    @property
    def notification_dir(self) -> Path:
        return self.root / "notification"

    def payment_certificate(self) -> Certificate:
        """The merchant's payment key, decrypted (what ``AliKassaClient`` signs with)."""
        return Certificate.from_dir(self.payment_dir)

    def payout_certificate(self) -> Certificate:
        return Certificate.from_dir(self.payout_dir)

    def notification_certificate(self) -> Certificate:
        """The sandbox's notification signing key (AliKassa's side)."""
        return Certificate.from_dir(self.notification_dir)

    def payment_public_pem(self) -> bytes:
        return (self.payment_dir / "public.pem").read_bytes()

    def payout_public_pem(self) -> bytes:
        return (self.payout_dir / "public.pem").read_bytes()

    def notification_public_pem(self) -> bytes:
        return (self.notification_dir / "public.pem").read_bytes()

    def notification_verifier(self) -> Verifier:
        return Verifier.from_pem(self.notification_public_pem())


def generate_certs(
    root: str | Path, *, overwrite: bool = False, key_size: int = 2048
) -> SandboxCerts:
    """Write ``payment/``, ``payout/`` and ``notification/`` under ``root`` (see module doc).

    Refuses to replace existing keys unless ``overwrite=True``.

    >>> certs = generate_certs(tmp_path / "certs")
    """
    base = Path(root)
    if not overwrite:
        existing = [
            base / role / "private.pem" for role in ROLES if (base / role / "private.pem").exists()
        ]
        if existing:
            raise ConfigurationError(
                f"{existing[0]} already exists; pass overwrite=True (--force) to replace the keys"
            )
    for role in ROLES:
        write_archive(base / role, encrypted=role != "notification", key_size=key_size)
    return SandboxCerts(base)


def load_certs(root: str | Path) -> SandboxCerts:
    """A tree written by :func:`generate_certs` (or unpacked by hand); checks the files exist."""
    certs = SandboxCerts(Path(root))
    needed = [
        certs.payment_dir / "public.pem",
        certs.payout_dir / "public.pem",
        certs.notification_dir / "private.pem",
    ]
    missing = [str(path) for path in needed if not path.is_file()]
    if missing:
        raise ConfigurationError(
            "certificate tree is incomplete (run `alikassa keygen DIR`): missing "
            + ", ".join(missing)
        )
    return certs
