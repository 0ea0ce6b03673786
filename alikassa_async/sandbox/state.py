"""The sandbox's memory: accounts, payments, payouts, the balance ledger.

Everything a test wants to look at lives here (``sandbox.state``):

>>> sandbox.state.payouts_by_order_id["P-1"].status        # 'wait', 'paid', ...
>>> sandbox.state.payout_creations["P-1"]                   # times P-1 was created: 1
>>> sandbox.state.requests["v1/payout"]                     # signed requests received
>>> sandbox.state.balance(ACCOUNT)                          # Decimal('999000.00')

Money rules: a paid payment credits ``payment_amount - commission``; a payout
debits ``amount + commission`` when it is created (refused when the balance is
short) and refunds what was not paid out when it ends ``cancel``/``fail`` (or
the unpaid half of a partial payout). ``account_old_balance`` and
``account_new_balance`` of a record are the balance around its latest
movement.
"""

from __future__ import annotations

import time
import uuid as uuid_module
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime
from decimal import ROUND_DOWN, Decimal
from typing import Any, Literal

import attrs

from .._errors import mask
from .._models import FINAL_STATUSES
from .._signing import Verifier
from .._validation import not_given
from .config import SandboxConfig
from .outcomes import Outcome, plan_outcome
from .rules import SERVICE_RULES

__all__ = [
    "FINAL_STATUSES",
    "Account",
    "InsufficientFundsError",
    "Kind",
    "LedgerEntry",
    "Record",
    "SandboxState",
]

Kind = Literal["payment", "payout"]
_CENT = Decimal("0.01")


class InsufficientFundsError(Exception):
    """A payout (plus commission) is larger than the account balance."""


@attrs.define(eq=False)
class Account:
    """A merchant account: the public keys it signs with, its currency and balance."""

    uuid: str
    payment_verifier: Verifier
    payout_verifier: Verifier
    balance: Decimal
    currency: str = "RUB"
    #: enabled service codes (None: every code the sandbox knows)
    services: frozenset[str] | None = None
    is_allowed_payment: bool = True
    is_allowed_payout: bool = True

    def enabled(self, code: str) -> bool:
        return code in SERVICE_RULES and (self.services is None or code in self.services)


@attrs.define(eq=False)
class Record:
    """One payment or payout, as the sandbox remembers it."""

    kind: Kind
    id: int
    uuid: str
    account: str
    order_id: str
    service: str
    amount: Decimal
    #: the JSON object received, as parsed (kept out of repr: it holds card/phone numbers)
    request: Mapping[str, Any] = attrs.field(repr=False)
    outcome: Outcome
    created_at: datetime
    created_monotonic: float
    status: str = "wait"
    #: status requests answered for this record
    polls: int = 0
    payment_amount: Decimal | None = None
    commission_amount: Decimal | None = None
    account_payment_amount: Decimal | None = None
    account_old_balance: Decimal | None = None
    account_new_balance: Decimal | None = None
    card_mask: str | None = None
    rrn: str | None = None
    finalised_at: datetime | None = None

    @property
    def is_final(self) -> bool:
        return self.status in FINAL_STATUSES

    @property
    def shown_status(self) -> str:
        """What a status request answers: the pending label (``wait``/``processing``) or final."""
        return self.status if self.is_final else self.outcome.pending

    @property
    def is_partial(self) -> bool:
        """Paid, but not the full amount."""
        return (
            self.status == "paid"
            and self.payment_amount is not None
            and self.payment_amount != self.amount
        )

    @property
    def notification_url(self) -> str | None:
        value = self.request.get("notification_endpoint_url")
        return value if isinstance(value, str) and value else None

    @property
    def desc(self) -> str | None:
        value = self.request.get("desc")
        return value if isinstance(value, str) and value else None


@attrs.frozen
class LedgerEntry:
    """One balance movement."""

    account: str
    kind: Kind
    record_id: int
    order_id: str
    reason: str
    delta: Decimal
    old_balance: Decimal
    new_balance: Decimal


def _mask(number: object) -> str | None:
    """The gateway's ``card_mask`` of a card number; None for anything else."""
    if not isinstance(number, str) or len(number) < 12 or not number.isdigit():
        return None
    return mask(number)


class SandboxState:
    """In-memory records and balances, with the lifecycle rules of :class:`SandboxConfig`."""

    def __init__(self, config: SandboxConfig) -> None:
        self.config = config
        self.accounts: dict[str, Account] = {}
        self.payments: dict[int, Record] = {}
        self.payouts: dict[int, Record] = {}
        #: how many times each order_id was *created* (a rejected duplicate does not count)
        self.payment_creations: Counter[str] = Counter()
        self.payout_creations: Counter[str] = Counter()
        #: create requests that reached the handler, per order_id (rejected duplicates and
        #: "after" faults included; a "before" fault stops a request earlier — every signed
        #: request is counted in ``requests``)
        self.payment_create_requests: Counter[str] = Counter()
        self.payout_create_requests: Counter[str] = Counter()
        #: signed requests received per endpoint (``"v1/payout"``, ...)
        self.requests: Counter[str] = Counter()
        #: requests refused for their account or signature (401/403), per endpoint
        self.refused_requests: Counter[str] = Counter()
        self.ledger: list[LedgerEntry] = []
        #: called with each record that becomes final (the sandbox sends notifications)
        self.on_final: Callable[[Record], None] | None = None
        self._by_order: dict[tuple[Kind, str, str], list[Record]] = {}
        self._next_id: dict[Kind, int] = {"payment": 108_000_000, "payout": 100_001_000}

    # -- accounts ------------------------------------------------------------

    def add_account(self, account: Account) -> Account:
        self.accounts[account.uuid.lower()] = account
        return account

    def account(self, uuid: str) -> Account | None:
        return self.accounts.get(uuid.strip().lower())

    def balance(self, uuid: str) -> Decimal:
        account = self.account(uuid)
        if account is None:
            raise KeyError(uuid)
        return account.balance

    def pending_payouts(self, uuid: str) -> Decimal:
        return sum(
            (r.amount for r in self.payouts.values() if r.account == uuid and not r.is_final),
            Decimal("0"),
        )

    # -- lookups ---------------------------------------------------------------

    def _table(self, kind: Kind) -> dict[int, Record]:
        return self.payments if kind == "payment" else self.payouts

    @property
    def payments_by_order_id(self) -> dict[str, Record]:
        """order_id -> the latest payment with it (any account)."""
        return {r.order_id: r for r in self.payments.values()}

    @property
    def payouts_by_order_id(self) -> dict[str, Record]:
        """order_id -> the latest payout with it (any account)."""
        return {r.order_id: r for r in self.payouts.values()}

    def records(self, kind: Kind | None = None) -> Iterator[Record]:
        if kind in (None, "payment"):
            yield from self.payments.values()
        if kind in (None, "payout"):
            yield from self.payouts.values()

    def find(
        self, kind: Kind, account: str, *, id: object = None, order_id: object = None
    ) -> Record | None:
        """The record a status request names: by ``id`` if given, else the latest by order_id."""
        if not not_given(id):
            try:
                record = self._table(kind).get(int(str(id).strip()))
            except ValueError:
                return None
            if record is None or record.account != account:
                return None
            if not not_given(order_id) and record.order_id != order_id:
                return None
            return record
        if not isinstance(order_id, str):
            return None
        matches = self._by_order.get((kind, account, order_id))
        return matches[-1] if matches else None

    def visible(self, record: Record) -> bool:
        lag = self.config.status_visible_after
        return lag <= 0 or time.monotonic() - record.created_monotonic >= lag

    def order_id_taken(self, kind: Kind, account: str, order_id: str) -> bool:
        """Payouts never reuse an order_id. A payment may reuse one whose every earlier
        payment ended ``fail``/``cancel`` — the vendor's own history example shows that (§12)."""
        if not self.config.unique_order_ids:
            return False
        earlier = self._by_order.get((kind, account, order_id), [])
        if kind == "payout":
            return bool(earlier)
        return any(r.status not in ("fail", "cancel") for r in earlier)

    # -- creation --------------------------------------------------------------

    def create(
        self, kind: Kind, account: Account, data: Mapping[str, Any], amount: Decimal
    ) -> Record:
        """Store a validated create request; a payout is debited here (or refused)."""
        order_id = str(data["order_id"])
        amount = amount.quantize(_CENT)
        record = Record(
            kind=kind,
            id=self._next_id[kind] + 1,
            uuid=str(uuid_module.uuid4()),
            account=account.uuid,
            order_id=order_id,
            service=str(data["service"]),
            amount=amount,
            request=dict(data),
            outcome=plan_outcome(order_id, amount),
            created_at=datetime.now(UTC),
            created_monotonic=time.monotonic(),
        )
        if kind == "payout":
            commission = self.config.commission("payout", amount)
            total = amount + commission
            if account.balance < total:
                raise InsufficientFundsError(f"balance {account.balance} < {total}")
            record.commission_amount = commission
            record.account_payment_amount = total
            self._move(account, record, -total, "payout created")
        self._next_id[kind] += 1
        self._table(kind)[record.id] = record
        self._by_order.setdefault((kind, account.uuid, order_id), []).append(record)
        creations = self.payment_creations if kind == "payment" else self.payout_creations
        creations[order_id] += 1
        return record

    def _move(self, account: Account, record: Record, delta: Decimal, reason: str) -> None:
        old = account.balance
        account.balance = old + delta
        record.account_old_balance, record.account_new_balance = old, account.balance
        self.ledger.append(
            LedgerEntry(
                account.uuid,
                record.kind,
                record.id,
                record.order_id,
                reason,
                delta,
                old,
                account.balance,
            )
        )

    # -- lifecycle -------------------------------------------------------------

    def due(self, record: Record, now: float | None = None) -> bool:
        """Whether a pending record has waited long enough to become final by time."""
        wait = self.config.wait_seconds
        if record.is_final or record.outcome.final is None or wait is None:
            return False
        return (time.monotonic() if now is None else now) - record.created_monotonic >= wait

    def poll(self, record: Record) -> Record:
        """Count one status request; finalise the record when a wait limit is reached."""
        if record.is_final:
            return record
        record.polls += 1
        limit = self.config.wait_polls
        if record.outcome.final is not None and (
            (limit is not None and record.polls > limit) or self.due(record)
        ):
            self.finalise(record)
        return record

    def finalise(self, record: Record, status: str | None = None) -> Record:
        """Make ``record`` final: its scripted outcome, or ``status`` (paid/cancel/fail).

        Balances move and the notification (if any) is scheduled. Finalising an
        already final record to another status is refused.
        """
        target = status or record.outcome.final or "paid"
        if target not in FINAL_STATUSES:
            raise ValueError(f"status must be one of {sorted(FINAL_STATUSES)}, not {target!r}")
        if record.is_final:
            if record.status != target:
                raise ValueError(f"{record.kind} {record.order_id} is already {record.status}")
            return record
        account = self.accounts[record.account.lower()]
        partial = record.outcome.partial and target == "paid" and status is None
        paid = (record.amount / 2).quantize(_CENT, ROUND_DOWN) if partial else record.amount
        if record.kind == "payment":
            if target == "paid":
                commission = self.config.commission("payment", paid)
                record.payment_amount = paid
                record.commission_amount = commission
                record.account_payment_amount = paid - commission
                record.card_mask = (
                    _mask("516874000000" + str(record.id)[-4:])
                    if record.service.startswith("payment_card")
                    else None
                )
                self._move(account, record, paid - commission, "payment paid")
        else:
            commission = record.commission_amount or Decimal("0")
            if target == "paid":
                record.payment_amount = paid
                record.rrn = f"{(record.id * 7919) % 10**11:011d}"
                record.card_mask = _mask(record.request.get("number"))
                if paid != record.amount:
                    self._move(account, record, record.amount - paid, "payout partly refunded")
                    record.account_payment_amount = paid + commission
            else:  # nothing paid out: amount and commission go back
                record.payment_amount = Decimal("0.00")
                record.account_payment_amount = Decimal("0.00")
                record.commission_amount = Decimal("0.00")
                self._move(account, record, record.amount + commission, f"payout {target}")
        record.status = target
        record.finalised_at = datetime.now(UTC)
        if self.on_final is not None:
            self.on_final(record)
        return record
