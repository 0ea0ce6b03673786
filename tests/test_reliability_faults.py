"""The fault matrix: every endpoint × every fault, against the sandbox on real loopback sockets.

One table (``FAULTS``) says, per fault, how to inject it and what a read and a create
must conclude; ``ENDPOINTS`` lists the calls. Each test is one fault in one variant
(``once``: the fault fires a single time; ``persistent``: on every attempt) and runs
all seven endpoints at once, each with its own client, so the matrix costs one fault's
worth of waiting per row group. A new fault or endpoint is a new table row.

For every cell it asserts:

- reads: retried within ``RetryPolicy.max_attempts`` (the sandbox counts the requests),
  then success when the fault cleared, else the documented typed error;
- creates: sent exactly once whenever the request may have arrived (the sandbox's
  request and creation counters), and a doubt is an ``OutcomeUnknownError`` carrying the
  order_id — which then reconciles by ``*_status(order_id=...)`` to the one state the
  sandbox holds; a connection that never opened is retried and reported as a
  ``TransportError``, with nothing created;
- the pool holds no busy connection after the call and none after ``aclose``; the
  process's file descriptors return to where the test started;
- the call ends within its ``RetryPolicy.total_timeout`` (plus a generous slack: this is
  a bound, not a performance assertion).

Faults the sandbox cannot produce are made here on raw 127.0.0.1 sockets: connection
refused (a closed port) and connect timeout (a listener whose accept backlog is full).
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import pytest_asyncio

from alikassa_async import (
    AliKassaClient,
    AliKassaError,
    APIError,
    Certificate,
    NotFoundError,
    OutcomeUnknownError,
    RateLimitError,
    RetryPolicy,
    ServerError,
    TransportError,
    build_payment,
    payouts,
)
from alikassa_async.sandbox import Fault, Sandbox, SandboxServer

from .reliability_support import BACKENDS, Backend, open_fds, pool_state, settled_fds

ACCOUNT = "93d5df06-996c-48c3-9847-348d6b580b80"
#: per-operation timeouts of the matrix clients (connect, read, write, pool)
TIMEOUT = 0.4
#: a server-side delay that outlasts TIMEOUT
DELAY = 2.0
POLICY = RetryPolicy(
    max_attempts=2,
    backoff_base=0.01,
    backoff_max=0.02,
    max_retry_after=1.0,
    total_timeout=4.0,
    create_connect_retries=2,
)
#: the deadline bound is total_timeout + SLACK: generous, never a performance assertion
SLACK = 3.5


# -- the table --------------------------------------------------------------------------


@dataclass(frozen=True)
class FaultRow:
    name: str
    #: a sandbox fault, or "refused" / "connect_timeout" (raw sockets, no sandbox)
    inject: Callable[[], Fault] | str
    #: what a read ends with when the fault persists (None: success)
    read_error: type[AliKassaError] | None
    #: whether a read retries after this fault (so a fault that fires once is survived)
    read_retried: bool
    #: what a create ends with (None: success)
    create_error: type[AliKassaError] | None
    #: records the sandbox holds for a create hit by this fault (None: no server involved)
    created: int | None
    #: the record appears only after the error (the server commits after the client gave up)
    commits_late: bool = False
    #: the RateLimitError.retry_after the client must have read
    retry_after: float | None = None
    variants: tuple[str, ...] = ("once", "persistent")
    #: client settings other than the matrix defaults
    timeout: float = TIMEOUT
    policy: RetryPolicy = POLICY


def _429(retry_after: float | None = None, *, http_date: bool = False) -> Callable[[], Fault]:
    # Fault.status(429) defaults Retry-After to 1 s; built directly for "no header".
    return lambda: Fault(
        "status", "before", status_code=429, retry_after=retry_after, http_date=http_date
    )


U = OutcomeUnknownError
FAULTS: list[FaultRow] = [
    FaultRow(
        "refused", "refused", TransportError, True, TransportError, None, variants=("persistent",)
    ),
    FaultRow(
        "connect_timeout",
        "connect_timeout",
        TransportError,
        True,
        TransportError,
        None,
        variants=("persistent",),
    ),
    FaultRow(
        "read_timeout_before_commit",
        lambda: Fault.delay(DELAY),
        TransportError,
        True,
        U,
        1,
        commits_late=True,
    ),
    FaultRow(
        "read_timeout_after_commit",
        lambda: Fault.delay(DELAY, after_commit=True),
        TransportError,
        True,
        U,
        1,
    ),
    FaultRow("drop_before_commit", Fault.drop_before_commit, TransportError, True, U, 0),
    FaultRow("drop_after_commit", Fault.drop_after_commit, TransportError, True, U, 1),
    FaultRow("http_500", lambda: Fault.status(500), ServerError, True, U, 0),
    FaultRow("http_502", lambda: Fault.status(502), ServerError, True, U, 0),
    FaultRow("http_503", lambda: Fault.status(503), ServerError, True, U, 0),
    FaultRow("http_504", lambda: Fault.status(504), ServerError, True, U, 0),
    FaultRow(
        "http_503_after_commit",
        lambda: Fault.status(503, after_commit=True),
        ServerError,
        True,
        U,
        1,
    ),
    FaultRow("http_429", _429(), RateLimitError, True, U, 0),
    FaultRow(
        "http_429_retry_after_seconds", _429(0.05), RateLimitError, True, U, 0, retry_after=0.05
    ),
    FaultRow(
        "http_429_retry_after_too_long", _429(3600), RateLimitError, False, U, 0, retry_after=3600
    ),
    FaultRow(
        "http_429_retry_after_date",
        _429(0, http_date=True),
        RateLimitError,
        True,
        U,
        0,
        retry_after=0.0,
    ),
    FaultRow(
        "http_429_retry_after_date_too_long",
        _429(3600, http_date=True),
        RateLimitError,
        False,
        U,
        0,
        retry_after=3600,
    ),
    FaultRow("html_200", Fault.html_200, APIError, True, U, 1),
    FaultRow("truncated_json_200", Fault.truncated_json_200, APIError, True, U, 1),
    FaultRow("json_array_200", Fault.json_array_200, APIError, True, U, 1),
    FaultRow("huge_body_200", Fault.huge_body_200, TransportError, True, U, 1),
    # 8 MiB: under the transport's absolute cap, over every endpoint's own cap.
    FaultRow(
        "answer_8mib", lambda: Fault.huge_body_200(8 * 1024 * 1024), TransportError, True, U, 1
    ),
    # 3xx: never followed (that would re-send the signed body), not retried; a create's
    # outcome is unknown and reconciles to "not created".
    FaultRow("redirect_307", lambda: Fault.redirect(307), APIError, False, U, 0),
    FaultRow("redirect_308", lambda: Fault.redirect(308), APIError, False, U, 0),
    FaultRow("redirect_302", lambda: Fault.redirect(302), APIError, False, U, 0),
    FaultRow("slow_headers", lambda: Fault.slow_headers(0.3), None, True, None, 1),
    FaultRow("slow_body_200", lambda: Fault.slow_body_200(0.5), None, True, None, 1),
    # A body trickling in under every per-read timeout, for longer than the call's deadline.
    FaultRow(
        "slow_body_past_deadline",
        lambda: Fault.slow_body_200(5.0),
        TransportError,
        False,
        U,
        1,
        variants=("once",),
        timeout=1.0,
        policy=RetryPolicy(max_attempts=2, backoff_base=0.01, backoff_max=0.02, total_timeout=1.0),
    ),
    # The status line and headers trickling in, a byte per ~50 ms: no per-read timeout fires;
    # only the call's deadline (total_timeout) can end it.
    FaultRow(
        "slow_headers_past_deadline",
        lambda: Fault.slow_headers(10.0),
        TransportError,
        False,
        U,
        1,
        variants=("once",),
        timeout=1.0,
        policy=RetryPolicy(max_attempts=2, backoff_base=0.01, backoff_max=0.02, total_timeout=1.0),
    ),
]


@dataclass(frozen=True)
class Endpoint:
    path: str
    creates: bool
    #: the SDK call; ``tag`` makes order_ids unique per cell
    call: Callable[[AliKassaClient, str], Awaitable[object]]
    kind: str = ""  # "payment" / "payout" for creates


def _payment(tag: str) -> Any:
    return build_payment(
        "payment_card_rub_hpp",
        order_id=tag,
        amount="100.00",
        customer_ip="18.191.80.10",
        customer_user_id="u-1",
        customer_browser_user_agent="Mozilla/5.0",
    )


ENDPOINTS: list[Endpoint] = [
    Endpoint("v1/payment", True, lambda c, tag: c.create_payment(_payment(tag)), "payment"),
    Endpoint("v1/payment/status", False, lambda c, tag: c.payment_status(order_id="M-pay")),
    Endpoint("v1/payment/history", False, lambda c, tag: c.payment_history_page(page=1)),
    Endpoint(
        "v1/payout",
        True,
        lambda c, tag: c.create_payout(
            payouts.card(order_id=tag, amount="10.00", number="4111111111111111")
        ),
        "payout",
    ),
    Endpoint("v1/payout/status", False, lambda c, tag: c.payout_status(order_id="M-out")),
    Endpoint("v1/account/balance", False, lambda c, tag: c.balance()),
    Endpoint("v1/account/info", False, lambda c, tag: c.account_info()),
]

MATRIX = [(row, variant) for row in FAULTS for variant in row.variants]
#: the number of (endpoint, fault, variant) cells, for docs/reliability.md
CELLS = len(MATRIX) * len(ENDPOINTS)


# -- raw-socket faults ----------------------------------------------------------------------


@contextmanager
def closed_port() -> Iterator[str]:
    """A loopback URL where nothing listens: connection refused."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    yield f"http://127.0.0.1:{port}"


@contextmanager
def full_backlog() -> Iterator[str]:
    """A loopback listener that never accepts and whose backlog is full: SYNs are dropped,
    so a connect times out (no non-routable address needed)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers = []
    try:
        for _ in range(4):
            filler = socket.socket()
            filler.setblocking(False)
            try:
                filler.connect(("127.0.0.1", port))
            except BlockingIOError:
                pass
            fillers.append(filler)
        yield f"http://127.0.0.1:{port}"
    finally:
        for filler in fillers:
            filler.close()
        listener.close()


# -- one cell -----------------------------------------------------------------------------


@dataclass
class Cell:
    endpoint: Endpoint
    tag: str
    result: object = None
    error: BaseException | None = None
    elapsed: float = 0.0
    sent: int = 0
    #: records of this create's order_id the sandbox held when the call returned
    created_then: int = 0

    def where(self, row: FaultRow, variant: str) -> str:
        return f"{self.endpoint.path} × {row.name} ({variant})"


async def run_cell(
    cell: Cell,
    row: FaultRow,
    base_url: str,
    certs: tuple[Certificate, Certificate],
    sandbox: Sandbox,
    backend: Backend,
) -> None:
    client = AliKassaClient(
        ACCOUNT,
        *certs,
        base_url=base_url,
        retry=row.policy,
        timeout=httpx.Timeout(row.timeout),
        verify=TLS,
        http_backend=backend,
    )
    try:
        started = time.monotonic()
        try:
            cell.result = await cell.endpoint.call(client, cell.tag)
        except AliKassaError as exc:
            cell.error = exc
        cell.elapsed = time.monotonic() - started
        if cell.endpoint.creates:
            cell.created_then = creations_of(sandbox, cell.endpoint.kind)[cell.tag]
        state = pool_state(client)
        assert state.busy == state.requests == state.orphans == 0, (
            f"{cell.endpoint.path}: pool after the call: {state}"
        )
    finally:
        await client.aclose()
    assert pool_state(client).connections == 0, f"{cell.endpoint.path}: pool after aclose"


def check_read(cell: Cell, row: FaultRow, variant: str) -> None:
    where = cell.where(row, variant)
    raw = isinstance(row.inject, str)
    survives = variant == "once" and row.read_retried and not raw
    if survives or row.read_error is None:
        assert cell.error is None, f"{where}: {cell.error!r}"
    else:
        assert type(cell.error) is row.read_error, f"{where}: {cell.error!r}"
    if raw:
        assert cell.sent == 0
    elif row.read_error is None:  # the fault delays the answer but does not break it
        assert cell.sent == 1, f"{where}: sent {cell.sent}"
    elif survives:
        assert cell.sent == 2, f"{where}: sent {cell.sent}"
    else:
        expected = row.policy.max_attempts if row.read_retried else 1
        assert cell.sent == expected, f"{where}: sent {cell.sent}, expected {expected}"
    if isinstance(cell.error, RateLimitError):
        if row.retry_after is None:
            assert cell.error.retry_after is None
        else:
            assert cell.error.retry_after == pytest.approx(row.retry_after, abs=2.0), where
    if isinstance(cell.error, APIError) and row.read_error is not TransportError:
        assert cell.error.endpoint == cell.endpoint.path


def check_create(cell: Cell, row: FaultRow, variant: str, sandbox: Sandbox) -> None:
    where = cell.where(row, variant)
    if row.create_error is None:
        assert cell.error is None, f"{where}: {cell.error!r}"
    else:
        assert type(cell.error) is row.create_error, f"{where}: {cell.error!r}"
    if isinstance(cell.error, OutcomeUnknownError):
        assert cell.error.order_id == cell.tag and cell.error.endpoint == cell.endpoint.path
    creations = creations_of(sandbox, cell.endpoint.kind)
    if row.created is None:  # never reached a server: nothing sent, nothing created
        assert cell.sent == 0 and creations[cell.tag] == 0
        return
    assert cell.sent == 1, f"{where}: a create was sent {cell.sent} times"
    if row.commits_late:
        assert cell.created_then == 0, f"{where}: committed before the client gave up?"
    else:
        assert creations[cell.tag] == row.created, f"{where}: {creations[cell.tag]} records"


def creations_of(sandbox: Sandbox, kind: str) -> Any:
    return sandbox.state.payment_creations if kind == "payment" else sandbox.state.payout_creations


async def reconcile(cell: Cell, row: FaultRow, client: AliKassaClient, sandbox: Sandbox) -> None:
    """An unknown outcome resolves, by order_id, to exactly the state the sandbox holds."""
    creations = creations_of(sandbox, cell.endpoint.kind)
    if row.commits_late:
        give_up = time.monotonic() + DELAY + 3.0
        while creations[cell.tag] == 0 and time.monotonic() < give_up:  # noqa: ASYNC110
            await asyncio.sleep(0.05)  # the sandbox commits when its delay ends
    assert creations[cell.tag] == row.created, cell.where(row, "reconcile")
    lookup = client.payment_status if cell.endpoint.kind == "payment" else client.payout_status
    if row.created:
        found = await lookup(order_id=cell.tag)
        table = (
            sandbox.state.payments_by_order_id
            if cell.endpoint.kind == "payment"
            else sandbox.state.payouts_by_order_id
        )
        assert found.id == table[cell.tag].id and found.order_id == cell.tag
    else:
        with pytest.raises(NotFoundError):
            await lookup(order_id=cell.tag)


# -- the test -----------------------------------------------------------------------------

#: one TLS context for every client (building one per client costs ~30 ms of certifi)
TLS = ssl.create_default_context()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def server(
    alikassa_certs: Any, alikassa_certificates: tuple[Certificate, Certificate]
) -> AsyncIterator[SandboxServer]:
    """One sandbox for the module, holding a payment and a payout the status reads find."""
    sandbox = Sandbox.from_certs(alikassa_certs, account=ACCOUNT)
    sandbox.config.wait_seconds = None  # statuses stay put while the matrix runs
    async with SandboxServer(sandbox) as running:
        async with AliKassaClient(
            ACCOUNT, *alikassa_certificates, base_url=running.url, verify=TLS
        ) as setup:
            await setup.create_payment(_payment("M-pay"))
            await setup.create_payout(
                payouts.card(order_id="M-out", amount="10.00", number="4111111111111111")
            )
        yield running


@pytest.mark.asyncio(loop_scope="module")
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(
    ("row", "variant"), MATRIX, ids=[f"{row.name}-{variant}" for row, variant in MATRIX]
)
async def test_fault_matrix(
    row: FaultRow,
    variant: str,
    server: SandboxServer,
    alikassa_certificates: tuple[Certificate, Certificate],
    backend: Backend,
) -> None:
    sandbox = server.sandbox
    baseline = open_fds()
    before = dict(sandbox.state.requests)
    cells = [Cell(e, f"{row.name}-{variant}-{backend}-{e.kind}") for e in ENDPOINTS]
    try:
        with _fault_target(row, variant, server) as base_url:
            await asyncio.gather(
                *(
                    run_cell(c, row, base_url, alikassa_certificates, sandbox, backend)
                    for c in cells
                )
            )
    finally:
        sandbox.faults.clear()
    for cell in cells:
        cell.sent = sandbox.state.requests[cell.endpoint.path] - before.get(cell.endpoint.path, 0)
        bound = (row.policy.total_timeout or 0) + SLACK
        assert cell.elapsed <= bound, (
            f"{cell.where(row, variant)} took {cell.elapsed:.2f} s > {bound} s"
        )
        if cell.endpoint.creates:
            check_create(cell, row, variant, sandbox)
        else:
            check_read(cell, row, variant)
    async with AliKassaClient(
        ACCOUNT, *alikassa_certificates, base_url=server.url, verify=TLS
    ) as lookups:
        for cell in cells:
            if isinstance(cell.error, OutcomeUnknownError):
                await reconcile(cell, row, lookups, sandbox)
    # Every socket of this row, client and server side, is closed again.
    assert await settled_fds(baseline) == baseline, "file descriptors leaked"


@contextmanager
def _fault_target(row: FaultRow, variant: str, server: SandboxServer) -> Iterator[str]:
    if row.inject == "refused":
        with closed_port() as url:
            yield url
    elif row.inject == "connect_timeout":
        with full_backlog() as url:
            yield url
    else:
        assert callable(row.inject)
        times = 1 if variant == "once" else POLICY.max_attempts
        for endpoint in ENDPOINTS:
            server.faults.add(endpoint.path, row.inject(), times=times)
        yield server.url


def test_the_matrix_covers_every_endpoint_and_fault_kind():
    """The table is the matrix: each sandbox fault kind and every endpoint has a row."""
    from alikassa_async.sandbox import FAULT_KINDS
    from alikassa_async.sandbox.faults import ENDPOINTS as SANDBOX_ENDPOINTS

    kinds = {row.inject().kind for row in FAULTS if callable(row.inject)}
    assert kinds == set(FAULT_KINDS)
    assert {e.path for e in ENDPOINTS} == set(SANDBOX_ENDPOINTS)
    assert {e.path for e in ENDPOINTS if e.creates} == {
        p for p, creates in SANDBOX_ENDPOINTS.items() if creates
    }
    assert CELLS >= 7 * 40
