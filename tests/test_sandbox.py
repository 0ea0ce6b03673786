"""The sandbox as a server: signatures, validation, lifecycle, balances, history, info.

Most tests run it in-process (``httpx.ASGITransport``) and sign raw bodies
themselves; the ones named *_over_loopback use the pytest plugin's uvicorn
server and the SDK client.
"""

from __future__ import annotations

import asyncio
from decimal import Decimal
from typing import Any

import httpx
import pytest

from alikassa_async import AliKassaClient, Certificate, PaymentStatus, build_payment
from alikassa_async._encoding import php_json_encode
from alikassa_async.sandbox import Sandbox, SandboxCerts, plan_outcome
from alikassa_async.sandbox.server import SandboxServer

from .sandbox_helpers import ACCOUNT, INVALID, Api, eventually, payment_body, payout_body

OTHER_ACCOUNT = "11111111-2222-4333-8444-555555555555"


async def status(api: Api, kind: str, **key: object) -> dict[str, Any]:
    return await api.ok(f"v1/{kind}/status", key)


# ---------------------------------------------------------------------------
# Account and Sign


async def test_unknown_account_is_403_and_creates_nothing(api: Api, sandbox: Sandbox) -> None:
    response = await api.call("v1/payout", payout_body(), account=OTHER_ACCOUNT)
    assert response.status_code == 403
    assert response.json() == {"message": "Unknown account."}
    assert not sandbox.state.payouts and not sandbox.state.requests


async def test_missing_sign_is_401(api: Api) -> None:
    response = await api.call("v1/account/balance", sign="")
    assert response.status_code == 401
    assert "Sign" in response.json()["message"]


async def test_signature_over_other_bytes_is_401(api: Api, sandbox: Sandbox) -> None:
    signed = php_json_encode(payout_body(amount="1.00"))
    sent = php_json_encode(payout_body(amount="1000.00"))
    response = await api.call("v1/payout", body=sent, sign=api.payout.sign(signed))
    assert response.status_code == 401
    assert response.json() == {"message": "Invalid signature."}
    assert not sandbox.state.payouts


async def test_garbage_sign_is_401(api: Api) -> None:
    response = await api.call("v1/account/info", sign="not base64 at all!")
    assert response.status_code == 401


@pytest.mark.parametrize(
    ("path", "wrong"),
    [
        ("v1/payout", "payment"),
        ("v1/payout/status", "payment"),
        ("v1/account/balance", "payment"),
        ("v1/account/info", "payment"),
        ("v1/payment", "payout"),
        ("v1/payment/status", "payout"),
        ("v1/payment/history", "payout"),
    ],
)
async def test_the_other_certificate_is_401_with_a_hint(api: Api, path: str, wrong: str) -> None:
    cert = api.payment if wrong == "payment" else api.payout
    response = await api.call(path, payout_body() if "payout" in path else [], cert=cert)
    assert response.status_code == 401
    assert f"not the {wrong} certificate" in response.json()["message"]


async def test_sha256_signatures_are_accepted(api: Api) -> None:
    created = await api.ok("v1/payout", payout_body(), hash="sha256")
    assert created["payment_status"] == "wait"
    assert (await api.ok("v1/account/balance", hash="sha256"))["currency"] == "RUB"


async def test_unknown_path_is_404_and_get_is_405(api: Api) -> None:
    assert (await api.http.post("/v1/refund")).status_code == 404
    response = await api.http.get("/v1/payment")
    assert response.status_code == 405
    assert response.headers["allow"] == "POST"


# ---------------------------------------------------------------------------
# Validation of the raw JSON

PAYMENT_ERRORS = [
    # (change to the valid body, field, message)
    ({"amount": None}, "amount", "The amount field is required."),
    ({"amount": ""}, "amount", "The amount field is required."),
    ({"amount": "abc"}, "amount", "The amount must be a number."),
    ({"amount": True}, "amount", "The amount must be a number."),
    ({"amount": "0"}, "amount", "The amount must be greater than 0."),
    ({"amount": "-5"}, "amount", "The amount must be greater than 0."),
    ({"amount": "1.005"}, "amount", "The amount must have at most 2 decimal places."),
    ({"amount": "1000000000.00"}, "amount", "The amount must not be greater than 999999999.99."),
    ({"order_id": None}, "order_id", "The order id field is required."),
    ({"order_id": 42}, "order_id", "The order id must be a string."),
    ({"order_id": "x" * 129}, "order_id", "The order id must not be greater than 128 characters."),
    ({"service": None}, "service", "The service field is required."),
    ({"service": "bitcoin_btc_hpp"}, "service", "The selected service is invalid."),
    ({"service": "payment_card_rub"}, "service", "The selected service is invalid."),
    ({"customer_ip": None}, "customer_ip", "The customer ip field is required."),
    ({"customer_ip": "300.1.1.1"}, "customer_ip", "The customer ip must be a valid IP address."),
    ({"customer_user_id": None}, "customer_user_id", "The customer user id field is required."),
    ({"desc": "d" * 129}, "desc", "The desc must not be greater than 128 characters."),
    ({"lifetime": 60}, "lifetime", "The lifetime must be between 900 and 3600."),
    ({"lifetime": "soon"}, "lifetime", "The lifetime must be an integer."),
    (
        {"customer_email": "nobody"},
        "customer_email",
        "The customer email must be a valid email address.",
    ),
    (
        {"customer_phone": "7" * 13},
        "customer_phone",
        "The customer phone must not be greater than 12 characters.",
    ),
    (
        {"customer_post_code": "12a"},
        "customer_post_code",
        "The customer post code must be a string of digits.",
    ),
    (
        {"customer_browser_color_depth": "24.5"},
        "customer_browser_color_depth",
        "The customer browser color depth must be an integer.",
    ),
    (
        {"notification_endpoint_id": "first"},
        "notification_endpoint_id",
        "The notification endpoint id must be an integer.",
    ),
    (
        {"notification_endpoint_url": "ftp://x"},
        "notification_endpoint_url",
        "The notification endpoint url must be a valid URL.",
    ),
    (
        {"success_redirect_url": "https://a.example/" + "p" * 255},
        "success_redirect_url",
        "The success redirect url must not be greater than 255 characters.",
    ),
    # per service (API reference §7.2)
    (
        {"service": "payment_card_number_rub_card"},
        "customer_code",
        "The customer code field is required.",
    ),
    (
        {"service": "payment_card_rub_hpp"},
        "customer_browser_user_agent",
        "The customer browser user agent field is required.",
    ),
    ({"service": "payment_card_bdt_hpp"}, "customer_code", "The customer code field is required."),
    (
        {"service": "payment_card_bdt_hpp", "customer_code": "paypal"},
        "customer_code",
        "The selected customer code is invalid.",
    ),
    (
        {"service": "online_banking_idr_hpp", "customer_code": "BCA"},
        "customer_first_name",
        "The customer first name field is required.",
    ),
    (
        {"service": "payment_card_sbp_rub_card", "customer_code": "sber"},
        "customer_code",
        "The customer code format is invalid.",
    ),
]


@pytest.mark.parametrize(("change", "field", "message"), PAYMENT_ERRORS)
async def test_payment_validation_errors(
    api: Api, sandbox: Sandbox, change: dict[str, Any], field: str, message: str
) -> None:
    body = {**payment_body(), **change}
    response = await api.call("v1/payment", {k: v for k, v in body.items() if v is not None})
    assert response.status_code == 400
    data = response.json()
    assert data["message"] == INVALID
    assert message in data["errors"][field], data
    assert not sandbox.state.payments


PAYOUT_ERRORS = [
    ({"number": None}, "number", "The number field is required."),
    ({"number": 4111111111111111}, "number", "The number must be a string."),
    ({"number": "4111"}, "number", "The number must be between 12 and 19 digits."),
    (
        {
            "service": "payment_card_sbp_rub",
            "number": "89031112233",
            "customer_code": "100000000111",
        },
        "number",
        "The number format is invalid.",
    ),
    (
        {"service": "payment_card_sbp_rub", "number": "79031112233"},
        "customer_code",
        "The customer code field is required.",
    ),
    (
        {"service": "payment_card_sbp_rub", "number": "79031112233", "customer_code": "123"},
        "customer_code",
        "The customer code format is invalid.",
    ),
    (
        {"service": "virtual_account_rub", "number": "4" * 20, "customer_code": "sberbank"},
        "bik_bank",
        "The bik bank field is required.",
    ),
    (
        {
            "service": "virtual_account_rub",
            "number": "4" * 20,
            "customer_code": "sberbank",
            "bik_bank": "0445",
        },
        "bik_bank",
        "The bik bank must be 9 digits.",
    ),
    (
        {
            "service": "virtual_account_rub",
            "number": "4" * 19,
            "customer_code": "sberbank",
            "bik_bank": "044525225",
        },
        "number",
        "The number must be 20 digits.",
    ),
    ({"service": "payment_card_number_rub_hpp"}, "service", "The selected service is invalid."),
    ({"extra": "card"}, "extra", "The extra must be an array."),
    (
        {"extra": {"card_exp_month": "13"}},
        "extra.card_exp_month",
        "The extra.card exp month format is invalid.",
    ),
    (
        {"customer_country": "RUSSIA"},
        "customer_country",
        "The customer country must not be greater than 3 characters.",
    ),
]


@pytest.mark.parametrize(("change", "field", "message"), PAYOUT_ERRORS)
async def test_payout_validation_errors(
    api: Api, sandbox: Sandbox, change: dict[str, Any], field: str, message: str
) -> None:
    response = await api.call("v1/payout", {**payout_body(), **change})
    body = response.json()
    assert response.status_code == 400
    assert body["message"] == INVALID
    assert message in body["errors"][field], body
    assert not sandbox.state.payouts
    assert sandbox.state.balance(ACCOUNT) == sandbox.config.initial_balance


async def test_every_problem_is_reported_at_once(api: Api) -> None:
    response = await api.call(
        "v1/payment", {"amount": "x", "order_id": 5, "service": "payment_card_number_rub_hpp"}
    )
    assert set(response.json()["errors"]) == {
        "amount",
        "order_id",
        "customer_ip",
        "customer_user_id",
    }


async def test_eur_account_payouts_need_every_extra_field(
    api: Api, sandbox: Sandbox, alikassa_certs: SandboxCerts
) -> None:
    sandbox.add_account(
        OTHER_ACCOUNT,
        payment_public_key=alikassa_certs.payment_public_pem(),
        payout_public_key=alikassa_certs.payout_public_pem(),
        currency="EUR",
    )
    body = payout_body(service="payment_card_eur", extra={"card_holder": "JANE DOE"})
    errors = (await api.call("v1/payout", body, account=OTHER_ACCOUNT)).json()["errors"]
    assert set(errors) == {
        "extra.card_exp_year",
        "extra.card_exp_month",
        "extra.card_country",
        "extra.card_recipient_birth_date",
    }
    complete = {
        "card_exp_year": "29",
        "card_exp_month": "01",
        "card_holder": "JANE DOE",
        "card_country": "DE",
        "card_recipient_birth_date": "1990-12-15",
    }
    await api.ok(
        "v1/payout", payout_body(service="payment_card_eur", extra=complete), account=OTHER_ACCOUNT
    )
    # On a RUB account extra is optional.
    await api.ok("v1/payout", payout_body(order_id="P-2"))


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (b"{not json", "application/json"),
        (b'["amount", "500"]', "application/json"),
        (php_json_encode(payment_body()), "text/plain"),
    ],
)
async def test_a_body_the_server_cannot_read_has_no_fields(
    api: Api, body: bytes, content_type: str
) -> None:
    response = await api.call("v1/payment", body=body, content_type=content_type)
    assert response.status_code == 400
    assert "The amount field is required." in response.json()["errors"]["amount"]


async def test_samples_numbers_and_unknown_fields_are_accepted(api: Api, sandbox: Sandbox) -> None:
    # The vendor's samples send amounts as JSON numbers (500, 1000.44); Laravel ignores
    # fields nobody documented.
    await api.ok("v1/payment", payment_body(amount=500, brand_new_field="x"))
    await api.ok("v1/payout", payout_body(amount=Decimal("1000.44")))
    assert sandbox.state.payments_by_order_id["A-1"].amount == Decimal("500.00")
    assert sandbox.state.payouts_by_order_id["P-1"].amount == Decimal("1000.44")


async def test_duplicate_payout_order_id_is_rejected_on_order_id(
    api: Api, sandbox: Sandbox
) -> None:
    await api.ok("v1/payout", payout_body())
    response = await api.call("v1/payout", payout_body(amount="5.00"))
    assert response.status_code == 400
    assert response.json() == {
        "message": INVALID,
        "errors": {"order_id": ["The order id has already been taken."]},
    }
    assert sandbox.state.payout_creations["P-1"] == 1
    assert sandbox.state.payout_create_requests["P-1"] == 2
    sandbox.finalise("payout", order_id="P-1", status="fail")
    assert (await api.call("v1/payout", payout_body())).status_code == 400  # never reused


async def test_payment_order_id_is_reusable_only_after_fail_or_cancel(
    api: Api, sandbox: Sandbox
) -> None:
    await api.ok("v1/payment", payment_body())
    assert (await api.call("v1/payment", payment_body())).status_code == 400
    sandbox.finalise("payment", order_id="A-1", status="fail")
    second = await api.ok("v1/payment", payment_body())
    assert sandbox.state.payment_creations["A-1"] == 2
    # A lookup by order_id finds the newest one (the vendor's history shows such pairs).
    assert (await status(api, "payment", order_id="A-1"))["id"] == second["id"]


async def test_lookup_and_history_validation(api: Api) -> None:
    errors = (await api.call("v1/payout/status", {})).json()["errors"]
    assert errors == {
        "id": ["The id field is required when order id is not present."],
        "order_id": ["The order id field is required when id is not present."],
    }
    errors = (await api.call("v1/payment/status", {"id": ["1"]})).json()["errors"]
    assert errors == {"id": ["The id must be a string."]}
    errors = (
        await api.call(
            "v1/payment/history", {"date_from": "2024-13-01", "page": 0, "paginate": 1000}
        )
    ).json()["errors"]
    assert set(errors) == {"date_from", "page", "paginate"}


async def test_disabled_service_and_forbidden_payouts(
    api: Api, sandbox: Sandbox, alikassa_certs: SandboxCerts
) -> None:
    sandbox.add_account(
        OTHER_ACCOUNT,
        payment_public_key=alikassa_certs.payment_public_pem(),
        payout_public_key=alikassa_certs.payout_public_pem(),
        services=["payment_card_number_rub_hpp"],
        allow_payouts=False,
    )
    response = await api.call(
        "v1/payment",
        payment_body(service="payment_card_rub_hpp", customer_browser_user_agent="UA"),
        account=OTHER_ACCOUNT,
    )
    assert response.json()["errors"] == {"service": ["The selected service is invalid."]}
    assert (await api.call("v1/payout", payout_body(), account=OTHER_ACCOUNT)).status_code == 403
    info = await api.ok("v1/account/info", account=OTHER_ACCOUNT)
    assert info["is_allowed_payout"] is False
    assert [s["service_code"] for s in info["payments"]] == ["payment_card_number_rub_hpp"]


# ---------------------------------------------------------------------------
# Responses and lifecycle


async def test_created_answers_have_the_documented_shape(api: Api) -> None:
    hosted = await api.ok(
        "v1/payment", payment_body(success_redirect_url="https://shop.example/ok?o=1")
    )
    assert list(hosted) == ["url", "payment_status", "id", "uuid", "success_redirect_url"]
    assert hosted["payment_status"] == "wait" and isinstance(hosted["id"], int)
    assert hosted["url"].endswith("/pay/" + hosted["uuid"])
    assert hosted["success_redirect_url"] == "https://shop.example/ok?o=1"
    h2h = await api.ok(
        "v1/payment", payment_body(order_id="A-2", service="payment_card_sbp_rub_card")
    )
    assert h2h["url"] is None and h2h["cardNumber"] == "79031112233" and h2h["cardHolderName"]
    assert list(await api.ok("v1/payout", payout_body())) == ["payment_status", "id"]


async def test_a_record_is_final_after_the_configured_polls(api: Api, sandbox: Sandbox) -> None:
    created = await api.ok("v1/payout", payout_body())
    assert (await status(api, "payout", id=str(created["id"])))["payment_status"] == "wait"
    final = await status(api, "payout", order_id="P-1")
    assert final["payment_status"] == "paid"
    assert final["rrn"] and final["card_mask"] == "411111******1111"
    assert sandbox.state.payouts_by_order_id["P-1"].polls == 2


async def test_a_record_is_final_after_the_configured_seconds_without_polls(
    api: Api, sandbox: Sandbox
) -> None:
    sandbox.config.wait_seconds, sandbox.config.wait_polls = 0.1, None
    await api.ok("v1/payment", payment_body())
    record = sandbox.state.payments_by_order_id["A-1"]
    assert record.status == "wait"
    await eventually(lambda: record.is_final)  # a timer, not a poll
    assert record.status == "paid" and record.polls == 0


@pytest.mark.parametrize(
    ("order_id", "amount", "final", "partial"),
    [
        ("A-1", "100.00", "paid", False),
        ("A-1", "100.91", "cancel", False),
        ("A-1", "100.92", "fail", False),
        ("A-1", "100.94", "paid", True),
        ("cancel-7", "100.00", "cancel", False),
        ("FAIL-7", "100.00", "fail", False),
        ("paid-7", "100.92", "paid", False),  # a prefix beats the cents
        ("partial-7", "100.00", "paid", True),
    ],
)
async def test_scripted_outcomes(
    api: Api, order_id: str, amount: str, final: str, partial: bool
) -> None:
    await api.ok("v1/payout", payout_body(order_id=order_id, amount=amount))
    await api.ok("v1/payment", payment_body(order_id=order_id, amount=amount))
    await status(api, "payout", order_id=order_id)
    payout = await status(api, "payout", order_id=order_id)
    await status(api, "payment", order_id=order_id)
    payment = await status(api, "payment", order_id=order_id)
    assert payout["payment_status"] == payment["payment_status"] == final
    assert payout["is_partial_payment"] is partial
    if final == "paid":
        paid = Decimal(amount) / 2 if partial else Decimal(amount)
        assert Decimal(payout["payment_amount"]) == paid.quantize(Decimal("0.01"), "ROUND_DOWN")
        assert Decimal(payment["payment_amount"]) == Decimal(payout["payment_amount"])


@pytest.mark.parametrize(("order_id", "amount"), [("A-1", "10.93"), ("wait-1", "10.00")])
async def test_scripted_pending_records_never_finish_by_themselves(
    api: Api, sandbox: Sandbox, order_id: str, amount: str
) -> None:
    sandbox.config.wait_seconds = 0.0
    await api.ok("v1/payout", payout_body(order_id=order_id, amount=amount))
    for _ in range(5):
        assert (await status(api, "payout", order_id=order_id))["payment_status"] == "wait"
    sandbox.finalise("payout", order_id=order_id, status="cancel")
    assert (await status(api, "payout", order_id=order_id))["payment_status"] == "cancel"


async def test_an_undocumented_pending_status_is_answered_for_95_cents(api: Api) -> None:
    await api.ok("v1/payment", payment_body(amount="10.95"))
    assert (await status(api, "payment", order_id="A-1"))["payment_status"] == "processing"
    assert (await status(api, "payment", order_id="A-1"))["payment_status"] == "paid"
    assert plan_outcome("review-1", Decimal("1")).pending == "processing"


async def test_forcing_a_status_and_refusing_to_change_a_final_one(
    api: Api, sandbox: Sandbox
) -> None:
    await api.ok("v1/payout", payout_body())
    record = sandbox.finalise("payout", order_id="P-1", status="fail")
    assert record.status == "fail"
    assert sandbox.finalise("payout", order_id="P-1", status="fail") is record
    with pytest.raises(ValueError, match="already fail"):
        sandbox.finalise("payout", order_id="P-1", status="paid")
    with pytest.raises(KeyError):
        sandbox.finalise("payout", order_id="nope")


async def test_unknown_records_are_404_or_laravel_400(
    api: Api, sandbox: Sandbox, alikassa_certs: SandboxCerts
) -> None:
    assert (await api.call("v1/payout/status", {"order_id": "nope"})).status_code == 404
    created = await api.ok("v1/payout", payout_body())
    # An id of another account's payout is not found either.
    sandbox.add_account(
        OTHER_ACCOUNT,
        payment_public_key=alikassa_certs.payment_public_pem(),
        payout_public_key=alikassa_certs.payout_public_pem(),
    )
    response = await api.call("v1/payout/status", {"id": str(created["id"])}, account=OTHER_ACCOUNT)
    assert response.status_code == 404
    sandbox.config.not_found_status = 400
    response = await api.call("v1/payout/status", {"order_id": "nope"})
    assert response.status_code == 400
    assert response.json()["errors"] == {"order_id": ["The selected order id is invalid."]}


async def test_a_new_record_can_be_invisible_to_lookups_for_a_while(
    api: Api, sandbox: Sandbox
) -> None:
    sandbox.config.status_visible_after = 1.0
    await api.ok("v1/payout", payout_body())
    assert (await api.call("v1/payout/status", {"order_id": "P-1"})).status_code == 404
    await asyncio.sleep(1.05)
    assert (await api.call("v1/payout/status", {"order_id": "P-1"})).status_code == 200


# ---------------------------------------------------------------------------
# Balances


async def test_a_paid_payment_credits_amount_minus_commission(api: Api, sandbox: Sandbox) -> None:
    start = sandbox.state.balance(ACCOUNT)
    await api.ok("v1/payment", payment_body(amount="1000.00"))
    await status(api, "payment", order_id="A-1")
    paid = await status(api, "payment", order_id="A-1")
    assert paid["commission_amount"] == "30.00"  # 3 %
    assert paid["account_payment_amount"] == "970.00"
    assert Decimal(paid["account_old_balance"]) == start
    assert Decimal(paid["account_new_balance"]) == start + Decimal("970.00")
    balance = await api.ok("v1/account/balance")
    assert Decimal(balance["balance"]) == start + Decimal("970.00")
    assert balance["balance"].endswith(".00000000")  # 8 decimals, like the real one


async def test_payouts_debit_at_creation_and_refund_on_cancel(api: Api, sandbox: Sandbox) -> None:
    start = sandbox.state.balance(ACCOUNT)
    await api.ok("v1/payout", payout_body(order_id="P-1", amount="1000.00"))
    await api.ok("v1/payout", payout_body(order_id="P-2", amount="500.91"))  # will cancel
    await api.ok("v1/payout", payout_body(order_id="P-3", amount="200.94"))  # partial
    balance = await api.ok("v1/account/balance")
    debited = Decimal("1010.00") + Decimal("505.92") + Decimal("202.95")  # + 1 %
    assert Decimal(balance["balance"]) == start - debited
    assert Decimal(balance["pending_payouts"]) == Decimal("1701.85")
    for order_id in ("P-1", "P-2", "P-3"):
        first = await status(api, "payout", order_id=order_id)
        assert first["account_payment_amount"] is not None
        await status(api, "payout", order_id=order_id)
    p1 = await status(api, "payout", order_id="P-1")
    assert (p1["commission_amount"], p1["account_payment_amount"]) == ("10.00", "1010.00")
    cancelled = await status(api, "payout", order_id="P-2")
    assert cancelled["payment_status"] == "cancel"
    assert Decimal(cancelled["account_new_balance"]) - Decimal(
        cancelled["account_old_balance"]
    ) == Decimal("505.92")  # amount + commission back
    partial = await status(api, "payout", order_id="P-3")
    assert partial["payment_amount"] == "100.47" and partial["is_partial_payment"] is True
    final = Decimal((await api.ok("v1/account/balance"))["balance"])
    assert final == start - Decimal("1010.00") - Decimal("100.47") - Decimal("2.01")
    assert sum(e.delta for e in sandbox.state.ledger) == final - start


async def test_a_payout_above_the_balance_is_rejected(api: Api, sandbox: Sandbox) -> None:
    sandbox.state.accounts[ACCOUNT].balance = Decimal("1009.99")
    response = await api.call("v1/payout", payout_body(amount="1000.00"))  # needs 1010.00
    assert response.status_code == 400
    assert response.json()["errors"] == {"amount": ["Insufficient funds on the account balance."]}
    assert not sandbox.state.payouts and sandbox.state.payout_creations["P-1"] == 0
    await api.ok("v1/payout", payout_body(amount="999.99"))


# ---------------------------------------------------------------------------
# History and account info


async def test_history_pages_newest_first(api: Api, sandbox: Sandbox) -> None:
    for n in range(5):
        await api.ok("v1/payment", payment_body(order_id=f"A-{n}", amount=f"{n + 1}.00"))
    first = await api.ok("v1/payment/history", {"page": 1, "paginate": 2})
    assert [row["order_id"] for row in first["data"]] == ["A-4", "A-3"]
    assert first["data"][0]["amount"] == "5.000000000" and first["data"][0]["currency"] == "RUB"
    assert first["meta"]["last_page"] == 3 and first["meta"]["total"] == 5
    assert first["links"]["next"].endswith("/v1/payment/history?page=2")
    last = await api.ok("v1/payment/history", {"page": 3, "paginate": 2})
    assert [row["order_id"] for row in last["data"]] == ["A-0"] and last["links"]["next"] is None
    today = sandbox.state.payments_by_order_id["A-0"].created_at.strftime("%Y-%m-%d")
    assert (await api.ok("v1/payment/history", {"date_to": "2000-01-01"}))["data"] == []
    assert len((await api.ok("v1/payment/history", {"date_from": today}))["data"]) == 5


async def test_the_sdk_reads_history_info_and_balance_in_process(
    sandbox: Sandbox, alikassa_certificates: tuple[Certificate, Certificate]
) -> None:
    async with AliKassaClient(
        ACCOUNT, *alikassa_certificates, base_url="http://127.0.0.1", transport=sandbox.transport()
    ) as client:
        for n in range(3):
            await client.create_payment(
                build_payment(
                    "payment_card_number_rub_hpp",
                    order_id=f"A-{n}",
                    amount="10",
                    customer_ip="18.191.80.10",
                    customer_user_id="u-42",
                )
            )
        rows = [row async for row in client.payment_history(page_size=2)]
        assert [row.order_id for row in rows] == ["A-2", "A-1", "A-0"]
        info = await client.account_info()
        assert info.supports("payment_card_sbp_rub", "payout")
        assert info.supports("online_banking_vnd_hpp", "payment")
        assert (await client.balance()).balance == sandbox.config.initial_balance


# ---------------------------------------------------------------------------
# The pytest plugin's fixtures, over loopback


async def test_plugin_fixtures_give_a_live_sandbox_and_client_over_loopback(
    alikassa_client: AliKassaClient, alikassa_sandbox: SandboxServer
) -> None:
    assert alikassa_sandbox.url.startswith("http://127.0.0.1:")
    created = await alikassa_client.create_payment(
        build_payment(
            "payment_card_number_rub_hpp",
            order_id="A-1",
            amount=Decimal("500"),
            customer_ip="18.191.80.10",
            customer_user_id="u-42",
            desc="Заказ / 1",
        )
    )
    final = await alikassa_client.wait_for_payment(id=created.id, interval=0.02, timeout=10)
    assert final.payment_status == PaymentStatus.PAID
    record = alikassa_sandbox.state.payments_by_order_id["A-1"]
    assert record.request["desc"] == "Заказ / 1"  # the \u-escaped bytes decoded to the text
    assert alikassa_sandbox.state.payment_creations["A-1"] == 1


async def test_pending_records_still_finish_by_time_after_a_server_restart(
    sandbox: Sandbox, alikassa_certificates: tuple[Certificate, Certificate]
) -> None:
    sandbox.config.wait_seconds, sandbox.config.wait_polls = 0.2, None
    async with SandboxServer(sandbox) as server, httpx.AsyncClient(base_url=server.url) as http:
        await Api(http, *alikassa_certificates).ok("v1/payout", payout_body())
    # The server stopped (timers cancelled) before the record was due; the sandbox keeps
    # its state and, serving again, still finishes the record by time alone.
    record = sandbox.state.payouts_by_order_id["P-1"]
    assert record.status == "wait"
    async with SandboxServer(sandbox) as server, httpx.AsyncClient(base_url=server.url) as http:
        assert (await http.get("/health")).status_code == 200
        await Api(http, *alikassa_certificates).ok("v1/account/balance")
        await eventually(lambda: record.is_final)
    assert record.status == "paid" and record.polls == 0


async def test_the_hosted_page_lets_a_person_pay_or_cancel(api: Api, sandbox: Sandbox) -> None:
    created = await api.ok("v1/payment", payment_body(order_id="A-<1>"))
    page = await api.http.get(created["url"])
    assert page.status_code == 200 and "A-&lt;1&gt;" in page.text and "Pay</button>" in page.text
    paid = await api.http.post(
        created["url"],
        content=b"action=paid",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert "<b>paid</b>" in paid.text and "button" not in paid.text
    assert sandbox.state.payments_by_order_id["A-<1>"].status == "paid"
    assert (await api.http.get("/pay/no-such-uuid")).status_code == 404
