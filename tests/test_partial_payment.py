"""``PaymentStatusResponse.is_partial_payment``: the gateway's flag, else derived."""

from __future__ import annotations

from decimal import Decimal

import pytest

from alikassa_async import AliKassaClient, PaymentStatus, PaymentStatusResponse, build_payment
from alikassa_async._converters import structure


@pytest.mark.parametrize(
    ("status", "amount", "paid", "partial"),
    [
        ("paid", "100.00", "50.00", True),
        ("paid", "100.00", "100.00", False),
        ("paid", "350.00", "300.00", True),  # the API reference's status example
        ("paid", "100.00", "120.00", False),  # paid more: not partial
        ("paid", "100.00", None, False),  # nothing to compare
        ("wait", "100.00", "50.00", False),  # not paid (yet): nothing partial about it
        ("cancel", "100.00", "0.00", False),
    ],
)
def test_is_partial_payment_is_derived_from_a_paid_amount_below_the_amount(
    status: str, amount: str, paid: str | None, partial: bool
) -> None:
    answer = structure(
        PaymentStatusResponse,
        {"payment_status": status, "id": 7, "amount": amount, "payment_amount": paid},
    )
    assert answer.is_partial_payment is partial


@pytest.mark.parametrize(
    ("sent", "partial"),
    [
        (True, True),
        (False, False),
        ("1", True),
        ("0", False),
        ("true", True),
        (0, False),
    ],
)
def test_the_gateways_own_flag_wins_over_the_derivation(sent: object, partial: bool) -> None:
    # The gateway knows better (e.g. a refund, a hold): its flag is never second-guessed.
    full = structure(
        PaymentStatusResponse,
        {
            "payment_status": "paid",
            "amount": "100.00",
            "payment_amount": "100.00",
            "is_partial_payment": sent,
        },
    )
    short = structure(
        PaymentStatusResponse,
        {
            "payment_status": "paid",
            "amount": "100.00",
            "payment_amount": "10.00",
            "is_partial_payment": sent,
        },
    )
    assert full.is_partial_payment is partial and short.is_partial_payment is partial


def test_a_null_flag_falls_back_to_the_derivation() -> None:
    answer = structure(
        PaymentStatusResponse,
        {
            "payment_status": "paid",
            "amount": "100.00",
            "payment_amount": "40.00",
            "is_partial_payment": None,
        },
    )
    assert answer.is_partial_payment is True


def test_built_by_hand_it_is_derived_too() -> None:
    answer = PaymentStatusResponse(
        PaymentStatus.PAID, amount=Decimal("10"), payment_amount=Decimal("9.99")
    )
    assert answer.is_partial_payment is True
    assert PaymentStatusResponse(PaymentStatus.PAID).is_partial_payment is False


@pytest.mark.parametrize(
    ("order_id", "amount", "partial"),
    [
        ("partial-1", "100.00", True),  # the sandbox's partial- prefix: 50.00 of 100.00
        ("A-2", "100.94", True),  # cents .94: half the amount
        ("A-3", "100.00", False),
    ],
)
async def test_the_sandboxs_partial_payment_is_reported_partial(
    alikassa_client: AliKassaClient, order_id: str, amount: str, partial: bool
) -> None:
    created = await alikassa_client.create_payment(
        build_payment(
            "payment_card_number_rub_hpp",
            order_id=order_id,
            amount=amount,
            customer_ip="18.191.80.10",
            customer_user_id="u-42",
        )
    )
    status = await alikassa_client.wait_for_payment(id=created.id, interval=0.02)
    assert status.payment_status == PaymentStatus.PAID
    assert status.is_partial_payment is partial
    assert "is_partial_payment" not in status.raw  # derived: the gateway does not send it
    if partial:
        assert status.payment_amount is not None and status.amount is not None
        assert status.payment_amount < status.amount
