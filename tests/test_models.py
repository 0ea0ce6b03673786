"""Response and request models: statuses, finality, wire order, and reprs that leak nothing."""

from __future__ import annotations

from decimal import Decimal

import attrs
import pytest

from alikassa_async import (
    AccountInfo,
    PaymentCreated,
    PaymentRequest,
    PaymentStatus,
    PaymentStatusResponse,
    PayoutCreated,
    PayoutRequest,
    PayoutStatusResponse,
    RequestValidationError,
    ServiceInfo,
    build_payment,
    build_payout,
)

CARD = "4111111111111111"
PHONE = "79031112233"

# -- PaymentStatus --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "final"), [("wait", False), ("paid", True), ("cancel", True), ("fail", True)]
)
def test_documented_statuses_are_members_and_know_if_they_are_final(value, final):
    status = PaymentStatus(value)
    assert status is PaymentStatus[value.upper()]
    assert status.is_known and status.is_final is final
    assert status == value and str(status) == value and f"{status}" == value


@pytest.mark.parametrize("value", ["processing", "refunded", "hold", "", "PAID"])
def test_an_unknown_status_is_a_pseudo_member_that_is_never_final(value):
    status = PaymentStatus(value)
    assert isinstance(status, PaymentStatus) and isinstance(status, str)
    assert status == value and str(status) == value and status.value == value
    assert not status.is_known and not status.is_final  # keep waiting, never "failed"
    assert status.name == "UNKNOWN"
    assert hash(status) == hash(value) and {status: 1}[value] == 1
    assert status == PaymentStatus(value)


def test_pseudo_members_do_not_join_the_enum():
    PaymentStatus("refunded")
    assert [s.value for s in PaymentStatus] == ["wait", "paid", "cancel", "fail"]
    assert "UNKNOWN" not in PaymentStatus.__members__


@pytest.mark.parametrize("value", [5, None, b"paid", 1.0])
def test_a_status_that_is_not_a_string_is_a_value_error(value):
    with pytest.raises(ValueError):
        PaymentStatus(value)


def test_statuses_compare_case_sensitively_like_the_gateway():
    assert PaymentStatus("PAID") != PaymentStatus.PAID and not PaymentStatus("PAID").is_final


def test_status_responses_are_final_exactly_when_their_status_is():
    for value in ("wait", "paid", "cancel", "fail", "processing"):
        status = PaymentStatus(value)
        assert PaymentStatusResponse(payment_status=status).is_final is status.is_final
        assert PayoutStatusResponse(payment_status=status).is_final is status.is_final


# -- requests: wire order and amount format ------------------------------------------------


def test_payout_wire_is_in_documented_order_with_a_two_decimal_amount():
    request = PayoutRequest(
        service="payment_card_rub",
        order_id="P-1",
        amount=Decimal("10.5"),
        fields={"customer_email": "a@b.example", "zzz_new": 1, "number": CARD},
    )
    wire = request.to_wire()
    assert list(wire) == [
        "amount",
        "number",
        "order_id",
        "service",
        "customer_email",
        "zzz_new",
    ]  # undocumented fields go last, in the order given
    assert wire["amount"] == "10.50"


def test_payment_wire_order_and_rounding_of_the_amount():
    request = PaymentRequest(
        service="s",
        order_id="A-1",
        amount=Decimal("1"),
        fields={"customer_user_id": "u", "desc": "d", "customer_ip": "ip"},
    )
    assert list(request.to_wire()) == [
        "amount",
        "order_id",
        "service",
        "desc",
        "customer_ip",
        "customer_user_id",
    ]
    assert request.to_wire()["amount"] == "1.00"


def test_requests_are_immutable_values():
    request = build_payout("payment_card_rub", order_id="P-1", amount="10", number=CARD)
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        request.amount = Decimal("1000")  # type: ignore[misc]
    assert request == build_payout("payment_card_rub", order_id="P-1", amount="10.00", number=CARD)


# -- reprs never show card or phone numbers --------------------------------------------------


def test_a_payout_request_repr_masks_numbers_and_hides_extra_values():
    request = PayoutRequest(
        service="payment_card_rub",
        order_id="P-1",
        amount=Decimal("10"),
        fields={
            "number": CARD,
            "customer_phone": PHONE,
            "card_number": "5168740000001234",
            "extra": {"passport": "4510 123456"},
        },
    )
    text = repr(request)
    for secret in (CARD, PHONE, "5168740000001234", "4510 123456"):
        assert secret not in text
    assert "P-1" in text and "payment_card_rub" in text  # still useful in a log line
    assert "1111" in text and "2233" in text  # the last digits identify the card


def test_built_requests_mask_too():
    payout = build_payout("qiwi_rub", order_id="P-2", amount="10", number=PHONE)
    assert PHONE not in repr(payout) and PHONE not in str(payout)
    payment = build_payment(
        "payment_card_number_rub_hpp",
        order_id="A-1",
        amount="500",
        customer_ip="18.191.80.10",
        customer_user_id="u-42",
        customer_phone=PHONE,
    )
    assert PHONE not in repr(payment)


def test_h2h_requisites_are_not_in_the_repr_of_a_created_payment():
    created = PaymentCreated(
        id=1,
        card_number=CARD,
        card_holder_name="Иван Иванович И.",
        raw={"cardNumber": CARD, "cardHolderName": "Иван Иванович И."},
    )
    text = repr(created)
    assert CARD not in text and "Иван" not in text and "raw" not in text
    assert created.card_number == CARD  # still there for the code that shows it to the payer


def test_raw_bodies_are_out_of_reprs_and_equality():
    raw = {"number": CARD, "customer_phone": PHONE}
    for model in (
        PayoutCreated(id=1, raw=raw),
        PayoutStatusResponse(payment_status=PaymentStatus.PAID, raw=raw),
        PaymentStatusResponse(payment_status=PaymentStatus.PAID, raw=raw),
    ):
        assert CARD not in repr(model) and PHONE not in repr(model)
        assert model == attrs.evolve(model, raw={})


# -- account info ------------------------------------------------------------------------------


def test_service_info_is_active_unless_the_gateway_says_otherwise():
    assert ServiceInfo("x").is_active and ServiceInfo("x", status="active").is_active
    assert not ServiceInfo("x", status="disabled").is_active


def test_supports_searches_both_lists_or_the_direction_asked():
    info = AccountInfo(
        payments=[ServiceInfo("pay_code")],
        payouts=[ServiceInfo("out_code"), ServiceInfo("off", status="off")],
    )
    assert info.supports("pay_code") and info.supports("out_code")
    assert info.supports("pay_code", "payment") and not info.supports("pay_code", "payout")
    assert not info.supports("off") and not info.supports("nope")


@pytest.mark.parametrize("model", [PaymentStatusResponse, PayoutStatusResponse])
def test_a_whole_card_number_in_card_mask_is_masked_in_the_repr(model):
    # a lying or careless gateway sends the whole number where a mask belongs
    status = model(payment_status=PaymentStatus.PAID, card_mask="4111111111111111")
    assert status.card_mask == "4111111111111111"  # the value stays as sent
    assert "4111111111111111" not in repr(status)
    assert "card_mask='411111******1111'" in repr(status)
    # a real mask reads the same in the repr
    masked = model(payment_status=PaymentStatus.PAID, card_mask="411111******1111")
    assert "card_mask='411111******1111'" in repr(masked)
    assert "card_mask=None" in repr(model(payment_status=PaymentStatus.PAID))


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"amount": Decimal("449.995")}, "amount"),  # a discount computed to the half-cent
        ({"amount": 0.30000000000000004}, "amount"),  # a float
        ({"amount": Decimal("0")}, "amount"),
        ({"amount": Decimal("NaN")}, "amount"),
        ({"order_id": "A-1\n"}, "order_id"),
        ({"order_id": ""}, "order_id"),
    ],
)
def test_a_request_changed_by_hand_keeps_the_builders_promises(change, field):
    built = build_payout("payment_card_rub", order_id="A-1", amount="449.99", number=CARD)
    with pytest.raises(RequestValidationError) as caught:
        attrs.evolve(built, **change)
    assert list(caught.value.errors) == [field]
    with pytest.raises(RequestValidationError):
        PayoutRequest(**{"service": "payment_card_rub", "order_id": "A-1", "amount": 1, **change})


def test_a_request_made_by_hand_is_normalised_like_a_built_one():
    request = PayoutRequest(service="payment_card_rub", order_id="A-1", amount="10", fields={})
    assert request.amount == Decimal("10.00") and str(request.amount) == "10.00"
    assert request.to_wire()["amount"] == "10.00"
