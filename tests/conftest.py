"""Shared fixtures: test keys in every format the vendor archive may hold."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from alikassa_async import Certificate

PASSWORD = b"s3cret-pass"


def _pem(key: rsa.RSAPrivateKey, fmt: str, password: bytes | None) -> bytes:
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(password) if password
        else serialization.NoEncryption()
    )
    private_format = {
        "pkcs1": serialization.PrivateFormat.TraditionalOpenSSL,
        "pkcs8": serialization.PrivateFormat.PKCS8,
    }[fmt]
    return key.private_bytes(serialization.Encoding.PEM, private_format, encryption)


@pytest.fixture(scope="session")
def rsa_keys() -> dict[str, rsa.RSAPrivateKey]:
    """One RSA-2048 key per role, generated once per test session."""
    return {
        role: rsa.generate_private_key(public_exponent=65537, key_size=2048)
        for role in ("payment", "payout", "notification", "other")
    }


def write_archive(folder: Path, key: rsa.RSAPrivateKey, fmt: str = "pkcs1",
                  password: bytes | None = PASSWORD, password_suffix: bytes = b"") -> Path:
    """Write private.pem / password.txt / public.pem like the vendor's archive."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "private.pem").write_bytes(_pem(key, fmt, password))
    if password is not None:
        (folder / "password.txt").write_bytes(password + password_suffix)
    (folder / "public.pem").write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return folder


@pytest.fixture(scope="session")
def cert_dir(tmp_path_factory: pytest.TempPathFactory, rsa_keys: dict[str, rsa.RSAPrivateKey]
             ) -> Iterator[Path]:
    """A certificate tree (payment/, payout/, notification/) in the vendor's legacy format."""
    root = tmp_path_factory.mktemp("certs")
    for role in ("payment", "payout", "notification"):
        write_archive(root / role, rsa_keys[role])
    yield root


@pytest.fixture(scope="session")
def payment_cert(cert_dir: Path) -> Certificate:
    return Certificate.from_dir(cert_dir / "payment")


@pytest.fixture(scope="session")
def payout_cert(cert_dir: Path) -> Certificate:
    return Certificate.from_dir(cert_dir / "payout")


ACCOUNT = "93d5df06-996c-48c3-9847-348d6b580b80"
