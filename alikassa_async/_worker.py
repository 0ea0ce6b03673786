"""One worker of a batch shared on PostgreSQL: claim, send once, record, repeat.

>>> async with PostgresJournal(dsn, payout_cert=cert) as journal:
...     async for result in client.payouts_worker(journal, batch="payroll-2026-12",
...                                               concurrency=64, rate=50):
...         print(result.order_id, result.outcome)

Start as many workers as you like, on any machines; each ends when the batch
has nothing left (no item pending, none owned by anyone, no ``unknown`` one due
for another reconcile round). The rules each keeps, and why:

- **A claim is the durable intent.** An item is sent only after the statement
  that marked it ``intent`` with this worker's id, a fencing token and a lease
  (database clock) has committed (:meth:`PostgresJournal.claim_items`). A
  re-send after proven absence first commits a fenced ``mark_resend``.
- **A send ends well inside its lease.** The lease is longer than the client's
  ``RetryPolicy.total_timeout`` plus a margin, and before each send the worker
  checks that its lease (as last confirmed by the database, counted from the
  moment it *asked*) has at least that much left; if not, it waits for a
  renewal and sends nothing meanwhile. Leases of items still in flight are
  renewed every ``heartbeat`` seconds. Without the database there are no
  renewals, so sending stops by itself; it resumes when renewals succeed again.
- **Every outcome write is fenced** (``WHERE token = mine AND owner = me``): a
  worker that lost an item changes nothing, and stops working on it.
- **Takeover only reconciles.** An item whose lease expired is claimed in
  doubt; it is looked up by ``order_id`` with the single-process runner's
  reconcile logic (:mod:`alikassa_async._batch`), and a 404 proves absence only
  ``settle`` after the previous owner's lease ended (the latest moment it could
  have sent, on the database clock). Only proven absence leads to a send.
- **``rate`` is batch-wide.** Each worker heartbeats into the ``workers`` table
  and takes ``rate / live workers`` (live: a heartbeat within three intervals,
  database clock). A new worker waits one heartbeat interval before its first
  request so the others have seen it; a dead one stops counting after three
  intervals (the others then speed up). Brief undershoot, never overshoot by
  more than one interval's worth.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import socket
import time
import uuid
from collections.abc import AsyncGenerator, Callable
from typing import TYPE_CHECKING, TypeAlias

import attrs

from ._batch import (
    BatchResult,
    Outcome,
    RateLimiter,
    ReconcilePolicy,
    _detail,
    _Item,
    _Run,
    _WaitSettings,
)
from ._defaults import DEFAULT_CONCURRENCY
from ._errors import ConfigurationError
from ._sealing import SealError
from .journal import JournalError, JournalState, OrderIdConflictError
from .pg_journal import (
    Claim,
    JournalUnavailableError,
    LeaseLostError,
    PostgresJournal,
)
from .pg_journal import Outcome as StoredOutcome

if TYPE_CHECKING:
    from ._client import AliKassaClient

__all__ = ["WorkerPolicy", "payouts_worker"]

logger = logging.getLogger("alikassa_async.worker")

_WRITERS = 3  # concurrent group writes (each on its own pooled connection)


@attrs.frozen
class WorkerPolicy:
    """Timings of a worker. The defaults suit a real gateway; tests scale them down."""

    #: seconds a claim is owned without renewal (None: 2 x the client's total_timeout + 30)
    lease: float | None = None
    #: seconds between heartbeats and lease renewals
    heartbeat: float = 2.0
    #: an ``unknown`` item is reconciled again after this many seconds ...
    retry_unknown: float = 30.0
    #: ... at most this many extra rounds (then it waits for a human or a new load)
    max_rounds: int = 3
    #: longest pause between claims while other workers' leases run
    idle_poll: float = 1.0


class _Lost(Exception):
    """This worker no longer owns the item: stop, report nothing (its new owner will)."""


class _SharedLimiter(RateLimiter):
    """The batch rate, divided among the live workers (re-divided at each heartbeat)."""

    def __init__(self, rate: float | None) -> None:
        super().__init__(rate)
        self.batch_rate = rate

    def share(self, workers: int) -> None:
        if self.batch_rate is not None:
            self.set_rate(self.batch_rate / max(workers, 1))


@attrs.define
class _Owned:
    claim: Claim
    #: local monotonic time by which the lease has surely ended
    deadline: float
    lost: bool = False
    task: asyncio.Task[BatchResult | None] | None = None
    item: _Item | None = None


@attrs.frozen
class _SentMark:
    order_id: str
    token: int


_Write: TypeAlias = StoredOutcome | _SentMark


class _Worker:
    def __init__(
        self,
        client: AliKassaClient,
        journal: PostgresJournal,
        batch: str,
        concurrency: int,
        rate: float | None,
        reconcile: ReconcilePolicy,
        policy: WorkerPolicy,
        worker_id: str | None,
    ) -> None:
        budget = client.retry.total_timeout
        if budget is None:
            raise ConfigurationError(
                "payouts_worker needs a bounded send: give the client a "
                "RetryPolicy(total_timeout=...) so every send ends inside its lease"
            )
        self.client = client
        self.journal = journal
        self.batch = batch
        self.policy = policy
        self.send_budget = budget
        self.margin = max(1.0, 0.25 * budget, 2 * policy.heartbeat)
        self.lease = policy.lease if policy.lease is not None else 2 * budget + 30.0
        if self.lease < self.send_budget + self.margin + policy.heartbeat:
            raise ConfigurationError(
                f"lease {self.lease:g}s is too short: a send may take {budget:g}s "
                f"(total_timeout) and must end {self.margin:g}s before the lease does, "
                f"with a {policy.heartbeat:g}s heartbeat"
            )
        self.worker = worker_id or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.limiter = _SharedLimiter(rate)
        self.run = _Run(
            client,
            _ItemJournal(self),
            self.limiter,
            reconcile,
            _WaitSettings(False, None, 1.0, 1.0),
            concurrency,
        )
        self.owned: dict[str, _Owned] = {}
        self.pending_writes: asyncio.Queue[tuple[_Write, asyncio.Future[float | None]]] = (
            asyncio.Queue()
        )

    # -- leases ----------------------------------------------------------------------

    async def _renew(self) -> None:
        tokens = {o.claim.token: o for o in self.owned.values() if not o.lost}
        if not tokens:
            return
        renewed, deadline = await self.journal.renew(
            self.worker,
            [(o.claim.order_id, token) for token, o in tokens.items()],
            lease=self.lease,
        )
        for token, owned in tokens.items():
            if token in renewed:
                owned.deadline = max(owned.deadline, deadline)
            else:
                owned.lost = True
                if owned.task is not None and not owned.task.done():
                    # Its lease ran out (nobody takes a live one), so its sends had ended.
                    owned.task.cancel()

    async def heartbeats(self) -> None:
        failures = 0
        while True:
            try:
                live = await self.journal.heartbeat(
                    self.worker, self.batch, live_within=3 * self.policy.heartbeat
                )
                self.limiter.share(live)
                await self._renew()
                if failures:
                    logger.warning("worker %s: database back", self.worker)
                failures = 0
            except JournalError as exc:  # unreachable, or a statement failed: try again
                failures += 1
                if failures == 1:
                    logger.warning(
                        "worker %s: no heartbeat (%s); no send starts until the "
                        "database confirms the leases again",
                        self.worker,
                        exc,
                    )
            await asyncio.sleep(self.policy.heartbeat / (2 if failures else 1))

    # -- writes ------------------------------------------------------------------------

    async def write(self, write: _Write) -> float:
        """A fenced write, group-committed with the others; the new local lease deadline
        for a sent mark. Raises _Lost if the item is no longer this worker's."""
        future: asyncio.Future[float | None] = asyncio.get_running_loop().create_future()
        self.pending_writes.put_nowait((write, future))
        deadline = await future
        if deadline is None:
            raise _Lost(write.order_id)
        return deadline

    async def writer(self) -> None:
        """Apply the queued writes, a group per round trip; retry while the database is
        away (the items stay owned: nothing else can take them meanwhile)."""
        while True:
            taken = [await self.pending_writes.get()]
            while not self.pending_writes.empty() and len(taken) < 512:
                taken.append(self.pending_writes.get_nowait())
            try:
                await self._apply(taken)
            finally:
                for _ in taken:
                    self.pending_writes.task_done()

    async def _apply(self, taken: list[tuple[_Write, asyncio.Future[float | None]]]) -> None:
        # A sent mark whose waiter was cancelled let no bytes leave: writing it would only
        # put its item in doubt. An outcome stays true whoever waits for it.
        group = [(w, f) for w, f in taken if not (isinstance(w, _SentMark) and f.cancelled())]
        if not group:
            return
        marks = [w for w, _ in group if isinstance(w, _SentMark)]
        outcomes = [w for w, _ in group if isinstance(w, StoredOutcome)]
        delay = 0.05
        while True:
            try:
                marked, applied, deadline = await self.journal.write_group(
                    self.worker,
                    [(m.order_id, m.token) for m in marks],
                    outcomes,
                    lease=self.lease,
                )
                break
            except JournalUnavailableError:
                await asyncio.sleep(delay + random.uniform(0, delay))
                delay = min(delay * 2, self.policy.heartbeat)
            except JournalError as exc:  # not the connection: the items' tasks raise it
                for _, future in group:
                    if not future.done():
                        future.set_exception(exc)
                return
        for write, future in group:
            if future.done():
                continue
            if isinstance(write, _SentMark):
                future.set_result(deadline if write.token in marked else None)
            else:
                future.set_result(0.0 if write.order_id in applied else None)

    # -- one item ------------------------------------------------------------------------

    async def process(self, owned: _Owned) -> BatchResult | None:
        claim = owned.claim
        index = max(claim.line - 1, 0)
        try:
            request = self.journal.open_claim(self.batch, claim)
        except SealError as exc:
            state = Outcome.UNKNOWN if claim.in_doubt else Outcome.REJECTED
            await self.write(
                StoredOutcome(claim.order_id, claim.token, state.value, detail=_detail(exc))
            )
            return BatchResult(index=index, order_id=claim.order_id, outcome=state, error=exc)
        item = owned.item = _Item(index, request, resumed=claim.sends > 1 or claim.in_doubt)
        item.payout_id = claim.payout_id
        if claim.in_doubt:
            assert claim.sent_ago is not None
            # The previous owner could have sent it until its lease ended, sent_ago
            # seconds ago on the database clock: the settle period counts from there.
            item.doubt_since = asyncio.get_running_loop().time() - claim.sent_ago
        try:
            # A fresh claim (or one whose last send never left) is already the intent of
            # the first send; an item in doubt records a new intent before any re-send.
            result = await self.run._send_until_settled(
                item, claim.in_doubt, claim.in_doubt, lambda: None
            )
        except (_Lost, LeaseLostError):
            logger.info("order_id=%s: lease lost; its new owner reconciles it", claim.order_id)
            return None
        if item.credentials_refused:
            # Refused for this worker's certificate or account, not for the payout: back to
            # not_sent at once, for a worker with the right ones, without using up a round.
            try:
                await self.write(
                    StoredOutcome(
                        claim.order_id,
                        claim.token,
                        Outcome.NOT_SENT.value,
                        detail=None if result.error is None else _detail(result.error),
                        retry_in=0.0,
                        resumed=item.resumed,
                        refund_round=True,
                    )
                )
            except _Lost:
                return None
            return attrs.evolve(result, outcome=Outcome.NOT_SENT)
        if result.outcome in (Outcome.UNKNOWN, Outcome.NOT_SENT):
            try:
                await self.write(
                    StoredOutcome(
                        claim.order_id,
                        claim.token,
                        result.outcome.value,
                        payout_id=item.payout_id,
                        detail=None if result.error is None else _detail(result.error),
                        retry_in=self.policy.retry_unknown,
                        resumed=item.resumed,
                        reconciled=item.reconciled,
                    )
                )
            except _Lost:
                return None
        return result

    async def claim(self, free: int) -> list[Claim]:
        return await self.journal.claim_items(
            self.batch, self.worker, free, lease=self.lease, max_rounds=self.policy.max_rounds
        )

    async def join(self, rate: float | None) -> None:
        """Show up in the batch's live workers and take this worker's share of ``rate``."""
        live_within = 3 * self.policy.heartbeat
        live = await self.journal.heartbeat(self.worker, self.batch, live_within=live_within)
        if rate is not None:
            # Let the other workers see us before we take our share of the rate.
            await asyncio.sleep(self.policy.heartbeat)
            live = await self.journal.heartbeat(self.worker, self.batch, live_within=live_within)
        self.limiter.share(live)

    def start(self, claims: list[Claim], done: asyncio.Queue[_Owned]) -> None:
        for claim in claims:
            owned = _Owned(claim, claim.lease_deadline)
            self.owned[claim.order_id] = owned
            owned.task = asyncio.create_task(
                self.process(owned), name=f"payout order_id={claim.order_id}"
            )
            owned.task.add_done_callback(_notify(done, owned))

    async def finished(self, done: asyncio.Queue[_Owned]) -> list[BatchResult]:
        """Results of the items that finished within ``idle_poll`` (maybe none)."""
        # asyncio.wait, not wait_for: on 3.11 wait_for can swallow a cancellation that
        # arrives as the queue delivers (then a SIGTERM would be ignored).
        getter = asyncio.ensure_future(done.get())
        try:
            await asyncio.wait({getter}, timeout=self.policy.idle_poll)
        except BaseException:
            getter.cancel()
            raise
        if not getter.done():
            getter.cancel()  # a cancelled get leaves its item in the queue
            return []  # nothing finished: poll for leases that ran out meanwhile
        results = []
        for owned in [getter.result(), *_drain(done)]:
            self.owned.pop(owned.claim.order_id, None)
            assert owned.task is not None
            if owned.task.cancelled():
                continue
            result = owned.task.result()  # a journal or config error ends the worker
            if result is not None:
                results.append(result)
        return results

    async def stop(self, background: list[asyncio.Task[None]]) -> None:
        """Cancel what runs, release what this worker owns, and leave the batch."""
        tasks = [o.task for o in self.owned.values() if o.task is not None and not o.task.done()]
        flushed = asyncio.ensure_future(self.pending_writes.join())
        try:
            for task in tasks:
                task.cancel()
            if tasks:
                await asyncio.gather(*tasks, return_exceptions=True)
            # The items' last writes (their outcomes above all) go out, briefly: an outcome
            # not written costs the next owner a lookup. (asyncio.wait, not a timeout
            # scope: this task may itself be cancelling.)
            await asyncio.wait([flushed], timeout=self.policy.heartbeat)
        finally:
            # Even if this stop is cut short: no heartbeat renews, and no write of this
            # worker is left on its way to renew a lease after the release.
            flushed.cancel()
            for task in background:
                task.cancel()
        await asyncio.gather(*background, return_exceptions=True)
        # Every send has ended (the tasks were cancelled and awaited): end the leases now,
        # so another worker takes the items over at once; settle counts from this moment.
        try:
            released = await self.journal.release_owned(self.worker, self.batch)
            if released:
                logger.warning(
                    "worker %s stopped owning %d payout(s); released for another "
                    "worker to reconcile",
                    self.worker,
                    released,
                )
        except JournalError:
            if tasks:
                logger.warning(
                    "worker %s stopped with %d payout(s) owned; their leases run "
                    "out and another worker reconciles them",
                    self.worker,
                    len(tasks),
                )
        with contextlib.suppress(JournalError):
            await self.journal.leave(self.worker)

    def owned_item(self, order_id: str) -> _Owned:
        owned = self.owned.get(order_id)
        if owned is None or owned.lost:
            raise _Lost(order_id)
        return owned


class _ItemJournal:
    """The batch runner's per-item journal calls, as this worker's fenced writes."""

    def __init__(self, worker: _Worker) -> None:
        self._worker = worker

    async def record_send(self, order_id: str) -> None:
        """The durable intent of a re-send after proven absence."""
        worker = self._worker
        owned = worker.owned_item(order_id)
        delay = 0.05
        while True:
            try:
                owned.deadline = await worker.journal.mark_resend(
                    worker.worker, order_id, owned.claim.token, lease=worker.lease
                )
                return
            except JournalUnavailableError:
                await asyncio.sleep(delay)
                delay = min(delay * 2, worker.policy.heartbeat)
                worker.owned_item(order_id)

    async def record_sent(self, order_id: str) -> None:
        """Right before the bytes leave: mark the send (fenced, renewing the lease), and
        go ahead only with enough lease left for the whole send."""
        worker = self._worker
        while True:
            owned = worker.owned_item(order_id)
            owned.deadline = max(
                owned.deadline, await worker.write(_SentMark(order_id, owned.claim.token))
            )
            if owned.deadline - time.monotonic() >= worker.send_budget + worker.margin:
                return
            # The database answered too slowly for this lease: mark again (renewing it).

    async def record_outcome(
        self,
        order_id: str,
        state: JournalState,
        *,
        payout_id: int | None = None,
        detail: str | None = None,
    ) -> None:
        # "unknown"/"not_sent" mid-item are not final: the row stays "intent" (owned, in
        # doubt) until the item settles; process() writes the final one.
        if state in (JournalState.UNKNOWN, JournalState.NOT_SENT, JournalState.INTENT):
            return
        owned = self._worker.owned_item(order_id)
        item = owned.item
        if item is not None and item.credentials_refused:
            return  # process() writes it back as not_sent (the payout was not refused)
        await self._worker.write(
            StoredOutcome(
                order_id,
                owned.claim.token,
                state.value,
                payout_id=payout_id,
                detail=detail,
                resumed=item is not None and item.resumed,
                reconciled=item is not None and item.reconciled,
            )
        )

    # The rest of the Journal protocol: the worker's claims and leases replace it.
    async def acquire(self, run_id: str) -> None:
        return None

    async def release(self) -> None:
        return None

    async def claim(self, order_id: str, body_hash: str, run_id: str) -> None:
        raise OrderIdConflictError("a worker claims through PostgresJournal.claim_items")

    async def get(self, order_id: str) -> None:
        return None

    async def counts(self) -> dict[JournalState, int]:
        return {}

    async def aclose(self) -> None:
        return None


async def payouts_worker(
    client: AliKassaClient,
    journal: PostgresJournal,
    *,
    batch: str,
    concurrency: int = DEFAULT_CONCURRENCY,
    rate: float | None = None,
    reconcile: ReconcilePolicy | None = None,
    policy: WorkerPolicy | None = None,
    worker_id: str | None = None,
) -> AsyncGenerator[BatchResult, None]:
    """Work on ``batch`` with other workers until it has nothing left; yield each result.

    ``concurrency`` items are owned at once; ``rate`` is the batch-wide request rate
    shared with the other live workers. Results of items another worker took over
    are reported by that worker, not this one.

    >>> async for r in client.payouts_worker(journal, batch="payroll-2026-12", rate=50):
    ...     print(r.order_id, r.outcome)
    """
    if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
        raise ValueError("concurrency must be a positive integer")
    if not isinstance(journal, PostgresJournal):
        raise ConfigurationError("payouts_worker needs a PostgresJournal")
    policy = policy or WorkerPolicy()
    worker = _Worker(
        client, journal, batch, concurrency, rate, reconcile or ReconcilePolicy(), policy, worker_id
    )
    await journal.check_batch(batch)
    done: asyncio.Queue[_Owned] = asyncio.Queue()
    background: list[asyncio.Task[None]] = []
    try:
        await worker.join(rate)
        # Several writers: while one waits for its commit the next group is on its way, and
        # the server flushes concurrent commits together.
        background = [
            asyncio.create_task(worker.heartbeats(), name="alikassa-heartbeat"),
            *(
                asyncio.create_task(worker.writer(), name=f"alikassa-writes-{i}")
                for i in range(_WRITERS)
            ),
        ]
        rounds = _ClaimRounds(worker, concurrency)
        while True:
            claims = await rounds.next()
            if claims is None:
                break  # nothing pending, owned by anyone, or due again: done
            worker.start(claims, done)
            for result in await worker.finished(done):
                yield result
    finally:
        await worker.stop(background)


class _ClaimRounds:
    """How much a worker claims each round, and when it is done."""

    def __init__(self, worker: _Worker, concurrency: int) -> None:
        self.worker = worker
        self.concurrency = concurrency
        # Own up to twice `concurrency` (the runner's send slots still allow `concurrency`
        # creates at once): a claimed item waits ready while another's outcome commits.
        self.most = 2 * concurrency
        self.backoff = 0.1

    async def next(self) -> list[Claim] | None:
        """The claims of this round (maybe none); None when the batch has nothing left."""
        worker, policy = self.worker, self.worker.policy
        while True:
            # Any credentials refusal (401, or a 403 for the account or a service) stops this
            # worker's claims: its items would only come back to it, refused again.
            refusal = next(iter(worker.run.gate.refused.values()), None)
            free = 0 if refusal else self.most - len(worker.owned)
            try:
                claims = await self._claim(free)
                if refusal is not None and not worker.owned:
                    # A 401: the certificate or account is wrong for every item. What this
                    # worker claimed is back to not_sent for a worker that has the right ones.
                    raise refusal
                if not worker.owned and not claims:
                    later = await worker.journal.pending_later(
                        worker.batch, max_rounds=policy.max_rounds
                    )
                    if later is None:
                        return None
                    await asyncio.sleep(min(max(later, 0.05), policy.idle_poll))
                    continue
                self.backoff = 0.1
                return claims
            except JournalUnavailableError as exc:
                logger.warning(
                    "worker %s: database unreachable, no new claims: %s", worker.worker, exc
                )
                await asyncio.sleep(self.backoff)
                self.backoff = min(self.backoff * 2, policy.heartbeat)
                if worker.owned:
                    return []

    async def _claim(self, free: int) -> list[Claim]:
        owned = len(self.worker.owned)
        if free >= max(1, self.concurrency // 4) or (free > 0 and owned < self.concurrency):
            return await self.worker.claim(free)
        return []


def _notify(
    queue: asyncio.Queue[_Owned], owned: _Owned
) -> Callable[[asyncio.Task[BatchResult | None]], None]:
    return lambda _task: queue.put_nowait(owned)


def _drain(queue: asyncio.Queue[_Owned]) -> list[_Owned]:
    items = []
    while not queue.empty():
        items.append(queue.get_nowait())
    return items
