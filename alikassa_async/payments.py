"""Named payment builders: one typed, keyword-only function per service family.

Each one fills in the service code and hands every field to the same registry
as :func:`~alikassa_async.build_payment`, so a rule lives in one place. A
missing required field is a ``mypy`` error before the code runs and a
:class:`~alikassa_async.RequestValidationError` (never a ``TypeError``) when it
does run.

>>> from alikassa_async import payments
>>> req = payments.h2h_sbp(order_id="A-2", amount="1500", customer_ip="18.191.80.10",
...                        customer_user_id="u-42")
>>> req.service
'payment_card_sbp_rub_card'

Optional fields are the documented ones (``desc``, ``lifetime``, the
``customer_*`` details, redirect and notification ids/URLs); a field the SDK
does not know yet goes in ``other_fields={"name": "value"}``.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from decimal import Decimal
from typing import Literal, TypedDict, Unpack

from ._models import PaymentRequest
from .services import build_named, validation_only

__all__ = [
    "Amount",
    "PaymentOptions",
    "bdt_wallet",
    "card_form",
    "card_hpp",
    "h2h_card",
    "h2h_sbp",
    "idr",
    "myr",
    "php",
    "pkr",
    "sberpay",
    "sbp_form",
    "thb",
    "virtual_account_form",
    "virtual_account_h2h",
    "vnd",
]

#: money in: Decimal, int or a decimal string; never float
Amount = Decimal | int | str
IP = str | ipaddress.IPv4Address | ipaddress.IPv6Address


class PaymentOptions(TypedDict, total=False):
    """Optional ``v1/payment`` fields every payment service accepts (API reference §6.1)."""

    desc: str
    lifetime: int
    customer_account: str
    customer_email: str
    customer_address: str
    customer_phone: str
    customer_post_code: int | str
    customer_state: str
    customer_city: str
    customer_browser_accept_header: str
    customer_browser_color_depth: int
    customer_browser_language: str
    customer_browser_screen_height: int
    customer_browser_screen_width: int
    success_redirect_id: int
    fail_redirect_id: int
    success_redirect_url: str
    fail_redirect_url: str
    notification_endpoint_id: int
    notification_endpoint_url: str
    other_fields: Mapping[str, str | int]


_OPTIONS = frozenset(PaymentOptions.__optional_keys__)


def _payment(
    service: str,
    label: str,
    options: Mapping[str, object],
    *,
    choice: tuple[str, object, tuple[str, ...]] | None = None,
    renamed: Mapping[str, str] | None = None,
    **fields: object,
) -> PaymentRequest:
    """Build through the registry. ``choice`` = (param, value, allowed) picking the code."""
    errors: dict[str, list[str]] = {}
    if choice is not None:
        param, value, allowed = choice
        if value not in allowed:
            errors[param] = [f"must be one of {', '.join(allowed)}"]
    code, order_id, amount, wire = build_named(
        "payment", service, label, fields, options, _OPTIONS, errors, renamed
    )
    return PaymentRequest(service=code, order_id=order_id, amount=amount, fields=wire)


def _coded(template: str, value: object, allowed: tuple[str, ...]) -> str:
    """The service code for a method/currency choice (the first one if the choice is bad)."""
    picked = value if isinstance(value, str) and value in allowed else allowed[0]
    return template.format(picked)


# -- Russia, provider "RU 4": customer_user_id is required everywhere ------------------


@validation_only
def card_form(
    *,
    order_id: str,
    amount: Amount,
    customer_ip: IP,
    customer_user_id: str,
    customer_first_name: str | None = None,
    customer_last_name: str | None = None,
    customer_browser_user_agent: str | None = None,
    **options: Unpack[PaymentOptions],
) -> PaymentRequest:
    """Card-number transfer on AliKassa's hosted page (``payment_card_number_rub_hpp``).

    >>> card_form(order_id="A-1", amount="500", customer_ip="18.191.80.10",
    ...           customer_user_id="u-42").service
    'payment_card_number_rub_hpp'
    """
    return _payment(
        "payment_card_number_rub_hpp",
        "payments.card_form",
        options,
        order_id=order_id,
        amount=amount,
        customer_ip=customer_ip,
        customer_user_id=customer_user_id,
        customer_first_name=customer_first_name,
        customer_last_name=customer_last_name,
        customer_browser_user_agent=customer_browser_user_agent,
    )


@validation_only
def h2h_card(
    *,
    order_id: str,
    amount: Amount,
    customer_ip: IP,
    customer_user_id: str,
    customer_code: str,
    service: Literal[
        "payment_card_number_card", "payment_card_number_rub_card"
    ] = "payment_card_number_card",
    customer_first_name: str | None = None,
    customer_last_name: str | None = None,
    customer_browser_user_agent: str | None = None,
    **options: Unpack[PaymentOptions],
) -> PaymentRequest:
    """H2H card requisites: the answer carries the card number to pay to.

    ``customer_code`` is the payer's bank, as an SBP id (``SbpBank.SBERBANK``) or
    a slug (``"sberbank"``): both forms are documented. ``service`` picks the
    code your account has (both spellings exist, API reference §13.7).

    >>> h2h_card(order_id="A-3", amount=700, customer_ip="18.191.80.10",
    ...          customer_user_id="u-42", customer_code="sberbank").service
    'payment_card_number_card'
    """
    allowed = ("payment_card_number_card", "payment_card_number_rub_card")
    return _payment(
        _coded("{}", service, allowed),
        "payments.h2h_card",
        options,
        choice=("service", service, allowed),
        order_id=order_id,
        amount=amount,
        customer_ip=customer_ip,
        customer_user_id=customer_user_id,
        customer_code=customer_code,
        customer_first_name=customer_first_name,
        customer_last_name=customer_last_name,
        customer_browser_user_agent=customer_browser_user_agent,
    )


@validation_only
def h2h_sbp(
    *,
    order_id: str,
    amount: Amount,
    customer_ip: IP,
    customer_user_id: str,
    customer_code: str | None = None,
    customer_first_name: str | None = None,
    customer_last_name: str | None = None,
    customer_browser_user_agent: str | None = None,
    **options: Unpack[PaymentOptions],
) -> PaymentRequest:
    """SBP transfer by phone, H2H (``payment_card_sbp_rub_card``); optional SBP bank id.

    >>> h2h_sbp(order_id="A-4", amount="99.90", customer_ip="18.191.80.10",
    ...         customer_user_id="u-42", customer_code="100000000111").fields["customer_code"]
    '100000000111'
    """
    return _payment(
        "payment_card_sbp_rub_card",
        "payments.h2h_sbp",
        options,
        order_id=order_id,
        amount=amount,
        customer_ip=customer_ip,
        customer_user_id=customer_user_id,
        customer_code=customer_code,
        customer_first_name=customer_first_name,
        customer_last_name=customer_last_name,
        customer_browser_user_agent=customer_browser_user_agent,
    )


@validation_only
def sbp_form(
    *,
    order_id: str,
    amount: Amount,
    customer_ip: IP,
    customer_user_id: str,
    customer_code: str | None = None,
    customer_first_name: str | None = None,
    customer_last_name: str | None = None,
    customer_browser_user_agent: str | None = None,
    **options: Unpack[PaymentOptions],
) -> PaymentRequest:
    """SBP on the hosted page (``payment_card_sbp_rub_hpp``; older accounts only).

    >>> sbp_form(order_id="A-5", amount=300, customer_ip="::1",
    ...          customer_user_id="u-42").service
    'payment_card_sbp_rub_hpp'
    """
    return _payment(
        "payment_card_sbp_rub_hpp",
        "payments.sbp_form",
        options,
        order_id=order_id,
        amount=amount,
        customer_ip=customer_ip,
        customer_user_id=customer_user_id,
        customer_code=customer_code,
        customer_first_name=customer_first_name,
        customer_last_name=customer_last_name,
        customer_browser_user_agent=customer_browser_user_agent,
    )


@validation_only
def sberpay(
    *,
    order_id: str,
    amount: Amount,
    customer_ip: IP,
    customer_user_id: str,
    customer_first_name: str | None = None,
    customer_last_name: str | None = None,
    customer_browser_user_agent: str | None = None,
    **options: Unpack[PaymentOptions],
) -> PaymentRequest:
    """SberPay, H2H (``payment_card_sberpay_rub_card``): the answer has a redirect ``url``.

    >>> sberpay(order_id="A-6", amount=300, customer_ip="18.191.80.10",
    ...         customer_user_id="u-42").service
    'payment_card_sberpay_rub_card'
    """
    return _payment(
        "payment_card_sberpay_rub_card",
        "payments.sberpay",
        options,
        order_id=order_id,
        amount=amount,
        customer_ip=customer_ip,
        customer_user_id=customer_user_id,
        customer_first_name=customer_first_name,
        customer_last_name=customer_last_name,
        customer_browser_user_agent=customer_browser_user_agent,
    )


@validation_only
def virtual_account_form(
    *,
    order_id: str,
    amount: Amount,
    customer_ip: IP,
    customer_user_id: str,
    customer_first_name: str | None = None,
    customer_last_name: str | None = None,
    customer_browser_user_agent: str | None = None,
    **options: Unpack[PaymentOptions],
) -> PaymentRequest:
    """Payment-account transfer on the hosted page (``virtual_account_rub_hpp``).

    >>> virtual_account_form(order_id="A-7", amount=300, customer_ip="18.191.80.10",
    ...                      customer_user_id="u-42").service
    'virtual_account_rub_hpp'
    """
    return _payment(
        "virtual_account_rub_hpp",
        "payments.virtual_account_form",
        options,
        order_id=order_id,
        amount=amount,
        customer_ip=customer_ip,
        customer_user_id=customer_user_id,
        customer_first_name=customer_first_name,
        customer_last_name=customer_last_name,
        customer_browser_user_agent=customer_browser_user_agent,
    )


@validation_only
def virtual_account_h2h(
    *,
    order_id: str,
    amount: Amount,
    customer_ip: IP,
    customer_user_id: str,
    customer_first_name: str | None = None,
    customer_last_name: str | None = None,
    customer_browser_user_agent: str | None = None,
    **options: Unpack[PaymentOptions],
) -> PaymentRequest:
    """Payment-account requisites, H2H (``virtual_account_rub_card``; no ``url``).

    >>> virtual_account_h2h(order_id="A-8", amount=300, customer_ip="18.191.80.10",
    ...                     customer_user_id="u-42").service
    'virtual_account_rub_card'
    """
    return _payment(
        "virtual_account_rub_card",
        "payments.virtual_account_h2h",
        options,
        order_id=order_id,
        amount=amount,
        customer_ip=customer_ip,
        customer_user_id=customer_user_id,
        customer_first_name=customer_first_name,
        customer_last_name=customer_last_name,
        customer_browser_user_agent=customer_browser_user_agent,
    )


# -- Generic hosted card form -------------------------------------------------------


@validation_only
def card_hpp(
    *,
    order_id: str,
    amount: Amount,
    customer_ip: IP,
    customer_browser_user_agent: str,
    currency: Literal["RUB", "UAH"] = "RUB",
    customer_user_id: str | None = None,
    customer_first_name: str | None = None,
    customer_last_name: str | None = None,
    **options: Unpack[PaymentOptions],
) -> PaymentRequest:
    """Hosted card form (``payment_card_rub_hpp`` / ``payment_card_uah_hpp``).

    Send the payer's real browser details (``customer_browser_*``): the card
    form's 3-DS check uses them.

    >>> card_hpp(order_id="A-9", amount=300, customer_ip="18.191.80.10", currency="UAH",
    ...          customer_browser_user_agent="Mozilla/5.0").service
    'payment_card_uah_hpp'
    """
    allowed = ("RUB", "UAH")
    code = _coded("payment_card_{}_hpp", currency, allowed).lower()
    return _payment(
        code,
        "payments.card_hpp",
        options,
        choice=("currency", currency, allowed),
        order_id=order_id,
        amount=amount,
        customer_ip=customer_ip,
        customer_browser_user_agent=customer_browser_user_agent,
        customer_user_id=customer_user_id,
        customer_first_name=customer_first_name,
        customer_last_name=customer_last_name,
    )


# -- Asia: hosted pages, customer_code picks the bank or wallet ------------------------


@validation_only
def bdt_wallet(
    *,
    wallet: Literal["bkash", "nagad", "rocket"],
    order_id: str,
    amount: Amount,
    customer_ip: IP,
    customer_user_id: str | None = None,
    customer_first_name: str | None = None,
    customer_last_name: str | None = None,
    customer_browser_user_agent: str | None = None,
    **options: Unpack[PaymentOptions],
) -> PaymentRequest:
    """Bangladesh wallets (``payment_card_bdt_hpp``); ``wallet`` is sent as ``customer_code``.

    >>> bdt_wallet(wallet="bkash", order_id="B-1", amount=1500,
    ...            customer_ip="103.4.145.2").fields["customer_code"]
    'bkash'
    """
    return _payment(
        "payment_card_bdt_hpp",
        "payments.bdt_wallet",
        options,
        renamed={"customer_code": "wallet"},
        order_id=order_id,
        amount=amount,
        customer_ip=customer_ip,
        customer_code=wallet,
        customer_user_id=customer_user_id,
        customer_first_name=customer_first_name,
        customer_last_name=customer_last_name,
        customer_browser_user_agent=customer_browser_user_agent,
    )


@validation_only
def pkr(
    *,
    order_id: str,
    amount: Amount,
    customer_ip: IP,
    customer_code: str,
    customer_user_id: str | None = None,
    customer_first_name: str | None = None,
    customer_last_name: str | None = None,
    customer_browser_user_agent: str | None = None,
    **options: Unpack[PaymentOptions],
) -> PaymentRequest:
    """Pakistan (``payment_card_pkr_hpp``); ``customer_code`` is the deposit bank code.

    >>> pkr(order_id="K-1", amount=5000, customer_ip="39.32.0.1",
    ...     customer_code="JAZZCASH").service
    'payment_card_pkr_hpp'
    """
    return _payment(
        "payment_card_pkr_hpp",
        "payments.pkr",
        options,
        order_id=order_id,
        amount=amount,
        customer_ip=customer_ip,
        customer_code=customer_code,
        customer_user_id=customer_user_id,
        customer_first_name=customer_first_name,
        customer_last_name=customer_last_name,
        customer_browser_user_agent=customer_browser_user_agent,
    )


@validation_only
def php(
    *,
    method: Literal["online_banking", "e_wallet"],
    order_id: str,
    amount: Amount,
    customer_ip: IP,
    customer_code: str,
    customer_user_id: str | None = None,
    customer_first_name: str | None = None,
    customer_last_name: str | None = None,
    customer_browser_user_agent: str | None = None,
    **options: Unpack[PaymentOptions],
) -> PaymentRequest:
    """Philippines (``online_banking_php_hpp``, ``e_wallet_php_hpp``).

    >>> php(method="e_wallet", order_id="H-1", amount=500, customer_ip="49.145.0.1",
    ...     customer_code="GCASH").service
    'e_wallet_php_hpp'
    """
    allowed = ("online_banking", "e_wallet")
    return _payment(
        _coded("{}_php_hpp", method, allowed),
        "payments.php",
        options,
        choice=("method", method, allowed),
        order_id=order_id,
        amount=amount,
        customer_ip=customer_ip,
        customer_code=customer_code,
        customer_user_id=customer_user_id,
        customer_first_name=customer_first_name,
        customer_last_name=customer_last_name,
        customer_browser_user_agent=customer_browser_user_agent,
    )


@validation_only
def idr(
    *,
    method: Literal["online_banking", "qr_code", "virtual_account", "local_bank_transfer"],
    order_id: str,
    amount: Amount,
    customer_ip: IP,
    customer_code: str,
    customer_first_name: str,
    customer_last_name: str,
    customer_user_id: str | None = None,
    customer_browser_user_agent: str | None = None,
    **options: Unpack[PaymentOptions],
) -> PaymentRequest:
    """Indonesia (``<method>_idr_hpp``); the payer's first and last name are required.

    >>> idr(method="qr_code", order_id="I-1", amount=150000, customer_ip="36.64.0.1",
    ...     customer_code="OVO", customer_first_name="Budi", customer_last_name="Santoso").service
    'qr_code_idr_hpp'
    """
    allowed = ("online_banking", "qr_code", "virtual_account", "local_bank_transfer")
    return _payment(
        _coded("{}_idr_hpp", method, allowed),
        "payments.idr",
        options,
        choice=("method", method, allowed),
        order_id=order_id,
        amount=amount,
        customer_ip=customer_ip,
        customer_code=customer_code,
        customer_first_name=customer_first_name,
        customer_last_name=customer_last_name,
        customer_user_id=customer_user_id,
        customer_browser_user_agent=customer_browser_user_agent,
    )


@validation_only
def myr(
    *,
    method: Literal["online_banking", "qr_code", "e_wallet"],
    order_id: str,
    amount: Amount,
    customer_ip: IP,
    customer_code: str,
    customer_first_name: str,
    customer_last_name: str,
    customer_user_id: str | None = None,
    customer_browser_user_agent: str | None = None,
    **options: Unpack[PaymentOptions],
) -> PaymentRequest:
    """Malaysia (``<method>_myr_hpp``); the payer's first and last name are required.

    >>> myr(method="e_wallet", order_id="M-1", amount=50, customer_ip="60.48.0.1",
    ...     customer_code="TNG", customer_first_name="Aminah", customer_last_name="Ali").service
    'e_wallet_myr_hpp'
    """
    allowed = ("online_banking", "qr_code", "e_wallet")
    return _payment(
        _coded("{}_myr_hpp", method, allowed),
        "payments.myr",
        options,
        choice=("method", method, allowed),
        order_id=order_id,
        amount=amount,
        customer_ip=customer_ip,
        customer_code=customer_code,
        customer_first_name=customer_first_name,
        customer_last_name=customer_last_name,
        customer_user_id=customer_user_id,
        customer_browser_user_agent=customer_browser_user_agent,
    )


@validation_only
def thb(
    *,
    method: Literal["online_banking", "qr_code", "local_bank_transfer"],
    order_id: str,
    amount: Amount,
    customer_ip: IP,
    customer_code: str,
    customer_user_id: str | None = None,
    customer_first_name: str | None = None,
    customer_last_name: str | None = None,
    customer_browser_user_agent: str | None = None,
    **options: Unpack[PaymentOptions],
) -> PaymentRequest:
    """Thailand (``<method>_thb_hpp``).

    >>> thb(method="qr_code", order_id="T-1", amount=300, customer_ip="1.46.0.1",
    ...     customer_code="PROMPTPAY").service
    'qr_code_thb_hpp'
    """
    allowed = ("online_banking", "qr_code", "local_bank_transfer")
    return _payment(
        _coded("{}_thb_hpp", method, allowed),
        "payments.thb",
        options,
        choice=("method", method, allowed),
        order_id=order_id,
        amount=amount,
        customer_ip=customer_ip,
        customer_code=customer_code,
        customer_user_id=customer_user_id,
        customer_first_name=customer_first_name,
        customer_last_name=customer_last_name,
        customer_browser_user_agent=customer_browser_user_agent,
    )


@validation_only
def vnd(
    *,
    method: Literal["online_banking", "qr_code", "e_wallet", "local_bank_transfer"],
    order_id: str,
    amount: Amount,
    customer_ip: IP,
    customer_code: str,
    customer_user_id: str | None = None,
    customer_first_name: str | None = None,
    customer_last_name: str | None = None,
    customer_browser_user_agent: str | None = None,
    **options: Unpack[PaymentOptions],
) -> PaymentRequest:
    """Vietnam (``<method>_vnd_hpp``).

    >>> vnd(method="e_wallet", order_id="V-1", amount=200000, customer_ip="14.160.0.1",
    ...     customer_code="MOMO").service
    'e_wallet_vnd_hpp'
    """
    allowed = ("online_banking", "qr_code", "e_wallet", "local_bank_transfer")
    return _payment(
        _coded("{}_vnd_hpp", method, allowed),
        "payments.vnd",
        options,
        choice=("method", method, allowed),
        order_id=order_id,
        amount=amount,
        customer_ip=customer_ip,
        customer_code=customer_code,
        customer_user_id=customer_user_id,
        customer_first_name=customer_first_name,
        customer_last_name=customer_last_name,
        customer_browser_user_agent=customer_browser_user_agent,
    )
