"""The one cattrs converter that turns gateway JSON into response models.

Tolerant by design (API reference §4, §13): unknown keys are ignored by the
typed fields and kept in ``raw``; money may be a string of any scale or a
number; ids may be numbers or digit strings; ``RRN``/``rrn`` and camelCase
``cardNumber``/``cardHolderName`` are accepted. A body that still does not
fit raises :class:`ResponseShapeError`, which the client turns into an
``APIError`` (or ``OutcomeUnknownError`` on a create).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from decimal import Decimal, InvalidOperation
from typing import Any, TypeVar

import cattrs

from ._models import (
    AccountInfo,
    HistoryPage,
    HistoryRow,
    PaymentCreated,
    PaymentStatus,
    PayoutStatusResponse,
    ServiceInfo,
)

__all__ = ["ResponseShapeError", "parse_json", "structure"]

T = TypeVar("T")


class ResponseShapeError(ValueError):
    """The body is not JSON, or not the documented shape."""


def parse_json(body: bytes) -> Any:
    """Parse JSON keeping every number exact (floats become ``Decimal``).

    Python's json also reads the non-JSON ``NaN``/``Infinity``: as ``Decimal`` too, so
    ``.raw`` never holds a float, and a money field refuses them as not finite."""
    try:
        return json.loads(body, parse_float=Decimal, parse_constant=Decimal)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        raise ResponseShapeError(f"not JSON: {type(exc).__name__}") from None


def _to_decimal(value: object, _: object) -> Decimal:
    if isinstance(value, Decimal):
        result = value
    elif isinstance(value, int) and not isinstance(value, bool):
        result = Decimal(value)
    elif isinstance(value, str):
        try:
            result = Decimal(value.strip())
        except InvalidOperation:
            raise ValueError(f"not a decimal amount: {value[:40]!r}") from None
    else:
        raise TypeError(f"expected an amount, got {type(value).__name__}")
    if not result.is_finite():
        raise ValueError("amount is not finite")
    return result


def _to_int(value: object, _: object) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().isdigit() and len(value) < 40:
        return int(value.strip())
    # adjusted() bounds the exponent: int(Decimal("1e999999999")) would block the loop for minutes
    if (
        isinstance(value, Decimal)
        and value.is_finite()
        and value.adjusted() < 40
        and value == value.to_integral_value()
    ):
        return int(value)
    raise TypeError(f"expected an integer, got {type(value).__name__}")


def _to_str(value: object, _: object) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, int | Decimal) and not isinstance(value, bool):
        return str(value)
    raise TypeError(f"expected a string, got {type(value).__name__}")


_TRUE = {"1", "true", "yes"}
_FALSE = {"0", "false", "no", ""}


def _to_bool(value: object, _: object) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    raise TypeError(f"expected a boolean, got {type(value).__name__}")


def _to_status(value: object, _: object) -> PaymentStatus:
    if not isinstance(value, str):
        raise TypeError(f"expected a status string, got {type(value).__name__}")
    return PaymentStatus(value)


def _to_raw(value: object, _: object) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise TypeError("expected a JSON object")
    return value


def _build() -> cattrs.Converter:
    conv = cattrs.Converter()
    conv.register_structure_hook(Decimal, _to_decimal)
    conv.register_structure_hook(int, _to_int)
    conv.register_structure_hook(str, _to_str)
    conv.register_structure_hook(bool, _to_bool)
    conv.register_structure_hook(PaymentStatus, _to_status)
    conv.register_structure_hook_func(lambda t: t == Mapping[str, Any], _to_raw)
    return conv


_converter = _build()

# Odd keys the gateway uses, mapped to our attribute names (first present wins).
_RENAMES: dict[type, dict[str, tuple[str, ...]]] = {
    PaymentCreated: {
        "card_number": ("cardNumber", "card_number"),
        "card_holder_name": ("cardHolderName", "card_holder_name"),
    },
    PayoutStatusResponse: {"rrn": ("rrn", "RRN")},
}


def _prepare(cls: type, data: Mapping[str, Any]) -> dict[str, Any]:
    prepared = {k: v for k, v in data.items() if v is not None}
    for target, sources in _RENAMES.get(cls, {}).items():
        for source in sources:
            if data.get(source) is not None:
                prepared[target] = data[source]
                break
    prepared["raw"] = data
    return prepared


def _history_page(data: Mapping[str, Any]) -> HistoryPage:
    rows = data.get("data") or []
    meta_value, links_value = data.get("meta"), data.get("links")
    meta: Mapping[str, Any] = meta_value if isinstance(meta_value, Mapping) else data
    links: Mapping[str, Any] = links_value if isinstance(links_value, Mapping) else {}
    if not isinstance(rows, list):
        raise TypeError("history 'data' must be a list")
    parsed = [structure(HistoryRow, row) for row in rows]
    current, last = _opt_int(meta.get("current_page")), _opt_int(meta.get("last_page"))
    if current is not None and last is not None:
        has_next = current < last
    else:  # no paginator meta: trust the "next" link, but never loop on an empty page
        has_next = bool(links.get("next")) and bool(parsed)
    return HistoryPage(
        rows=parsed,
        current_page=current,
        last_page=last,
        per_page=_opt_int(meta.get("per_page")),
        total=_opt_int(meta.get("total")),
        has_next=has_next,
        raw=data,
    )


def _opt_int(value: object) -> int | None:
    return None if value is None else _to_int(value, int)


def _account_info(data: Mapping[str, Any]) -> AccountInfo:
    def services(key: str) -> list[ServiceInfo]:
        items = data.get(key) or []
        if not isinstance(items, list):
            raise TypeError(f"'{key}' must be a list")
        return [structure(ServiceInfo, item) for item in items]

    return AccountInfo(
        is_allowed_payment=_opt_bool(data.get("is_allowed_payment")),
        is_allowed_payout=_opt_bool(data.get("is_allowed_payout")),
        payments=services("payments"),
        payouts=services("payouts"),
        raw=data,
    )


def _opt_bool(value: object) -> bool | None:
    return None if value is None else _to_bool(value, bool)


_SPECIAL: dict[type, Callable[[Mapping[str, Any]], Any]] = {
    HistoryPage: _history_page,
    AccountInfo: _account_info,
}


def structure(cls: type[T], data: object) -> T:
    """Build ``cls`` from parsed JSON, or raise :class:`ResponseShapeError`."""
    if not isinstance(data, Mapping):
        raise ResponseShapeError(f"expected a JSON object, got {type(data).__name__}")
    try:
        special = _SPECIAL.get(cls)
        if special is not None:
            result: T = special(data)
            return result
        return _converter.structure(_prepare(cls, data), cls)
    except ResponseShapeError:
        raise
    except cattrs.BaseValidationError as exc:
        detail = "; ".join(cattrs.transform_error(exc))[:300]
        raise ResponseShapeError(f"unexpected {cls.__name__} shape: {detail}") from None
    except (TypeError, ValueError, KeyError, AttributeError, RecursionError) as exc:
        raise ResponseShapeError(f"unexpected {cls.__name__} shape: {exc}"[:300]) from None
