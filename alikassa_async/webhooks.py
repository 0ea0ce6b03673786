"""Verify AliKassa notifications (callbacks) and payer redirects, byte-exactly.

AliKassa signs a PHP ``json_encode`` of the notification fields. The vendor's
Python and Node samples rebuild that JSON with ``json.dumps``/``JSON.stringify``
and so reject every genuine notification whose ``desc`` holds ``/`` or non-ASCII
text. This module rebuilds the bytes exactly as the vendor's PHP reference does
(API reference §8.3): the 11 documented fields in order, a missing field as
``null``, ``id`` through PHP's ``(int)`` cast, everything else as received, then
PHP ``json_encode``. It also tries the short, fixed list of layouts seen in the
wild (§8.4) and records which one matched. Each attempt still needs AliKassa's
signature, so trying several does not weaken the check.

Nothing in the payload is trusted, converted or returned before the signature
verifies; every failure is a :class:`~alikassa_async._errors.SignatureError`.

>>> verifier = NotificationVerifier.from_file("cert/notification/public.pem")
>>> note = verifier.verify_notification(request.query_params, expected_account=ACCOUNT)
>>> note.order_id, note.payment_status, note.amount
('6422494', <PaymentStatus.PAID: 'paid'>, Decimal('300.00'))

Accepted inputs: a mapping of received parameters (``dict``, Starlette
``QueryParams``/``FormData``, aiohttp ``MultiDictProxy``, Werkzeug/Django
multi-dicts), a raw query string or form body (``str``/``bytes``), or a JSON
body (``str``/``bytes`` starting with ``{``, or the already-parsed ``dict``).
When a parameter is repeated, the **last** value wins, as in PHP's ``$_GET``.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator, Mapping
from decimal import Decimal
from pathlib import Path
from types import MappingProxyType
from typing import Any, TypeAlias, cast
from urllib.parse import parse_qsl

import attrs

from ._encoding import EncodingError, php_json_encode, php_json_string
from ._errors import ConfigurationError, SignatureError
from ._models import PaymentStatus
from ._signing import SignatureHash, Verifier

__all__ = [
    "MAX_FIELDS",
    "MAX_INPUT_SIZE",
    "NOTIFICATION_FIELDS",
    "Notification",
    "NotificationData",
    "NotificationVerifier",
    "Redirect",
]

#: The signed fields, in the order the vendor's PHP sample builds them (§8.2).
NOTIFICATION_FIELDS: tuple[str, ...] = (
    "type",
    "id",
    "order_id",
    "payment_status",
    "amount",
    "payment_amount",
    "commission_amount",
    "is_partial_payment",
    "account",
    "service",
    "desc",
)
#: Refused before any work: a notification is a few hundred bytes.
MAX_INPUT_SIZE = 64 * 1024
MAX_FIELDS = 100
_MAX_DEPTH = 16

#: What ``verify_notification``/``verify_redirect`` read: received parameters (a mapping or
#: multi-dict), a raw query string or form body, or a JSON body (text, bytes or parsed dict).
NotificationData: TypeAlias = Mapping[Any, Any] | str | bytes | bytearray | memoryview

_REQUIRED = ("type", "id", "order_id", "payment_status", "amount")
_REDIRECT_FIELDS = ("order_id", "uuid")
# §8.4: the documented list, an older list without commission_amount, a newer one with card_brand.
_FIELD_LISTS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("documented", NOTIFICATION_FIELDS),
    (
        "without_commission_amount",
        tuple(f for f in NOTIFICATION_FIELDS if f != "commission_amount"),
    ),
    ("with_card_brand", (*NOTIFICATION_FIELDS, "card_brand")),
)
_TRUE = frozenset({"1", "true"})
_FALSE = frozenset({"0", "false", ""})
_DECIMAL = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)")

# ---------------------------------------------------------------------------
# PHP conversions the signed bytes depend on

_PHP_INT_MAX = 2**63 - 1
_PHP_INT_MIN = -(2**63)
# PHP's is_numeric_string prefix: leading whitespace, sign, digits / fraction / exponent.
_PHP_NUMERIC = re.compile(
    r"[ \t\n\r\v\f]*([+-]?)(?:([0-9]+)(\.[0-9]*)?|(\.[0-9]+))((?:[eE][+-]?[0-9]+)?)"
)


def _php_float_to_int_cap(value: float) -> int:
    """PHP's ``zend_dval_to_lval_cap`` (numeric strings): saturate, non-finite -> 0."""
    if not math.isfinite(value):
        return 0
    if value >= 2.0**63 or value < -(2.0**63):
        return _PHP_INT_MAX if value > 0 else _PHP_INT_MIN
    return int(value)


def _php_float_to_int(value: float) -> int:
    """PHP 8 ``(int)$float`` on 64-bit: truncate, wrap modulo 2**64, non-finite -> 0."""
    if not math.isfinite(value):
        return 0
    return (int(value) + 2**63) % 2**64 - 2**63


def _php_string_to_int(text: str) -> int:
    """PHP 8 ``(int)$string``: leading-numeric parse; ``""`` and garbage give 0."""
    match = _PHP_NUMERIC.match(text)
    if match is None:
        return 0
    sign, digits, fraction, _bare_fraction, exponent = match.groups()
    # An integer literal PHP keeps as an int when it fits (at most 19 digits after the
    # leading zeros; longer ones never fit, and int() of 4,301+ digits raises).
    if digits is not None and fraction is None and not exponent and (len(digits.lstrip("0")) <= 19):
        value = int(sign + digits)
        if _PHP_INT_MIN <= value <= _PHP_INT_MAX:
            return value
    # Else through double, as PHP does (float() has no digit limit; too big is inf).
    return _php_float_to_int_cap(float(match.group(0).lstrip(" \t\n\r\v\f")))


def _php_int(value: object) -> int:
    """PHP ``(int)$value`` for anything a query string or ``json_decode`` yields."""
    if value is None or value is False:
        return 0
    if value is True:
        return 1
    if isinstance(value, int):
        if _PHP_INT_MIN <= value <= _PHP_INT_MAX:
            return value
        # Beyond int64, json_decode would have made it a double: cast that one.
        try:
            return _php_float_to_int(float(value))
        except OverflowError:
            return 0  # (int)INF
    if isinstance(value, float):
        return _php_float_to_int(value)
    if isinstance(value, str):
        return _php_string_to_int(value)
    if isinstance(value, list | dict):
        return 1 if value else 0
    raise EncodingError(f"cannot cast {type(value).__name__} to int")


def _php_float_json(value: float) -> str:
    """PHP ``json_encode`` of a float (``serialize_precision = -1``): shortest digits."""
    if not math.isfinite(value):
        raise EncodingError("NaN and infinity have no JSON form")
    if value == 0:
        return "-0" if math.copysign(1.0, value) < 0 else "0"
    sign = "-" if value < 0 else ""
    parts = Decimal(repr(abs(value))).as_tuple()
    point = len(parts.digits) + int(parts.exponent)  # value = 0.DIGITS * 10**point
    digits = "".join(map(str, parts.digits)).rstrip("0")
    if point < -3 or point > 17:
        exponent = point - 1
        return (
            f"{sign}{digits[0]}.{digits[1:] or '0'}e{'-' if exponent < 0 else '+'}{abs(exponent)}"
        )
    if point <= 0:
        return f"{sign}0.{'0' * -point}{digits}"
    if len(digits) <= point:
        return sign + digits + "0" * (point - len(digits))
    return f"{sign}{digits[:point]}.{digits[point:]}"


def _encode_received(value: object) -> str:
    """PHP ``json_encode`` of a received value, floats included (JSON bodies may hold them)."""
    if isinstance(value, float):
        return _php_float_json(value)
    if isinstance(value, dict):
        if not value:
            return "[]"
        return (
            "{"
            + ",".join(
                f"{php_json_string(key)}:{_encode_received(item)}" for key, item in value.items()
            )
            + "}"
        )
    if isinstance(value, list):
        return "[" + ",".join(_encode_received(item) for item in value) + "]"
    return php_json_encode(value).decode("ascii")


# ---------------------------------------------------------------------------
# Reading the received parameters (untrusted: only shape and size are checked)


def _refuse(message: str) -> SignatureError:
    return SignatureError(message)


def _json_int(text: str) -> int | float:
    if len(text.lstrip("-0")) > 19:  # never an int64; int() of 4,301+ digits would raise
        return float(text)
    value = int(text)
    # json_decode turns integers beyond int64 into floats.
    return value if _PHP_INT_MIN <= value <= _PHP_INT_MAX else float(text)


def _json_constant(name: str) -> object:
    raise ValueError(f"{name} is not JSON")


def _parse_json_body(text: str) -> dict[str, object]:
    try:
        parsed = json.loads(text, parse_int=_json_int, parse_constant=_json_constant)
    except (ValueError, RecursionError):
        raise _refuse("body is not valid JSON") from None
    if not isinstance(parsed, dict):
        raise _refuse("JSON body is not an object")
    _check_value_shape(parsed, 0)
    return parsed


def _parse_query(text: str) -> dict[str, object]:
    if text.startswith("?"):
        text = text[1:]
    try:
        pairs = parse_qsl(
            text,
            keep_blank_values=True,
            encoding="utf-8",
            errors="strict",
            max_num_fields=MAX_FIELDS,
        )
    except UnicodeDecodeError:
        raise _refuse("query string is not valid UTF-8") from None
    except ValueError:
        raise _refuse(f"more than {MAX_FIELDS} parameters") from None
    params: dict[str, object] = {}
    for key, value in pairs:
        params[key] = value  # a repeated key keeps its first position and last value, as PHP
    return params


def _check_value_shape(value: object, depth: int) -> int:
    """Size of a JSON-like value; refuses deep nesting and unknown types. Linear."""
    if depth > _MAX_DEPTH:
        raise _refuse("input is nested too deeply")
    if isinstance(value, str):
        return len(value)
    if (
        isinstance(value, int)
        and not isinstance(value, bool)
        and not (_PHP_INT_MIN <= value <= _PHP_INT_MAX)
        and value.bit_length() > 1024
    ):
        # No query string or json_decode yields such an int, and turning it into text
        # (json_encode, str) raises past 4,300 digits: refuse it as a parameter value.
        raise _refuse("integer parameter out of range")
    if value is None or isinstance(value, bool | int | float):
        return 8
    if isinstance(value, dict):
        if len(value) > MAX_FIELDS:
            raise _refuse(f"more than {MAX_FIELDS} parameters")
        if not all(isinstance(key, str) for key in value):
            raise _refuse("object keys must be strings")
        return sum(len(k) + _check_value_shape(v, depth + 1) for k, v in value.items())
    if isinstance(value, list):
        if len(value) > MAX_FIELDS:
            raise _refuse(f"more than {MAX_FIELDS} list items")
        return sum(_check_value_shape(v, depth + 1) for v in value)
    raise _refuse(f"unsupported parameter value of type {type(value).__name__}")


def _params_from_mapping(data: Mapping[Any, Any]) -> dict[str, object]:
    if len(data) > MAX_FIELDS:
        raise _refuse(f"more than {MAX_FIELDS} parameters")
    # Multi-dicts disagree on which duplicate plain indexing returns (aiohttp and
    # Werkzeug: first; Starlette and Django: last); ask for all and keep the last, as PHP.
    get_all = getattr(data, "getall", None) or getattr(data, "getlist", None)
    params: dict[str, object] = {}
    size = 0
    for raw_key in dict.fromkeys(data.keys()):
        key = _text(raw_key, "parameter name")
        value = get_all(raw_key)[-1] if get_all is not None else data[raw_key]
        if isinstance(value, bytes | bytearray):
            value = _text(value, f"parameter {key}")
        size += len(key) + _check_value_shape(value, 1)
        if size > MAX_INPUT_SIZE:
            raise _refuse(f"input larger than {MAX_INPUT_SIZE} bytes")
        params[key] = value
    return params


def _text(value: object, what: str) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bytes | bytearray | memoryview):
        try:
            return bytes(value).decode("utf-8")
        except UnicodeDecodeError:
            raise _refuse(f"{what} is not valid UTF-8") from None
    raise _refuse(f"{what} must be a string, not {type(value).__name__}")


def _received_params(data: object) -> dict[str, object]:
    """The received parameters in received order; shape and size checked, nothing trusted."""
    if isinstance(data, str | bytes | bytearray | memoryview):
        if len(data) > MAX_INPUT_SIZE:
            raise _refuse(f"input larger than {MAX_INPUT_SIZE} bytes")
        text = _text(data, "input").strip()
        return _parse_json_body(text) if text.startswith("{") else _parse_query(text)
    if isinstance(data, Mapping):
        return _params_from_mapping(data)
    if hasattr(data, "keys") and hasattr(data, "__getitem__"):  # a mapping not registered as one
        return _params_from_mapping(cast("Mapping[Any, Any]", data))
    raise _refuse(f"cannot read parameters from {type(data).__name__}")


def _split_sign(
    params: dict[str, object], required: tuple[str, ...], what: str
) -> tuple[dict[str, object], bytes]:
    sign = params.pop("sign", None)
    missing = [name for name in required if params.get(name) is None]
    if sign is None or sign == "":
        missing.append("sign")
    if missing:
        raise _refuse(f"{what} is missing required field(s): {', '.join(missing)}")
    if not isinstance(sign, str):
        raise _refuse("sign must be a string")
    # A '+' sent unencoded in a query string arrives as a space; base64 has no spaces.
    return params, Verifier.decode_signature(sign.replace(" ", "+"))


# ---------------------------------------------------------------------------
# Canonical forms


def _notification_forms(params: Mapping[str, object]) -> Iterator[tuple[str, dict[str, object]]]:
    """The bounded list of §8.4 layouts, most likely first (at most 13)."""
    partial = params.get("is_partial_payment")
    partial_bool: bool | None = None
    if isinstance(partial, str) and partial.lower() in _TRUE | _FALSE:
        partial_bool = partial.lower() in _TRUE
    elif isinstance(partial, bool | int) and partial in (0, 1):
        partial_bool = bool(partial)
    for list_name, fields in _FIELD_LISTS:
        for id_as_received in (False, True):
            for as_bool in (False, True):
                if as_bool and partial_bool is None:
                    continue
                form: dict[str, object] = {name: params.get(name) for name in fields}
                if not id_as_received:
                    form["id"] = _php_int(form["id"])
                if as_bool:
                    form["is_partial_payment"] = partial_bool
                name = (
                    list_name
                    + ("+id_as_received" if id_as_received else "")
                    + ("+partial_as_bool" if as_bool else "")
                )
                yield name, form
    yield "received_order", dict(params)


def _first_match(
    verifier: Verifier, signature: bytes, forms: Iterator[tuple[str, dict[str, object]]]
) -> tuple[str, SignatureHash, frozenset[str]]:
    """The layout that verified, its hash, and the names it signed."""
    seen: set[str] = set()
    for name, form in forms:
        try:
            body = _encode_received(form)
        except (EncodingError, ValueError, OverflowError):
            continue  # PHP's json_encode would fail on it too: cannot be what was signed
        if body in seen:
            continue
        seen.add(body)
        matched = verifier.matching_hash(body.encode("ascii"), signature)
        if matched is not None:
            return name, matched, frozenset(form)
    raise _refuse("signature does not verify")


# ---------------------------------------------------------------------------
# Typed results (built only after the signature verified)


def _opt_str(params: Mapping[str, object], name: str) -> str | None:
    value = params.get(name)
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    raise _refuse(f"{name} is not a string")


def _req_str(params: Mapping[str, object], name: str) -> str:
    value = _opt_str(params, name)
    if value is None:
        raise _refuse(f"missing required field: {name}")
    return value


def _money(params: Mapping[str, object], name: str) -> Decimal | None:
    value = params.get(name)
    if value is None or value == "":
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        return Decimal(value)
    if isinstance(value, float) and math.isfinite(value):
        return Decimal(repr(value))
    if isinstance(value, str) and _DECIMAL.fullmatch(value):
        return Decimal(value)
    # Signed by AliKassa but not a number: refuse rather than guess an amount.
    raise _refuse(f"{name} is not a decimal amount")


def _flag(params: Mapping[str, object], name: str) -> bool:
    value = params.get(name)
    if value is None or value is False or value == 0:
        return False
    if value is True or value == 1:
        return True
    if isinstance(value, str) and value.lower() in _TRUE | _FALSE:
        return value.lower() in _TRUE
    raise _refuse(f"{name} is not a boolean")


@attrs.frozen
class Notification:
    """A verified AliKassa notification. Only ever built after the signature checked out.

    ``variant`` names the canonical layout that verified (``"documented"`` for the
    documented 11-field list) and ``signature_hash`` the hash (``"sha1"``/``"sha256"``).
    ``raw`` holds every received parameter except ``sign``; ``unsigned`` those of them the
    signature did not cover (anyone could have added them: trust none). Deduplicate on
    ``(type, id, payment_status)``: the same notification may arrive more than once.

    >>> note = verifier.verify_notification(request.query_params)
    >>> if note.payment_status == PaymentStatus.PAID: ...
    """

    type: str
    id: int
    order_id: str
    payment_status: PaymentStatus
    amount: Decimal | None
    payment_amount: Decimal | None
    commission_amount: Decimal | None
    is_partial_payment: bool
    account: str | None
    service: str | None
    desc: str | None
    variant: str
    signature_hash: SignatureHash
    raw: Mapping[str, object] = attrs.field(eq=False, repr=False)
    unsigned: Mapping[str, object] = attrs.field(factory=dict, eq=False, repr=False)


@attrs.frozen
class Redirect:
    """A verified payer redirect (POST ``order_id``, ``uuid``, ``sign``; §9).

    A redirect proves only that the payer came back to your site. It says nothing
    about whether the payment succeeded: take the final state from the notification
    or from ``client.payment_status()``.
    """

    order_id: str
    uuid: str


class NotificationVerifier:
    """Checks notifications and redirects with AliKassa's notification public key.

    >>> verifier = NotificationVerifier.from_file("cert/notification/public.pem")
    >>> note = verifier.verify_notification(body_or_params, expected_account=ACCOUNT)
    """

    __slots__ = ("_verifier",)

    def __init__(self, verifier: Verifier) -> None:
        self._verifier = verifier

    @classmethod
    def from_pem(cls, pem: bytes | str) -> NotificationVerifier:
        """From the PEM text of ``public.pem`` (SPKI, PKCS#1 public key or X.509)."""
        return cls(Verifier.from_pem(pem))

    @classmethod
    def from_file(cls, path: str | Path) -> NotificationVerifier:
        """From the notification archive's ``public.pem``."""
        return cls(Verifier.from_file(path))

    @property
    def fingerprint(self) -> str:
        return self._verifier.fingerprint

    def verify_notification(
        self, data: NotificationData, *, expected_account: str | None = None
    ) -> Notification:
        """Verify a notification and return it typed; raise :class:`SignatureError` otherwise.

        ``data``: received parameters (mapping or multi-dict), raw query string or
        form body, or JSON body (text, bytes or parsed ``dict``). With
        ``expected_account``, a notification for another account is refused too.

        >>> note = verifier.verify_notification(b"type=payment&id=1&...&sign=...")
        """
        if expected_account is not None and not isinstance(expected_account, str):
            raise ConfigurationError(
                f"expected_account must be the account UUID string, not "
                f"{type(expected_account).__name__}"
            )
        params, signature = _split_sign(_received_params(data), _REQUIRED, "notification")
        variant, used_hash, names = _first_match(
            self._verifier, signature, _notification_forms(params)
        )
        # Typed fields come from what the signature covered, never from a parameter
        # appended to a genuine notification (an older layout signs no commission_amount).
        signed = {k: v for k, v in params.items() if k in names}
        note = Notification(
            type=_req_str(signed, "type"),
            id=_php_int(signed["id"]),
            order_id=_req_str(signed, "order_id"),
            payment_status=PaymentStatus(_req_str(signed, "payment_status")),
            amount=_money(signed, "amount"),
            payment_amount=_money(signed, "payment_amount"),
            commission_amount=_money(signed, "commission_amount"),
            is_partial_payment=_flag(signed, "is_partial_payment"),
            account=_opt_str(signed, "account"),
            service=_opt_str(signed, "service"),
            desc=_opt_str(signed, "desc"),
            variant=variant,
            signature_hash=used_hash,
            raw=MappingProxyType(params),
            unsigned=MappingProxyType({k: v for k, v in params.items() if k not in names}),
        )
        if expected_account is not None and (
            note.account is None or note.account.lower() != expected_account.lower()
        ):
            raise _refuse(f"notification is for account {note.account!r}, not {expected_account!r}")
        return note

    def verify_redirect(self, data: NotificationData) -> Redirect:
        """Verify the payer's redirect POST (``order_id``, ``uuid``, ``sign``).

        This proves only that the payer came back, not that the payment is paid:
        wait for the notification or ask ``client.payment_status()``.

        >>> ret = verifier.verify_redirect(await request.body())
        """
        params, signature = _split_sign(_received_params(data), _REDIRECT_FIELDS, "redirect")
        form = {name: params[name] for name in _REDIRECT_FIELDS}
        _first_match(self._verifier, signature, iter([("redirect", form)]))  # or it raises
        return Redirect(order_id=_req_str(params, "order_id"), uuid=_req_str(params, "uuid"))

    def __repr__(self) -> str:
        return f"NotificationVerifier(fingerprint={self.fingerprint!r})"
