"""What the sandbox accepts: the raw JSON of each request, checked field by field.

This is an independent reading of the API reference (§6, §7), deliberately not
shared with the SDK's own registry (:mod:`alikassa_async.services`): the sandbox
is a second opinion, so a mistake in one shows up against the other.

Errors come back the way a Laravel backend reports them (§4):
``{"field": ["The field must be a string."], ...}``. ``""`` and ``null`` count as
"not given" (Laravel's ConvertEmptyStringsToNull); fields nobody documented are
ignored, as Laravel does.

>>> validate_payment({"amount": "1.5x"}, currency="RUB", enabled=lambda code: True)["amount"]
['The amount must be a number.']
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Iterable, Mapping
from datetime import date
from decimal import Decimal, InvalidOperation
from typing import Any, Literal

import attrs

__all__ = [
    "PAYMENT_FIELDS",
    "PAYOUT_FIELDS",
    "SERVICE_RULES",
    "ServiceRule",
    "parse_amount",
    "validate_history",
    "validate_lookup",
    "validate_payment",
    "validate_payout",
]

#: (attribute label, value) -> an error message, or None when the value passes
Check = Callable[[str, Any], str | None]
Errors = dict[str, list[str]]
Direction = Literal["payment", "payout"]

MAX_AMOUNT = Decimal("999999999.99")  # decimal (11.2)
_NUMERIC = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)")
_EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")
_URL = re.compile(r"https?://[^\s/?#]+[^\s]*", re.IGNORECASE)


def _label(field: str) -> str:
    return field.replace("_", " ")


def _is_int(value: object) -> bool:
    # Laravel's "integer" passes JSON integers and strings of digits, never booleans.
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return True
    return isinstance(value, str) and re.fullmatch(r"[+-]?\d+", value) is not None


def string(max_len: int) -> Check:
    def check(label: str, value: Any) -> str | None:
        if not isinstance(value, str):
            return f"The {label} must be a string."
        if len(value) > max_len:
            return f"The {label} must not be greater than {max_len} characters."
        return None

    return check


def size(length: int) -> Check:
    def check(label: str, value: Any) -> str | None:
        if not isinstance(value, str):
            return f"The {label} must be a string."
        if len(value) != length:
            return f"The {label} must be {length} characters."
        return None

    return check


def integer(minimum: int | None = None, maximum: int | None = None) -> Check:
    def check(label: str, value: Any) -> str | None:
        if not _is_int(value):
            return f"The {label} must be an integer."
        number = int(value)
        if minimum is not None and maximum is not None and not minimum <= number <= maximum:
            return f"The {label} must be between {minimum} and {maximum}."
        if minimum is not None and number < minimum:
            return f"The {label} must be at least {minimum}."
        if maximum is not None and number > maximum:
            return f"The {label} must not be greater than {maximum}."
        return None

    return check


def digits(low: int, high: int | None = None) -> Check:
    high = low if high is None else high

    def check(label: str, value: Any) -> str | None:
        text = str(value) if _is_int(value) else value
        if not isinstance(text, str) or not text.isascii() or not text.isdigit():
            return f"The {label} must be a string of digits."
        if not low <= len(text) <= high:
            if low == high:
                return f"The {label} must be {low} digits."
            return f"The {label} must be between {low} and {high} digits."
        return None

    return check


def regex(pattern: str) -> Check:
    compiled = re.compile(pattern)

    def check(label: str, value: Any) -> str | None:
        if not isinstance(value, str):
            return f"The {label} must be a string."
        if compiled.fullmatch(value) is None:
            return f"The {label} format is invalid."
        return None

    return check


def one_of(*allowed: str) -> Check:
    def check(label: str, value: Any) -> str | None:
        return None if value in allowed else f"The selected {label} is invalid."

    return check


def ip_address(label: str, value: Any) -> str | None:
    try:
        ipaddress.ip_address(value if isinstance(value, str) else "")
    except ValueError:
        return f"The {label} must be a valid IP address."
    return None


def email(label: str, value: Any) -> str | None:
    if not isinstance(value, str) or not _EMAIL.fullmatch(value):
        return f"The {label} must be a valid email address."
    if len(value) > 50:
        return f"The {label} must not be greater than 50 characters."
    return None


def url(label: str, value: Any) -> str | None:
    if not isinstance(value, str) or not _URL.fullmatch(value):
        return f"The {label} must be a valid URL."
    if len(value) > 255:
        return f"The {label} must not be greater than 255 characters."
    return None


def ymd(label: str, value: Any) -> str | None:
    try:
        if not isinstance(value, str) or len(value) != 10:
            raise ValueError
        date.fromisoformat(value)
    except ValueError:
        return f"The {label} does not match the format Y-m-d."
    return None


def parse_amount(value: Any) -> Decimal | None:
    """The amount as Decimal when it is a JSON number or numeric string, else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | Decimal):
        return Decimal(value)
    if isinstance(value, str) and _NUMERIC.fullmatch(value.strip()):
        try:
            return Decimal(value.strip())
        except InvalidOperation:
            return None
    return None


def amount(label: str, value: Any) -> str | None:
    number = parse_amount(value)
    if number is None or not number.is_finite():
        return f"The {label} must be a number."
    if number <= 0:
        return f"The {label} must be greater than 0."
    if number != number.quantize(Decimal("0.01")):
        return f"The {label} must have at most 2 decimal places."
    if number > MAX_AMOUNT:
        return f"The {label} must not be greater than {MAX_AMOUNT}."
    return None


def json_object(label: str, value: Any) -> str | None:
    # PHP encodes an empty array as [], so [] is an empty object here.
    if isinstance(value, dict) or value == []:
        return None
    return f"The {label} must be an array."


# ---------------------------------------------------------------------------
# Documented fields (§6.1 payments, §6.4 payouts)

PAYMENT_FIELDS: dict[str, Check] = {
    "amount": amount,
    "order_id": string(128),
    "service": string(100),
    "desc": string(128),
    "lifetime": integer(900, 3600),
    "customer_ip": ip_address,
    "customer_account": string(50),
    "customer_email": email,
    "customer_first_name": string(50),
    "customer_last_name": string(50),
    "customer_address": string(50),
    "customer_phone": string(12),
    "customer_post_code": digits(1, 12),
    "customer_state": string(50),
    "customer_city": string(20),
    "customer_browser_user_agent": string(2000),
    "customer_browser_accept_header": string(2000),
    "customer_browser_color_depth": integer(),
    "customer_browser_language": string(8),
    "customer_browser_screen_height": integer(),
    "customer_browser_screen_width": integer(),
    "customer_user_id": string(100),
    "customer_code": string(100),
    "success_redirect_id": integer(1),
    "fail_redirect_id": integer(1),
    "success_redirect_url": url,
    "fail_redirect_url": url,
    "notification_endpoint_id": integer(1),
    "notification_endpoint_url": url,
}

PAYOUT_FIELDS: dict[str, Check] = {
    "amount": amount,
    "number": string(100),
    "order_id": string(128),
    "service": string(100),
    "customer_code": string(100),
    "bik_bank": string(100),
    "notification_endpoint_id": integer(1),
    "notification_endpoint_url": url,
    "extra": json_object,
    "customer_phone": string(20),
    "customer_email": email,
    "customer_first_name": string(50),
    "customer_last_name": string(50),
    "customer_country": string(3),
}

#: ``extra.*`` of a payout; every one is required when the account currency is EUR
EXTRA_FIELDS: dict[str, Check] = {
    "card_exp_year": regex(r"\d{2}"),
    "card_exp_month": regex(r"0[1-9]|1[0-2]"),
    "card_holder": string(100),
    "card_country": regex(r"[A-Za-z]{2}"),
    "card_recipient_birth_date": ymd,
}

_BASE_REQUIRED: dict[Direction, tuple[str, ...]] = {
    "payment": ("amount", "order_id", "service", "customer_ip"),
    "payout": ("amount", "number", "order_id", "service"),
}


# ---------------------------------------------------------------------------
# Services (§7.2, §7.3): code -> what it adds to the documented fields


@attrs.frozen
class ServiceRule:
    """One service code: its direction, method/currency (for ``v1/account/info``), the
    fields it requires beyond the shared ones, and checks that are stricter than those."""

    code: str
    direction: Direction
    method: str
    currency: str
    h2h: bool = False
    required: tuple[str, ...] = ()
    checks: Mapping[str, Check] = attrs.field(factory=dict)


_RU4 = ("customer_user_id",)
_SBP_ID = regex(r"1000000\d{5}")
_PHONE = regex(r"7\d{10}")
_CARD = digits(12, 19)


def _pay(
    code: str,
    method: str,
    currency: str,
    required: tuple[str, ...] = (),
    checks: Mapping[str, Check] | None = None,
    *,
    h2h: bool = False,
) -> ServiceRule:
    return ServiceRule(code, "payment", method, currency, h2h, required, dict(checks or {}))


def _out(
    code: str,
    method: str,
    currency: str,
    required: tuple[str, ...] = (),
    checks: Mapping[str, Check] | None = None,
) -> ServiceRule:
    return ServiceRule(code, "payout", method, currency, False, required, dict(checks or {}))


_SERVICE_LIST: tuple[ServiceRule, ...] = (
    # RU 4 (payments in RUB)
    _pay("payment_card_number_rub_hpp", "payment_card_number", "RUB", _RU4),
    _pay(
        "payment_card_number_card",
        "payment_card_number",
        "RUB",
        ("customer_user_id", "customer_code"),
        h2h=True,
    ),
    _pay(
        "payment_card_number_rub_card",
        "payment_card_number",
        "RUB",
        ("customer_user_id", "customer_code"),
        h2h=True,
    ),
    _pay(
        "payment_card_sbp_rub_card",
        "payment_card_sbp",
        "RUB",
        _RU4,
        {"customer_code": _SBP_ID},
        h2h=True,
    ),
    _pay("payment_card_sberpay_rub_card", "payment_card_sberpay", "RUB", _RU4, h2h=True),
    _pay("virtual_account_rub_hpp", "virtual_account", "RUB", _RU4),
    _pay("virtual_account_rub_card", "virtual_account", "RUB", _RU4, h2h=True),
    _pay("payment_card_sbp_rub_hpp", "payment_card_sbp", "RUB", _RU4, {"customer_code": _SBP_ID}),
    # generic hosted card form
    _pay("payment_card_rub_hpp", "payment_card", "RUB", ("customer_browser_user_agent",)),
    _pay("payment_card_uah_hpp", "payment_card", "UAH", ("customer_browser_user_agent",)),
    # Asia
    _pay(
        "payment_card_bdt_hpp",
        "payment_card",
        "BDT",
        ("customer_code",),
        {"customer_code": one_of("nagad", "bkash", "rocket")},
    ),
    _pay("payment_card_pkr_hpp", "payment_card", "PKR", ("customer_code",)),
    *(_pay(f"{m}_php_hpp", m, "PHP", ("customer_code",)) for m in ("online_banking", "e_wallet")),
    *(
        _pay(
            f"{m}_idr_hpp", m, "IDR", ("customer_code", "customer_first_name", "customer_last_name")
        )
        for m in ("online_banking", "qr_code", "virtual_account", "local_bank_transfer")
    ),
    *(
        _pay(
            f"{m}_myr_hpp", m, "MYR", ("customer_code", "customer_first_name", "customer_last_name")
        )
        for m in ("online_banking", "qr_code", "e_wallet")
    ),
    *(
        _pay(f"{m}_thb_hpp", m, "THB", ("customer_code",))
        for m in ("online_banking", "qr_code", "local_bank_transfer")
    ),
    *(
        _pay(f"{m}_vnd_hpp", m, "VND", ("customer_code",))
        for m in ("online_banking", "qr_code", "e_wallet", "local_bank_transfer")
    ),
    # payouts
    _out("payment_card_rub", "payment_card", "RUB", (), {"number": _CARD}),
    _out(
        "payment_card_sbp_rub",
        "payment_card_sbp",
        "RUB",
        ("customer_code",),
        {"number": _PHONE, "customer_code": _SBP_ID},
    ),
    _out(
        "virtual_account_rub",
        "virtual_account",
        "RUB",
        ("customer_code", "bik_bank"),
        {"number": digits(20), "bik_bank": digits(9)},
    ),
    _out("payment_card_eur", "payment_card", "EUR", ("extra",), {"number": _CARD}),
    _out("qiwi_rub", "qiwi", "RUB", (), {"number": _PHONE}),
)

#: every service code the sandbox knows -> its rule
SERVICE_RULES: Mapping[str, ServiceRule] = {rule.code: rule for rule in _SERVICE_LIST}


# ---------------------------------------------------------------------------
# Validation


def _given(value: object) -> bool:
    return value is not None and value != ""


def _check_fields(
    data: Mapping[str, Any],
    checks: Mapping[str, Check | tuple[Check, ...]],
    required: Iterable[str],
    errors: Errors,
    prefix: str = "",
) -> None:
    required = set(required)
    for field, field_checks in checks.items():
        key = prefix + field
        label = _label(key)
        if not _given(data.get(field)):
            if field in required:
                errors.setdefault(key, []).append(f"The {label} field is required.")
            continue
        for check in field_checks if isinstance(field_checks, tuple) else (field_checks,):
            message = check(label, data[field])
            if message is not None:  # first failing rule only ("bail")
                errors.setdefault(key, []).append(message)
                break


def _validate_create(
    direction: Direction, data: Mapping[str, Any], *, currency: str, enabled: Callable[[str], bool]
) -> Errors:
    fields = PAYMENT_FIELDS if direction == "payment" else PAYOUT_FIELDS
    code = data.get("service")
    rule = SERVICE_RULES.get(code) if isinstance(code, str) else None
    required = set(_BASE_REQUIRED[direction]) | set(rule.required if rule else ())
    if direction == "payout" and currency.upper() == "EUR":
        required.add("extra")  # §6.4: extra.* is mandatory on EUR accounts
    # A service's stricter checks run after the documented field's own check.
    checks: dict[str, Check | tuple[Check, ...]] = {
        field: (check, rule.checks[field]) if rule and field in rule.checks else check
        for field, check in fields.items()
    }
    errors: Errors = {}
    _check_fields(data, checks, required, errors)
    if (
        isinstance(code, str)
        and "service" not in errors
        and (rule is None or rule.direction != direction or not enabled(code))
    ):
        errors["service"] = ["The selected service is invalid."]
    extra = data.get("extra")
    if (
        direction == "payout"
        and "extra" not in errors
        and (isinstance(extra, dict) or "extra" in required)
    ):
        _check_fields(
            extra if isinstance(extra, dict) else {},
            EXTRA_FIELDS,
            EXTRA_FIELDS if "extra" in required else (),
            errors,
            "extra.",
        )
    return errors


def validate_payment(
    data: Mapping[str, Any], *, currency: str, enabled: Callable[[str], bool]
) -> Errors:
    """Errors of a ``v1/payment`` body (empty when valid)."""
    return _validate_create("payment", data, currency=currency, enabled=enabled)


def validate_payout(
    data: Mapping[str, Any], *, currency: str, enabled: Callable[[str], bool]
) -> Errors:
    """Errors of a ``v1/payout`` body (empty when valid)."""
    return _validate_create("payout", data, currency=currency, enabled=enabled)


def _lookup_value(label: str, value: Any) -> str | None:
    if isinstance(value, bool) or not isinstance(value, str | int):
        return f"The {label} must be a string."
    if len(str(value)) > 128:
        return f"The {label} must not be greater than 128 characters."
    return None


def validate_lookup(data: Mapping[str, Any]) -> Errors:
    """Errors of a status body: ``id`` or ``order_id`` (string, 128) is required."""
    errors: Errors = {}
    if not _given(data.get("id")) and not _given(data.get("order_id")):
        errors["id"] = ["The id field is required when order id is not present."]
        errors["order_id"] = ["The order id field is required when id is not present."]
        return errors
    for field in ("id", "order_id"):
        if _given(data.get(field)):
            message = _lookup_value(_label(field), data[field])
            if message is not None:
                errors[field] = [message]
    return errors


HISTORY_FIELDS: dict[str, Check] = {
    "date_from": ymd,
    "date_to": ymd,
    "page": integer(1),
    "paginate": integer(1, 100),
}


def validate_history(data: Mapping[str, Any]) -> Errors:
    """Errors of a ``v1/payment/history`` body (every field optional)."""
    errors: Errors = {}
    _check_fields(data, HISTORY_FIELDS, (), errors)
    return errors
