"""The service registry and the generic request builders.

One :class:`ServiceSpec` per service code of the API reference (§7.2 payments,
§7.3 payouts): direction, country, currency, flow, the fields it requires and
the rules that differ from the shared ones. The registry is data; the one
function that applies it is :func:`_build`. Every builder (these and the named
ones in :mod:`alikassa_async.payments` / :mod:`alikassa_async.payouts`) goes
through it, so a rule lives in exactly one place.

>>> req = build_payment("payment_card_number_rub_hpp", amount="500", order_id="A-1",
...                     customer_ip="18.191.80.10", customer_user_id="u-42")
>>> req.to_wire()["amount"]
'500.00'

``None`` and ``""`` mean "not given" (the gateway reads an empty string as
null). Fields the SDK does not know (the gateway adds them over time) are
accepted when their name is snake_case and their value a ``str`` or ``int``;
they go on the wire after the documented ones. An unknown *service code* builds with the
shared rules only and logs one warning per code.
"""

from __future__ import annotations

import enum
import functools
import inspect
import logging
import re
from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import Literal, ParamSpec, TypeVar

import attrs

from . import _validation as v
from ._errors import RequestValidationError
from ._models import (
    PAYMENT_FIELD_ORDER,
    PAYOUT_FIELD_ORDER,
    AccountInfo,
    PaymentRequest,
    PayoutRequest,
)

__all__ = [
    "PAYMENT_RULES",
    "PAYOUT_RULES",
    "SBP_BANK_NAMES",
    "SERVICES",
    "Direction",
    "Flow",
    "SbpBank",
    "ServiceSpec",
    "build_payment",
    "build_payout",
    "check_enabled",
    "get_service",
    "markdown_table",
]

logger = logging.getLogger("alikassa_async")

Direction = Literal["payment", "payout"]
Flow = Literal["hosted", "h2h"]


class SbpBank(enum.StrEnum):
    """Known SBP (NSPK) participant ids for ``customer_code`` (API reference §7.4).

    Any well-formed id (``1000000XXXXX``) is accepted; these are names for the
    common ones: ``build_payout(..., customer_code=SbpBank.SBERBANK)``.
    """

    SBERBANK = "100000000111"
    TBANK = "100000000004"
    TINKOFF = "100000000004"  # the same bank under its old name
    VTB = "100000000005"
    ALFA_BANK = "100000000008"
    RAIFFEISEN = "100000000007"
    OTKRITIE = "100000000015"
    GAZPROMBANK = "100000000001"
    PSB = "100000000010"
    HOME_CREDIT = "100000000024"
    ROSSELKHOZBANK = "100000000020"
    SOVCOMBANK = "100000000013"
    TOCHKA = "100000000065"


#: SBP id -> bank name, for display
SBP_BANK_NAMES: Mapping[str, str] = {
    "100000000111": "Sberbank",
    "100000000004": "T-Bank (Tinkoff)",
    "100000000005": "VTB",
    "100000000008": "Alfa-Bank",
    "100000000007": "Raiffeisenbank",
    "100000000015": "Bank Otkritie",
    "100000000001": "Gazprombank",
    "100000000010": "Promsvyazbank",
    "100000000024": "Home Credit",
    "100000000020": "Rosselkhozbank",
    "100000000013": "Sovcombank",
    "100000000065": "Tochka",
}

# ---------------------------------------------------------------------------
# Shared rules: every field the direction documents (§6.1, §6.4)

PAYMENT_RULES: Mapping[str, v.Rule] = {
    "amount": v.amount,
    "order_id": v.order_id,
    "desc": v.text(128),
    "lifetime": v.integer(900, 3600, "int seconds 900..3600"),
    "customer_ip": v.ip_address,
    "customer_account": v.text(50),
    "customer_email": v.email,
    "customer_first_name": v.text(50),
    "customer_last_name": v.text(50),
    "customer_address": v.text(50),
    "customer_phone": v.text(12),
    "customer_post_code": v.post_code,
    "customer_state": v.text(50),
    "customer_city": v.text(20),
    "customer_browser_user_agent": v.text(2000),
    "customer_browser_accept_header": v.text(2000),
    "customer_browser_color_depth": v.integer(1, 64),
    "customer_browser_language": v.text(8),
    "customer_browser_screen_height": v.integer(1, 100_000),
    "customer_browser_screen_width": v.integer(1, 100_000),
    "customer_user_id": v.text(100),
    "customer_code": v.text(100),
    "success_redirect_id": v.positive_id,
    "fail_redirect_id": v.positive_id,
    "success_redirect_url": v.http_url,
    "fail_redirect_url": v.http_url,
    "notification_endpoint_id": v.positive_id,
    "notification_endpoint_url": v.http_url,
}

PAYOUT_RULES: Mapping[str, v.Rule] = {
    "amount": v.amount,
    "number": v.text(100),
    "order_id": v.order_id,
    "customer_code": v.text(100),
    "bik_bank": v.text(100),
    "notification_endpoint_id": v.positive_id,
    "notification_endpoint_url": v.http_url,
    "extra": v.payout_extra(card_fields_required=False),
    "customer_phone": v.text(20),
    "customer_email": v.email,
    "customer_first_name": v.text(50),
    "customer_last_name": v.text(50),
    "customer_country": v.text(3),
}

_SHARED: Mapping[Direction, Mapping[str, v.Rule]] = {
    "payment": PAYMENT_RULES,
    "payout": PAYOUT_RULES,
}
#: required by every service of the direction, known or not
_BASE_REQUIRED: Mapping[Direction, tuple[str, ...]] = {
    "payment": ("amount", "order_id", "customer_ip"),
    "payout": ("amount", "order_id", "number"),
}
_ORDER: Mapping[Direction, tuple[str, ...]] = {
    "payment": PAYMENT_FIELD_ORDER,
    "payout": PAYOUT_FIELD_ORDER,
}


@attrs.frozen
class ServiceSpec:
    """What one service code needs. ``rules`` only lists what differs from the shared rules."""

    code: str
    direction: Direction
    country: str | None
    currency: str | None
    flow: Flow | None
    provider: str
    required: tuple[str, ...] = ()
    rules: Mapping[str, v.Rule] = attrs.field(factory=dict)
    builder: str = ""
    note: str = ""

    @property
    def required_fields(self) -> tuple[str, ...]:
        """Every required wire field except ``service``, in documented order."""
        wanted = set(_BASE_REQUIRED[self.direction]) | set(self.required)
        return tuple(f for f in _ORDER[self.direction] if f in wanted)

    def rule(self, field: str) -> v.Rule | None:
        """The rule checking ``field`` for this service, or None for an unknown field."""
        return self.rules.get(field) or _SHARED[self.direction].get(field)


# ---------------------------------------------------------------------------
# The registry (API reference §7.2 and §7.3)

_RU4 = ("customer_user_id",)
_CODE = ("customer_code",)
_NAMES = ("customer_code", "customer_first_name", "customer_last_name")
_SBP_ID = {"customer_code": v.sbp_bank_id}


def _pay(
    code: str,
    country: str | None,
    currency: str,
    flow: Flow,
    provider: str,
    required: tuple[str, ...],
    builder: str,
    rules: Mapping[str, v.Rule] | None = None,
    note: str = "",
) -> ServiceSpec:
    return ServiceSpec(
        code,
        "payment",
        country,
        currency,
        flow,
        provider,
        required,
        dict(rules or {}),
        builder,
        note,
    )


def _out(
    code: str,
    currency: str,
    required: tuple[str, ...],
    builder: str,
    rules: Mapping[str, v.Rule],
    note: str = "",
) -> ServiceSpec:
    return ServiceSpec(
        code, "payout", None, currency, None, "payout", required, dict(rules), builder, note
    )


_PAYMENTS: tuple[ServiceSpec, ...] = (
    _pay("payment_card_number_rub_hpp", "RU", "RUB", "hosted", "RU 4", _RU4, "payments.card_form"),
    _pay(
        "payment_card_number_card",
        "RU",
        "RUB",
        "h2h",
        "RU 4",
        _RU4 + _CODE,
        "payments.h2h_card",
        {"customer_code": v.bank_code},
        "⚠ same service as payment_card_number_rub_card (§13.7)",
    ),
    _pay(
        "payment_card_number_rub_card",
        "RU",
        "RUB",
        "h2h",
        "RU 4",
        _RU4 + _CODE,
        "payments.h2h_card",
        {"customer_code": v.bank_code},
        "⚠ same service as payment_card_number_card (§13.7)",
    ),
    _pay(
        "payment_card_sbp_rub_card", "RU", "RUB", "h2h", "RU 4", _RU4, "payments.h2h_sbp", _SBP_ID
    ),
    _pay("payment_card_sberpay_rub_card", "RU", "RUB", "h2h", "RU 4", _RU4, "payments.sberpay"),
    _pay(
        "virtual_account_rub_hpp",
        "RU",
        "RUB",
        "hosted",
        "RU 4",
        _RU4,
        "payments.virtual_account_form",
    ),
    _pay(
        "virtual_account_rub_card", "RU", "RUB", "h2h", "RU 4", _RU4, "payments.virtual_account_h2h"
    ),
    _pay(
        "payment_card_sbp_rub_hpp",
        "RU",
        "RUB",
        "hosted",
        "RU 4",
        _RU4,
        "payments.sbp_form",
        _SBP_ID,
        "seen in production clients only; superseded by payment_card_sbp_rub_card",
    ),
    _pay(
        "payment_card_rub_hpp",
        None,
        "RUB",
        "hosted",
        "generic",
        ("customer_browser_user_agent",),
        "payments.card_hpp",
    ),
    _pay(
        "payment_card_uah_hpp",
        None,
        "UAH",
        "hosted",
        "generic",
        ("customer_browser_user_agent",),
        "payments.card_hpp",
    ),
    _pay(
        "payment_card_bdt_hpp",
        "BD",
        "BDT",
        "hosted",
        "BD 1",
        _CODE,
        "payments.bdt_wallet",
        {"customer_code": v.one_of("nagad", "bkash", "rocket")},
    ),
    _pay("payment_card_pkr_hpp", "PK", "PKR", "hosted", "PK 1", _CODE, "payments.pkr"),
    *(
        _pay(f"{method}_php_hpp", "PH", "PHP", "hosted", "PH 1", _CODE, "payments.php")
        for method in ("online_banking", "e_wallet")
    ),
    *(
        _pay(f"{method}_idr_hpp", "ID", "IDR", "hosted", "ID 2", _NAMES, "payments.idr")
        for method in ("online_banking", "qr_code", "virtual_account", "local_bank_transfer")
    ),
    *(
        _pay(f"{method}_myr_hpp", "MY", "MYR", "hosted", "RM 1", _NAMES, "payments.myr")
        for method in ("online_banking", "qr_code", "e_wallet")
    ),
    *(
        _pay(f"{method}_thb_hpp", "TH", "THB", "hosted", "TH 2", _CODE, "payments.thb")
        for method in ("online_banking", "qr_code", "local_bank_transfer")
    ),
    *(
        _pay(f"{method}_vnd_hpp", "VN", "VND", "hosted", "VN 1", _CODE, "payments.vnd")
        for method in ("online_banking", "qr_code", "e_wallet", "local_bank_transfer")
    ),
)

_PAYOUTS: tuple[ServiceSpec, ...] = (
    _out("payment_card_rub", "RUB", (), "payouts.card", {"number": v.card_number}),
    _out(
        "payment_card_sbp_rub",
        "RUB",
        _CODE,
        "payouts.sbp",
        {"number": v.ru_phone, "customer_code": v.sbp_bank_id},
    ),
    _out(
        "virtual_account_rub",
        "RUB",
        ("customer_code", "bik_bank"),
        "payouts.virtual_account",
        {
            "number": v.digits(20, "a payment account number", sensitive=True),
            "customer_code": v.bank_code,
            "bik_bank": v.digits(9, "a bank BIC"),
        },
    ),
    _out(
        "payment_card_eur",
        "EUR",
        ("extra",),
        "payouts.card_eur",
        {"number": v.card_number, "extra": v.payout_extra(card_fields_required=True)},
        "code inferred from the naming grammar (§7.3); card_eur(service=...) overrides it",
    ),
    _out(
        "qiwi_rub", "RUB", (), "", {"number": v.ru_phone}, "legacy: QIWI wallets no longer operate"
    ),
)

#: every known service code -> its spec
SERVICES: Mapping[str, ServiceSpec] = {s.code: s for s in (*_PAYMENTS, *_PAYOUTS)}


def get_service(code: str) -> ServiceSpec | None:
    """The registry entry for ``code``, or None when the SDK does not know it."""
    return SERVICES.get(code)


# ---------------------------------------------------------------------------
# Building

_SERVICE_CODE = re.compile(r"[a-z0-9_]{1,100}", re.ASCII)
_FIELD_NAME = re.compile(r"[a-z][a-z0-9_]{0,63}", re.ASCII)
_warned_codes: set[str] = set()
_MAX_WARNED = 1000


def _service_code(value: object) -> str:
    if not isinstance(value, str):
        raise v.Invalid(f"must be a service code string, not {type(value).__name__}")
    if not _SERVICE_CODE.fullmatch(value):
        raise v.Invalid(
            "must be a service code such as 'payment_card_rub' "
            "(lowercase letters, digits, '_', at most 100)"
        )
    return str.__str__(value)


def _warn_unknown(code: str, direction: Direction) -> None:
    if code in _warned_codes or len(_warned_codes) >= _MAX_WARNED:
        return
    _warned_codes.add(code)
    logger.warning(
        "service %r is not in the alikassa_async registry; building the %s with "
        "the shared rules only",
        code,
        direction,
    )


_Built = tuple[str, str, Decimal, dict[str, object]]  # service, order_id, amount, other fields
_AddError = Callable[[str, list[str]], None]
_INVALID = object()


def _spec_for(direction: Direction, service: object, add: _AddError) -> ServiceSpec:
    """The registry's spec of ``service``, or one with the shared rules only."""
    try:
        code = _service_code(service)
    except v.Invalid as exc:
        add("service", exc.messages)
        code = ""
    else:
        spec = SERVICES.get(code)
        if spec is None:
            _warn_unknown(code, direction)
        elif spec.direction != direction:
            add("service", [f"{code!r} is a {spec.direction} service; use build_{spec.direction}"])
        else:
            return spec
    return ServiceSpec(code, direction, None, None, None, "unknown")


def _checked_field(spec: ServiceSpec, name: str, value: object, add: _AddError) -> object:
    """``value`` as the gateway takes it, or ``_INVALID`` after reporting why not."""
    rule = spec.rule(name)
    if rule is None:
        if not _FIELD_NAME.fullmatch(name):
            add(name, ["is not a gateway field name (lowercase snake_case expected)"])
            return _INVALID
        rule = v.Rule("", v.gateway_value)
    try:
        return rule(value)
    except v.Invalid as exc:
        if exc.messages:
            add(name, exc.messages)
        for sub, messages in exc.nested.items():
            add(f"{name}.{sub}", messages)
        return _INVALID


def _build(
    direction: Direction,
    service: object,
    fields: Mapping[str, object],
    errors: dict[str, list[str]] | None = None,
) -> _Built:
    """Check ``fields`` against the registry; every problem at once, or the wire parts."""
    errors = errors if errors is not None else {}

    def add(field: str, messages: list[str]) -> None:
        known = errors.setdefault(field, [])
        known.extend(m for m in messages if m not in known)

    spec = _spec_for(direction, service, add)
    for name in spec.required_fields:
        if v.not_given(fields.get(name)):
            where = f" for {spec.code}" if name in spec.required else ""
            add(name, [f"is required{where}"])

    out: dict[str, object] = {}
    for name, value in fields.items():
        if v.not_given(value):  # required ones are reported above
            continue
        checked = _checked_field(spec, name, value, add)
        if checked is not _INVALID:
            out[name] = checked
    if errors:
        raise RequestValidationError(errors)

    amount = out.pop("amount")
    order_id = out.pop("order_id")
    assert isinstance(amount, Decimal) and isinstance(order_id, str)
    ordered = {k: out[k] for k in _ORDER[direction] if k in out}
    ordered.update(out)  # fields the SDK does not know go last, as given
    return spec.code, order_id, amount, ordered


_P = ParamSpec("_P")
_R = TypeVar("_R")


def _binding_errors(
    name: str, signature: inspect.Signature, args: tuple[object, ...], kwargs: Mapping[str, object]
) -> dict[str, list[str]]:
    """Why a call does not fit ``signature``, field by field ({} if it does)."""
    try:
        signature.bind(*args, **kwargs)
    except TypeError:
        pass
    else:
        return {}
    params = signature.parameters
    positional = [
        p for p in params.values() if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
    ]
    takes_any = any(p.kind is p.VAR_KEYWORD for p in params.values())
    errors: dict[str, list[str]] = {}
    if len(args) > len(positional):
        errors["arguments"] = [
            f"{name}() takes {len(positional)} positional argument(s) but "
            f"{len(args)} were given; pass fields by keyword"
        ]
    given = {p.name for p in positional[: len(args)]}
    for key in kwargs:
        if key in given:
            errors.setdefault(key, []).append("given twice")
        elif (
            key not in params or params[key].kind is inspect.Parameter.VAR_KEYWORD
        ) and not takes_any:
            errors.setdefault(key, []).append(f"is not a parameter of {name}()")
    for param in params.values():
        missing = param.name not in given and param.name not in kwargs
        if (
            param.default is param.empty
            and missing
            and param.kind not in (param.VAR_POSITIONAL, param.VAR_KEYWORD)
        ):
            errors.setdefault(param.name, []).append("is required")
    return errors or {"arguments": [f"{name}() was called with arguments it does not accept"]}


def validation_only(function: Callable[_P, _R]) -> Callable[_P, _R]:
    """Turn a call that does not fit the signature into :class:`RequestValidationError`.

    Missing or unknown keyword arguments are user input like any other field.
    """
    signature = inspect.signature(function)
    label = getattr(function, "__qualname__", "builder")
    module = function.__module__.rpartition(".")[2]
    label = f"{module}.{label}" if module in ("payments", "payouts") else label

    @functools.wraps(function)
    def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        try:
            return function(*args, **kwargs)
        except TypeError:
            errors = _binding_errors(label, signature, args, kwargs)
            if not errors:
                raise
        raise RequestValidationError(errors)

    return wrapper


@validation_only
def build_payment(service: str, **fields: object) -> PaymentRequest:
    """A validated ``v1/payment`` request for ``service``; raises RequestValidationError.

    >>> build_payment("payment_card_bdt_hpp", amount=Decimal("1500"), order_id="B-7",
    ...               customer_ip="103.4.145.2", customer_code="bkash").service
    'payment_card_bdt_hpp'
    """
    code, order_id, amount, wire = _build("payment", service, fields)
    return PaymentRequest(service=code, order_id=order_id, amount=amount, fields=wire)


@validation_only
def build_payout(service: str, **fields: object) -> PayoutRequest:
    """A validated ``v1/payout`` request for ``service``; raises RequestValidationError.

    >>> build_payout("payment_card_sbp_rub", amount="3000", order_id="P-1",
    ...              number="+79031112233", customer_code=SbpBank.SBERBANK).fields["number"]
    '79031112233'
    """
    code, order_id, amount, wire = _build("payout", service, fields)
    return PayoutRequest(service=code, order_id=order_id, amount=amount, fields=wire)


def build_named(
    direction: Direction,
    service: object,
    label: str,
    fields: Mapping[str, object],
    options: Mapping[str, object],
    allowed: frozenset[str],
    errors: dict[str, list[str]] | None = None,
    renamed: Mapping[str, str] | None = None,
) -> _Built:
    """The common core of the named builders: options checked, then the registry.

    ``options`` are the builder's ``**options``; keys outside ``allowed`` are
    reported (not passed on), and ``other_fields`` is merged as raw gateway fields.
    ``renamed`` maps a wire field to the parameter that fed it, for messages.
    """
    errors = errors if errors is not None else {}
    merged = dict(fields)
    for key, value in options.items():
        if key == "other_fields":
            continue
        if key not in allowed:
            errors[key] = [
                f"is not a parameter of {label}(); pass fields the SDK does not "
                "know in other_fields={...}"
            ]
        else:
            merged[key] = value
    other = options.get("other_fields")
    if other is not None:
        if not isinstance(other, Mapping) or not all(isinstance(k, str) for k in other):
            errors["other_fields"] = ["must be a mapping of field name -> str or int"]
        else:
            for key, value in other.items():
                if not v.not_given(merged.get(key)) or key in ("service", "amount", "order_id"):
                    errors.setdefault("other_fields", []).append(f"{key!r} is given twice")
                else:
                    merged[key] = value
    try:
        return _build(direction, service, merged, errors)
    except RequestValidationError as exc:
        if not renamed:
            raise
        # report under the builder's parameter name (bdt_wallet's ``wallet``)
        named: dict[str, list[str]] = {}
        for key, messages in exc.errors.items():
            named.setdefault(renamed.get(key, key), []).extend(messages)
        raise RequestValidationError(named) from None


def check_enabled(info: AccountInfo, request: PaymentRequest | PayoutRequest) -> None:
    """Raise RequestValidationError unless ``request.service`` is active on the account.

    ``info`` comes from ``await client.account_info()``; cache it, it rarely changes.
    Both service lists are searched: the vendor's own example lists a payment
    code under ``payouts`` (API reference §13.13).
    """
    if not info.supports(request.service):
        direction = "payment" if isinstance(request, PaymentRequest) else "payout"
        raise RequestValidationError(
            {
                "service": [
                    f"{request.service!r} is not an active {direction} service on this account"
                ]
            }
        )


# ---------------------------------------------------------------------------
# README table


def _rules_cell(spec: ServiceSpec) -> str:
    return "; ".join(f"`{field}`: {rule.describe}" for field, rule in spec.rules.items()) or "—"


def markdown_table() -> str:
    """The README's table of supported service codes, generated from the registry."""
    lines = [
        "<!-- generated by alikassa_async.services.markdown_table(); do not edit by hand -->",
        "",
        f"### Payment services ({len(_PAYMENTS)} codes, `build_payment`)",
        "",
        "| service code | country / currency | flow | provider | required fields | "
        "service rules | named builder | note |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for spec in _PAYMENTS:
        lines.append(
            f"| `{spec.code}` | {spec.country or '—'} / {spec.currency} | {spec.flow} | "
            f"{spec.provider} | {', '.join(spec.required_fields)} | {_rules_cell(spec)} | "
            f"`{spec.builder}` | {spec.note} |"
        )
    lines += [
        "",
        f"### Payout services ({len(_PAYOUTS)} codes, `build_payout`)",
        "",
        "| service code | currency | required fields | service rules | named builder | note |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for spec in _PAYOUTS:
        builder = f"`{spec.builder}`" if spec.builder else "—"
        lines.append(
            f"| `{spec.code}` | {spec.currency} | {', '.join(spec.required_fields)} | "
            f"{_rules_cell(spec)} | {builder} | {spec.note} |"
        )
    for direction, rules in _SHARED.items():
        lines += [
            "",
            f"### Shared {direction} field rules (every {direction} service, known or not)",
            "",
            "| field | rule |",
            "| --- | --- |",
        ]
        lines += [f"| `{field}` | {rule.describe} |" for field, rule in rules.items()]
    lines.append("")
    return "\n".join(lines)


def payout_request_from(item: object) -> PayoutRequest:
    """A batch item as a request: a :class:`PayoutRequest`, or a mapping of payout fields with
    ``service``; else a ``RequestValidationError`` saying what is wrong with it (whatever the
    item does when it is read)."""
    if isinstance(item, PayoutRequest):
        return item
    if isinstance(item, Mapping):
        try:
            fields = dict(item)
        except Exception as exc:  # a mapping that cannot even be read
            raise _unbuildable(exc) from None
        bad_keys = [key for key in fields if not isinstance(key, str)]
        if bad_keys:
            raise RequestValidationError(
                {"request": [f"field names must be strings, not {bad_keys[0]!r}"]}
            )
        service = fields.pop("service", None)
        if not isinstance(service, str) or not service:
            raise RequestValidationError({"service": ["is required"]})
        try:
            return build_payout(service, **fields)
        except RequestValidationError:
            raise
        except Exception as exc:  # whatever a field's value does when it is read
            raise _unbuildable(exc) from None
    raise RequestValidationError(
        {
            "request": [
                f"must be a PayoutRequest (build_payout) or a mapping of payout fields, "
                f"not {type(item).__name__}"
            ]
        }
    )


def _unbuildable(exc: Exception) -> RequestValidationError:
    text = " ".join(str(exc).split())[:300]
    return RequestValidationError(
        {"request": [f"cannot build a payout from it: {type(exc).__name__}: {text}"]}
    )
