"""Gateway JSON -> response models: exact money, tolerant shapes, readable refusals."""

from __future__ import annotations

from decimal import Decimal

import pytest

from alikassa_async import (
    AccountInfo,
    Balance,
    HistoryPage,
    PaymentCreated,
    PaymentStatus,
    PaymentStatusResponse,
    PayoutCreated,
    PayoutStatusResponse,
)
from alikassa_async._converters import ResponseShapeError, parse_json, structure

# -- parse_json: exact numbers, clear refusals ------------------------------------------


def test_json_numbers_with_a_fraction_are_decimals_with_their_scale():
    data = parse_json(b'{"a": 93.84000000, "b": 0.1, "c": 12345678901234567890.123456789}')
    assert data == {
        "a": Decimal("93.84000000"),
        "b": Decimal("0.1"),
        "c": Decimal("12345678901234567890.123456789"),
    }
    assert str(data["a"]) == "93.84000000"  # the scale the gateway sent survives
    assert all(isinstance(v, Decimal) for v in data.values())


def test_json_integers_stay_exact_ints():
    assert parse_json(b'{"id": 108465371, "big": 123456789012345678901234567890}') == {
        "id": 108465371,
        "big": 123456789012345678901234567890,
    }


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"<html>Bad gateway</html>", "JSONDecodeError"),
        (b'{"id": 1', "JSONDecodeError"),
        (b"", "JSONDecodeError"),
        (b'{"desc": "\xc3"}', "UnicodeDecodeError"),  # not UTF-8
        (b"[" * 100_000, "RecursionError"),
    ],
)
def test_what_is_not_json_is_a_shape_error_naming_why(body, reason):
    with pytest.raises(ResponseShapeError, match=f"not JSON: {reason}"):
        parse_json(body)


def test_a_shape_error_is_a_value_error():
    assert issubclass(ResponseShapeError, ValueError)


# -- money: Decimal, never float ------------------------------------------------------------


@pytest.mark.parametrize(
    ("sent", "expected"),
    [
        ("93.84000000", Decimal("93.84000000")),
        (" 10.5 ", Decimal("10.5")),
        (300, Decimal(300)),
        (Decimal("0.01"), Decimal("0.01")),
        ("-1.00", Decimal("-1.00")),
        ("1E+3", Decimal("1E+3")),
    ],
)
def test_money_arrives_as_exact_decimal(sent, expected):
    balance = structure(Balance, {"balance": sent})
    assert balance.balance == expected and isinstance(balance.balance, Decimal)
    assert str(balance.balance) == str(expected)


@pytest.mark.parametrize("sent", [1.5, 0.1, 300.0])
def test_a_python_float_is_refused_as_money(sent):
    # floats cannot hold cents exactly; parse_json never makes one from a JSON number
    with pytest.raises(ResponseShapeError, match=r"\$\.balance"):
        structure(Balance, {"balance": sent})


@pytest.mark.parametrize(
    "sent", ["NaN", "Infinity", "-Infinity", "sNaN", "ten", "", "1,5", True, False, [1], {"v": 1}]
)
def test_what_is_not_a_finite_amount_is_refused(sent):
    with pytest.raises(ResponseShapeError, match=r"\$\.balance"):
        structure(Balance, {"balance": sent})


def test_no_number_in_a_parsed_body_is_a_float():
    raw = parse_json(b'{"a": 1.10, "b": NaN, "c": [Infinity, -Infinity], "d": 7}')
    assert raw["a"] == Decimal("1.10") and str(raw["a"]) == "1.10"
    assert all(isinstance(v, Decimal) for v in (raw["a"], raw["b"], *raw["c"]))
    assert raw["b"].is_nan() and raw["c"] == [Decimal("Infinity"), Decimal("-Infinity")]
    assert raw["d"] == 7 and isinstance(raw["d"], int)


def test_nan_and_infinity_literals_in_a_body_are_refused_as_money():
    # Python's json accepts NaN/Infinity; they must not become an amount
    for literal in (b"NaN", b"Infinity", b"-Infinity"):
        with pytest.raises(ResponseShapeError, match="amount"):
            structure(
                PayoutStatusResponse,
                parse_json(b'{"payment_status": "paid", "amount": ' + literal + b"}"),
            )


# -- ids, strings, booleans ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("sent", "expected"),
    [
        (108465371, 108465371),
        ("108465371", 108465371),
        (" 42 ", 42),
        (Decimal("7"), 7),
        (Decimal("1E+2"), 100),
    ],
)
def test_ids_may_be_numbers_or_digit_strings(sent, expected):
    assert structure(PayoutCreated, {"id": sent}).id == expected


@pytest.mark.parametrize(
    "sent", ["12a", "-5", "1.5", "", True, Decimal("1.5"), Decimal("1e999999999"), "9" * 50, None]
)
def test_what_is_not_an_id_is_refused_with_the_field_named(sent):
    with pytest.raises(ResponseShapeError, match=r"PayoutCreated.*(\$\.id|id)"):
        structure(PayoutCreated, {"id": sent})


def test_numbers_where_strings_are_documented_become_strings():
    status = structure(
        PaymentStatusResponse, {"payment_status": "wait", "order_id": 123, "service_code": "x"}
    )
    assert status.order_id == "123"
    with pytest.raises(ResponseShapeError, match=r"\$\.order_id"):
        structure(PaymentStatusResponse, {"payment_status": "wait", "order_id": True})


@pytest.mark.parametrize(
    ("sent", "expected"),
    [
        (False, False),
        (True, True),
        (0, False),
        (1, True),
        ("0", False),
        ("1", True),
        ("false", False),
        ("TRUE", True),
        ("yes", True),
        ("no", False),
        ("", False),
    ],
)
def test_php_style_booleans(sent, expected):
    status = structure(PayoutStatusResponse, {"payment_status": "paid", "is_partial_payment": sent})
    assert status.is_partial_payment is expected


@pytest.mark.parametrize("sent", ["maybe", 2, -1, [True]])
def test_what_is_not_a_boolean_is_refused(sent):
    with pytest.raises(ResponseShapeError, match=r"\$\.is_partial_payment"):
        structure(PayoutStatusResponse, {"payment_status": "paid", "is_partial_payment": sent})


# -- statuses ----------------------------------------------------------------------------------


def test_an_unknown_status_is_kept_not_fatal():
    status = structure(PayoutStatusResponse, {"payment_status": "refunded", "id": 1})
    assert status.payment_status == "refunded" and str(status.payment_status) == "refunded"
    assert not status.payment_status.is_known and not status.is_final


@pytest.mark.parametrize("sent", [5, None, ["paid"], {"v": "paid"}])
def test_a_status_that_is_not_a_string_is_refused(sent):
    with pytest.raises(ResponseShapeError, match="payment_status"):
        structure(PayoutStatusResponse, {"payment_status": sent})


def test_a_missing_required_status_names_the_field():
    with pytest.raises(ResponseShapeError, match="payment_status"):
        structure(PaymentStatusResponse, {"id": 1})


# -- odd keys, new keys, nulls -----------------------------------------------------------------


def test_camel_case_and_upper_case_keys_are_read():
    created = structure(
        PaymentCreated,
        {"id": 1, "cardNumber": "2200700000000019", "cardHolderName": "Иван Иванович И."},
    )
    assert created.card_number == "2200700000000019"
    assert created.card_holder_name == "Иван Иванович И."
    snake = structure(PaymentCreated, {"id": 1, "card_number": "79031112233"})
    assert snake.card_number == "79031112233"
    assert structure(PayoutStatusResponse, {"payment_status": "paid", "RRN": "111"}).rrn == "111"
    both = structure(PayoutStatusResponse, {"payment_status": "paid", "rrn": "a", "RRN": "b"})
    assert both.rrn == "a"  # the documented spelling wins


def test_new_fields_are_kept_in_raw_and_nulls_mean_absent():
    body = {"id": 1, "payment_status": "wait", "url": None, "brand_new": {"x": [1, 2]}}
    created = structure(PaymentCreated, body)
    assert created.url is None and created.raw == body
    assert created.raw["brand_new"] == {"x": [1, 2]}
    status = structure(
        PaymentStatusResponse, {"payment_status": "paid", "hold_at": None, "amount": None}
    )
    assert status.hold_at is None and status.amount is None


def test_raw_is_neither_in_repr_nor_in_equality():
    a = structure(PayoutCreated, {"id": 1, "number": "4111111111111111"})
    b = structure(PayoutCreated, {"id": 1, "other": "x"})
    assert a == b
    assert "4111111111111111" not in repr(a) and "raw" not in repr(a)


@pytest.mark.parametrize("body", [[], [1, 2], "text", 5, None, True])
def test_a_body_that_is_not_an_object_is_refused(body):
    with pytest.raises(ResponseShapeError, match="expected a JSON object"):
        structure(Balance, body)


def test_error_messages_are_short_and_name_the_model_and_path():
    with pytest.raises(ResponseShapeError) as caught:
        structure(
            PaymentStatusResponse,
            {"payment_status": "paid", "amount": "x" * 10_000, "payment_amount": [], "id": "nope"},
        )
    message = str(caught.value)
    assert message.startswith("unexpected PaymentStatusResponse shape")
    assert "$.amount" in message and "$.id" in message
    assert len(message) <= 340  # a snippet, not the body


# -- history pages and account info -----------------------------------------------------------


def test_history_paginator_meta_decides_has_next_over_links():
    rows = [{"id": 1, "order_id": "o-1", "amount": "5000.000000000", "status": "paid"}]
    last = structure(
        HistoryPage,
        {
            "data": rows,
            "links": {"next": "https://x/?page=9"},
            "meta": {"current_page": 3, "last_page": 3, "per_page": "1", "total": 3},
        },
    )
    assert not last.has_next and (last.current_page, last.last_page) == (3, 3)
    assert (last.per_page, last.total) == (1, 3)
    assert last.rows[0].amount == Decimal("5000") and last.rows[0].status is PaymentStatus.PAID
    middle = structure(
        HistoryPage,
        {"data": rows, "links": {"next": None}, "meta": {"current_page": 1, "last_page": 3}},
    )
    assert middle.has_next


def test_history_without_meta_trusts_next_but_never_loops_on_an_empty_page():
    rows = [{"id": 1}]
    assert structure(HistoryPage, {"data": rows, "links": {"next": "u"}}).has_next
    assert not structure(HistoryPage, {"data": [], "links": {"next": "u"}}).has_next
    assert not structure(HistoryPage, {"data": rows}).has_next
    flat = structure(HistoryPage, {"data": rows, "current_page": 1, "last_page": 2})
    assert flat.has_next  # Laravel's older flat paginator


@pytest.mark.parametrize(
    "body",
    [{"data": {"id": 1}}, {"data": [{"id": "x"}]}, {"data": [], "meta": {"current_page": "one"}}],
)
def test_history_of_the_wrong_shape_is_refused(body):
    with pytest.raises(ResponseShapeError, match=r"HistoryPage|HistoryRow"):
        structure(HistoryPage, body)


def test_account_info_lists_services_and_php_booleans():
    info = structure(
        AccountInfo,
        {
            "is_allowed_payment": "1",
            "is_allowed_payout": 0,
            "payments": [{"service_code": "payment_card_rub_hpp", "status": "active"}],
            "payouts": [
                {"service_code": "payment_card_rub", "status": "disabled"},
                {"service_code": "qiwi_rub"},
            ],
        },
    )
    assert info.is_allowed_payment is True and info.is_allowed_payout is False
    assert info.supports("payment_card_rub_hpp") and info.supports("qiwi_rub", "payout")
    assert not info.supports("payment_card_rub")  # listed, but not active
    assert not info.supports("payment_card_rub_hpp", "payout")
    with pytest.raises(ResponseShapeError, match="payouts"):
        structure(AccountInfo, {"payouts": {"service_code": "x"}})
    with pytest.raises(ResponseShapeError, match="service_code"):
        structure(AccountInfo, {"payouts": [{"status": "active"}]})
