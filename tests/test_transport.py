"""The transport layer: lane pool (default), the aiohttp backend, signing threads.

All against the sandbox on real loopback sockets: the point is what each
backend concludes about delivery when a connection breaks.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from decimal import Decimal

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from alikassa_async import (
    AliKassaClient,
    Certificate,
    ConfigurationError,
    OutcomeUnknownError,
    RetryPolicy,
    TransportError,
    build_payout,
)
from alikassa_async._transport import LanePoolTransport
from alikassa_async.sandbox import Fault
from alikassa_async.sandbox.server import SandboxServer

from .reliability_support import BACKENDS, pool_state
from .sandbox_helpers import ACCOUNT, CARD

FAST = RetryPolicy(max_attempts=3, backoff_base=0.005, backoff_max=0.01, total_timeout=10)


def payout(order_id: str, amount: str = "100") -> object:
    return build_payout("payment_card_rub", order_id=order_id, amount=amount, number=CARD)


@pytest.fixture(params=BACKENDS)
async def client(
    request, alikassa_sandbox: SandboxServer, alikassa_certificates: tuple[Certificate, Certificate]
) -> AsyncIterator[AliKassaClient]:
    async with AliKassaClient(
        ACCOUNT,
        *alikassa_certificates,
        base_url=alikassa_sandbox.url,
        retry=FAST,
        http_backend=request.param,
        timeout=2.0,
    ) as client:
        yield client


async def test_every_endpoint_works_on_each_backend(client, alikassa_sandbox):
    created = await client.create_payout(payout("T-1"))
    assert (await client.payout_status(id=created.id)).order_id == "T-1"
    assert (await client.balance()).currency
    assert (await client.account_info()).is_allowed_payout
    assert alikassa_sandbox.state.payout_creations["T-1"] == 1


async def test_drop_after_commit_is_unknown_and_never_resent_on_each_backend(
    client, alikassa_sandbox
):
    alikassa_sandbox.faults.add("v1/payout", Fault.drop_after_commit())
    with pytest.raises(OutcomeUnknownError) as caught:
        await client.create_payout(payout("T-2"))
    assert caught.value.order_id == "T-2"
    assert alikassa_sandbox.state.payout_creations["T-2"] == 1
    found = await client.payout_status(order_id="T-2")
    assert found.order_id == "T-2"


async def test_read_timeout_after_commit_is_unknown_on_each_backend(client, alikassa_sandbox):
    alikassa_sandbox.faults.add("v1/payout", Fault.delay(5.0, after_commit=True))
    with pytest.raises(OutcomeUnknownError):
        await client.create_payout(payout("T-3"))
    assert alikassa_sandbox.state.payout_creations["T-3"] == 1


@pytest.mark.parametrize("backend", BACKENDS)
async def test_refused_connection_is_not_sent_and_retried_within_bounds(backend, payout_cert):
    with socket.socket() as probe:  # a loopback port with nobody listening
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    async with AliKassaClient(
        ACCOUNT,
        payout_cert=payout_cert,
        retry=FAST,
        base_url=f"http://127.0.0.1:{port}",
        http_backend=backend,
    ) as client:
        with pytest.raises(TransportError):  # definitely not created, so not "unknown"
            await client.create_payout(payout("T-4"))


@pytest.mark.parametrize("backend", ["builtin", "httpx"])
async def test_pool_bounds_connections_and_times_out_waiting_as_not_sent(
    backend, alikassa_sandbox, alikassa_certificates
):
    alikassa_sandbox.faults.add("v1/account/balance", Fault.delay(0.5), times=1)
    async with AliKassaClient(
        ACCOUNT,
        *alikassa_certificates,
        base_url=alikassa_sandbox.url,
        max_connections=1,
        retry=RetryPolicy.disabled(),
        http_backend=backend,
        timeout=httpx.Timeout(5.0, pool=0.05),
    ) as client:
        slow = asyncio.create_task(client.balance())
        await asyncio.sleep(0.1)
        # The only connection is busy: the create waits, times out in the pool, is never sent.
        with pytest.raises(TransportError, match="PoolTimeout"):
            await client.create_payout(payout("T-5"))
        await slow
        assert pool_state(client).connections == 1
        if backend == "httpx":
            transport = client._http._transport  # type: ignore[union-attr]
            assert isinstance(transport, LanePoolTransport) and len(transport.lanes) == 1
    assert "T-5" not in alikassa_sandbox.state.payout_creations


@pytest.mark.parametrize("backend", BACKENDS)
async def test_cancelled_calls_never_strand_the_pool(
    backend, alikassa_sandbox, alikassa_certificates
):
    """Cancelling calls that wait for a connection, or are half-way through their answer,
    must leave the pool usable (httpcore's own pool can strand slots here:
    encode/httpcore#1093)."""
    alikassa_sandbox.faults.add("v1/account/balance", Fault.delay(0.2), times=25)
    async with AliKassaClient(
        ACCOUNT,
        *alikassa_certificates,
        base_url=alikassa_sandbox.url,
        max_connections=5,
        retry=FAST,
        http_backend=backend,
    ) as client:
        for _ in range(5):
            tasks = [asyncio.create_task(client.balance()) for _ in range(40)]
            await asyncio.sleep(0.01)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        async with asyncio.timeout(5):
            balances = await asyncio.gather(*(client.balance() for _ in range(20)))
        assert len(balances) == 20
        state = pool_state(client)
        assert state.busy == 0 and state.requests == 0 and state.connections <= 5


async def test_large_keys_sign_in_a_thread_pool(alikassa_sandbox, tmp_path):
    key = rsa.generate_private_key(public_exponent=65537, key_size=3072)
    cert = Certificate(key, name="payout")
    alikassa_sandbox.sandbox.add_account(
        "0c3c7a52-3b0b-4d3a-9c7e-3e7c6a1f7b10",
        payout_public_key=cert.public_key_pem(),
        payment_public_key=cert.public_key_pem(),
        balance=Decimal("1000000"),
    )
    async with AliKassaClient(
        "0c3c7a52-3b0b-4d3a-9c7e-3e7c6a1f7b10", cert, cert, base_url=alikassa_sandbox.url
    ) as client:
        results = await asyncio.gather(*(client.create_payout(payout(f"K-{n}")) for n in range(8)))
        assert len({r.id for r in results}) == 8
        assert client._sign_pool is not None  # 3072 bits: signed off the event loop
    async with AliKassaClient(ACCOUNT, cert, cert, sign_threads=0) as inline:
        assert await inline._signature(cert, b"[]") == cert.sign(b"[]")
        assert inline._sign_pool is None


def test_backend_options_are_checked(payout_cert):
    with pytest.raises(ConfigurationError, match="http_backend"):
        AliKassaClient(ACCOUNT, payout_cert=payout_cert, http_backend="curl")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="cannot be combined"):
        AliKassaClient(ACCOUNT, payout_cert=payout_cert, http_backend="aiohttp", http2=True)
    with pytest.raises(ConfigurationError, match="sign_threads"):
        AliKassaClient(ACCOUNT, payout_cert=payout_cert, sign_threads=-1)
