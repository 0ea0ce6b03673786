"""Named payout builders: one typed, keyword-only function per payout service.

They fill in the service code and send every field through the registry used
by :func:`~alikassa_async.build_payout`. Recipient numbers are checked before
any money moves: card numbers by length and Luhn, SBP phones as ``7XXXXXXXXXX``,
payment accounts as 20 digits with a 9-digit BIC.

>>> from alikassa_async import payouts
>>> from alikassa_async.services import SbpBank
>>> req = payouts.sbp(order_id="P-1", amount="3000", number="+79031112233",
...                   customer_code=SbpBank.SBERBANK)
>>> req.to_wire()["number"]
'79031112233'
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from typing import TypedDict, Unpack

from ._models import PayoutRequest
from ._validation import EUR_CARD_EXTRA_FIELDS, not_given
from .payments import Amount
from .services import build_named, validation_only

__all__ = ["Amount", "PayoutOptions", "card", "card_eur", "sbp", "virtual_account"]


class PayoutOptions(TypedDict, total=False):
    """Optional ``v1/payout`` fields (API reference §6.4)."""

    notification_endpoint_id: int
    notification_endpoint_url: str
    customer_phone: str
    customer_email: str
    customer_first_name: str
    customer_last_name: str
    customer_country: str
    #: "optional parameters to increase conversion" (``extra.*``)
    extra: Mapping[str, str | int]
    other_fields: Mapping[str, str | int]


_OPTIONS = frozenset(PayoutOptions.__optional_keys__)


def _payout(
    service: str,
    label: str,
    options: Mapping[str, object],
    errors: dict[str, list[str]] | None = None,
    **fields: object,
) -> PayoutRequest:
    code, order_id, amount, wire = build_named(
        "payout", service, label, fields, options, _OPTIONS, errors
    )
    return PayoutRequest(service=code, order_id=order_id, amount=amount, fields=wire)


@validation_only
def card(
    *,
    order_id: str,
    amount: Amount,
    number: str,
    customer_code: str | None = None,
    **options: Unpack[PayoutOptions],
) -> PayoutRequest:
    """Card payout in RUB (``payment_card_rub``); ``number`` must pass the Luhn check.

    >>> card(order_id="P-2", amount="1000.44", number="4111111111111111").service
    'payment_card_rub'
    """
    return _payout(
        "payment_card_rub",
        "payouts.card",
        options,
        order_id=order_id,
        amount=amount,
        number=number,
        customer_code=customer_code,
    )


@validation_only
def sbp(
    *,
    order_id: str,
    amount: Amount,
    number: str,
    customer_code: str,
    **options: Unpack[PayoutOptions],
) -> PayoutRequest:
    """SBP payout to a phone (``payment_card_sbp_rub``).

    ``number`` is ``7XXXXXXXXXX`` (a leading ``+`` is dropped); ``customer_code``
    is the recipient's bank as an SBP id, see :class:`~alikassa_async.services.SbpBank`.

    >>> sbp(order_id="P-3", amount=3000, number="79031112233",
    ...     customer_code="100000000004").fields["customer_code"]
    '100000000004'
    """
    return _payout(
        "payment_card_sbp_rub",
        "payouts.sbp",
        options,
        order_id=order_id,
        amount=amount,
        number=number,
        customer_code=customer_code,
    )


@validation_only
def virtual_account(
    *,
    order_id: str,
    amount: Amount,
    number: str,
    customer_code: str,
    bik_bank: str,
    **options: Unpack[PayoutOptions],
) -> PayoutRequest:
    """Payout to a Russian payment account (``virtual_account_rub``).

    ``number`` is the 20-digit account, ``bik_bank`` the 9-digit BIC (a string:
    it starts with 0), ``customer_code`` the bank (SBP id or slug).

    >>> virtual_account(order_id="P-4", amount="3000.00", number="40817120273018899310",
    ...                 customer_code="100000000111", bik_bank="041351902").service
    'virtual_account_rub'
    """
    return _payout(
        "virtual_account_rub",
        "payouts.virtual_account",
        options,
        order_id=order_id,
        amount=amount,
        number=number,
        customer_code=customer_code,
        bik_bank=bik_bank,
    )


@validation_only
def card_eur(
    *,
    order_id: str,
    amount: Amount,
    number: str,
    card_exp_year: str,
    card_exp_month: str,
    card_holder: str,
    card_country: str,
    card_recipient_birth_date: str | datetime.date,
    service: str = "payment_card_eur",
    **options: Unpack[PayoutOptions],
) -> PayoutRequest:
    """Card payout from an EUR account: the five ``extra.*`` card fields are required.

    The EUR service code is not published; ``payment_card_eur`` follows the
    naming grammar. Pass ``service=`` with the code ``account_info()`` lists.

    >>> card_eur(order_id="E-1", amount="25.00", number="4111111111111111",
    ...          card_exp_year="29", card_exp_month="01", card_holder="JANE DOE",
    ...          card_country="UA", card_recipient_birth_date="1999-12-15").to_wire()["extra"]
    {'card_exp_year': '29', 'card_exp_month': '01', 'card_holder': 'JANE DOE', \
'card_country': 'UA', 'card_recipient_birth_date': '1999-12-15'}
    """
    extra: dict[str, object] = {
        "card_exp_year": card_exp_year,
        "card_exp_month": card_exp_month,
        "card_holder": card_holder,
        "card_country": card_country,
        "card_recipient_birth_date": card_recipient_birth_date,
    }
    errors: dict[str, list[str]] = {}
    rest = dict(options)
    more = rest.pop("extra", None)
    if isinstance(more, Mapping):
        for key, value in more.items():
            if not not_given(extra.get(key)):
                errors.setdefault(f"extra.{key}", []).append("given twice")
            else:
                extra[key] = value
    elif more is not None:
        errors["extra"] = ["must be a mapping of field -> value"]
    for key in EUR_CARD_EXTRA_FIELDS:  # also when service= names a code the SDK does not know
        if not_given(extra[key]):
            errors.setdefault(f"extra.{key}", []).append("is required for card payouts in EUR")
    return _payout(
        service,
        "payouts.card_eur",
        rest,
        errors,
        order_id=order_id,
        amount=amount,
        number=number,
        extra=extra,
    )
