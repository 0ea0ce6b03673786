"""pytest fixtures for testing against the local AliKassa sandbox.

Installed with the package (entry point ``alikassa``); ``pip install
'alikassa-async[pytest]'`` brings the sandbox and pytest-asyncio. Nothing to
configure: it works in pytest-asyncio's default strict mode and in auto mode::

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

An ``async def`` test that uses ``alikassa_sandbox`` or ``alikassa_client``
(directly or through a fixture of its own) is run by pytest-asyncio even when it
is not marked ``@pytest.mark.asyncio`` -- strict mode only asks for the marker
to tell asyncio tests from those of other runners, and these fixtures are
asyncio's. A test marked ``@pytest.mark.anyio`` is left to anyio's plugin. The
fixtures run in the test's (function-scoped) event loop.

This module imports nothing heavy until a fixture is used, so having the package
installed never breaks a test run that does not use it.
"""

from __future__ import annotations

import importlib.util
import inspect
from collections.abc import AsyncIterator, Callable, Generator
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from .._client import AliKassaClient
    from .._signing import Certificate
    from .config import SandboxConfig
    from .keys import SandboxCerts
    from .server import SandboxServer

__all__ = [
    "ASYNC_FIXTURES",
    "DEFAULT_ACCOUNT",
    "alikassa_account",
    "alikassa_certificates",
    "alikassa_certs",
    "alikassa_client",
    "alikassa_sandbox",
    "alikassa_sandbox_config",
]

DEFAULT_ACCOUNT = "93d5df06-996c-48c3-9847-348d6b580b80"


#: the fixtures that need a running event loop; a test using one is an asyncio test
ASYNC_FIXTURES = frozenset({"alikassa_sandbox", "alikassa_client"})

_HAVE_PYTEST_ASYNCIO = importlib.util.find_spec("pytest_asyncio") is not None
_NO_RUNNER = (
    "{name} uses {fixtures}, which need pytest-asyncio: "
    "pip install 'alikassa-async[pytest]' (or mark the test @pytest.mark.anyio)"
)


def _async_fixture() -> Callable[[Any], Any]:
    if not _HAVE_PYTEST_ASYNCIO:  # anyio's plugin (or another runner) handles plain ones
        return pytest.fixture
    import pytest_asyncio

    return pytest_asyncio.fixture


def _uses_async_fixtures(item: pytest.Item) -> frozenset[str]:
    if not isinstance(item, pytest.Function) or not inspect.iscoroutinefunction(item.obj):
        return frozenset()
    return ASYNC_FIXTURES.intersection(item.fixturenames)


@pytest.hookimpl(hookwrapper=True, trylast=True)
def pytest_pycollect_makeitem(
    collector: pytest.Collector, name: str, obj: object
) -> Generator[None, Any, None]:
    """Mark ``async def`` tests using the sandbox fixtures ``asyncio``, for strict mode.

    ``trylast`` makes this wrapper run inside pytest-asyncio's, so the marker is
    there when pytest-asyncio decides which items it runs.
    """
    outcome = yield
    if not collector.config.pluginmanager.hasplugin("asyncio"):
        return
    try:
        result = outcome.get_result()
    except BaseException:  # pytest reports the collection error itself
        return
    items = result if isinstance(result, list) else [result]
    for item in items:
        if (
            isinstance(item, pytest.Item)
            and _uses_async_fixtures(item)
            and item.get_closest_marker("asyncio") is None
            and item.get_closest_marker("anyio") is None
        ):
            item.add_marker(pytest.mark.asyncio)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """Without pytest-asyncio, say what to install instead of a cryptic fixture error."""
    if (
        item.config.pluginmanager.hasplugin("asyncio")
        or item.get_closest_marker("anyio") is not None
    ):
        return
    used = _uses_async_fixtures(item)
    if used:
        pytest.fail(
            _NO_RUNNER.format(name=item.name, fixtures=", ".join(sorted(used))), pytrace=False
        )


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
async def alikassa_sandbox(
    alikassa_certs: SandboxCerts,
    alikassa_account: str,
    alikassa_sandbox_config: SandboxConfig,
    _alikassa_notification_key: Certificate,
) -> AsyncIterator[SandboxServer]:
    """A fresh sandbox, served by uvicorn on 127.0.0.1 for the duration of one test."""
    from .app import Sandbox
    from .server import SandboxServer

    sandbox = Sandbox(_alikassa_notification_key, config=alikassa_sandbox_config)
    sandbox.add_account(
        alikassa_account,
        payment_public_key=alikassa_certs.payment_public_pem(),
        payout_public_key=alikassa_certs.payout_public_pem(),
    )
    async with SandboxServer(sandbox) as server:
        yield server


@_async_fixture()
async def alikassa_client(
    alikassa_sandbox: SandboxServer,
    alikassa_account: str,
    alikassa_certificates: tuple[Certificate, Certificate],
) -> AsyncIterator[AliKassaClient]:
    """An ``AliKassaClient`` pointed at ``alikassa_sandbox``."""
    from .._client import AliKassaClient

    payment, payout = alikassa_certificates
    async with AliKassaClient(
        alikassa_account, payment, payout, base_url=alikassa_sandbox.url
    ) as client:
        yield client
