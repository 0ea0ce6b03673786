"""The request pipeline: signing, routing, encoding, error mapping, retries, unknown outcomes."""

from __future__ import annotations

import logging
from datetime import date
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
    PaymentRequest,
    PaymentStatus,
    PayoutRequest,
    RateLimitError,
    RequestValidationError,
    RetryPolicy,
    ServerError,
    TransportError,
)
from alikassa_async.encoding import php_json_encode

from .conftest import ACCOUNT, PASSWORD, write_archive
from .fake_gateway import FakeGateway, json_response

FAST_RETRY = RetryPolicy(max_attempts=3, backoff_base=0.001, backoff_max=0.002,
                         total_timeout=10.0)
CARD = "4111111111111111"


def payment_request(order_id: str = "A-1") -> PaymentRequest:
    return PaymentRequest(
        service="payment_card_number_rub_hpp", order_id=order_id, amount=Decimal("500"),
        fields={"customer_ip": "18.191.80.10", "customer_user_id": "u-42",
                "success_redirect_url": "https://shop.example/ok?o=1", "desc": "Заказ / 1"},
    )


def payout_request(order_id: str = "P-1", number: str = CARD) -> PayoutRequest:
    return PayoutRequest(service="payment_card_rub", order_id=order_id,
                         amount=Decimal("3000"), fields={"number": number})


@pytest.fixture
def gateway(payment_cert: Certificate, payout_cert: Certificate) -> FakeGateway:
    return FakeGateway(ACCOUNT, payment_cert, payout_cert)


@pytest.fixture
async def client(gateway, payment_cert, payout_cert):
    async with AliKassaClient(ACCOUNT, payment_cert, payout_cert, transport=gateway.transport(),
                              retry=FAST_RETRY) as client:
        yield client


# -- every endpoint, both key layouts, both hashes ------------------------------------


@pytest.mark.parametrize(("fmt", "signature_hash"), [("pkcs1", "sha1"), ("pkcs8", "sha256")])
async def test_every_endpoint_is_signed_with_the_right_certificate(
        tmp_path: Path, rsa_keys, fmt, signature_hash):
    certs = {role: Certificate.from_dir(write_archive(tmp_path / role, rsa_keys[role], fmt))
             for role in ("payment", "payout")}
    gateway = FakeGateway(ACCOUNT, certs["payment"], certs["payout"])
    async with AliKassaClient(ACCOUNT, certs["payment"], certs["payout"],
                              signature_hash=signature_hash,
                              transport=gateway.transport()) as client:
        created = await client.create_payment(payment_request())
        status = await client.payment_status(order_id="A-1")
        rows = [row async for row in client.payment_history(date_from=date(2026, 11, 1))]
        payout = await client.create_payout(payout_request())
        payout_status = await client.payout_status(id=payout.id)
        balance = await client.balance()
        info = await client.account_info()

    assert [p for p, *_ in gateway.received] == [
        "v1/payment", "v1/payment/status", "v1/payment/history", "v1/payout",
        "v1/payout/status", "v1/account/balance", "v1/account/info"]
    assert {h for *_, h in gateway.received} == {signature_hash}
    assert created.id == 108465371 and created.order_id == "A-1"
    assert created.url and created.payment_status is PaymentStatus.WAIT
    assert status.payment_status.is_final and status.payment_amount == Decimal("350")
    assert status.account_new_balance == Decimal("383.84000000")
    assert rows == []
    assert payout.id == 100001524 and payout.order_id == "P-1"
    assert payout_status.rrn == "11111111111" and payout_status.is_partial_payment is False
    assert balance.balance == Decimal("93.84") and str(balance.balance) == "93.84000000"
    assert info.supports("payment_card_rub") and not info.supports("qiwi_rub")


async def test_bodies_are_php_json_bytes_in_documented_order(client, gateway):
    await client.create_payment(payment_request())
    await client.create_payout(payout_request())
    await client.balance()
    await client.account_info()
    await client.payout_status(id=100001524)
    bodies = [body for _, body, *_ in gateway.received]
    assert bodies[0] == (
        b'{"amount":"500.00","order_id":"A-1","service":"payment_card_number_rub_hpp",'
        b'"desc":"\\u0417\\u0430\\u043a\\u0430\\u0437 \\/ 1","customer_ip":"18.191.80.10",'
        b'"customer_user_id":"u-42","success_redirect_url":"https:\\/\\/shop.example\\/ok?o=1"}')
    assert bodies[1] == php_json_encode(payout_request().to_wire())
    assert bodies[1].startswith(b'{"amount":"3000.00","number":"4111111111111111"')
    assert bodies[2] == bodies[3] == b"[]"
    assert bodies[4] == b'{"id":"100001524"}'
    headers = gateway.received[0][2]
    assert headers["content-type"] == "application/json" and headers["account"] == ACCOUNT


async def test_history_follows_pages_with_new_signed_requests(client, gateway):
    for page, last in ((1, 3), (2, 3), (3, 3)):
        gateway.queue("v1/payment/history", json_response(200, {
            "data": [{"id": page, "order_id": f"o-{page}", "amount": "5000.000000000",
                      "status": "paid", "currency": "RUB", "created_at": "2024-11-07 14:58:59"}],
            "links": {"next": "https://x/v1/payment/history?page=9"},
            "meta": {"current_page": page, "last_page": last}}))
    rows = [row async for row in client.payment_history("2024-11-01", date(2024, 11, 30),
                                                        page_size=1)]
    assert [r.order_id for r in rows] == ["o-1", "o-2", "o-3"]
    assert rows[0].amount == Decimal("5000")
    sent = [body for _, body, *_ in gateway.received]
    assert sent[2] == b'{"date_from":"2024-11-01","date_to":"2024-11-30","page":3,"paginate":1}'


async def test_tolerant_parsing_of_odd_but_documented_shapes(client, gateway):
    gateway.queue("v1/payment", json_response(200, {
        "url": None, "payment_status": "wait", "id": "108465371", "cardNumber": "79031112233",
        "cardHolderName": "Имя Отчество Ф.", "bank": "sber", "brand_new_field": {"x": 1}}))
    gateway.queue("v1/payout/status", json_response(200, {
        "id": 1, "payment_status": "refunded", "rrn": "22", "amount": 300,
        "is_partial_payment": "0"}))
    created = await client.create_payment(payment_request())
    assert created.id == 108465371 and created.card_number == "79031112233"
    assert created.raw["brand_new_field"] == {"x": 1}
    assert CARD not in repr(created) and "79031112233" not in repr(created)
    status = await client.payout_status(order_id="P-1")
    assert status.payment_status == "refunded" and not status.payment_status.is_final
    assert status.rrn == "22" and status.amount == Decimal(300)


# -- errors ---------------------------------------------------------------------------


@pytest.mark.parametrize(("status", "error"), [
    (400, InvalidRequestError), (422, InvalidRequestError), (401, AuthenticationError),
    (403, AuthenticationError), (404, NotFoundError), (405, APIError)])
async def test_http_answers_map_to_typed_errors(client, gateway, status, error):
    body = {"message": "The given data was invalid.",
            "errors": {"order_id": ["The order id has already been taken."]}}
    gateway.queue("v1/payment/status", json_response(status, body))
    with pytest.raises(error) as caught:
        await client.payment_status(order_id="A-1")
    assert type(caught.value) is error
    assert caught.value.status_code == status and caught.value.endpoint == "v1/payment/status"
    assert caught.value.body and gateway.calls("v1/payment/status") == 1
    if error is InvalidRequestError:
        assert caught.value.errors == {"order_id": ["The order id has already been taken."]}


async def test_invalid_create_is_a_definite_rejection(client, gateway):
    gateway.queue("v1/payout", json_response(400, {"message": "The given data was invalid.",
                                                   "errors": {"number": ["invalid"]}}))
    with pytest.raises(InvalidRequestError) as caught:
        await client.create_payout(payout_request())
    assert caught.value.errors == {"number": ["invalid"]}


async def test_reads_are_retried_on_5xx_429_and_transport_errors(client, gateway):
    gateway.queue("v1/account/balance",
                  json_response(503, {"message": "down"}),
                  json_response(429, {}, headers={"Retry-After": "0"}),
                  httpx.ReadTimeout("slow"))
    # 4th attempt would be needed: FAST_RETRY allows 3 -> the last error surfaces typed
    with pytest.raises(TransportError):
        await client.balance()
    assert gateway.calls("v1/account/balance") == 3
    gateway.queue("v1/account/balance", json_response(502, {}), httpx.RemoteProtocolError("x"))
    assert (await client.balance()).currency == "RUB"
    assert gateway.calls("v1/account/balance") == 6


async def test_exhausted_read_retries_raise_the_error_of_that_kind(client, gateway):
    gateway.queue("v1/payout/status", *[json_response(503, {"message": "down"})] * 3)
    with pytest.raises(ServerError) as caught:
        await client.payout_status(order_id="P-1")
    assert caught.value.status_code == 503
    gateway.queue("v1/payout/status",
                  *[json_response(429, {}, headers={"Retry-After": "0"})] * 3)
    with pytest.raises(RateLimitError) as limited:
        await client.payout_status(order_id="P-1")
    assert limited.value.retry_after == 0.0


async def test_garbled_200_on_a_read_is_an_api_error_with_a_snippet(client, gateway):
    gateway.queue("v1/account/info", *[httpx.Response(200, text="<html>Bad gateway</html>")] * 3)
    with pytest.raises(APIError) as caught:
        await client.account_info()
    assert caught.value.status_code == 200 and "not JSON" in str(caught.value)
    gateway.queue("v1/account/balance", *[json_response(200, [1, 2])] * 3)
    with pytest.raises(APIError, match="expected a JSON object"):
        await client.balance()
    assert gateway.calls("v1/account/balance") == 3  # wrong shapes are retried like garbage


@pytest.mark.parametrize("failure", [
    httpx.ReadTimeout("read timed out"), httpx.WriteTimeout("write"),
    httpx.RemoteProtocolError("Server disconnected"), httpx.ReadError("reset"),
    json_response(500, {}), json_response(502, {}), json_response(503, {}),
    json_response(429, {}, headers={"Retry-After": "1"}),
    httpx.Response(200, text="<html>ok</html>"), httpx.Response(200, text='{"id": 1'),
    json_response(200, {"payment_status": "wait"}),  # no id
], ids=lambda f: type(f).__name__ if isinstance(f, Exception) else f"http-{f.status_code}")
async def test_doubtful_creates_are_never_resent_and_report_unknown(client, gateway, failure):
    gateway.queue("v1/payout", failure)
    with pytest.raises(OutcomeUnknownError) as caught:
        await client.create_payout(payout_request("P-77"))
    assert caught.value.order_id == "P-77" and caught.value.endpoint == "v1/payout"
    assert gateway.calls("v1/payout") == 1
    gateway.queue("v1/payment", failure)
    with pytest.raises(OutcomeUnknownError):
        await client.create_payment(payment_request("A-77"))
    assert gateway.calls("v1/payment") == 1


async def test_create_is_retried_only_when_the_connection_never_opened(client, gateway):
    gateway.queue("v1/payout", httpx.ConnectError("refused"), httpx.ConnectTimeout("slow"))
    created = await client.create_payout(payout_request())
    assert created.id == 100001524
    assert gateway.calls("v1/payout") == 3  # two refused connections, then one delivery
    gateway.queue("v1/payout", *[httpx.ConnectError("refused")] * 3)
    with pytest.raises(TransportError):
        await client.create_payout(payout_request("P-2"))
    assert gateway.calls("v1/payout") == 6  # create_connect_retries=2 bounds the attempts


async def test_total_deadline_bounds_retries(gateway, payment_cert, payout_cert):
    policy = RetryPolicy(max_attempts=1000, backoff_base=0.05, backoff_max=0.05,
                         total_timeout=0.3)
    gateway.queue("v1/account/balance", *[json_response(503, {})] * 1000)
    async with AliKassaClient(ACCOUNT, payment_cert, payout_cert, retry=policy,
                              transport=gateway.transport()) as client:
        with pytest.raises(ServerError):
            await client.balance()
    assert 1 < gateway.calls("v1/account/balance") < 100


async def test_retry_after_longer_than_allowed_ends_retries(client, gateway):
    gateway.queue("v1/account/balance", json_response(429, {}, headers={"Retry-After": "3600"}))
    with pytest.raises(RateLimitError) as caught:
        await client.balance()
    assert caught.value.retry_after == 3600 and gateway.calls("v1/account/balance") == 1


# -- configuration and lifecycle ------------------------------------------------------


async def test_missing_certificate_fails_before_any_io(gateway, payment_cert):
    async with AliKassaClient(ACCOUNT, payment_cert=payment_cert,
                              transport=gateway.transport()) as client:
        for call in (client.balance(), client.account_info(), client.payout_status(id=1),
                     client.create_payout(payout_request())):
            with pytest.raises(ConfigurationError, match="payout certificate"):
                await call
    assert gateway.received == []


async def test_bad_lookups_fail_before_any_io(client, gateway):
    with pytest.raises(RequestValidationError):
        await client.payment_status()
    with pytest.raises(RequestValidationError):
        await client.payout_status(id=1, order_id="x")
    with pytest.raises(RequestValidationError):
        await client.payment_history_page(date_from="yesterday")
    assert gateway.received == []


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
        gateway, payment_cert, payout_cert):
    async with httpx.AsyncClient(transport=gateway.transport()) as http:
        client = AliKassaClient(ACCOUNT, payment_cert, payout_cert, http_client=http)
        async with client:
            await client.balance()
        assert client.is_closed and not http.is_closed
        with pytest.raises(ClientClosedError, match="closed"):
            await client.balance()


# -- logging never carries secrets ------------------------------------------------------


async def test_logs_never_contain_sign_password_key_or_card(client, gateway, caplog,
                                                             payout_cert):
    caplog.set_level(logging.DEBUG)
    gateway.queue("v1/payout", httpx.ReadTimeout("boom"))
    gateway.queue("v1/payout/status", json_response(503, {}))
    with pytest.raises(OutcomeUnknownError) as unknown:
        await client.create_payout(payout_request("P-9", CARD))
    await client.create_payout(payout_request("P-10", "79031112233"))
    await client.payout_status(order_id="P-9")
    signs = [headers["sign"] for _, _, headers, _ in gateway.received]
    texts = [record.getMessage() for record in caplog.records]
    texts += [str(unknown.value), repr(unknown.value), repr(client), repr(payout_request())]
    assert any("v1/payout" in t for t in texts) and any("P-9" in t for t in texts)
    for text in texts:
        for secret in (*signs, PASSWORD.decode(), "PRIVATE KEY", CARD, "79031112233"):
            assert secret not in text


async def test_oversized_error_messages_are_cut_to_a_snippet(client, gateway):
    echo = "x" * 400  # 60 fields x 12 messages: ~300 KB, within the history answer cap
    gateway.queue("v1/payment/history", json_response(
        400, {"message": echo * 10, "errors": {f"f{i}": [echo] * 12 for i in range(60)}}))
    with pytest.raises(InvalidRequestError) as caught:
        await client.payment_history_page(page=1)
    assert len(caught.value.message) < 300
    assert len(caught.value.errors) == 50
    assert all(len(msgs) == 10 and len(msgs[0]) < 300 for msgs in caught.value.errors.values())
    assert len(caught.value.body) > 250_000  # the raw body stays available to the caller
