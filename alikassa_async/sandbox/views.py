"""The JSON bodies the sandbox answers with, shaped like the API reference's examples (§6).

Money is sent as strings at the scales the real gateway uses: 2 decimals for
amounts, 8 for balances (``"93.84000000"``), 9 in history rows
(``"5000.000000000"``). Ids are JSON numbers. Keys follow the documented order.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from decimal import Decimal
from typing import Any

from .rules import SERVICE_RULES
from .state import Account, Record

__all__ = [
    "account_info",
    "balance",
    "history_page",
    "money",
    "payment_created",
    "payment_status",
    "payout_created",
    "payout_status",
]

#: H2H requisites (``cardNumber``, ``cardHolderName``) by service: what the payer pays to
_H2H_REQUISITES: dict[str, tuple[str, str]] = {
    "payment_card_number_card": ("2200700000000019", "Иван Иванович И."),
    "payment_card_number_rub_card": ("2200700000000019", "Иван Иванович И."),
    "payment_card_sbp_rub_card": ("79031112233", "Иван Иванович И."),
    "payment_card_sberpay_rub_card": ("79031112233", "Иван Иванович И."),
    "virtual_account_rub_card": ("40817810000000000019", "ООО «Песочница»"),
    "virtual_account_rub_hpp": ("40817810000000000019", "ООО «Песочница»"),
}


def money(value: Decimal | None, places: int = 2) -> str | None:
    return None if value is None else f"{value:.{places}f}"


def hosted_url(record: Record, base_url: str) -> str:
    return f"{base_url.rstrip('/')}/pay/{record.uuid}"


def payment_created(record: Record, base_url: str) -> dict[str, Any]:
    rule = SERVICE_RULES.get(record.service)
    h2h = rule is not None and rule.h2h
    redirect_only = record.service == "payment_card_sberpay_rub_card"
    body: dict[str, Any] = {
        "url": hosted_url(record, base_url) if not h2h or redirect_only else None,
        "payment_status": "wait",
        "id": record.id,
        "uuid": record.uuid,
        "success_redirect_url": record.request.get("success_redirect_url") or None,
    }
    requisites = _H2H_REQUISITES.get(record.service)
    if requisites is not None:
        body["cardNumber"], body["cardHolderName"] = requisites
    return body


def payment_status(record: Record, base_url: str) -> dict[str, Any]:
    return {
        "order_id": record.order_id,
        "id": record.id,
        "url": hosted_url(record, base_url),
        "payment_status": record.shown_status,
        "card_mask": record.card_mask,
        "amount": money(record.amount),
        "payment_amount": money(record.payment_amount),
        "hold_amount": "0.00",
        "hold_at": None,
        "account_payment_amount": money(record.account_payment_amount),
        "commission_amount": money(record.commission_amount),
        "service_code": record.service,
        "account_old_balance": money(record.account_old_balance, 8),
        "account_new_balance": money(record.account_new_balance, 8),
    }


def payout_created(record: Record) -> dict[str, Any]:
    return {"payment_status": "wait", "id": record.id}


def payout_status(record: Record) -> dict[str, Any]:
    return {
        "order_id": record.order_id,
        "id": record.id,
        "payment_status": record.shown_status,
        "card_mask": record.card_mask,
        "amount": money(record.amount),
        "payment_amount": money(record.payment_amount),
        "is_partial_payment": record.is_partial,
        "account_payment_amount": money(record.account_payment_amount),
        "commission_amount": money(record.commission_amount),
        "service_code": record.service,
        "rrn": record.rrn,
        "account_old_balance": money(record.account_old_balance, 8),
        "account_new_balance": money(record.account_new_balance, 8),
    }


def _history_row(record: Record) -> dict[str, Any]:
    rule = SERVICE_RULES.get(record.service)
    return {
        "created_at": record.created_at.strftime("%Y-%m-%d %H:%M:%S"),
        "id": record.id,
        "order_id": record.order_id,
        "amount": money(record.amount, 9),
        "commission_amount": money(record.commission_amount, 9),
        "currency": rule.currency if rule else None,
        "status": record.shown_status,
    }


def history_page(
    records: Sequence[Record], *, page: int, per_page: int, base_url: str
) -> dict[str, Any]:
    """A Laravel paginator page (``data``, ``links``, ``meta``); ``records`` newest first."""
    total = len(records)
    last_page = max(1, math.ceil(total / per_page))
    start = (page - 1) * per_page
    rows = [_history_row(r) for r in records[start : start + per_page]]
    path = f"{base_url.rstrip('/')}/v1/payment/history"

    def link(number: int) -> str:
        return f"{path}?page={number}"

    return {
        "data": rows,
        "links": {
            "first": link(1),
            "last": link(last_page),
            "prev": link(page - 1) if page > 1 else None,
            "next": link(page + 1) if page < last_page else None,
        },
        "meta": {
            "current_page": page,
            "from": start + 1 if rows else None,
            "last_page": last_page,
            "path": path,
            "per_page": per_page,
            "to": start + len(rows) if rows else None,
            "total": total,
        },
    }


def balance(account: Account, pending_payouts: Decimal) -> dict[str, Any]:
    return {
        "currency": account.currency,
        "balance": money(account.balance, 8),
        "hold": money(Decimal("0"), 8),
        "rolling_reserve": money(Decimal("0"), 8),
        "pending_payouts": money(pending_payouts, 8),
    }


def account_info(account: Account) -> dict[str, Any]:
    def services(direction: str) -> list[dict[str, Any]]:
        return [
            {
                "method": rule.method,
                "currency": rule.currency,
                "service_code": code,
                "status": "active",
            }
            for code, rule in SERVICE_RULES.items()
            if rule.direction == direction and account.enabled(code)
        ]

    return {
        "is_allowed_payment": account.is_allowed_payment,
        "is_allowed_payout": account.is_allowed_payout,
        "payments": services("payment"),
        "payouts": services("payout"),
    }
