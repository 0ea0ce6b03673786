"""Every public argument that is not a builder field is checked where it is given.

Construction raises ``ConfigurationError``; a call raises ``RequestValidationError``
before any byte is sent. Nothing else escapes: not ``ValueError`` from httpx's header
check, not ``UnicodeEncodeError``, not an encoder error for a page number PHP cannot
hold, not ``OutcomeUnknownError`` for a request that never left.
"""

from __future__ import annotations

import asyncio
import math
import ssl
from datetime import date, datetime
from decimal import Decimal
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from alikassa_async import (
    AliKassaClient,
    AliKassaError,
    ConfigurationError,
    NotFoundError,
    OutcomeUnknownError,
    PollingTimeoutError,
    RequestValidationError,
    RetryPolicy,
    build_payment,
    payouts,
)

from .conftest import ACCOUNT


class Counting(httpx.AsyncBaseTransport):
    """Answers 404 to everything and counts what reached it."""

    def __init__(self) -> None:
        self.requests = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.requests += 1
        await request.aread()
        return httpx.Response(404, json={"message": "not found"})


BAD_CONSTRUCTOR_ARGUMENTS: list[dict[str, Any]] = [
    {"max_connections": 0},
    {"max_connections": -1},
    {"max_connections": "10"},
    {"max_connections": True},
    {"max_connections": 1.5},
    {"max_connections": 10**12},
    {"max_keepalive_connections": -1},
    {"max_keepalive_connections": "x"},
    {"timeout": "x"},
    {"timeout": -1},
    {"timeout": 0},
    {"timeout": math.nan},
    {"timeout": math.inf},
    {"timeout": True},
    {"timeout": httpx.Timeout(5, read="x")},
    {"timeout": httpx.Timeout(5, connect=-1)},
    {"retry": "x"},
    {"retry": 3},
    {"sign_threads": "x"},
    {"sign_threads": -1},
    {"sign_threads": 2.0},
    {"user_agent": "a\r\nX-Injected: 1"},
    {"user_agent": "a\nb"},
    {"user_agent": "Ω"},
    {"user_agent": ""},
    {"user_agent": 5},
    {"user_agent": "x" * 1000},
    {"http2": "yes"},
    {"allow_plain_http": 1},
    {"tls_from_env": "true"},
    {"http_client": "x"},
    {"transport": object()},
    {"signature_hash": ["sha1"]},
    {"signature_hash": "md5"},
    {"base_url": 5},
    {"base_url": "https://x:port/"},
    {"base_url": "ftp://x"},
    {"http_backend": "curl"},
    {"http_backend": ["httpx"]},
    {"verify": False},
    {"verify": 5},
    {"verify": "/nonexistent/ca.pem"},
]


_HTTPX_ONLY = {"http_client", "transport", "http_backend"}


@pytest.mark.parametrize(
    ("kwargs", "backend"),
    [
        (kwargs, backend)
        for kwargs in BAD_CONSTRUCTOR_ARGUMENTS
        for backend in ("httpx", "aiohttp")
        if backend == "httpx" or not _HTTPX_ONLY & set(kwargs)  # not aiohttp arguments
    ],
    ids=repr,
)
def test_bad_constructor_arguments_raise_configuration_error(kwargs, backend, payout_cert):
    with pytest.raises(ConfigurationError):
        AliKassaClient(ACCOUNT, payout_cert=payout_cert, **{"http_backend": backend, **kwargs})


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_attempts": 0},
        {"max_attempts": "3"},
        {"max_attempts": True},
        {"total_timeout": "x"},
        {"total_timeout": -1},
        {"total_timeout": math.nan},
        {"backoff_base": -0.1},
        {"backoff_max": "1"},
        {"max_retry_after": math.inf},
        {"create_connect_retries": -1},
        {"create_connect_retries": 1.5},
    ],
    ids=repr,
)
def test_bad_retry_policy_fields_raise_configuration_error(kwargs):
    with pytest.raises(ConfigurationError):
        RetryPolicy(**kwargs)


def test_good_arguments_are_accepted(payout_cert):
    client = AliKassaClient(
        ACCOUNT,
        payout_cert=payout_cert,
        timeout=httpx.Timeout(None),
        max_keepalive_connections=0,
        sign_threads=0,
        retry=RetryPolicy(backoff_base=0, total_timeout=None),
        user_agent="my-shop/1.0 (ops@example.com)",
    )
    assert client.retry.total_timeout is None


# -- per call ---------------------------------------------------------------------------

_junk = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from([2**63, 2**64, 10**30, -1, 0]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=30),
    st.sampled_from(["Ω", "a\r\nb", "\x00", "2024-13-01", "2024-01-01", "1", " 1 "]),
    st.binary(max_size=8),
    st.dates(),
    st.datetimes(),
    st.just(Decimal("NaN")),
    st.lists(st.integers(), max_size=2),
    st.just(object()),
)


def _payment() -> Any:
    return build_payment(
        "payment_card_rub_hpp",
        order_id="A-1",
        amount="100.00",
        customer_ip="18.191.80.10",
        customer_user_id="u-1",
        customer_browser_user_agent="Mozilla/5.0",
    )


CALLS = {
    "payment_status_id": lambda c, v: c.payment_status(id=v),
    "payment_status_order_id": lambda c, v: c.payment_status(order_id=v),
    "payout_status_id": lambda c, v: c.payout_status(id=v),
    "payout_status_order_id": lambda c, v: c.payout_status(order_id=v),
    "history_page": lambda c, v: c.payment_history_page(page=v),
    "history_page_size": lambda c, v: c.payment_history_page(page_size=v),
    "history_date_from": lambda c, v: c.payment_history_page(date_from=v),
    "history_date_to": lambda c, v: c.payment_history_page(date_to=v),
    "create_payment_application": lambda c, v: c.create_payment(_payment(), application=v),
    "create_payment_request": lambda c, v: c.create_payment(v),
    "create_payout_request": lambda c, v: c.create_payout(v),
    "wait_timeout": lambda c, v: c.wait_for_payout(id=1, timeout=v, interval=0.01),
    "wait_interval": lambda c, v: c.wait_for_payment(id=1, timeout=0.05, interval=v),
    "wait_max_interval": lambda c, v: c.wait_for_payment(
        id=1, timeout=0.05, interval=0.01, max_interval=v
    ),
}


@pytest.fixture(scope="module")
def counted(payment_cert, payout_cert) -> tuple[AliKassaClient, Counting]:
    transport = Counting()
    client = AliKassaClient(
        ACCOUNT, payment_cert, payout_cert, transport=transport, retry=RetryPolicy.disabled()
    )
    return client, transport


@settings(
    max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(call=st.sampled_from(sorted(CALLS)), value=_junk)
async def test_any_non_field_argument_gives_a_typed_error_before_any_io(counted, call, value):
    client, transport = counted
    before = transport.requests
    try:
        async with asyncio.timeout(0.5):  # a valid wait polls (404: not there yet) until then
            await CALLS[call](client, value)
    except RequestValidationError:
        assert transport.requests == before, f"{call}({value!r}) was sent and then refused"
    except PollingTimeoutError:
        assert call.startswith("wait_")  # a valid, tiny wait
    except AliKassaError as exc:
        # Accepted, sent, and answered 404.
        assert transport.requests > before, f"{call}({value!r}): {exc!r} without a request"
    except TimeoutError:
        assert call.startswith("wait_") and transport.requests > before
    else:
        pytest.fail(f"{call}({value!r}) succeeded against a gateway that answers only 404")


ESCAPES = [
    ("history_page", 2**64),
    ("history_page_size", 2**64),
    ("history_page", 2**63),
    ("create_payment_application", "Ω"),
    ("create_payment_application", "a\r\nb"),
    ("create_payment_application", "a\nX-Evil: 1"),
    ("payment_status_id", 10**5000),
    ("wait_timeout", "x"),
    ("wait_interval", math.nan),
    # an order_id or id with terminal escapes or line breaks, which logs would carry raw
    ("payout_status_order_id", "A-1\x1b[2J\nWARNING forged line"),
    ("payment_status_id", "12\n34"),
]


@pytest.mark.parametrize(
    ("call", "value"), ESCAPES, ids=[f"{call}-{i}" for i, (call, _) in enumerate(ESCAPES)]
)
async def test_the_reported_escapes_are_request_validation_errors(counted, call, value):
    client, transport = counted
    before = transport.requests
    with pytest.raises(RequestValidationError):
        await CALLS[call](client, value)
    assert transport.requests == before


async def test_valid_arguments_still_reach_the_gateway(counted):
    client, transport = counted
    before = transport.requests
    with pytest.raises(NotFoundError):
        await client.payment_history_page(
            date_from=date(2024, 1, 1), date_to=datetime(2024, 2, 1, 12), page=2**62, page_size=100
        )
    with pytest.raises(OutcomeUnknownError):  # a create answered 404: never "failed"
        await client.create_payment(_payment(), application="7d2f4a6e-3b1c-4f5e-9a8b-0c1d2e3f4a5b")
    with pytest.raises(OutcomeUnknownError):
        await client.create_payout(
            payouts.card(order_id="P-1", amount="1.00", number="4111111111111111")
        )
    assert transport.requests == before + 3


@pytest.mark.parametrize("backend", ["httpx", "aiohttp"])
def test_a_context_that_does_not_verify_is_refused(backend, payout_cert):
    unverified = ssl._create_unverified_context()
    no_hostname = ssl.create_default_context()
    no_hostname.check_hostname = False
    for context in (unverified, no_hostname):
        with pytest.raises(ConfigurationError, match=r"CERT_NONE|check_hostname"):
            AliKassaClient(ACCOUNT, payout_cert=payout_cert, verify=context, http_backend=backend)


def test_a_caller_transport_that_does_not_verify_is_refused(payout_cert):
    with pytest.raises(ConfigurationError, match="CERT_NONE"):
        AliKassaClient(
            ACCOUNT, payout_cert=payout_cert, transport=httpx.AsyncHTTPTransport(verify=False)
        )
    with pytest.raises(ConfigurationError, match="CERT_NONE"):
        AliKassaClient(
            ACCOUNT, payout_cert=payout_cert, http_client=httpx.AsyncClient(verify=False)
        )
    with pytest.raises(ConfigurationError, match="CERT_NONE"):  # a mount sends too
        AliKassaClient(
            ACCOUNT,
            payout_cert=payout_cert,
            http_client=httpx.AsyncClient(
                mounts={"https://": httpx.AsyncHTTPTransport(verify=False)}
            ),
        )
