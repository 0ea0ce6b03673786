"""Every knob of the sandbox, in one place. Mutable: tests may change it between calls.

>>> sandbox = Sandbox.from_certs("certs", account=ACCOUNT,
...                              config=SandboxConfig(wait_seconds=None, wait_polls=0))
>>> sandbox.config.payout_commission_percent = Decimal("0")
"""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal
from typing import Literal

import attrs

from .._defaults import LOOPBACK_HOSTS
from .._signing import SignatureHash

__all__ = ["LOOPBACK_HOSTS", "SandboxConfig"]

_CENT = Decimal("0.01")


@attrs.define
class SandboxConfig:
    """Lifecycle, money, lookups and notification delivery of a :class:`Sandbox`."""

    #: a pending record becomes final this many seconds after creation (None: never by time)
    wait_seconds: float | None = 2.0
    #: ... or once this many status requests have answered ``wait`` (None: never by polls;
    #: 0: the first status request already sees the final status)
    wait_polls: int | None = 1
    #: commission on paid payments, percent of the amount paid
    payment_commission_percent: Decimal = Decimal("3")
    #: commission on payouts, percent of the amount, debited with it at creation
    payout_commission_percent: Decimal = Decimal("1")
    #: balance of an account added without one
    initial_balance: Decimal = Decimal("1000000.00")
    #: how a status lookup of an unknown id/order_id answers: 404, or 400 "The selected
    #: order id is invalid." (Laravel's ``exists`` rule) — the real gateway's is undocumented
    not_found_status: Literal[404, 400] = 404
    #: a new record is invisible to status lookups for this many seconds (index lag)
    status_visible_after: float = 0.0
    #: refuse a create whose order_id the account already used ("has already been taken"),
    #: as the real gateway does. ``False`` models a gateway whose uniqueness check is not
    #: atomic, or that forgot the order_id: every re-send is then a second payout, which
    #: ``state.payout_creations`` counts (the honest test of "never paid twice")
    unique_order_ids: bool = True
    #: a create is committed this many seconds after it arrived, whether or not the client
    #: is still waiting (a gateway that finishes a request long after the client gave up);
    #: the answer follows the commit
    commit_delay: float = 0.0
    #: page size of ``v1/payment/history`` when ``paginate`` is not sent
    history_page_size: int = 15
    #: base of the hosted-page ``url`` of payments (default: the URL the request came to)
    public_url: str | None = None
    #: notification delivery: total attempts, first backoff (doubles), backoff cap, timeout
    notification_attempts: int = 5
    notification_backoff: float = 0.5
    notification_max_backoff: float = 10.0
    notification_timeout: float = 10.0
    #: the hash notifications are signed with (PHP's ``openssl_sign`` default is SHA-1)
    notification_hash: SignatureHash = "sha1"
    #: hosts notifications may be delivered to; anything else is logged and skipped
    notification_hosts: frozenset[str] = LOOPBACK_HOSTS

    def commission(self, kind: Literal["payment", "payout"], amount: Decimal) -> Decimal:
        percent = (
            self.payment_commission_percent if kind == "payment" else self.payout_commission_percent
        )
        return (amount * percent / 100).quantize(_CENT, rounding=ROUND_HALF_UP)
