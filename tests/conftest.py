"""Shared fixtures: test keys in every format the vendor archive may hold, the sandbox
(in-process and over loopback), a client wired to it, and the fast retry policy.

The sandbox fixtures build on the ``alikassa`` pytest plugin's session-cached
certificates (``alikassa_certs``, ``alikassa_certificates``): loading an RSA key
costs ~0.1 s, so nothing here loads one per test.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from alikassa_async import AliKassaClient, Certificate, RetryPolicy
from alikassa_async.sandbox import Sandbox, SandboxCerts, SandboxConfig, SandboxServer

from .pg_server import pg_dsn, pg_server  # noqa: F401  (fixtures: one server per session)
from .sandbox_helpers import ACCOUNT, CARD, Api
from .wire import Wire

__all__ = ["ACCOUNT", "CARD", "FAST_RETRY", "PASSWORD", "write_archive"]

PASSWORD = b"s3cret-pass"

#: retries that cost milliseconds, not seconds: three attempts per read, 10 s per call
FAST_RETRY = RetryPolicy(max_attempts=3, backoff_base=0.001, backoff_max=0.002, total_timeout=10.0)


def _pem(key: rsa.RSAPrivateKey, fmt: str, password: bytes | None) -> bytes:
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(password)
        if password
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


def write_archive(
    folder: Path,
    key: rsa.RSAPrivateKey,
    fmt: str = "pkcs1",
    password: bytes | None = PASSWORD,
    password_suffix: bytes = b"",
) -> Path:
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
def cert_dir(
    tmp_path_factory: pytest.TempPathFactory, rsa_keys: dict[str, rsa.RSAPrivateKey]
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


# -- the sandbox --------------------------------------------------------------------


@pytest.fixture
def sandbox_config() -> SandboxConfig:
    """The next ``sandbox``'s configuration (final after one ``wait`` poll, never by time);
    override it in a module, or change ``sandbox.config`` in a test."""
    return SandboxConfig(wait_seconds=None, wait_polls=1)


@pytest.fixture
async def sandbox(
    alikassa_certs: SandboxCerts,
    sandbox_config: SandboxConfig,
    _alikassa_notification_key: Certificate,
) -> AsyncIterator[Sandbox]:
    """A fresh in-process sandbox knowing ``ACCOUNT`` with the plugin's certificates."""
    sandbox = Sandbox(_alikassa_notification_key, config=sandbox_config)
    sandbox.add_account(
        ACCOUNT,
        payment_public_key=alikassa_certs.payment_public_pem(),
        payout_public_key=alikassa_certs.payout_public_pem(),
    )
    yield sandbox
    await sandbox.aclose()


@pytest.fixture
async def api(
    sandbox: Sandbox, alikassa_certificates: tuple[Certificate, Certificate]
) -> AsyncIterator[Api]:
    """Signed raw requests to the in-process ``sandbox``."""
    async with httpx.AsyncClient(
        transport=sandbox.transport(), base_url="http://127.0.0.1"
    ) as http:
        yield Api(http, *alikassa_certificates)


@pytest.fixture
async def loopback_api(
    alikassa_sandbox: SandboxServer, alikassa_certificates: tuple[Certificate, Certificate]
) -> AsyncIterator[Api]:
    """Signed raw requests to the plugin's uvicorn sandbox, over real sockets."""
    async with httpx.AsyncClient(base_url=alikassa_sandbox.url, timeout=10) as http:
        yield Api(http, *alikassa_certificates)


@pytest.fixture
def wire(sandbox: Sandbox) -> Wire:
    """The in-process ``sandbox`` behind a tap that records and scripts (tests/wire.py)."""
    return Wire(sandbox.transport())


@pytest.fixture
async def client(
    wire: Wire, alikassa_certificates: tuple[Certificate, Certificate]
) -> AsyncIterator[AliKassaClient]:
    """An SDK client talking to ``sandbox`` through ``wire``, with ``FAST_RETRY``."""
    async with AliKassaClient(
        ACCOUNT,
        *alikassa_certificates,
        base_url="http://127.0.0.1",
        transport=wire,
        retry=FAST_RETRY,
    ) as client:
        yield client
