"""Fault injection, over real loopback sockets (uvicorn), and what the SDK makes of each fault.

Every kind of :data:`FAULT_KINDS` is checked twice: raw (what arrives on the wire)
and through ``AliKassaClient`` (a create never re-sent and reported
``OutcomeUnknownError`` when in doubt; a read retried).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from decimal import Decimal
from email.utils import parsedate_to_datetime

import httpx
import pytest

from alikassa_async import (
    AliKassaClient,
    Certificate,
    OutcomeUnknownError,
    ServerError,
    build_payout,
)
from alikassa_async._retry import parse_retry_after
from alikassa_async.sandbox import FAULT_KINDS, Fault, Sandbox, SandboxCerts
from alikassa_async.sandbox.faults import FaultPlan, RandomFaults
from alikassa_async.sandbox.server import SandboxServer

from .conftest import FAST_RETRY
from .sandbox_helpers import ACCOUNT, CARD, Api, eventually, payout_body


def payout(order_id: str = "P-1", amount: str = "100") -> object:
    return build_payout("payment_card_rub", order_id=order_id, amount=amount, number=CARD)


@pytest.fixture
async def client(
    alikassa_sandbox: SandboxServer, alikassa_certificates: tuple[Certificate, Certificate]
) -> AsyncIterator[AliKassaClient]:
    """Over loopback, in place of conftest's in-process client: these faults are about sockets."""
    async with AliKassaClient(
        ACCOUNT, *alikassa_certificates, base_url=alikassa_sandbox.url, retry=FAST_RETRY
    ) as client:
        yield client


# ---------------------------------------------------------------------------
# The SDK against each fault


async def test_connection_dropped_after_commit_is_outcome_unknown_and_the_payout_exists(
    client: AliKassaClient, alikassa_sandbox: SandboxServer
) -> None:
    alikassa_sandbox.faults.add("v1/payout", Fault.drop_after_commit())
    with pytest.raises(OutcomeUnknownError) as caught:
        await client.create_payout(payout())
    assert caught.value.order_id == "P-1"
    state = alikassa_sandbox.state
    assert state.payout_creations["P-1"] == 1 and state.requests["v1/payout"] == 1
    found = await client.payout_status(order_id="P-1")
    assert found.id == state.payouts_by_order_id["P-1"].id


async def test_connection_dropped_before_commit_is_unknown_too_but_nothing_exists(
    client: AliKassaClient, alikassa_sandbox: SandboxServer
) -> None:
    alikassa_sandbox.faults.add("v1/payout", Fault.drop_before_commit())
    with pytest.raises(OutcomeUnknownError):
        await client.create_payout(payout())
    assert alikassa_sandbox.state.requests["v1/payout"] == 1  # not re-sent
    assert alikassa_sandbox.state.payout_creations["P-1"] == 0


@pytest.mark.parametrize("code", [500, 502, 503, 504, 429])
async def test_creates_are_not_retried_on_error_statuses(
    client: AliKassaClient, alikassa_sandbox: SandboxServer, code: int
) -> None:
    alikassa_sandbox.faults.add("v1/payout", Fault.status(code, retry_after=0.01), times=3)
    with pytest.raises(OutcomeUnknownError) as caught:
        await client.create_payout(payout())
    assert alikassa_sandbox.state.requests["v1/payout"] == 1
    assert alikassa_sandbox.faults.pending("v1/payout") == 2
    assert getattr(caught.value.cause, "status_code", None) == code


async def test_a_5xx_after_commit_leaves_a_payout_the_client_must_look_up(
    client: AliKassaClient, alikassa_sandbox: SandboxServer
) -> None:
    alikassa_sandbox.faults.add("v1/payout", Fault.status(503, after_commit=True))
    with pytest.raises(OutcomeUnknownError) as caught:
        await client.create_payout(payout())
    assert isinstance(caught.value.cause, ServerError)
    assert alikassa_sandbox.state.payout_creations["P-1"] == 1


@pytest.mark.parametrize(
    "fault",
    [
        Fault.status(503),
        Fault.status(502),
        Fault.status(429, retry_after=0.01),
        Fault.status(429, retry_after=0, http_date=True),
        Fault.drop_before_commit(),
        Fault.html_200(),
        Fault.truncated_json_200(),
        Fault.json_array_200(),
    ],
    ids=lambda f: f.describe(),
)
async def test_reads_are_retried_through_faults(
    client: AliKassaClient, alikassa_sandbox: SandboxServer, fault: Fault
) -> None:
    created = await client.create_payout(payout())
    alikassa_sandbox.faults.add("v1/payout/status", fault, times=2)
    found = await client.payout_status(id=created.id)
    assert found.order_id == "P-1"
    assert alikassa_sandbox.state.requests["v1/payout/status"] == 3


async def test_a_read_that_keeps_failing_gives_up_after_max_attempts(
    client: AliKassaClient, alikassa_sandbox: SandboxServer
) -> None:
    alikassa_sandbox.faults.add("v1/account/balance", Fault.status(503), times=10)
    with pytest.raises(ServerError):
        await client.balance()
    assert alikassa_sandbox.state.requests["v1/account/balance"] == FAST_RETRY.max_attempts


@pytest.mark.parametrize("kind", sorted(FAULT_KINDS))
async def test_fault_table_matrix_on_create_payout(
    client: AliKassaClient, alikassa_sandbox: SandboxServer, kind: str
) -> None:
    """Each row of FAULT_KINDS, with its example fault: does the record exist afterwards,
    and did the SDK conclude what the row says?"""
    row = FAULT_KINDS[kind]
    alikassa_sandbox.faults.add("v1/payout", row.example())
    try:
        await client.create_payout(payout())
        outcome = "created"
    except OutcomeUnknownError:
        outcome = "unknown"
    assert alikassa_sandbox.state.payout_creations["P-1"] == int(row.creates_record)
    assert row.create_outcome.startswith(
        "OutcomeUnknownError" if outcome == "unknown" else "created"
    )
    assert alikassa_sandbox.state.requests["v1/payout"] == 1
    assert alikassa_sandbox.faults.fired[-1].fault.kind == kind


async def test_a_delay_past_the_client_timeout_still_commits(
    alikassa_sandbox: SandboxServer, alikassa_certificates: tuple[Certificate, Certificate]
) -> None:
    alikassa_sandbox.faults.add("v1/payout", Fault.delay(0.5))
    async with AliKassaClient(
        ACCOUNT,
        *alikassa_certificates,
        base_url=alikassa_sandbox.url,
        timeout=0.1,
        retry=FAST_RETRY,
    ) as client:
        with pytest.raises(OutcomeUnknownError) as caught:
            await client.create_payout(payout())
    assert "Timeout" in caught.value.reason
    # The client gave up; the gateway did not.
    await eventually(lambda: alikassa_sandbox.state.payout_creations["P-1"] == 1)


async def test_a_slow_body_beyond_the_read_timeout_is_unknown_and_created(
    alikassa_sandbox: SandboxServer, alikassa_certificates: tuple[Certificate, Certificate]
) -> None:
    alikassa_sandbox.faults.add("v1/payout", Fault.slow_body_200(2.0))
    async with AliKassaClient(
        ACCOUNT,
        *alikassa_certificates,
        base_url=alikassa_sandbox.url,
        timeout=0.1,
        retry=FAST_RETRY,
    ) as client:
        with pytest.raises(OutcomeUnknownError):
            await client.create_payout(payout())
    assert alikassa_sandbox.state.payout_creations["P-1"] == 1


# ---------------------------------------------------------------------------
# What each fault looks like on the wire


async def test_status_faults_on_the_wire(
    loopback_api: Api, alikassa_sandbox: SandboxServer
) -> None:
    faults = alikassa_sandbox.faults
    for code in (500, 502, 503, 504):
        faults.add("v1/account/balance", Fault.status(code))
        response = await loopback_api.call("v1/account/balance")
        assert response.status_code == code
        html = code in (502, 504)
        assert response.headers["content-type"].startswith(
            "text/html" if html else "application/json"
        )
    faults.add("v1/account/balance", Fault.status(429, retry_after=2))
    response = await loopback_api.call("v1/account/balance")
    assert (response.status_code, response.headers["retry-after"]) == (429, "2")
    faults.add("v1/account/balance", Fault.status(429, retry_after=3, http_date=True))
    response = await loopback_api.call("v1/account/balance")
    when = parsedate_to_datetime(response.headers["retry-after"])
    assert 1 <= when.timestamp() - time.time() <= 4
    assert 1 <= (parse_retry_after(response.headers) or 0) <= 4
    # the script is used up
    assert (await loopback_api.call("v1/account/balance")).status_code == 200


async def test_drops_on_the_wire_close_the_socket_without_an_answer(
    loopback_api: Api, alikassa_sandbox: SandboxServer
) -> None:
    alikassa_sandbox.faults.add("v1/payout", Fault.drop_after_commit())
    with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
        await loopback_api.call("v1/payout", payout_body())
    assert alikassa_sandbox.state.payout_creations["P-1"] == 1
    # The server keeps serving on new connections.
    assert (await loopback_api.call("v1/payout/status", {"order_id": "P-1"})).status_code == 200


async def test_garbled_200s_on_the_wire(loopback_api: Api, alikassa_sandbox: SandboxServer) -> None:
    faults = alikassa_sandbox.faults
    faults.add("v1/payout", Fault.html_200())
    response = await loopback_api.call("v1/payout", payout_body(order_id="P-1"))
    assert response.status_code == 200 and response.text.startswith("<!DOCTYPE html>")
    faults.add("v1/payout", Fault.truncated_json_200())
    response = await loopback_api.call("v1/payout", payout_body(order_id="P-2"))
    assert response.status_code == 200 and response.content.startswith(b'{"payment_status"')
    with pytest.raises(ValueError):
        response.json()
    faults.add("v1/payout", Fault.json_array_200())
    response = await loopback_api.call("v1/payout", payout_body(order_id="P-3"))
    assert response.content == b"[]"
    assert sorted(alikassa_sandbox.state.payout_creations) == ["P-1", "P-2", "P-3"]


async def test_huge_and_slow_bodies_on_the_wire(
    loopback_api: Api, alikassa_sandbox: SandboxServer
) -> None:
    alikassa_sandbox.faults.add("v1/account/info", Fault.huge_body_200(size=3_000_000))
    response = await loopback_api.call("v1/account/info")
    assert len(response.content) == int(response.headers["content-length"]) == 3_000_000
    assert response.json()["payment_status"] == "wait"
    alikassa_sandbox.faults.add("v1/account/balance", Fault.slow_body_200(0.2))
    chunks = []
    async with loopback_api.http.stream(
        "POST",
        "/v1/account/balance",
        content=b"[]",
        headers={
            "Content-Type": "application/json",
            "Account": ACCOUNT,
            "Sign": loopback_api.payout.sign(b"[]"),
        },
    ) as slow:
        async for chunk in slow.aiter_raw():
            chunks.append(chunk)
    assert len(chunks) > 1  # it really arrived in pieces
    assert b"".join(chunks).startswith(b'{"currency":"RUB"')


async def test_in_process_drop_raises_what_httpx_raises_for_a_hang_up(
    alikassa_certs: SandboxCerts, alikassa_certificates: tuple[Certificate, Certificate]
) -> None:
    sandbox = Sandbox.from_certs(alikassa_certs, ACCOUNT)
    sandbox.faults.add("v1/payout", Fault.drop_after_commit())
    async with httpx.AsyncClient(
        transport=sandbox.transport(), base_url="http://127.0.0.1"
    ) as http:
        with pytest.raises(httpx.RemoteProtocolError):
            await Api(http, *alikassa_certificates).call("v1/payout", payout_body())
    assert sandbox.state.payout_creations["P-1"] == 1
    await sandbox.aclose()


# ---------------------------------------------------------------------------
# The script itself


def test_scripted_faults_match_endpoint_order_id_and_count() -> None:
    plan = FaultPlan()
    plan.add("/v1/payout", Fault.status(503), times=2, order_id="P-2")
    plan.add("*", Fault.html_200())
    assert plan.take("v1/payout", "P-1") is not None  # the "*" one
    assert plan.take("v1/payout", "P-1") is None
    assert plan.take("v1/payout", "P-2") == Fault.status(503)
    assert plan.pending("v1/payout") == 1
    assert plan.take("v1/payout", "P-2") == Fault.status(503)
    assert plan.take("v1/payout", "P-2") is None
    assert [f.order_id for f in plan.fired] == ["P-1", "P-2", "P-2"]
    with pytest.raises(ValueError, match="unknown endpoint"):
        plan.add("v1/refund", Fault.status(500))
    with pytest.raises(ValueError):
        Fault.status(200)


def test_random_faults_are_reproducible_from_the_seed() -> None:
    def draws(seed: int) -> list[str | None]:
        faults = RandomFaults(0.3, seed)
        return [
            (f.describe() if f else None) for f in (faults.draw("v1/payout") for _ in range(200))
        ]

    first = draws(7)
    assert first == draws(7) and first != draws(8)
    assert 30 <= sum(1 for f in first if f) <= 90
    assert RandomFaults(1.0, 1, endpoints=["v1/payout"]).draw("v1/payment") is None
    assert all(RandomFaults(1.0, 1).draw("v1/payment") for _ in range(20))


async def test_random_faults_never_create_a_payout_twice_in_a_batch(
    client: AliKassaClient, alikassa_sandbox: SandboxServer
) -> None:
    from alikassa_async import ReconcilePolicy

    alikassa_sandbox.faults.set_random(0.3, seed=11, endpoints=["v1/payout"])
    items = [payout(f"B-{n}", amount=str(100 + n)) for n in range(40)]
    reconcile = ReconcilePolicy(settle=0.2, backoff_base=0.02, backoff_max=0.05, pause=0.05)
    outcomes = [
        r.outcome async for r in client.payouts_batch(items, concurrency=8, reconcile=reconcile)
    ]
    assert len(outcomes) == 40
    created = alikassa_sandbox.state.payout_creations
    assert all(created[f"B-{n}"] <= 1 for n in range(40))
    assert sum(1 for f in alikassa_sandbox.faults.fired) >= 5
    assert Decimal(sum(created.values())) >= Decimal(
        sum(1 for o in outcomes if o.exists_at_gateway)
    )
