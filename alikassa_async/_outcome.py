"""Where one payout of a batch stands: one enum for the batch's results and its journal.

``batch.Outcome`` and ``journal.JournalState`` are this class, so a state read
from a journal *is* an outcome and nothing converts between them by string.
"""

from __future__ import annotations

import enum

__all__ = ["Outcome"]


class Outcome(enum.StrEnum):
    """How one payout of a batch ended, or (journal) where it stands."""

    #: journal only: about to be sent, or sent with no answer recorded (a crash leaves this)
    INTENT = "intent"
    #: the gateway accepted it (``wait``)
    CREATED = "created"
    #: refused for certain: nothing was created
    REJECTED = "rejected"
    #: definitely not created (never left, or every doubt proven absent)
    NOT_SENT = "not_sent"
    #: sent, and whether it was created could not be determined: never treat as failed
    UNKNOWN = "unknown"
    PAID = "paid"
    CANCEL = "cancel"
    FAIL = "fail"

    @property
    def exists_at_gateway(self) -> bool:
        """The gateway definitely has this payout."""
        return self in _EXISTS

    @property
    def in_doubt(self) -> bool:
        """The gateway may or may not have it: look it up before sending again."""
        return self in (Outcome.INTENT, Outcome.UNKNOWN)


_EXISTS = frozenset({Outcome.CREATED, Outcome.PAID, Outcome.CANCEL, Outcome.FAIL})
