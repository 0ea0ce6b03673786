"""A hostile or slow server, a caller's own HTTP client, and cancelled tasks.

Every HTTP set-up the SDK accepts — the default built-in sender, the lane pool
(``http_backend="httpx"``), ``http_backend="aiohttp"``,
``http2=True``, a caller's ``http_client`` and a caller's ``transport`` — must keep
the same promises: ``total_timeout`` bounds the whole call even when the server
trickles its response head; a redirect is never followed (the signed body would be
re-sent elsewhere); a cancelled attempt leaves no connection half-read.
All servers are on 127.0.0.1 and started here.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from alikassa_async import (
    AliKassaClient,
    APIError,
    Certificate,
    OutcomeUnknownError,
    RetryPolicy,
    TransportError,
    build_payout,
)
from alikassa_async.sandbox import Fault, SandboxServer

from .reliability_support import BACKENDS, RawServer, pool_state, read_request
from .sandbox_helpers import ACCOUNT, CARD

#: the call's deadline in these tests, and the slack allowed on top (a bound, not a benchmark)
TOTAL = 1.0
SLACK = 6.0  # the trickle runs for ever: a bound on a hang, never a speed figure
POLICY = RetryPolicy(
    max_attempts=2,
    backoff_base=0.01,
    backoff_max=0.02,
    total_timeout=TOTAL,
    create_connect_retries=1,
)


def payout(order_id: str) -> Any:
    return build_payout("payment_card_rub", order_id=order_id, amount="100", number=CARD)


Setup = Callable[[], dict[str, Any]]
#: every way to give the SDK an HTTP stack; each returns AliKassaClient keyword arguments
SETUPS: dict[str, Setup] = {
    "builtin": lambda: {},
    "lane_pool": lambda: {"http_backend": "httpx"},
    "aiohttp": lambda: {"http_backend": "aiohttp"},
    "http2": lambda: {"http2": True},
    "caller_http_client": lambda: {
        "http_client": httpx.AsyncClient(follow_redirects=True, timeout=1.0)
    },
    "caller_transport": lambda: {"transport": httpx.AsyncHTTPTransport()},
}


async def _closing(kwargs: dict[str, Any]) -> None:
    if "http_client" in kwargs:
        await kwargs["http_client"].aclose()


async def trickle_head(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Read the request, then send the response head one byte every 0.2 s, forever."""
    await read_request(reader)
    head = b"HTTP/1.1 200 OK\r\n" + b"X-Slow: " + b"a" * 10_000
    for byte in range(len(head)):
        writer.write(head[byte : byte + 1])
        await writer.drain()
        await asyncio.sleep(0.2)


@pytest.mark.parametrize("setup", SETUPS)
async def test_a_trickled_response_head_cannot_outlive_total_timeout(setup, payout_cert):
    kwargs = SETUPS[setup]()
    try:
        async with RawServer(trickle_head) as server:
            async with AliKassaClient(
                ACCOUNT,
                payout_cert=payout_cert,
                base_url=server.url,
                timeout=1.0,
                retry=POLICY,
                **kwargs,
            ) as client:
                started = time.monotonic()
                with pytest.raises(TransportError):
                    await client.balance()
                with pytest.raises(OutcomeUnknownError) as caught:
                    await client.create_payout(payout("TRICKLE-1"))
                elapsed = time.monotonic() - started
                assert caught.value.order_id == "TRICKLE-1"
                assert "deadline" in caught.value.reason
                assert elapsed <= 2 * TOTAL + SLACK, f"{setup}: {elapsed:.1f} s"
                if setup in ("builtin", "lane_pool", "aiohttp"):
                    assert pool_state(client).busy == 0
    finally:
        await _closing(kwargs)


class _Hang(httpx.AsyncBaseTransport):
    """A caller's transport that never answers and never reads the body."""

    def __init__(self) -> None:
        self.requests = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.requests += 1
        await asyncio.Event().wait()
        raise AssertionError("unreachable")


async def test_a_caller_transport_that_hangs_is_bounded_and_known_unsent(payout_cert):
    hang = _Hang()
    async with AliKassaClient(
        ACCOUNT, payout_cert=payout_cert, transport=hang, retry=POLICY
    ) as client:
        started = time.monotonic()
        with pytest.raises(TransportError, match="before the request was sent"):
            await client.create_payout(payout("HANG-1"))  # the body was never read: not sent
        assert time.monotonic() - started <= TOTAL + SLACK


@pytest.mark.parametrize("code", [301, 302, 303, 307, 308])
@pytest.mark.parametrize("setup", SETUPS)
async def test_a_redirect_is_never_followed_whatever_the_client(
    setup,
    code,
    alikassa_sandbox: SandboxServer,
    alikassa_certificates: tuple[Certificate, Certificate],
):
    kwargs = SETUPS[setup]()
    sandbox = alikassa_sandbox.sandbox
    order_id = f"REDIR-{setup}-{code}"
    try:
        async with AliKassaClient(
            ACCOUNT, *alikassa_certificates, base_url=alikassa_sandbox.url, retry=POLICY, **kwargs
        ) as client:
            sandbox.faults.add("v1/payout", Fault.redirect(code), times=3)
            with pytest.raises(OutcomeUnknownError) as caught:
                await client.create_payout(payout(order_id))
            assert isinstance(caught.value.cause, APIError)
            assert caught.value.cause.status_code == code
            assert sandbox.state.requests["v1/payout"] == 1  # sent once, never re-sent
            assert sandbox.state.payout_creations[order_id] == 0
            sandbox.faults.clear()
            sandbox.faults.add("v1/account/balance", Fault.redirect(code), times=3)
            with pytest.raises(APIError, match="redirect"):
                await client.balance()
            assert sandbox.state.requests["v1/account/balance"] == 1  # not retried either
    finally:
        sandbox.faults.clear()
        await _closing(kwargs)


# -- cancellation ---------------------------------------------------------------------

LANES = 4


async def _cancel_storm(client: AliKassaClient, rng: random.Random, target: int) -> int:
    """Bursts of 2 x LANES calls, most cancelled at a random moment of their exchange (some
    twice: the second cancel lands in the first one's clean-up), until ``target`` calls were
    cancelled (a call that finished first does not count; at most 500 bursts)."""
    loop = asyncio.get_running_loop()
    started = time.monotonic()
    await asyncio.gather(*(client.balance() for _ in range(2 * LANES)))
    span = (time.monotonic() - started) * 0.8  # within the time a burst's calls take
    cancelled = 0
    for burst in range(500):
        if cancelled >= target:
            break
        tasks = []
        for lane in range(2 * LANES):
            if rng.random() < 0.5:
                call = client.create_payout(payout(f"STORM-{burst}-{lane}"))
            else:
                call = client.balance()
            task = asyncio.ensure_future(call)
            tasks.append(task)
            if rng.random() < 0.9:
                at = rng.uniform(0, span)
                loop.call_later(at, task.cancel)
                if rng.random() < 0.2:
                    loop.call_later(at + rng.uniform(0, 0.002), task.cancel)
        results = await asyncio.gather(*tasks, return_exceptions=True)
        cancelled += sum(isinstance(r, asyncio.CancelledError) for r in results)
    return cancelled


@pytest.mark.parametrize("backend", BACKENDS)
async def test_after_hundreds_of_random_cancellations_every_lane_serves_at_once(
    backend,
    alikassa_sandbox: SandboxServer,
    alikassa_certificates: tuple[Certificate, Certificate],
    caplog: pytest.LogCaptureFixture,
):
    caplog.set_level(logging.ERROR, logger="alikassa_async")
    rng = random.Random(20261201)
    async with AliKassaClient(
        ACCOUNT,
        *alikassa_certificates,
        base_url=alikassa_sandbox.url,
        max_connections=LANES,
        http_backend=backend,
        timeout=10.0,
        retry=RetryPolicy.disabled(),
    ) as client:
        cancelled = await _cancel_storm(client, rng, target=300)
        assert cancelled >= 300, cancelled  # hundreds, at every stage of the exchange
        # Every lane serves the next request at once (a half-read connection left in the
        # pool would hang one of them until its 10 s timeout).
        for _ in range(3):
            async with asyncio.timeout(3.0):
                balances = await asyncio.gather(*(client.balance() for _ in range(LANES)))
            assert all(b.currency for b in balances)
        state = pool_state(client)
        assert state.busy == 0 and state.requests == 0, state


@pytest.mark.parametrize("backend", BACKENDS)
async def test_a_create_cancelled_in_flight_logs_one_outcome_unknown_warning(
    backend,
    alikassa_sandbox: SandboxServer,
    alikassa_certificates: tuple[Certificate, Certificate],
    caplog: pytest.LogCaptureFixture,
):
    sandbox = alikassa_sandbox.sandbox
    sandbox.faults.add("v1/payout", Fault.delay(0.5, after_commit=True))
    caplog.set_level(logging.WARNING, logger="alikassa_async")
    async with AliKassaClient(
        ACCOUNT, *alikassa_certificates, base_url=alikassa_sandbox.url, http_backend=backend
    ) as client:
        task = asyncio.ensure_future(client.create_payout(payout("CANCEL-1")))
        while sandbox.state.requests["v1/payout"] == 0:  # noqa: ASYNC110
            await asyncio.sleep(0.005)  # the request has reached the gateway
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
        assert len(warnings) == 1, [r.getMessage() for r in warnings]
        message = warnings[0].getMessage()
        assert "order_id=CANCEL-1" in message and "outcome unknown" in message
        # The client is still fine, and the payout is there to be looked up.
        await asyncio.sleep(0.6)
        assert (await client.payout_status(order_id="CANCEL-1")).order_id == "CANCEL-1"


async def test_a_create_cancelled_before_sending_logs_nothing(
    alikassa_sandbox: SandboxServer,
    alikassa_certificates: tuple[Certificate, Certificate],
    caplog: pytest.LogCaptureFixture,
):
    sandbox = alikassa_sandbox.sandbox
    sandbox.faults.add("v1/account/balance", Fault.delay(2.0))
    caplog.set_level(logging.WARNING, logger="alikassa_async")
    async with AliKassaClient(
        ACCOUNT, *alikassa_certificates, base_url=alikassa_sandbox.url, max_connections=1
    ) as client:
        busy = asyncio.ensure_future(client.balance())  # holds the only lane
        while sandbox.state.requests["v1/account/balance"] == 0:  # noqa: ASYNC110
            await asyncio.sleep(0.005)
        waiting = asyncio.ensure_future(client.create_payout(payout("CANCEL-2")))
        await asyncio.sleep(0.05)  # queued for the lane: nothing of it has left
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        await busy
        assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
        assert sandbox.state.requests["v1/payout"] == 0
