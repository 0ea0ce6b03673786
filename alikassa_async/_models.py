"""Typed requests and responses. Money is ``Decimal``; statuses are :class:`PaymentStatus`.

Requests are built and validated by :mod:`alikassa_async.services`; they hold
their wire fields already normalised and in the documented order, so the body
is encoded exactly once, by the client, from :meth:`PaymentRequest.to_wire`.

Responses keep every key the gateway sent in ``raw`` (new fields never break
parsing) and expose the documented ones as typed attributes.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import Any, ClassVar

import attrs

from ._errors import RequestValidationError, mask
from ._validation import Invalid, amount, order_id

__all__ = [
    "AccountInfo",
    "Balance",
    "HistoryPage",
    "HistoryRow",
    "PaymentCreated",
    "PaymentRequest",
    "PaymentStatus",
    "PaymentStatusResponse",
    "PayoutCreated",
    "PayoutRequest",
    "PayoutStatusResponse",
    "ServiceInfo",
]


class PaymentStatus(enum.StrEnum):
    """Status of a payment or payout. Unknown future values are kept, not fatal."""

    WAIT = "wait"
    PAID = "paid"
    CANCEL = "cancel"
    FAIL = "fail"

    @classmethod
    def _missing_(cls, value: object) -> PaymentStatus | None:
        if not isinstance(value, str):
            return None
        # A value the gateway adds later becomes a pseudo-member, not an exception.
        member = str.__new__(cls, value)
        member._name_ = "UNKNOWN"
        member._value_ = value
        return member

    @property
    def is_final(self) -> bool:
        """``paid``, ``cancel`` and ``fail`` never change again."""
        return self.value in FINAL_STATUSES

    @property
    def is_known(self) -> bool:
        return self._name_ != "UNKNOWN"


#: the statuses that never change again
FINAL_STATUSES = frozenset({"paid", "cancel", "fail"})


# ---------------------------------------------------------------------------
# Requests


def _redacted_fields(fields: Mapping[str, object]) -> dict[str, object]:
    shown: dict[str, object] = {}
    for key, value in fields.items():
        if key in {"number", "customer_phone", "card_number"} and isinstance(value, str):
            shown[key] = mask(value)
        elif key == "extra" and isinstance(value, Mapping):
            shown[key] = {k: "***" for k in value}
        else:
            shown[key] = value
    return shown


def _checked(rule: Callable[[object], Any], name: str, value: object) -> Any:
    try:
        return rule(value)
    except Invalid as exc:
        raise RequestValidationError({name: exc.messages}) from None


# The builder's rules again, as converters: a request made by hand or by attrs.evolve keeps
# the same promises (floats refused, money never rounded, order_id fit for lookups).
def _checked_amount(value: object) -> Decimal:
    result: Decimal = _checked(amount, "amount", value)
    return result


def _checked_order_id(value: object) -> str:
    result: str = _checked(order_id, "order_id", value)
    return result


@attrs.frozen(repr=False)
class _Request:
    service: str
    order_id: str = attrs.field(converter=_checked_order_id)
    amount: Decimal = attrs.field(converter=_checked_amount)
    #: every other wire field, normalised, in documented order
    fields: Mapping[str, object] = attrs.field(factory=dict)

    def to_wire(self) -> dict[str, object]:
        """The JSON object to send, in documented key order; amount as a 2-dp string."""
        wire: dict[str, object] = {}
        for key in self._ORDER:
            if key == "amount":
                wire[key] = f"{self.amount:.2f}"
            elif key == "order_id":
                wire[key] = self.order_id
            elif key == "service":
                wire[key] = self.service
            elif key in self.fields:
                wire[key] = self.fields[key]
        for key, value in self.fields.items():  # fields not in the documented list go last
            wire.setdefault(key, value)
        return wire

    _ORDER: ClassVar[tuple[str, ...]] = ()

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(service={self.service!r}, order_id={self.order_id!r}, "
            f"amount={self.amount!r}, fields={_redacted_fields(self.fields)!r})"
        )


# The documented field order (API reference §6.1 and §6.4).
PAYMENT_FIELD_ORDER: tuple[str, ...] = (
    "amount",
    "order_id",
    "service",
    "desc",
    "lifetime",
    "customer_ip",
    "customer_account",
    "customer_email",
    "customer_first_name",
    "customer_last_name",
    "customer_address",
    "customer_phone",
    "customer_post_code",
    "customer_state",
    "customer_city",
    "customer_browser_user_agent",
    "customer_browser_accept_header",
    "customer_browser_color_depth",
    "customer_browser_language",
    "customer_browser_screen_height",
    "customer_browser_screen_width",
    "customer_user_id",
    "customer_code",
    "success_redirect_id",
    "fail_redirect_id",
    "success_redirect_url",
    "fail_redirect_url",
    "notification_endpoint_id",
    "notification_endpoint_url",
)
PAYOUT_FIELD_ORDER: tuple[str, ...] = (
    "amount",
    "number",
    "order_id",
    "service",
    "customer_code",
    "bik_bank",
    "notification_endpoint_id",
    "notification_endpoint_url",
    "extra",
    "customer_phone",
    "customer_email",
    "customer_first_name",
    "customer_last_name",
    "customer_country",
)


@attrs.frozen(repr=False)
class PaymentRequest(_Request):
    """A validated ``v1/payment`` request. Build it with ``build_payment``."""

    _ORDER = PAYMENT_FIELD_ORDER


@attrs.frozen(repr=False)
class PayoutRequest(_Request):
    """A validated ``v1/payout`` request. Build it with ``build_payout``."""

    _ORDER = PAYOUT_FIELD_ORDER


# ---------------------------------------------------------------------------
# Responses


def _card_mask() -> Any:
    """A ``card_mask`` field whose repr is masked again: a gateway that sends a whole number
    here must not put it into logs and error trackers through a repr."""
    return attrs.field(default=None, repr=lambda v: repr(None if v is None else mask(str(v))))


def _raw() -> Any:
    """Every key the gateway sent, as parsed (new fields stay reachable here)."""
    return attrs.field(factory=dict, repr=False, eq=False)


@attrs.frozen
class PaymentCreated:
    """Answer to ``create_payment``: always ``wait``; send the payer to ``url``."""

    id: int
    payment_status: PaymentStatus = PaymentStatus.WAIT
    uuid: str | None = None
    url: str | None = None
    success_redirect_url: str | None = None
    #: H2H services: card number / phone / account to pay to (``cardNumber``)
    card_number: str | None = attrs.field(default=None, repr=False)
    card_holder_name: str | None = attrs.field(default=None, repr=False)
    bank: str | None = None
    order_id: str | None = None
    raw: Mapping[str, Any] = _raw()


@attrs.frozen
class PaymentStatusResponse:
    payment_status: PaymentStatus
    id: int | None = None
    order_id: str | None = None
    url: str | None = None
    card_mask: str | None = _card_mask()
    amount: Decimal | None = None
    payment_amount: Decimal | None = None
    hold_amount: Decimal | None = None
    hold_at: str | None = None
    account_payment_amount: Decimal | None = None
    commission_amount: Decimal | None = None
    service_code: str | None = None
    account_old_balance: Decimal | None = None
    account_new_balance: Decimal | None = None
    #: paid for less than ``amount``: the gateway's ``is_partial_payment`` when it sends
    #: one, else derived (``paid`` and ``payment_amount < amount``)
    is_partial_payment: bool = attrs.field(
        default=attrs.Factory(lambda self: _paid_partially(self), takes_self=True)
    )
    raw: Mapping[str, Any] = _raw()

    @property
    def is_final(self) -> bool:
        return self.payment_status.is_final


def _paid_partially(status: PaymentStatusResponse) -> bool:
    return (
        status.payment_status == PaymentStatus.PAID
        and status.amount is not None
        and status.payment_amount is not None
        and status.payment_amount < status.amount
    )


@attrs.frozen
class PayoutCreated:
    """Answer to ``create_payout``: always ``wait``; the gateway does not echo order_id."""

    id: int
    payment_status: PaymentStatus = PaymentStatus.WAIT
    order_id: str | None = None
    raw: Mapping[str, Any] = _raw()


@attrs.frozen
class PayoutStatusResponse:
    payment_status: PaymentStatus
    id: int | None = None
    order_id: str | None = None
    card_mask: str | None = _card_mask()
    amount: Decimal | None = None
    payment_amount: Decimal | None = None
    is_partial_payment: bool | None = None
    account_payment_amount: Decimal | None = None
    commission_amount: Decimal | None = None
    service_code: str | None = None
    rrn: str | None = None
    account_old_balance: Decimal | None = None
    account_new_balance: Decimal | None = None
    raw: Mapping[str, Any] = _raw()

    @property
    def is_final(self) -> bool:
        return self.payment_status.is_final


@attrs.frozen
class HistoryRow:
    id: int | None = None
    order_id: str | None = None
    status: PaymentStatus | None = None
    amount: Decimal | None = None
    commission_amount: Decimal | None = None
    currency: str | None = None
    created_at: str | None = None
    raw: Mapping[str, Any] = _raw()


@attrs.frozen
class HistoryPage:
    rows: list[HistoryRow] = attrs.field(factory=list)
    current_page: int | None = None
    last_page: int | None = None
    per_page: int | None = None
    total: int | None = None
    has_next: bool = False
    raw: Mapping[str, Any] = _raw()


@attrs.frozen
class Balance:
    currency: str | None = None
    balance: Decimal | None = None
    hold: Decimal | None = None
    rolling_reserve: Decimal | None = None
    pending_payouts: Decimal | None = None
    raw: Mapping[str, Any] = _raw()


@attrs.frozen
class ServiceInfo:
    service_code: str
    method: str | None = None
    currency: str | None = None
    status: str | None = None
    raw: Mapping[str, Any] = _raw()

    @property
    def is_active(self) -> bool:
        return self.status in (None, "active")


@attrs.frozen
class AccountInfo:
    is_allowed_payment: bool | None = None
    is_allowed_payout: bool | None = None
    payments: list[ServiceInfo] = attrs.field(factory=list)
    payouts: list[ServiceInfo] = attrs.field(factory=list)
    raw: Mapping[str, Any] = _raw()

    def supports(self, service_code: str, direction: str | None = None) -> bool:
        """Whether ``service_code`` is enabled and active on this account.

        ``direction`` ("payment" or "payout") restricts the lookup; by default
        both lists are searched (the vendor's own example lists a payment code
        under ``payouts``).
        """
        lists = {"payment": self.payments, "payout": self.payouts}
        pools = [lists[direction]] if direction else list(lists.values())
        return any(s.service_code == service_code and s.is_active for p in pools for s in p)
