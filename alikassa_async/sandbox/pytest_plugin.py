"""pytest fixtures for testing against the local AliKassa sandbox.

Installed with the package (entry point ``alikassa``); nothing to configure::

    async def test_checkout(alikassa_client, alikassa_sandbox):
        created = await alikassa_client.create_payment(build_payment(
            "payment_card_number_rub_hpp", order_id="A-1", amount="500",
            customer_ip="18.191.80.10", customer_user_id="u-42"))
        status = await alikassa_client.wait_for_payment(id=created.id, interval=0.05)
        assert status.payment_status == "paid"
        assert alikassa_sandbox.state.payment_creations["A-1"] == 1

Fixtures:

``alikassa_certs`` (session)
    a generated certificate tree (:class:`~alikassa_async.sandbox.SandboxCerts`);
    RSA keys are made once per test session.
``alikassa_account`` (session)
    the account UUID the sandbox knows.
``alikassa_sandbox_config``
    the :class:`~alikassa_async.sandbox.SandboxConfig` of each new sandbox (final
    after 0.5 s or one ``wait`` poll); override this fixture to change it.
``alikassa_sandbox``
    a running :class:`~alikassa_async.sandbox.SandboxServer` on 127.0.0.1 (free
    port), fresh per test: ``.url``, ``.state``, ``.faults``, ``.sandbox``.
``alikassa_client``
    an :class:`~alikassa_async.AliKassaClient` for it, closed after the test.

The async fixtures need an asyncio test runner (pytest-asyncio, any mode). This
module imports nothing heavy until a fixture is used, so having the package
installed never breaks a test run that does not use it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from ..client import AliKassaClient
    from ..signing import Certificate
    from .config import SandboxConfig
    from .keys import SandboxCerts
    from .server import SandboxServer

__all__ = [
    "DEFAULT_ACCOUNT",
    "alikassa_account",
    "alikassa_certificates",
    "alikassa_certs",
    "alikassa_client",
    "alikassa_sandbox",
    "alikassa_sandbox_config",
]

DEFAULT_ACCOUNT = "93d5df06-996c-48c3-9847-348d6b580b80"


def _async_fixture() -> Callable[[Any], Any]:
    try:
        import pytest_asyncio
    except ImportError:  # anyio's plugin (or another runner) handles plain async fixtures
        return pytest.fixture
    return pytest_asyncio.fixture


@pytest.fixture(scope="session")
def alikassa_certs(tmp_path_factory: pytest.TempPathFactory) -> SandboxCerts:
    """Payment, payout and notification archives, generated once per session."""
    from .keys import generate_certs

    return generate_certs(tmp_path_factory.mktemp("alikassa-certs"))


@pytest.fixture(scope="session")
def alikassa_account() -> str:
    return DEFAULT_ACCOUNT


@pytest.fixture(scope="session")
def alikassa_certificates(alikassa_certs: SandboxCerts) -> tuple[Certificate, Certificate]:
    """(payment, payout) certificates, decrypted once per session."""
    return alikassa_certs.payment_certificate(), alikassa_certs.payout_certificate()


@pytest.fixture(scope="session")
def _alikassa_notification_key(alikassa_certs: SandboxCerts) -> Certificate:
    return alikassa_certs.notification_certificate()


@pytest.fixture
def alikassa_sandbox_config() -> SandboxConfig:
    """Configuration of the next ``alikassa_sandbox``; override to change it."""
    from .config import SandboxConfig

    return SandboxConfig(wait_seconds=0.5, wait_polls=1)


@_async_fixture()
async def alikassa_sandbox(alikassa_certs: SandboxCerts, alikassa_account: str,
                           alikassa_sandbox_config: SandboxConfig,
                           _alikassa_notification_key: Certificate,
                           ) -> AsyncIterator[SandboxServer]:
    """A fresh sandbox, served by uvicorn on 127.0.0.1 for the duration of one test."""
    from .app import Sandbox
    from .server import SandboxServer

    sandbox = Sandbox(_alikassa_notification_key, config=alikassa_sandbox_config)
    sandbox.add_account(alikassa_account, payment_public_key=alikassa_certs.payment_public_pem(),
                        payout_public_key=alikassa_certs.payout_public_pem())
    async with SandboxServer(sandbox) as server:
        yield server


@_async_fixture()
async def alikassa_client(alikassa_sandbox: SandboxServer, alikassa_account: str,
                          alikassa_certificates: tuple[Certificate, Certificate]
                          ) -> AsyncIterator[AliKassaClient]:
    """An ``AliKassaClient`` pointed at ``alikassa_sandbox``."""
    from ..client import AliKassaClient

    payment, payout = alikassa_certificates
    async with AliKassaClient(alikassa_account, payment, payout,
                              base_url=alikassa_sandbox.url) as client:
        yield client
