"""The service registry and builders: every code, every required field, every rule.

Table-driven: each service code of the API reference (§7.2, §7.3) builds from
one valid request; each required field, left out or malformed, is reported
under exactly its own name; each service-specific rule rejects a value the
shared rule would accept.
"""

from __future__ import annotations

import datetime
import doctest
import json
import logging
from collections.abc import Callable, Mapping
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

import alikassa_async
from alikassa_async import (
    AccountInfo,
    PaymentRequest,
    PayoutRequest,
    RequestValidationError,
    ServiceInfo,
    build_payment,
    build_payout,
    payments,
    payouts,
    services,
)
from alikassa_async import _validation as validation
from alikassa_async._encoding import php_json_encode
from alikassa_async.services import SBP_BANK_NAMES, SERVICES, SbpBank, ServiceSpec

ROOT = Path(__file__).resolve().parent.parent

# ---------------------------------------------------------------------------
# Tables

BASE: dict[str, dict[str, object]] = {
    "payment": {"amount": Decimal("500"), "order_id": "A-1", "customer_ip": "18.191.80.10"},
    "payout": {"amount": "3000.00", "order_id": "P-1"},
}
#: a valid value per field name ...
VALID_BY_FIELD: dict[str, object] = {
    "customer_user_id": "u-42",
    "customer_code": "BANK01",
    "customer_first_name": "Jane",
    "customer_last_name": "Doe",
    "customer_browser_user_agent": "Mozilla/5.0 (X11)",
    "number": "1234567890",
    "bik_bank": "041351902",
}
EUR_EXTRA = {
    "card_exp_year": "29",
    "card_exp_month": "01",
    "card_holder": "JANE DOE",
    "card_country": "UA",
    "card_recipient_birth_date": "1999-12-15",
}
#: ... and where a service needs something more specific
VALID_BY_SERVICE: dict[tuple[str, str], object] = {
    ("payment_card_number_card", "customer_code"): "100000000111",
    ("payment_card_number_rub_card", "customer_code"): "sberbank",
    ("payment_card_bdt_hpp", "customer_code"): "bkash",
    ("payment_card_rub", "number"): "4111111111111111",
    ("payment_card_sbp_rub", "number"): "79031112233",
    ("payment_card_sbp_rub", "customer_code"): "100000000111",
    ("virtual_account_rub", "number"): "40817120273018899310",
    ("virtual_account_rub", "customer_code"): "100000000111",
    ("payment_card_eur", "number"): "5555555555554444",
    ("payment_card_eur", "extra"): EUR_EXTRA,
    ("qiwi_rub", "number"): "79005554455",
}

#: a malformed value per field name (breaks the shared rule) ...
MALFORMED_BY_FIELD: dict[str, object] = {
    "amount": "-1",
    "order_id": "x" * 129,
    "customer_ip": "256.1.1.1",
    "customer_user_id": "u" * 101,
    "customer_code": "c" * 101,
    "customer_first_name": "n" * 51,
    "customer_last_name": "n" * 51,
    "customer_browser_user_agent": "a" * 2001,
    "number": "n" * 101,
    "bik_bank": "b" * 101,
    "extra": "not a mapping",
}
#: ... and one per service-specific rule, each accepted by the shared rule
MALFORMED_BY_SERVICE: dict[tuple[str, str], object] = {
    ("payment_card_number_card", "customer_code"): "Sber Bank",
    ("payment_card_number_rub_card", "customer_code"): "200000000111",
    ("payment_card_sbp_rub_card", "customer_code"): "sberbank",
    ("payment_card_sbp_rub_hpp", "customer_code"): "1000000001",
    ("payment_card_bdt_hpp", "customer_code"): "paypal",
    ("payment_card_rub", "number"): "4111111111111112",
    ("payment_card_sbp_rub", "number"): "89031112233",
    ("payment_card_sbp_rub", "customer_code"): "200000000111",
    ("virtual_account_rub", "number"): "4081712027301889931",
    ("virtual_account_rub", "customer_code"): "Sber!",
    ("virtual_account_rub", "bik_bank"): "04135190",
    ("payment_card_eur", "number"): "5555555555554445",
    ("payment_card_eur", "extra"): {"card_exp_year": "29"},
    ("qiwi_rub", "number"): "+7900555445",
}


def valid_fields(spec: ServiceSpec) -> dict[str, object]:
    fields = dict(BASE[spec.direction])
    for name in spec.required_fields:
        if name not in fields:
            fields[name] = VALID_BY_SERVICE.get((spec.code, name), VALID_BY_FIELD.get(name))
    return fields


def build(spec: ServiceSpec, fields: Mapping[str, object]) -> PaymentRequest | PayoutRequest:
    builder = build_payment if spec.direction == "payment" else build_payout
    return builder(spec.code, **fields)


def errors_of(call: Callable[[], object]) -> dict[str, list[str]]:
    with pytest.raises(RequestValidationError) as info:
        call()
    return info.value.errors


def wire(request: PaymentRequest | PayoutRequest) -> list[tuple[str, Any]]:
    pairs: list[tuple[str, Any]] = json.loads(
        php_json_encode(request.to_wire()), object_pairs_hook=list
    )
    return pairs


SPECS = list(SERVICES.values())
REQUIRED = [(s, f) for s in SPECS for f in s.required_fields]
RULES = [(s, f) for s in SPECS for f in s.rules]


def _id(item: object) -> str:
    return item.code if isinstance(item, ServiceSpec) else str(item)


# ---------------------------------------------------------------------------
# The registry


def test_registry_covers_every_documented_code() -> None:
    payment_codes = {c for c, s in SERVICES.items() if s.direction == "payment"}
    payout_codes = {c for c, s in SERVICES.items() if s.direction == "payout"}
    assert payment_codes >= {
        "payment_card_number_rub_hpp",
        "payment_card_number_card",
        "payment_card_number_rub_card",
        "payment_card_sbp_rub_card",
        "payment_card_sberpay_rub_card",
        "virtual_account_rub_hpp",
        "virtual_account_rub_card",
        "payment_card_sbp_rub_hpp",
        "payment_card_rub_hpp",
        "payment_card_uah_hpp",
        "payment_card_bdt_hpp",
        "payment_card_pkr_hpp",
        "online_banking_php_hpp",
        "e_wallet_php_hpp",
        "online_banking_idr_hpp",
        "qr_code_idr_hpp",
        "virtual_account_idr_hpp",
        "local_bank_transfer_idr_hpp",
        "online_banking_myr_hpp",
        "qr_code_myr_hpp",
        "e_wallet_myr_hpp",
        "online_banking_thb_hpp",
        "qr_code_thb_hpp",
        "local_bank_transfer_thb_hpp",
        "online_banking_vnd_hpp",
        "qr_code_vnd_hpp",
        "e_wallet_vnd_hpp",
        "local_bank_transfer_vnd_hpp",
    }
    assert payout_codes >= {
        "payment_card_rub",
        "payment_card_sbp_rub",
        "virtual_account_rub",
        "qiwi_rub",
    }
    assert all(
        s.direction == "payment" for c, s in SERVICES.items() if c.endswith(("_hpp", "_card"))
    )


@pytest.mark.parametrize("spec", SPECS, ids=_id)
def test_every_code_builds_from_one_valid_request(spec: ServiceSpec) -> None:
    request = build(spec, valid_fields(spec))
    assert type(request) is (PaymentRequest if spec.direction == "payment" else PayoutRequest)
    keys = [k for k, _ in wire(request)]
    assert keys[:1] == ["amount"] and "service" in keys
    assert set(spec.required_fields) <= set(keys)
    assert dict(wire(request))["service"] == spec.code


@pytest.mark.parametrize(("spec", "field"), REQUIRED, ids=_id)
def test_a_missing_required_field_is_named(spec: ServiceSpec, field: str) -> None:
    fields = valid_fields(spec)
    del fields[field]
    assert list(errors_of(lambda: build(spec, fields))) == [field]
    fields[field] = None  # None means "not given"
    assert list(errors_of(lambda: build(spec, fields))) == [field]


@pytest.mark.parametrize(("spec", "field"), REQUIRED, ids=_id)
def test_a_malformed_required_field_is_named(spec: ServiceSpec, field: str) -> None:
    fields = valid_fields(spec)
    fields[field] = MALFORMED_BY_SERVICE.get((spec.code, field), MALFORMED_BY_FIELD[field])
    errors = errors_of(lambda: build(spec, fields))
    assert {k.partition(".")[0] for k in errors} == {field}


@pytest.mark.parametrize(("spec", "field"), RULES, ids=_id)
def test_each_service_rule_is_stricter_than_the_shared_one(spec: ServiceSpec, field: str) -> None:
    bad = MALFORMED_BY_SERVICE[(spec.code, field)]  # KeyError: a rule without a test case
    fields = valid_fields(spec) | {field: bad}
    assert {k.partition(".")[0] for k in errors_of(lambda: build(spec, fields))} == {field}
    # the same value under the shared rule (an unknown code) passes: the rule is the service's
    unknown = "brand_new_" + spec.direction
    shared = valid_fields(spec) | {field: bad}
    if field == "extra":
        return  # the shared ``extra`` rule checks the same keys' formats, just not presence
    builder = build_payment if spec.direction == "payment" else build_payout
    assert builder(unknown, **shared).fields[field] is not None


def test_known_service_with_the_wrong_builder_is_refused() -> None:
    errors = errors_of(
        lambda: build_payout(
            "payment_card_rub_hpp", amount=1, order_id="x", number="4111111111111111"
        )
    )
    assert errors == {"service": ["'payment_card_rub_hpp' is a payment service; use build_payment"]}
    errors = errors_of(
        lambda: build_payment("payment_card_sbp_rub", amount=1, order_id="x", customer_ip="1.2.3.4")
    )
    assert list(errors) == ["service"]


# ---------------------------------------------------------------------------
# Contradictions (§13): every documented form is accepted


@pytest.mark.parametrize(
    "amount",
    [500, "500", "500.00", Decimal("500"), Decimal("5E+2"), Decimal("500.000"), " 500.0 ", "+500"],
)
def test_amount_forms_all_reach_the_wire_as_two_decimals(amount: object) -> None:
    request = build_payout(
        "payment_card_rub", amount=amount, order_id="P-1", number="4111111111111111"
    )
    assert request.amount == Decimal("500.00")
    assert php_json_encode(request.to_wire()).startswith(b'{"amount":"500.00",')


@pytest.mark.parametrize(
    ("amount", "message"),
    [
        (1.5, "not float"),
        (True, "not bool"),
        ([1], "not list"),
        (0, "greater than 0"),
        ("-1", "plain decimal"),
        (Decimal("-0.01"), "greater than 0"),
        (Decimal("NaN"), "finite"),
        (Decimal("sNaN"), "finite"),
        (Decimal("Infinity"), "finite"),
        ("0.001", "2 decimal"),
        (Decimal("999999999.999"), "2 decimal"),
        ("1000000000", "9 digits"),
        ("1e3", "plain"),
        ("", "is required"),
        ("１２", "plain"),
        (10**40, "9 digits"),
        (Decimal("1E-30"), "2 decimal"),
    ],
)
def test_amount_rules(amount: object, message: str) -> None:
    errors = errors_of(
        lambda: build_payout(
            "payment_card_rub", amount=amount, order_id="P-1", number="4111111111111111"
        )
    )
    assert list(errors) == ["amount"] and message in errors["amount"][0]


def test_amount_limits_are_inclusive_at_one_cent_and_nine_digits() -> None:
    for amount, text in [("0.01", "0.01"), ("999999999.99", "999999999.99")]:
        req = build_payout(
            "payment_card_rub", amount=amount, order_id="P", number="4111111111111111"
        )
        assert req.to_wire()["amount"] == text


def test_amount_ignores_the_callers_decimal_context() -> None:
    import decimal

    with decimal.localcontext(decimal.Context(prec=3)):
        req = build_payout(
            "payment_card_rub", amount="123456789.12", order_id="P", number="4111111111111111"
        )
    assert req.amount == Decimal("123456789.12")


@pytest.mark.parametrize("code", ["payment_card_number_card", "payment_card_number_rub_card"])
@pytest.mark.parametrize("bank", ["100000000111", "sberbank", "raiffeisen", SbpBank.TBANK])
def test_h2h_card_accepts_both_codes_and_both_bank_forms(code: str, bank: str) -> None:
    req = build_payment(
        code, amount=700, order_id="A", customer_ip="::1", customer_user_id="u", customer_code=bank
    )
    assert req.service == code and req.fields["customer_code"] == str(bank)
    assert type(req.fields["customer_code"]) is str  # StrEnum sent as its plain value


def test_browser_user_agent_is_required_only_on_the_generic_card_pages() -> None:
    for code in ("payment_card_rub_hpp", "payment_card_uah_hpp"):
        assert "customer_browser_user_agent" in SERVICES[code].required_fields
    assert all(
        "customer_browser_user_agent" not in s.required_fields
        for c, s in SERVICES.items()
        if c not in ("payment_card_rub_hpp", "payment_card_uah_hpp")
    )


def test_sbp_payout_phone_drops_a_leading_plus_only() -> None:
    def payout(number: object) -> PayoutRequest:
        return build_payout(
            "payment_card_sbp_rub",
            amount=1,
            order_id="P",
            number=number,
            customer_code="100000000111",
        )

    assert payout("+79031112233").fields["number"] == "79031112233"
    for bad in (
        "8 903 111 22 33",
        "7903111223",
        "++79031112233",
        "+89031112233",
        "7903111223a",
        "７9031112233",
        79031112233,
    ):
        assert list(errors_of(lambda bad=bad: payout(bad))) == ["number"]


def test_sbp_bank_constants_are_well_formed_ids() -> None:
    assert len(SBP_BANK_NAMES) == 12
    assert {b.value for b in SbpBank} == set(SBP_BANK_NAMES)
    assert SbpBank.TINKOFF is SbpBank.TBANK
    for bank in SbpBank:
        build_payout(
            "payment_card_sbp_rub", amount=1, order_id="P", number="79031112233", customer_code=bank
        )
    # other well-formed ids are not rejected
    build_payout(
        "payment_card_sbp_rub",
        amount=1,
        order_id="P",
        number="79031112233",
        customer_code="100000000999",
    )


# ---------------------------------------------------------------------------
# Shared rules


def payment(**overrides: object) -> PaymentRequest:
    fields: dict[str, object] = {"amount": 1, "order_id": "A", "customer_ip": "1.2.3.4"}
    fields.update(overrides)
    return build_payment("payment_card_bdt_hpp", customer_code="nagad", **fields)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("order_id", ""),
        ("order_id", " A"),
        ("order_id", "x" * 129),
        ("order_id", 17),
        ("order_id", "\ud800"),
        ("customer_ip", "1.2.3"),
        ("customer_ip", "fe80::1%eth0"),
        ("customer_ip", 16909060),
        ("customer_ip", "::g"),
        ("success_redirect_url", "ftp://x.example/"),
        ("success_redirect_url", "https://"),
        ("fail_redirect_url", "https://x.example/" + "a" * 240),
        ("notification_endpoint_url", "https://x.example/a b"),
        ("notification_endpoint_url", "http://[::1"),
        ("notification_endpoint_id", 0),
        ("notification_endpoint_id", -3),
        ("notification_endpoint_id", True),
        ("success_redirect_id", "1.5"),
        ("fail_redirect_id", 2**63),
        ("lifetime", 899),
        ("lifetime", 3601),
        ("lifetime", "15m"),
        ("desc", "d" * 129),
        ("desc", "   "),
        ("customer_email", "nobody"),
        ("customer_email", "a@b.c" + "c" * 50),
        ("customer_phone", "+7903111223344"),
        ("customer_post_code", 10**12),
        ("customer_post_code", "1234567890123"),
        ("customer_city", "c" * 21),
        ("customer_browser_language", "en-US,en;q"),
        ("customer_browser_color_depth", 0),
        ("customer_browser_screen_width", "wide"),
        ("customer_account", 12),
    ],
)
def test_shared_payment_rules(field: str, value: object) -> None:
    assert list(errors_of(lambda: payment(**{field: value}))) == [field]


@pytest.mark.parametrize(
    ("field", "value", "wire_value"),
    [
        ("order_id", "x" * 128, "x" * 128),
        ("lifetime", 900, 900),
        ("lifetime", "3600", 3600),
        ("notification_endpoint_id", "12", 12),
        ("success_redirect_url", "https://a.example/ok?o=1", "https://a.example/ok?o=1"),
        ("customer_ip", "2001:db8::1", "2001:db8::1"),
        ("customer_post_code", "SW1A 1AA", "SW1A 1AA"),
        ("customer_post_code", 101000, 101000),
        ("desc", "Оплата заказа №1 😀", "Оплата заказа №1 😀"),
    ],
)
def test_shared_payment_rules_accept_and_normalise(
    field: str, value: object, wire_value: object
) -> None:
    req = payment(**{field: value})
    assert dict(wire(req))[field] == wire_value


def test_none_and_empty_string_mean_not_given() -> None:
    req = payment(desc="", customer_email=None, customer_city="", lifetime="")
    assert "desc" not in req.fields and "customer_email" not in req.fields
    errors = errors_of(
        lambda: build_payout(
            "payment_card_sbp_rub", amount="", order_id="", number="", customer_code=""
        )
    )
    assert errors == {
        k: ["is required" + (" for payment_card_sbp_rub" if k == "customer_code" else "")]
        for k in ("amount", "number", "order_id", "customer_code")
    }


def test_ip_address_objects_are_accepted() -> None:
    import ipaddress

    assert payment(customer_ip=ipaddress.ip_address("::1")).fields["customer_ip"] == "::1"


def test_every_problem_is_reported_at_once_and_reads_well_in_a_log() -> None:
    exc = None
    try:
        build_payout(
            "payment_card_sbp_rub",
            amount=0,
            order_id="",
            number="89031112233",
            notification_endpoint_url="ftp://x",
        )
    except RequestValidationError as caught:
        exc = caught
    assert exc is not None
    assert set(exc.errors) == {
        "amount",
        "order_id",
        "number",
        "customer_code",
        "notification_endpoint_url",
    }
    text = str(exc)
    assert text.startswith("invalid request: ") and "\n" not in text
    assert "customer_code: is required for payment_card_sbp_rub" in text


def test_card_and_phone_numbers_are_masked_in_messages() -> None:
    def message(service: str, number: str, **more: object) -> str:
        with pytest.raises(RequestValidationError) as info:
            build_payout(service, amount=1, order_id="P", number=number, **more)
        return str(info.value) + repr(info.value)

    for card in ["4111111111111112", "41111111111111112222", "4111 1111 1111 1111"]:
        text = message("payment_card_rub", card)
        assert card not in text and card.replace(" ", "") not in text
        assert card.replace(" ", "")[-4:] in text  # enough to recognise it
    for phone in ["89031112233", "+7903111223344"]:
        text = message("payment_card_sbp_rub", phone, customer_code="100000000111")
        assert phone.lstrip("+")[:7] not in text and phone[-4:] in text
        assert phone.lstrip("+")[:7] not in message("qiwi_rub", phone)
    text = message(
        "virtual_account_rub", "408171202730188993101", customer_code="sber", bik_bank="041351902"
    )
    assert "408171202730188993101" not in text


def test_eur_card_payout_extra_fields() -> None:
    req = build_payout(
        "payment_card_eur",
        amount="25",
        order_id="E",
        number="5555555555554444",
        extra={
            "card_recipient_birth_date": datetime.date(1999, 12, 15),
            "card_country": "UA",
            "card_holder": "JANE DOE",
            "card_exp_month": "01",
            "card_exp_year": "29",
            "ref": 7,
        },
    )
    # documented order first, new keys after
    assert list(req.to_wire()["extra"]) == [
        "card_exp_year",
        "card_exp_month",
        "card_holder",
        "card_country",
        "card_recipient_birth_date",
        "ref",
    ]
    assert req.to_wire()["extra"]["card_recipient_birth_date"] == "1999-12-15"
    tomorrow = (datetime.date.today() + datetime.timedelta(days=1)).isoformat()
    bad = {
        "card_exp_year": "2029",
        "card_exp_month": "13",
        "card_holder": "x" * 101,
        "card_country": "XX",
        "card_recipient_birth_date": tomorrow,
    }
    errors = errors_of(
        lambda: build_payout(
            "payment_card_eur", amount=1, order_id="E", number="5555555555554444", extra=bad
        )
    )
    assert set(errors) == {f"extra.{k}" for k in bad}
    for day in ("1999-02-30", "15.12.1999", "1999-12-15T00:00"):
        errors = errors_of(
            lambda day=day: build_payout(
                "payment_card_eur",
                amount=1,
                order_id="E",
                number="5555555555554444",
                extra=EUR_EXTRA | {"card_recipient_birth_date": day},
            )
        )
        assert list(errors) == ["extra.card_recipient_birth_date"]
    errors = errors_of(
        lambda: build_payout(
            "payment_card_eur", amount=1, order_id="E", number="5555555555554444", extra={}
        )
    )
    assert set(errors) == {f"extra.{k}" for k in EUR_EXTRA}


def test_luhn_and_card_length() -> None:
    for good in (
        "4111111111111111",
        "5555555555554444",
        "378282246310005",
        "6011111111111117",
        "2200000000000004",
        "4000000000006",
        "4111111111111111110",
    ):
        build_payout("payment_card_rub", amount=1, order_id="P", number=good)
    for bad in (
        "4111111111111112",
        "411111111",
        "41111111111111111111",
        "4111-1111-1111-1111",
        "",
        4111111111111111,
    ):
        assert list(
            errors_of(
                lambda bad=bad: build_payout("payment_card_rub", amount=1, order_id="P", number=bad)
            )
        ) == ["number"]


# ---------------------------------------------------------------------------
# Unknown codes and fields


def test_unknown_service_builds_with_shared_rules_and_warns_once(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(services, "_warned_codes", set())
    caplog.set_level(logging.WARNING, logger="alikassa_async")
    for _ in range(3):
        req = build_payout("crypto_usdt", amount="10", order_id="C-1", number="T" * 34)
    assert req.service == "crypto_usdt"
    build_payment("payment_card_kzt_hpp", amount=1, order_id="K", customer_ip="1.2.3.4")
    records = [r for r in caplog.records if r.name == "alikassa_async"]
    assert len(records) == 2
    assert "crypto_usdt" in records[0].getMessage() and records[0].levelno == logging.WARNING
    # shared rules still apply to it
    errors = errors_of(lambda: build_payout("crypto_usdt", amount=1.0, order_id="C"))
    assert set(errors) == {"amount", "number"}


@pytest.mark.parametrize(
    "service", ["", "Payment_Card_RUB", "a" * 101, "card rub", None, 7, "карта"]
)
def test_malformed_service_code(service: object) -> None:
    errors = errors_of(
        lambda: build_payout(service, amount=1, order_id="P", number="4111111111111111")
    )
    assert list(errors) == ["service"]


def test_fields_the_sdk_does_not_know_are_passed_through_after_documented_ones() -> None:
    req = build_payout(
        "payment_card_rub",
        amount=1,
        order_id="P",
        new_flag=1,
        number="4111111111111111",
        customer_country="UKR",
        merchant_ref="r-1",
    )
    assert [k for k, _ in wire(req)] == [
        "amount",
        "number",
        "order_id",
        "service",
        "customer_country",
        "new_flag",
        "merchant_ref",
    ]
    errors = errors_of(
        lambda: build_payout(
            "payment_card_rub",
            amount=1,
            order_id="P",
            number="4111111111111111",
            new_flag=1.5,
            other=None,
            flag=True,
            **{"Bad-Name": "x"},
        )
    )
    assert errors == {
        "new_flag": ["must be a str or int, not float"],
        "flag": ["must be a str or int, not bool"],
        "Bad-Name": ["is not a gateway field name (lowercase snake_case expected)"],
    }


def test_nothing_but_request_validation_error_escapes_the_generic_builders() -> None:
    calls: list[Callable[[], object]] = [
        lambda: build_payment(),
        lambda: build_payment("a", "b"),
        lambda: build_payment("payment_card_rub_hpp", service="x"),
        lambda: build_payment("payment_card_rub_hpp", amount=[1], order_id=None, extra="x"),
        lambda: build_payout(
            "payment_card_eur",
            amount=object(),
            order_id=b"P",
            number=["4111"],
            extra={1: 2, "card_holder": object()},
        ),
    ]
    for call in calls:
        errors = errors_of(call)
        assert errors and all(isinstance(m, str) for ms in errors.values() for m in ms)
    assert errors_of(calls[0]) == {"service": ["is required"]}
    assert errors_of(calls[2]) == {"service": ["given twice"]}


# ---------------------------------------------------------------------------
# Named builders

NAMED: list[tuple[Callable[..., Any], dict[str, object], str]] = [
    (payments.card_form, {"customer_user_id": "u"}, "payment_card_number_rub_hpp"),
    (
        payments.h2h_card,
        {"customer_user_id": "u", "customer_code": "sberbank"},
        "payment_card_number_card",
    ),
    (
        payments.h2h_card,
        {
            "customer_user_id": "u",
            "customer_code": "100000000111",
            "service": "payment_card_number_rub_card",
        },
        "payment_card_number_rub_card",
    ),
    (payments.h2h_sbp, {"customer_user_id": "u"}, "payment_card_sbp_rub_card"),
    (
        payments.sbp_form,
        {"customer_user_id": "u", "customer_code": "100000000004"},
        "payment_card_sbp_rub_hpp",
    ),
    (payments.sberpay, {"customer_user_id": "u"}, "payment_card_sberpay_rub_card"),
    (payments.virtual_account_form, {"customer_user_id": "u"}, "virtual_account_rub_hpp"),
    (payments.virtual_account_h2h, {"customer_user_id": "u"}, "virtual_account_rub_card"),
    (payments.card_hpp, {"customer_browser_user_agent": "UA"}, "payment_card_rub_hpp"),
    (
        payments.card_hpp,
        {"customer_browser_user_agent": "UA", "currency": "UAH"},
        "payment_card_uah_hpp",
    ),
    *(
        (payments.bdt_wallet, {"wallet": w}, "payment_card_bdt_hpp")
        for w in ("bkash", "nagad", "rocket")
    ),
    (payments.pkr, {"customer_code": "B1"}, "payment_card_pkr_hpp"),
    *(
        (payments.php, {"method": m, "customer_code": "B1"}, f"{m}_php_hpp")
        for m in ("online_banking", "e_wallet")
    ),
    *(
        (
            payments.idr,
            {
                "method": m,
                "customer_code": "OVO",
                "customer_first_name": "A",
                "customer_last_name": "B",
            },
            f"{m}_idr_hpp",
        )
        for m in ("online_banking", "qr_code", "virtual_account", "local_bank_transfer")
    ),
    *(
        (
            payments.myr,
            {
                "method": m,
                "customer_code": "TNG",
                "customer_first_name": "A",
                "customer_last_name": "B",
            },
            f"{m}_myr_hpp",
        )
        for m in ("online_banking", "qr_code", "e_wallet")
    ),
    *(
        (payments.thb, {"method": m, "customer_code": "PP"}, f"{m}_thb_hpp")
        for m in ("online_banking", "qr_code", "local_bank_transfer")
    ),
    *(
        (payments.vnd, {"method": m, "customer_code": "MOMO"}, f"{m}_vnd_hpp")
        for m in ("online_banking", "qr_code", "e_wallet", "local_bank_transfer")
    ),
    (payouts.card, {"number": "4111111111111111"}, "payment_card_rub"),
    (payouts.sbp, {"number": "+79031112233", "customer_code": SbpBank.VTB}, "payment_card_sbp_rub"),
    (
        payouts.virtual_account,
        {"number": "40817120273018899310", "customer_code": "sberbank", "bik_bank": "041351902"},
        "virtual_account_rub",
    ),
    (payouts.card_eur, {"number": "5555555555554444", **EUR_EXTRA}, "payment_card_eur"),
]


def _named_base(builder: Callable[..., Any]) -> dict[str, object]:
    if builder.__module__.endswith("payouts"):
        return {"order_id": "P-1", "amount": "10"}
    return {"order_id": "A-1", "amount": "10", "customer_ip": "1.2.3.4"}


@pytest.mark.parametrize(
    ("builder", "fields", "code"), NAMED, ids=[f"{b.__name__}-{c}" for b, _, c in NAMED]
)
def test_named_builder_sends_the_same_bytes_as_the_generic_one(
    builder: Callable[..., Any], fields: dict[str, object], code: str
) -> None:
    req = builder(**_named_base(builder), **fields)
    assert req.service == code
    generic = dict(_named_base(builder))
    for key, value in fields.items():
        if key == "wallet":
            generic["customer_code"] = value
        elif key in EUR_EXTRA:
            generic.setdefault("extra", {})[key] = value
        elif key not in ("method", "currency", "service"):
            generic[key] = value
    direct = (build_payout if isinstance(req, PayoutRequest) else build_payment)(code, **generic)
    assert php_json_encode(req.to_wire()) == php_json_encode(direct.to_wire())


def test_every_family_has_a_named_builder_that_exists() -> None:
    named_codes = {code for _, _, code in NAMED}
    for spec in SPECS:
        if spec.builder:
            module, _, name = spec.builder.partition(".")
            assert callable(getattr({"payments": payments, "payouts": payouts}[module], name))
            assert spec.code in named_codes, spec.code
        else:
            assert spec.code == "qiwi_rub"  # legacy, generic builder only


def test_named_builders_report_missing_unknown_and_positional_arguments() -> None:
    errors = errors_of(lambda: payments.card_form(order_id="x", amount=1))
    assert errors == {"customer_ip": ["is required"], "customer_user_id": ["is required"]}
    errors = errors_of(
        lambda: payments.h2h_sbp(
            order_id="x",
            amount=1,
            customer_ip="1.2.3.4",
            customer_user_id="u",
            customer_emial="a@b.example",
        )
    )
    assert list(errors) == ["customer_emial"] and "other_fields" in errors["customer_emial"][0]
    errors = errors_of(lambda: payouts.card("P-1", 10, "4111111111111111"))
    assert set(errors) == {"arguments", "order_id", "amount", "number"}
    errors = errors_of(
        lambda: payments.bdt_wallet(wallet="paypal", order_id="x", amount=1, customer_ip="1.2.3.4")
    )
    assert list(errors) == ["wallet"]
    errors = errors_of(
        lambda: payments.idr(
            method="card",
            order_id="x",
            amount=1.5,
            customer_ip="1.2.3.4",
            customer_code="OVO",
            customer_first_name="A",
            customer_last_name=None,
        )
    )
    assert set(errors) == {"method", "amount", "customer_last_name"}
    errors = errors_of(
        lambda: payments.card_hpp(
            order_id="x",
            amount=1,
            customer_ip="1.2.3.4",
            customer_browser_user_agent="UA",
            currency="usd",
        )
    )
    assert list(errors) == ["currency"]


def test_named_builders_take_new_gateway_fields_in_other_fields() -> None:
    req = payouts.sbp(
        order_id="P",
        amount=1,
        number="79031112233",
        customer_code="100000000111",
        notification_endpoint_id=5,
        other_fields={"purpose": "refund", "n": 2},
    )
    assert [k for k, _ in wire(req)][-3:] == ["notification_endpoint_id", "purpose", "n"]
    errors = errors_of(
        lambda: payouts.sbp(
            order_id="P",
            amount=1,
            number="79031112233",
            customer_code="100000000111",
            other_fields={"number": "79031112234", "x": 1.5},
        )
    )
    assert errors == {
        "other_fields": ["'number' is given twice"],
        "x": ["must be a str or int, not float"],
    }
    errors = errors_of(
        lambda: payouts.sbp(
            order_id="P",
            amount=1,
            number="79031112233",
            customer_code="100000000111",
            other_fields=["x"],
        )
    )
    assert list(errors) == ["other_fields"]


def test_card_eur_named_builder() -> None:
    errors = errors_of(
        lambda: payouts.card_eur(
            order_id="E",
            amount=1,
            number="5555555555554444",
            card_exp_year="29",
            card_exp_month="1",
            card_holder=None,
            card_country="UA",
            card_recipient_birth_date=datetime.date(1990, 1, 1),
        )
    )
    assert set(errors) == {"extra.card_exp_month", "extra.card_holder"}
    req = payouts.card_eur(
        order_id="E",
        amount=1,
        number="5555555555554444",
        card_exp_year="29",
        card_exp_month="12",
        card_holder="A B",
        card_country="DE",
        card_recipient_birth_date="1990-01-01",
        service="payment_card_eur_v2",
        extra={"ref": "x"},
    )
    assert req.service == "payment_card_eur_v2"
    assert list(req.fields["extra"]) == [*EUR_EXTRA, "ref"]


def test_mypy_catches_missing_and_misspelt_fields(tmp_path: Path) -> None:
    from mypy import api

    source = tmp_path / "use_builders.py"
    source.write_text(
        "from alikassa_async import payments, payouts\n"
        "payments.card_form(order_id='x', amount=1, customer_ip='1.1.1.1')\n"
        "payments.h2h_sbp(order_id='x', amount=1, customer_ip='1.1.1.1', customer_user_id='u',"
        " customer_emial='a@b.c')\n"
        "payouts.sbp(order_id='x', amount=1.5, number='79031112233', customer_code='1')\n"
        "payments.bdt_wallet(wallet='paypal', order_id='x', amount=1, customer_ip='1.1.1.1')\n"
        "payouts.card(order_id='x', amount='1', number='4111111111111111', desc='d')\n"
    )
    out, _, status = api.run(
        [str(source), "--strict", "--no-incremental", "--cache-dir", str(tmp_path / "cache")]
    )
    assert status == 1
    assert 'Missing named argument "customer_user_id" for "card_form"' in out
    assert 'Unexpected keyword argument "customer_emial" for "h2h_sbp"' in out
    assert 'Argument "amount" to "sbp" has incompatible type "float"' in out
    assert 'Argument "wallet" to "bdt_wallet"' in out
    assert 'Unexpected keyword argument "desc" for "card"' in out
    assert out.count("error:") == 5


# ---------------------------------------------------------------------------
# Account check, README table, doc examples


def test_check_enabled_against_account_info() -> None:
    info = AccountInfo(
        payments=[
            ServiceInfo(service_code="payment_card_bdt_hpp"),
            ServiceInfo(service_code="payment_card_pkr_hpp", status="inactive"),
        ],
        payouts=[ServiceInfo(service_code="payment_card_sbp_rub")],
    )
    services.check_enabled(info, payment())
    services.check_enabled(
        info,
        payouts.sbp(order_id="P", amount=1, number="79031112233", customer_code="100000000111"),
    )
    pkr = payments.pkr(order_id="K", amount=1, customer_ip="1.2.3.4", customer_code="B")
    errors = errors_of(lambda: services.check_enabled(info, pkr))
    assert list(errors) == ["service"] and "not an active payment service" in errors["service"][0]


def test_readme_service_table_is_generated_from_the_registry() -> None:
    table = services.markdown_table()
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    block = readme.split("<!-- services-table -->\n", 1)[1].split("<!-- /services-table -->", 1)[0]
    assert block == table, (
        "the README's service table is stale; regenerate it with: python -c \"from "
        "alikassa_async.services import markdown_table; print(markdown_table(), end='')\" "
        "and paste it between the services-table markers"
    )
    for code in SERVICES:
        assert f"| `{code}` |" in table


def test_public_names() -> None:
    assert {"build_payment", "build_payout"} <= set(alikassa_async.__all__)
    for module in (services, payments, payouts, validation):
        assert all(hasattr(module, name) for name in module.__all__)


@pytest.mark.parametrize(
    "module", [services, payments, payouts, validation], ids=lambda m: m.__name__
)
def test_docstring_examples_run(module: Any) -> None:
    result = doctest.testmod(module, extraglobs={"Decimal": Decimal})
    assert result.attempted > 0 and result.failed == 0
