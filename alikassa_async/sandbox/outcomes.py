"""Which final status a sandbox payment or payout reaches: decided at creation, by rule.

Rules, first match wins (the same for payments and payouts):

==========================  ==========================================================
``order_id`` starts with    outcome
==========================  ==========================================================
``paid-``                   ``paid``
``cancel-``                 ``cancel``
``fail-``                   ``fail``
``wait-``                   stays ``wait`` until finalised by hand (``sandbox.finalise``)
``partial-``                ``paid`` with half the amount (``is_partial_payment``)
``review-``                 answers ``processing`` (an undocumented status) until ``paid``
==========================  ==========================================================

otherwise by the cents of ``amount``:

=========  =============================================================
cents      outcome
=========  =============================================================
``.91``    ``cancel``
``.92``    ``fail``
``.93``    stays ``wait`` (never final by itself)
``.94``    ``paid`` partially: half the amount (rounded down to a cent)
``.95``    ``processing`` while pending, then ``paid``
any other  ``paid``
=========  =============================================================

>>> plan_outcome("cancel-1", Decimal("10.00")).final
'cancel'
>>> plan_outcome("A-1", Decimal("10.92")).final
'fail'
"""

from __future__ import annotations

from decimal import Decimal

import attrs

__all__ = ["CENT_RULES", "PREFIX_RULES", "Outcome", "plan_outcome"]


@attrs.frozen
class Outcome:
    """What a new record will do: its final status (``None``: stays pending), partial or not,
    and the status it answers while pending."""

    final: str | None = "paid"
    partial: bool = False
    pending: str = "wait"
    rule: str = "default"


#: order_id prefix -> outcome (checked first)
PREFIX_RULES: dict[str, Outcome] = {
    "paid-": Outcome("paid", rule="prefix paid-"),
    "cancel-": Outcome("cancel", rule="prefix cancel-"),
    "fail-": Outcome("fail", rule="prefix fail-"),
    "wait-": Outcome(None, rule="prefix wait-"),
    "partial-": Outcome("paid", partial=True, rule="prefix partial-"),
    "review-": Outcome("paid", pending="processing", rule="prefix review-"),
}

#: cents of the amount (two digits) -> outcome
CENT_RULES: dict[str, Outcome] = {
    "91": Outcome("cancel", rule="cents .91"),
    "92": Outcome("fail", rule="cents .92"),
    "93": Outcome(None, rule="cents .93"),
    "94": Outcome("paid", partial=True, rule="cents .94"),
    "95": Outcome("paid", pending="processing", rule="cents .95"),
}


def plan_outcome(order_id: str, amount: Decimal) -> Outcome:
    """The outcome a record with this ``order_id`` and ``amount`` is scripted to reach."""
    lowered = order_id.lower()
    for prefix, outcome in PREFIX_RULES.items():
        if lowered.startswith(prefix):
            return outcome
    cents = f"{amount:.2f}"[-2:]
    return CENT_RULES.get(cents, Outcome())
