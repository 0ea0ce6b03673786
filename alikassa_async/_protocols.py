"""What polling and batch payouts need from a client — and nothing more.

They sit above :class:`~alikassa_async._client.AliKassaClient` and take one of
these protocols, so they never reach into the client's internals and a test
can hand them any object with the same few methods.
"""

from __future__ import annotations

import asyncio
from typing import Protocol

from ._models import PaymentStatusResponse, PayoutCreated, PayoutRequest, PayoutStatusResponse

__all__ = ["PayoutSender", "StatusSource"]


class StatusSource(Protocol):
    """Status lookups, and the slots every poll of one client shares."""

    @property
    def status_slots(self) -> asyncio.Semaphore:
        """At most this many status requests of waits, watches and batches at once."""
        ...

    async def payment_status(
        self, *, id: int | str | None = None, order_id: str | None = None
    ) -> PaymentStatusResponse: ...

    async def payout_status(
        self, *, id: int | str | None = None, order_id: str | None = None
    ) -> PayoutStatusResponse: ...


class PayoutSender(StatusSource, Protocol):
    """A status source that also creates payouts: what a batch runs on."""

    async def create_payout(self, request: PayoutRequest) -> PayoutCreated: ...
