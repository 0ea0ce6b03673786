"""The request pipeline against the sandbox: signing, routing, encoding, error mapping, retries,
unknown outcomes.

The gateway is the in-process sandbox; ``wire`` (tests/wire.py) records what left
the client and scripts the failures a socket would have and the answers the
sandbox never gives.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import httpx
import pytest

from alikassa_async import (
    AliKassaClient,
    APIError,
    AuthenticationError,
    Certificate,
    ClientClosedError,
    ConfigurationError,
    InvalidRequestError,
    NotFoundError,
    OutcomeUnknownError,
    PaymentStatus,
    RateLimitError,
    RequestValidationError,
    RetryPolicy,
    ServerError,
    TransportError,
    Verifier,
)
from alikassa_async._encoding import php_json_encode
from alikassa_async._retry import RETRY_PACE
from alikassa_async.sandbox import Fault, Sandbox, SandboxCerts

from .conftest import ACCOUNT, CARD, FAST_RETRY, write_archive
from .sandbox_helpers import PHONE, payment_request, payout_request
from .wire import PASS, Wire, after, json_response

OTHER_ACCOUNT = "11111111-2222-4333-8444-555555555555"


# -- every endpoint, both key layouts, both hashes ------------------------------------


@pytest.mark.parametrize(("fmt", "signature_hash"), [("pkcs1", "sha1"), ("pkcs8", "sha256")])
async def test_every_endpoint_is_signed_with_the_right_certificate(
    tmp_path: Path, rsa_keys, sandbox: Sandbox, wire: Wire, fmt, signature_hash
):
    certs = {
        role: Certificate.from_dir(write_archive(tmp_path / role, rsa_keys[role], fmt))
        for role in ("payment", "payout")
    }
    sandbox.add_account(
        ACCOUNT,
        payment_public_key=certs["payment"].public_key_pem(),
        payout_public_key=certs["payout"].public_key_pem(),
    )
    sandbox.config.wait_polls = 0  # the first status request sees the final status
    today = datetime.now(UTC).date()
    async with AliKassaClient(
        ACCOUNT,
        certs["payment"],
        certs["payout"],
        base_url="http://127.0.0.1",
        signature_hash=signature_hash,
        transport=wire,
    ) as client:
        created = await client.create_payment(payment_request())
        status = await client.payment_status(order_id="A-1")
        rows = [row async for row in client.payment_history(date_from=today - timedelta(1))]
        payout = await client.create_payout(payout_request())
        payout_status = await client.payout_status(id=payout.id)
        balance = await client.balance()
        info = await client.account_info()

    routes = [
        "v1/payment",
        "v1/payment/status",
        "v1/payment/history",
        "v1/payout",
        "v1/payout/status",
        "v1/account/balance",
        "v1/account/info",
    ]
    assert [s.path for s in wire.sent] == routes
    verifiers = {role: Verifier.from_pem(cert.public_key_pem()) for role, cert in certs.items()}
    for sent in wire.sent:  # each signed with its route's certificate, with the chosen hash
        role = "payment" if sent.path.startswith("v1/payment") else "payout"
        assert verifiers[role].verify(sent.body, sent.headers["sign"]) == signature_hash
    assert not sandbox.state.refused_requests
    assert sandbox.state.requests == dict.fromkeys(routes, 1)
    paid = sandbox.state.payments_by_order_id["A-1"]
    assert created.id == paid.id and created.order_id == "A-1"
    assert created.url and created.payment_status is PaymentStatus.WAIT
    assert status.payment_status.is_final and status.payment_amount == Decimal("500")
    assert status.account_new_balance == paid.account_new_balance
    assert [(r.id, r.order_id, r.amount) for r in rows] == [(paid.id, "A-1", Decimal("500"))]
    sent_payout = sandbox.state.payouts_by_order_id["P-1"]
    assert payout.id == sent_payout.id and payout.order_id == "P-1"
    assert payout_status.rrn == sent_payout.rrn and payout_status.is_partial_payment is False
    expected = sandbox.state.balance(ACCOUNT)
    assert balance.balance == expected and str(balance.balance) == f"{expected:.8f}"
    assert info.supports("payment_card_rub") and not info.supports("no_such_service")


async def test_bodies_are_php_json_bytes_in_documented_order(client, wire, sandbox):
    await client.create_payment(payment_request())
    created = await client.create_payout(payout_request())
    await client.balance()
    await client.account_info()
    await client.payout_status(id=created.id)
    bodies = [s.body for s in wire.sent]
    assert bodies[0] == (
        b'{"amount":"500.00","order_id":"A-1","service":"payment_card_number_rub_hpp",'
        b'"desc":"\\u0417\\u0430\\u043a\\u0430\\u0437 \\/ 1","customer_ip":"18.191.80.10",'
        b'"customer_user_id":"u-42","success_redirect_url":"https:\\/\\/shop.example\\/ok?o=1"}'
    )
    assert bodies[1] == php_json_encode(payout_request().to_wire())
    assert bodies[1].startswith(b'{"amount":"3000.00","number":"4111111111111111"')
    assert bodies[2] == bodies[3] == b"[]"
    assert bodies[4] == b'{"id":"%d"}' % created.id
    headers = wire.sent[0].headers
    assert headers["content-type"] == "application/json" and headers["account"] == ACCOUNT
    # and the sandbox read them as sent: the payment's text arrived intact
    assert sandbox.state.payments_by_order_id["A-1"].desc == "Заказ / 1"


async def test_history_follows_pages_with_new_signed_requests(client, wire):
    for n in (1, 2, 3):
        await client.create_payment(payment_request(f"o-{n}", amount="5000"))
    today = datetime.now(UTC).date()
    date_from = (today - timedelta(1)).isoformat()
    rows = [
        row async for row in client.payment_history(date_from, today + timedelta(1), page_size=1)
    ]
    assert [r.order_id for r in rows] == ["o-3", "o-2", "o-1"]  # newest first, each once
    assert rows[0].amount == Decimal("5000")
    history = [s for s in wire.sent if s.path == "v1/payment/history"]
    assert len(history) == 3
    assert history[2].body == (
        b'{"date_from":"%s","date_to":"%s","page":3,"paginate":1}'
        % (date_from.encode(), (today + timedelta(1)).isoformat().encode())
    )
    assert len({s.headers["sign"] for s in history}) == 3  # each page signed anew


async def test_tolerant_parsing_of_odd_but_documented_shapes(client, wire, sandbox):
    # Shapes the sandbox never sends (string ids, camelCase, a status from the future,
    # numbers for money, "0" for false): the wire swaps them in after the sandbox committed.
    wire.script(
        "v1/payment",
        after(
            json_response(
                200,
                {
                    "url": None,
                    "payment_status": "wait",
                    "id": "108465371",
                    "cardNumber": PHONE,
                    "cardHolderName": "Имя Отчество Ф.",
                    "bank": "sber",
                    "brand_new_field": {"x": 1},
                },
            )
        ),
    )
    wire.script(
        "v1/payout/status",
        after(
            json_response(
                200,
                {
                    "id": 1,
                    "payment_status": "refunded",
                    "rrn": "22",
                    "amount": 300,
                    "is_partial_payment": "0",
                },
            )
        ),
    )
    created = await client.create_payment(payment_request())
    assert created.id == 108465371 and created.card_number == PHONE
    assert created.card_holder_name == "Имя Отчество Ф." and created.url is None
    assert created.raw["brand_new_field"] == {"x": 1}
    assert CARD not in repr(created) and PHONE not in repr(created)
    await client.create_payout(payout_request())
    status = await client.payout_status(order_id="P-1")
    assert status.payment_status == "refunded" and not status.payment_status.is_final
    assert not status.payment_status.is_known
    assert status.rrn == "22" and status.amount == Decimal(300)
    assert status.is_partial_payment is False


# -- errors ---------------------------------------------------------------------------


TAKEN = {"order_id": ["The order id has already been taken."]}
# what the gateway does -> (who asks, the error, its status, its field errors)
ANSWERS = {
    "not found": ("", NotFoundError, 404, None),
    "not found, Laravel's exists rule": (
        "",
        InvalidRequestError,
        400,
        {"order_id": ["The selected order id is invalid."]},
    ),
    "Laravel's default 422": ("", InvalidRequestError, 422, TAKEN),
    "signed with the payout key": ("payout key", AuthenticationError, 401, None),
    "unknown account": ("other account", AuthenticationError, 403, None),
    "method not allowed": ("", APIError, 405, None),
}


@pytest.mark.parametrize("answer", ANSWERS)
async def test_http_answers_map_to_typed_errors(sandbox, wire, alikassa_certificates, answer):
    who, error, status, errors = ANSWERS[answer]
    payment, payout = alikassa_certificates
    sandbox.config.not_found_status = 400 if status == 400 else 404
    if status == 422:  # the sandbox answers 400 like the documentation; Laravel's default
        wire.script(
            "v1/payment/status",
            json_response(422, {"message": "The given data was invalid.", "errors": TAKEN}),
        )
    if status == 405:
        sandbox.faults.add("v1/payment/status", Fault.status(405))
    async with AliKassaClient(
        OTHER_ACCOUNT if who == "other account" else ACCOUNT,
        payout if who == "payout key" else payment,
        payout,
        base_url="http://127.0.0.1",
        transport=wire,
        retry=FAST_RETRY,
    ) as client:
        with pytest.raises(error) as caught:
            await client.payment_status(order_id="A-404")
    assert type(caught.value) is error
    assert caught.value.status_code == status and caught.value.endpoint == "v1/payment/status"
    assert caught.value.body and wire.calls("v1/payment/status") == 1  # never retried
    if errors is not None:
        assert caught.value.errors == errors


async def test_invalid_create_is_a_definite_rejection(client, wire, sandbox):
    with pytest.raises(InvalidRequestError) as caught:
        await client.create_payout(payout_request(number="not-a-card"))
    assert list(caught.value.errors) == ["number"] and caught.value.errors["number"]
    assert wire.calls("v1/payout") == 1 and not sandbox.state.payouts


async def test_reads_are_retried_on_5xx_429_and_transport_errors(client, wire, sandbox):
    assert FAST_RETRY.max_attempts == 3
    sandbox.faults.add("v1/account/balance", Fault.status(503))
    sandbox.faults.add("v1/account/balance", Fault.status(429, retry_after=0))
    wire.script("v1/account/balance", PASS, PASS, httpx.ReadTimeout("slow"))
    # a 4th attempt would be needed: the last error surfaces, typed
    with pytest.raises(TransportError):
        await client.balance()
    assert wire.calls("v1/account/balance") == 3
    sandbox.faults.add("v1/account/balance", Fault.status(502))
    sandbox.faults.add("v1/account/balance", Fault.drop_before_commit())
    assert (await client.balance()).currency == "RUB"
    assert wire.calls("v1/account/balance") == 6
    assert sandbox.faults.pending() == 0


async def test_exhausted_read_retries_raise_the_error_of_that_kind(client, wire, sandbox):
    sandbox.faults.add("v1/payout/status", Fault.status(503), times=3)
    with pytest.raises(ServerError) as caught:
        await client.payout_status(order_id="P-1")
    assert caught.value.status_code == 503
    sandbox.faults.add("v1/payout/status", Fault.status(429, retry_after=0), times=3)
    with pytest.raises(RateLimitError) as limited:
        await client.payout_status(order_id="P-1")
    assert limited.value.retry_after == 0.0
    assert wire.calls("v1/payout/status") == 6 and sandbox.faults.pending() == 0


async def test_garbled_200_on_a_read_is_an_api_error_with_a_snippet(client, wire, sandbox):
    sandbox.faults.add("v1/account/info", Fault.html_200(), times=3)
    with pytest.raises(APIError) as caught:
        await client.account_info()
    assert caught.value.status_code == 200 and "not JSON" in str(caught.value)
    sandbox.faults.add("v1/account/balance", Fault.json_array_200(), times=3)
    with pytest.raises(APIError, match="expected a JSON object"):
        await client.balance()
    assert wire.calls("v1/account/balance") == 3  # wrong shapes are retried like garbage


# How a create can leave the client in doubt. Each arms the fault for one path.
DOUBTS = {
    "read timeout after commit": lambda s, w, p: w.script(p, after(httpx.ReadTimeout("read"))),
    "write timeout": lambda s, w, p: w.script(p, httpx.WriteTimeout("write")),
    "disconnected after commit": lambda s, w, p: s.faults.add(p, Fault.drop_after_commit()),
    "disconnected before commit": lambda s, w, p: s.faults.add(p, Fault.drop_before_commit()),
    "reset after commit": lambda s, w, p: w.script(p, after(httpx.ReadError("reset"))),
    "http-500": lambda s, w, p: s.faults.add(p, Fault.status(500)),
    "http-502 after commit": lambda s, w, p: s.faults.add(p, Fault.status(502, after_commit=True)),
    "http-503": lambda s, w, p: s.faults.add(p, Fault.status(503)),
    "http-429": lambda s, w, p: s.faults.add(p, Fault.status(429, retry_after=1)),
    "html 200": lambda s, w, p: s.faults.add(p, Fault.html_200()),
    "truncated json 200": lambda s, w, p: s.faults.add(p, Fault.truncated_json_200()),
    "200 without an id": lambda s, w, p: w.script(
        p, after(json_response(200, {"payment_status": "wait"}))
    ),
}


@pytest.mark.parametrize("doubt", DOUBTS)
async def test_doubtful_creates_are_never_resent_and_report_unknown(client, wire, sandbox, doubt):
    DOUBTS[doubt](sandbox, wire, "v1/payout")
    with pytest.raises(OutcomeUnknownError) as caught:
        await client.create_payout(payout_request("P-77"))
    assert caught.value.order_id == "P-77" and caught.value.endpoint == "v1/payout"
    assert wire.calls("v1/payout") == 1
    assert sandbox.state.payout_creations["P-77"] <= 1
    DOUBTS[doubt](sandbox, wire, "v1/payment")
    with pytest.raises(OutcomeUnknownError):
        await client.create_payment(payment_request("A-77"))
    assert wire.calls("v1/payment") == 1


async def test_create_is_retried_only_when_the_connection_never_opened(client, wire, sandbox):
    wire.script("v1/payout", httpx.ConnectError("refused"), httpx.ConnectTimeout("slow"))
    created = await client.create_payout(payout_request())
    assert created.id == sandbox.state.payouts_by_order_id["P-1"].id
    assert wire.calls("v1/payout") == 3  # two refused connections, then one delivery
    assert sandbox.state.requests["v1/payout"] == 1
    wire.script("v1/payout", httpx.ConnectError("refused"), times=3)
    with pytest.raises(TransportError):
        await client.create_payout(payout_request("P-2"))
    assert wire.calls("v1/payout") == 6  # create_connect_retries=2 bounds the attempts
    assert sandbox.state.payout_creations == {"P-1": 1}


async def test_a_batch_pacing_its_retries_cannot_stretch_the_deadline(
    wire, sandbox, alikassa_certificates
):
    # A batch's limiter that is paused or backed up: the retry's turn would come long
    # after the call's deadline. The call ends at its deadline, its retry never made.
    policy = RetryPolicy(max_attempts=3, backoff_base=0.01, backoff_max=0.01, total_timeout=1.0)
    sandbox.faults.add("v1/account/balance", Fault.status(503), times=3)

    async def turn_in_an_hour() -> None:
        await asyncio.sleep(3600)

    async with AliKassaClient(
        ACCOUNT, *alikassa_certificates, base_url="http://127.0.0.1", retry=policy, transport=wire
    ) as client:
        token = RETRY_PACE.set(turn_in_an_hour)
        try:
            async with asyncio.timeout(20):  # a bound on a hang, not a speed figure
                with pytest.raises(ServerError):
                    await client.balance()
        finally:
            RETRY_PACE.reset(token)
    assert wire.calls("v1/account/balance") == 1


async def test_total_deadline_bounds_retries(wire, sandbox, alikassa_certificates):
    policy = RetryPolicy(max_attempts=1000, backoff_base=0.05, backoff_max=0.05, total_timeout=1.0)
    sandbox.faults.add("v1/account/balance", Fault.status(503), times=1000)
    async with AliKassaClient(
        ACCOUNT, *alikassa_certificates, base_url="http://127.0.0.1", retry=policy, transport=wire
    ) as client:
        with pytest.raises(ServerError):
            await client.balance()
    assert 1 < wire.calls("v1/account/balance") < 100


async def test_retry_after_longer_than_allowed_ends_retries(client, wire, sandbox):
    sandbox.faults.add("v1/account/balance", Fault.status(429, retry_after=3600))
    with pytest.raises(RateLimitError) as caught:
        await client.balance()
    assert caught.value.retry_after == 3600 and wire.calls("v1/account/balance") == 1


async def test_a_retry_after_date_is_honoured(client, wire, sandbox):
    sandbox.faults.add("v1/account/balance", Fault.status(429, retry_after=0, http_date=True))
    assert (await client.balance()).currency == "RUB"  # a date already due: try again now
    assert wire.calls("v1/account/balance") == 2


# -- configuration and lifecycle ------------------------------------------------------


async def test_missing_certificate_fails_before_any_io(wire, alikassa_certificates):
    async with AliKassaClient(
        ACCOUNT, payment_cert=alikassa_certificates[0], base_url="http://127.0.0.1", transport=wire
    ) as client:
        for call in (
            client.balance(),
            client.account_info(),
            client.payout_status(id=1),
            client.create_payout(payout_request()),
        ):
            with pytest.raises(ConfigurationError, match="payout certificate"):
                await call
    assert wire.sent == []


async def test_bad_lookups_fail_before_any_io(client, wire):
    with pytest.raises(RequestValidationError):
        await client.payment_status()
    with pytest.raises(RequestValidationError):
        await client.payout_status(id=1, order_id="x")
    with pytest.raises(RequestValidationError):
        await client.payment_history_page(date_from="yesterday")
    assert wire.sent == []


def test_configuration_errors_are_plain(payment_cert):
    with pytest.raises(ConfigurationError, match="UUID"):
        AliKassaClient("not-a-uuid", payment_cert)
    with pytest.raises(ConfigurationError, match="signature_hash"):
        AliKassaClient(ACCOUNT, payment_cert, signature_hash="md5")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="plain http"):
        AliKassaClient(ACCOUNT, payment_cert, base_url="http://api.example.com")
    with pytest.raises(ConfigurationError, match="cannot be switched off"):
        AliKassaClient(ACCOUNT, payment_cert, verify=False)


async def test_closed_client_is_a_clear_error_and_user_http_client_survives(
    wire, alikassa_certificates
):
    async with httpx.AsyncClient(transport=wire) as http:
        client = AliKassaClient(
            ACCOUNT, *alikassa_certificates, base_url="http://127.0.0.1", http_client=http
        )
        async with client:
            await client.balance()
        assert client.is_closed and not http.is_closed
        with pytest.raises(ClientClosedError, match="closed"):
            await client.balance()
        assert wire.calls("v1/account/balance") == 1
        assert (await http.get("http://127.0.0.1/health")).status_code == 200


# -- logging never carries secrets ------------------------------------------------------


async def test_logs_never_contain_sign_password_key_or_card(
    client, wire, sandbox, caplog, alikassa_certs: SandboxCerts
):
    caplog.set_level(logging.DEBUG)
    wire.script("v1/payout", after(httpx.ReadTimeout("boom")))
    sandbox.faults.add("v1/payout/status", Fault.status(503))
    with pytest.raises(OutcomeUnknownError) as unknown:
        await client.create_payout(payout_request("P-9", CARD))
    await client.create_payout(payout_request("P-10", PHONE, service="qiwi_rub"))
    await client.payout_status(order_id="P-9")
    signs = [s.headers["sign"] for s in wire.sent]
    passwords = [
        (alikassa_certs.payment_dir / "password.txt").read_text(),
        (alikassa_certs.payout_dir / "password.txt").read_text(),
    ]
    texts = [record.getMessage() for record in caplog.records]
    texts += [
        str(unknown.value),
        repr(unknown.value),
        repr(client),
        repr(payout_request()),
        repr(payout_request("P-10", PHONE, service="qiwi_rub")),
    ]
    assert any("v1/payout" in t for t in texts) and any("P-9" in t for t in texts)
    assert sandbox.state.payout_creations == {"P-9": 1, "P-10": 1}
    for text in texts:
        for secret in (*signs, *passwords, "PRIVATE KEY", CARD, PHONE):
            assert secret not in text


async def test_oversized_error_messages_are_cut_to_a_snippet(client, wire):
    echo = "x" * 400  # 60 fields x 12 messages: ~300 KB, within the history answer cap
    wire.script(
        "v1/payment/history",
        json_response(
            400, {"message": echo * 10, "errors": {f"f{i}": [echo] * 12 for i in range(60)}}
        ),
    )
    with pytest.raises(InvalidRequestError) as caught:
        await client.payment_history_page(page=1)
    assert len(caught.value.message) < 300
    assert len(caught.value.errors) == 50
    assert all(len(msgs) == 10 and len(msgs[0]) < 300 for msgs in caught.value.errors.values())
    assert len(caught.value.body) > 250_000  # the raw body stays available to the caller


async def test_a_gateway_that_echoes_a_card_number_does_not_put_it_in_the_error(
    wire, alikassa_certificates
):
    echoed = "The card 4111111111111111 is blocked (holder phone 79031112233)."
    wire.script(
        "v1/payout",
        httpx.Response(400, json={"message": echoed, "errors": {"number": [echoed]}}),
    )
    async with AliKassaClient(
        ACCOUNT, *alikassa_certificates, base_url="http://127.0.0.1", transport=wire
    ) as client:
        with pytest.raises(InvalidRequestError) as caught:
            await client.create_payout(payout_request("ECHO-1"))
    shown = f"{caught.value} {caught.value!r} {caught.value.errors} {caught.value.message}"
    assert "4111111111111111" not in shown and "79031112233" not in shown
    assert "411111******1111" in str(caught.value) and "*******2233" in str(caught.value)
