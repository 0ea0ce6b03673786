"""Batch payouts: many at once, lazily, rate-limited, never one ``order_id`` paid twice.

>>> async with SQLiteJournal("payouts.db") as journal:
...     async for result in client.payouts_batch(requests, concurrency=64, rate=50,
...                                              journal=journal):
...         print(result.order_id, result.outcome)   # created / rejected / unknown / ...

Items are :class:`~alikassa_async._models.PayoutRequest` objects (from
``build_payout``) or mappings of payout fields (``{"service": ..., "order_id":
..., "amount": ..., "number": ...}``, built with ``build_payout``), from an
iterable or an async iterable. They are pulled only as workers free up, so
memory stays proportional to ``concurrency`` however long the input is. An
item that fails local validation is reported ``rejected`` and the batch goes
on.

Outcomes (:class:`Outcome`):

``created``
    the gateway accepted it (``wait``); with ``wait_final`` the final status
    replaces it: ``paid``, ``cancel`` or ``fail`` (``created`` with a
    ``PollingTimeoutError`` if it was not final by ``wait_timeout``).
``rejected``
    refused for certain — by local validation, a 400/422 (validation,
    insufficient funds) or a 401/403 — so nothing was created.
``not_sent``
    nothing was created: the gateway could not be reached (no connection ever
    opened), or every send ended in doubt and each doubt was settled as "no
    such payout" (``ReconcilePolicy.max_sends``); re-running sends it.
``unknown``
    sent, and whether it was created could not be determined. Never treat
    this as failed: re-run with the journal, or ask support (API reference §4).

A send that ends in doubt (timeout after sending, dropped connection, 5xx,
429, unreadable answer) is reconciled by ``payout_status(order_id=...)``.
The payout is sent again only when the gateway *definitely* has no such
payout: a 404 — or a 400/422 whose only complaint is Laravel's "the selected
order id is invalid" (the ``exists`` rule) — seen at least
``ReconcilePolicy.settle`` seconds after the last moment the doubtful send
could still be processed: the end of that attempt, or for a send journaled by
an earlier run, the start of this run (see ``_Run._reconcile``). Any other
answer leaves it ``unknown``. A 400/422 on ``order_id`` to any send means
"already taken": look it up, never "rejected". A found payout whose amount
differs from the request is reported ``unknown`` for a human.

With a journal (:mod:`alikassa_async.journal`) the run first becomes its one
owner, the intent is on disk before each send and its departure after the
rate limiter, and a re-run resumes: created items are not sent again, items
in doubt are reconciled first, and an ``order_id`` seen before with a
different body — or twice in one batch — is refused as a likely bug. A
cancelled run journals what was in flight as ``unknown``. Without a journal,
duplicates are caught only among items in flight at the same time.

The first create goes alone: a 401 stops the batch (what was not sent is
``not_sent``), a 403 stops that service code.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import math
import os
import random
import uuid
from collections import Counter
from collections.abc import (
    AsyncGenerator,
    AsyncIterable,
    AsyncIterator,
    Callable,
    Iterable,
    Iterator,
    Mapping,
    Sized,
)
from contextlib import aclosing
from decimal import Decimal
from typing import Any, TypeAlias

import attrs

from ._defaults import DEFAULT_CONCURRENCY, DEFAULT_MAX_WAITING, DEFAULT_SETTLE
from ._errors import (
    AliKassaError,
    APIError,
    AuthenticationError,
    InvalidRequestError,
    NotFoundError,
    OutcomeUnknownError,
    PollingTimeoutError,
    RateLimitError,
    RequestValidationError,
    TransportError,
)
from ._models import PaymentStatus, PayoutCreated, PayoutRequest, PayoutStatusResponse
from ._observe import TELEMETRY
from ._outcome import Outcome
from ._polling import DEFAULT_INTERVAL, DEFAULT_MAX_INTERVAL, DEFAULT_TIMEOUT, poll_until_final
from ._protocols import PayoutSender
from ._retry import RETRY_PACE
from .journal import (
    Journal,
    OrderIdConflictError,
    SQLiteJournal,
    body_hash,
)
from .services import payout_request_from

__all__ = [
    "BatchProgress",
    "BatchResult",
    "JournalSpec",
    "Outcome",
    "PayoutItem",
    "RateLimiter",
    "ReconcilePolicy",
    "payouts_batch",
]

logger = logging.getLogger("alikassa_async.batch")

#: what ``payouts_batch`` accepts as one item
PayoutItem: TypeAlias = PayoutRequest | Mapping[str, Any]
#: a journal, or the path of a SQLite journal file (or a ``postgresql://`` DSN) the batch
#: opens and closes itself
JournalSpec: TypeAlias = Journal | str | os.PathLike[str]


@attrs.frozen
class BatchResult:
    """One item's result. ``response`` is the create answer or the last status seen."""

    #: position of the item in the input (0-based)
    index: int
    order_id: str
    outcome: Outcome
    response: PayoutCreated | PayoutStatusResponse | None = None
    error: AliKassaError | None = None
    #: AliKassa's payout id, when known
    payout_id: int | None = None
    #: how many times it was sent during this run (0: not sent, e.g. already created)
    attempts: int = 0
    #: the journal knew this order_id from an earlier run
    resumed: bool = False
    #: the outcome was established by a status lookup after a doubtful send
    reconciled: bool = False
    #: the payout's last known status (from the answer, a lookup or the journal)
    status: PaymentStatus | None = None

    @property
    def ok(self) -> bool:
        """Created (or paid): nothing for a human to look at."""
        return self.outcome in (Outcome.CREATED, Outcome.PAID) and self.error is None


@attrs.frozen
class BatchProgress:
    """Passed to the ``progress`` callback after each result."""

    done: int
    #: number of items, if known (``len(items)`` or ``total=``)
    total: int | None
    counts: Mapping[str, int]
    #: seconds since the batch started
    elapsed: float
    #: results per second so far
    rate: float
    in_flight: int


@attrs.frozen
class ReconcilePolicy:
    """How hard a batch works to settle a doubtful send before reporting ``unknown``."""

    #: status lookups per doubtful send (each already retried by the client's RetryPolicy)
    lookups: int = attrs.field(default=6, validator=attrs.validators.ge(1))
    #: a 404 proves absence only this many seconds after the last moment the doubtful
    #: send could still be processed (a gateway may finish a request long after the
    #: client gave up on it; 60 s outlasts the request time limits of a PHP gateway
    #: behind nginx: PHP's max_execution_time, 30 s by default, and nginx's
    #: proxy/fastcgi read timeouts, 60 s)
    settle: float = attrs.field(default=DEFAULT_SETTLE, validator=attrs.validators.ge(0))
    backoff_base: float = 0.5
    backoff_max: float = 10.0
    #: sends of one order_id per run (a re-send only ever follows a proven absence)
    max_sends: int = attrs.field(default=5, validator=attrs.validators.ge(1))
    #: pause for the whole batch after a 429 without Retry-After, or an unreachable gateway
    pause: float = 1.0
    #: the longest a 429's Retry-After may pause the batch: a date a day ahead (a broken
    #: or hostile gateway) must not stall it; still refused, it pauses again
    max_pause: float = attrs.field(default=60.0, validator=attrs.validators.gt(0))

    def backoff(self, step: int) -> float:
        ceiling = min(self.backoff_max, self.backoff_base * 2**step)
        return random.uniform(ceiling / 2, ceiling)

    def pause_after(self, retry_after: float | None) -> float:
        """How long a 429 pauses the batch."""
        return min(retry_after or self.pause, max(self.max_pause, self.pause))


class RateLimiter:
    """Token bucket shared by every request of a batch; ``pause()`` holds everyone.

    >>> limiter = RateLimiter(50)          # 50 requests/s, bursts of 1
    >>> await limiter.acquire()
    """

    def __init__(self, rate: float | None, burst: int = 1) -> None:
        if burst < 1:
            raise ValueError("burst must be at least 1")
        self._burst = burst
        self._interval = self._tolerance = 0.0
        self.set_rate(rate)
        self._tat = 0.0  # theoretical arrival time of the next request (GCRA)
        self._paused_until = 0.0

    def set_rate(self, rate: float | None) -> None:
        """Change the rate from the next request on (``None``: no limit)."""
        if rate is not None and not (math.isfinite(rate) and rate > 0):
            raise ValueError("rate must be a positive number of requests per second")
        self._interval = 0.0 if rate is None else 1.0 / rate
        self._tolerance = (self._burst - 1) * self._interval

    async def acquire(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            now = loop.time()
            start = max(now, self._tat - self._tolerance, self._paused_until)
            if self._interval:
                self._tat = max(self._tat, start) + self._interval  # reserve our slot
            if start <= now:
                return
            await asyncio.sleep(start - now)
            if loop.time() >= self._paused_until:
                return

    def pause(self, seconds: float) -> None:
        """No request of the batch starts within the next ``seconds``."""
        until = asyncio.get_running_loop().time() + max(seconds, 0.0)
        self._paused_until = max(self._paused_until, until)


# ---------------------------------------------------------------------------
# one item


class _Verdict(enum.Enum):
    EXISTS = "exists"
    ABSENT = "absent"
    UNDETERMINED = "undetermined"


_ABSENCE_PHRASES = ("selected", "not found", "does not exist", "doesn't exist", "not exist")


def _says_no_such_payout(error: InvalidRequestError) -> bool:
    """A status lookup refused only because no payout has that order_id/id.

    Laravel's ``exists`` rule answers "The selected order id is invalid." on the
    looked-up field; format complaints ("must be a string", "may not be greater
    than") never use these words, and our lookup already passed format checks.
    """
    if not error.errors or set(error.errors) - {"order_id", "id"}:
        return False
    messages = [m.lower() for msgs in error.errors.values() for m in msgs]
    return bool(messages) and all(any(phrase in m for phrase in _ABSENCE_PHRASES) for m in messages)


def _complains_about_order_id(error: InvalidRequestError) -> bool:
    return "order_id" in error.errors


def _detail(error: BaseException) -> str:
    text = " ".join(str(error).split())
    return f"{type(error).__name__}: {text[:300]}"


@attrs.define
class _Item:
    index: int
    request: PayoutRequest
    resumed: bool = False
    attempts: int = 0
    reconciled: bool = False
    #: loop time of the last moment a send of this order_id could still be processed
    #: (a 404 proves absence only ``ReconcilePolicy.settle`` seconds after it)
    doubt_since: float = 0.0
    last_error: AliKassaError | None = None
    payout_id: int | None = None
    #: the gateway refused a send as "order_id already taken": a 404 no longer proves absence
    taken: bool = False
    #: an intent is journaled for a send that has not ended yet
    send_pending: bool = False
    #: ... and its bytes may have left
    send_left: bool = False
    #: refused for the credentials (401/403), not for the payout: nothing was created, and
    #: a worker with the right certificate or account may send it
    credentials_refused: bool = False

    @property
    def order_id(self) -> str:
        return self.request.order_id

    def result(
        self,
        outcome: Outcome,
        *,
        response: PayoutCreated | PayoutStatusResponse | None = None,
        error: AliKassaError | None = None,
        status: PaymentStatus | None = None,
    ) -> BatchResult:
        if status is None and response is not None:
            status = response.payment_status
        return BatchResult(
            index=self.index,
            order_id=self.order_id,
            outcome=outcome,
            response=response,
            error=error,
            payout_id=self.payout_id,
            attempts=self.attempts,
            resumed=self.resumed,
            reconciled=self.reconciled,
            status=status,
        )


@attrs.frozen
class _WaitSettings:
    enabled: bool
    timeout: float | None
    interval: float
    max_interval: float


class _CredentialsGate:
    """The first create of a run goes alone; a 401 (or a 403 for one service) stops the rest.

    A wrong certificate or account fails every row the same way: one request tells,
    and the gateway is not hammered with the rest of the batch.
    """

    def __init__(self) -> None:
        self._checked = asyncio.Event()
        self._probing = False
        #: the refusal that stopped sending: for every service (``None``) or per service
        self.refused: dict[str | None, AuthenticationError] = {}

    async def wait_turn(self) -> bool:
        """Wait until sends are open; True if this caller is the probe."""
        if self._checked.is_set():
            return False
        if not self._probing:
            self._probing = True
            return True
        await self._checked.wait()
        return False

    def probe_done(self) -> None:
        self._checked.set()

    def refusal_for(self, service: str) -> AuthenticationError | None:
        return self.refused.get(None) or self.refused.get(service)

    def refuse(self, service: str, error: AuthenticationError) -> None:
        # 401: the signature or account, wrong for every row. 403: this account may not
        # use this service (or payouts at all, which then fails each service once).
        key = None if error.status_code == 401 else service
        if key not in self.refused:
            logger.error(
                "the gateway refused the credentials (%s); no more %s will be sent",
                _detail(error),
                "payouts" if key is None else f"{service} payouts",
            )
            self.refused[key] = error


class _Run:
    """Everything one batch run shares between its items."""

    def __init__(
        self,
        client: PayoutSender,
        journal: Journal | None,
        limiter: RateLimiter,
        policy: ReconcilePolicy,
        wait: _WaitSettings,
        concurrency: int,
        *,
        run_id: str | None = None,
    ) -> None:
        self.client = client
        self.journal = journal
        self.limiter = limiter
        self.policy = policy
        self.wait = wait
        self.run_id = run_id or uuid.uuid4().hex
        #: the batch's span (None without OpenTelemetry); items' spans are its children
        self.span: Any = None
        self.gate = _CredentialsGate()
        #: creates on the wire at once; a parked item re-sending takes a slot too
        self.send_slots = asyncio.Semaphore(concurrency)

    def _outcome_for(self, final: PaymentStatus) -> Outcome:
        """Final statuses are outcomes only with ``wait_final``; else it is "created"."""
        return Outcome(final.value) if self.wait.enabled else Outcome.CREATED

    async def _note(self, item: _Item, state: Outcome, detail: str | None = None) -> None:
        if self.journal is not None:
            with TELEMETRY.journal_write():
                await self.journal.record_outcome(
                    item.order_id, state, payout_id=item.payout_id, detail=detail
                )

    async def process(self, item: _Item, park: Callable[[], None]) -> BatchResult:
        """Send one payout (or settle it from the journal) and report its outcome.

        ``park`` tells the scheduler this item no longer needs a send slot (it is
        settling a doubt or waiting for a final status), so another can start.
        """
        with TELEMETRY.child_span(
            self.span, "alikassa.payout.batch_item", {"alikassa.order_id": item.order_id}
        ) as span:
            try:
                result = await self._process(item, park)
            except asyncio.CancelledError:
                await self._journal_interrupted(item)
                raise
            TELEMETRY.set(
                span,
                alikassa__outcome=result.outcome.value,
                alikassa__reconciled=result.reconciled,
                alikassa__resumed=result.resumed,
                alikassa__attempts=result.attempts,
            )
            TELEMETRY.count_payout(result.outcome.value)
            return result

    async def _journal_interrupted(self, item: _Item) -> None:
        """A cancelled item leaves the journal saying what the next run must do."""
        if not item.send_pending or self.journal is None:
            return
        if item.send_left:
            logger.warning(
                "order_id=%s: cancelled while its create was in flight; outcome "
                "unknown until the next run reconciles it",
                item.order_id,
            )
            state, detail = Outcome.UNKNOWN, "cancelled while the create was in flight"
        else:
            state, detail = Outcome.NOT_SENT, "cancelled before the create was sent"
        with contextlib.suppress(Exception):  # the journal failing here changes nothing:
            await asyncio.shield(  # an intent left in place is reconciled by the next run
                self.journal.record_outcome(item.order_id, state, detail=detail)
            )

    async def _process(self, item: _Item, park: Callable[[], None]) -> BatchResult:
        in_doubt = False
        previous = None
        if self.journal is not None:
            digest = body_hash(item.request)
            with TELEMETRY.journal_write():
                previous = await self.journal.claim(item.order_id, digest, self.run_id)
            item.send_pending = previous is None
        if previous is not None:
            if previous.run_id == self.run_id:
                return item.result(
                    Outcome.REJECTED,
                    error=OrderIdConflictError(
                        "this order_id appears more than once in the batch (likely a bug)"
                    ),
                )
            item.resumed = True
            item.payout_id = previous.payout_id
            if previous.body_hash != digest:
                return _changed_body(item, previous.state)
            if previous.state.exists_at_gateway:
                if previous.state is Outcome.CREATED:
                    return await self._created(item, None, park)
                final = PaymentStatus(previous.state.value)
                return item.result(self._outcome_for(final), status=final)
            # In doubt unless its last intended send provably never left.
            if previous.state is Outcome.UNKNOWN or (
                previous.state is Outcome.INTENT and previous.last_send_left
            ):
                in_doubt = True
                item.doubt_since = asyncio.get_running_loop().time() - previous.idle_for
        return await self._send_until_settled(item, in_doubt, previous is not None, park)

    async def _send_until_settled(
        self, item: _Item, in_doubt: bool, journaled: bool, park: Callable[[], None]
    ) -> BatchResult:
        needs_intent = journaled  # a fresh claim already recorded the first send's intent
        connect_failures = 0
        while True:
            if in_doubt:
                park()
                verdict, status = await self._reconcile(item)
                if verdict is _Verdict.EXISTS:
                    assert status is not None
                    item.reconciled = True
                    if status.id is not None:
                        item.payout_id = status.id
                    if status.payment_status.is_final:
                        await self._note(item, Outcome(status.payment_status.value))
                        return item.result(
                            self._outcome_for(status.payment_status), response=status
                        )
                    await self._note(item, Outcome.CREATED)
                    return await self._created(item, status, park)
                if verdict is _Verdict.UNDETERMINED:
                    await self._note(item, Outcome.UNKNOWN, _detail_of(item.last_error))
                    return item.result(Outcome.UNKNOWN, error=item.last_error)
                in_doubt = False  # proven absent: sending again cannot pay twice
            if item.attempts >= self.policy.max_sends:
                # Every doubt so far was settled as "no such payout": nothing exists.
                await self._note(item, Outcome.NOT_SENT, _detail_of(item.last_error))
                item.send_pending = False
                return item.result(Outcome.NOT_SENT, error=item.last_error)
            if needs_intent and self.journal is not None:
                await self.journal.record_send(item.order_id)
                item.send_pending = True
            needs_intent = True
            try:
                created = await self._send_once(item)
            except _Refused as refused:
                item.credentials_refused = True
                await self._note(item, Outcome.NOT_SENT, _detail(refused.error))
                return item.result(Outcome.NOT_SENT, error=refused.error)
            except OutcomeUnknownError as exc:
                item.last_error = exc
                in_doubt = True
                # The end of this attempt: the earliest a 404 could start to mean "absent".
                item.doubt_since = asyncio.get_running_loop().time()
                if isinstance(exc.cause, RateLimitError):
                    self.limiter.pause(self.policy.pause_after(exc.cause.retry_after))
                await self._note(item, Outcome.UNKNOWN, _detail(exc))
                continue
            except InvalidRequestError as exc:
                item.last_error = exc
                if _complains_about_order_id(exc):
                    # "Already taken" is never a refusal: the payout may exist (sent by an
                    # earlier run, another process, or a journal that was lost). Look it up.
                    in_doubt = True
                    item.taken = True
                    await self._note(item, Outcome.UNKNOWN, _detail(exc))
                    continue
                await self._note(item, Outcome.REJECTED, _detail(exc))
                return item.result(Outcome.REJECTED, error=exc)
            except AuthenticationError as exc:
                self.gate.refuse(item.request.service, exc)
                item.credentials_refused = True
                await self._note(item, Outcome.REJECTED, _detail(exc))
                return item.result(Outcome.REJECTED, error=exc)
            except RequestValidationError as exc:
                await self._note(item, Outcome.REJECTED, _detail(exc))
                return item.result(Outcome.REJECTED, error=exc)
            except TransportError as exc:
                # The connection never opened: nothing reached the gateway.
                item.last_error = exc
                connect_failures += 1
                self.limiter.pause(self.policy.pause)
                await self._note(item, Outcome.NOT_SENT, _detail(exc))
                await asyncio.sleep(self.policy.backoff(connect_failures))
                continue
            item.payout_id = created.id
            await self._note(item, Outcome.CREATED)
            return await self._created(item, created, park)

    async def _send_once(self, item: _Item) -> PayoutCreated:
        """One create, in its turn: the credentials probe first, then the rate limiter."""
        async with self.send_slots:
            probe = await self.gate.wait_turn()
            try:
                refusal = self.gate.refusal_for(item.request.service)
                if refusal is not None:
                    item.send_pending = False
                    raise _Refused(refusal)
                await self.limiter.acquire()
                if self.journal is not None:
                    await self.journal.record_sent(item.order_id)
                item.attempts += 1
                item.send_left = True
                try:
                    with _paced(self.limiter):
                        created = await self.client.create_payout(item.request)
                except asyncio.CancelledError:
                    raise  # still pending and maybe gone: process() journals it
                except BaseException:
                    item.send_pending = item.send_left = False
                    raise
                item.send_pending = item.send_left = False
                return created
            finally:
                if probe:
                    self.gate.probe_done()

    async def _reconcile(self, item: _Item) -> tuple[_Verdict, PayoutStatusResponse | None]:
        """Ask the gateway whether ``item`` exists.

        The absence rule: a 404 (or Laravel's "selected order id is invalid") proves
        absence only when seen at least ``settle`` seconds after the last moment a
        send of this order_id could still be processed — the end of this run's last
        attempt, or the start of this run for an earlier run's (``doubt_since``). A
        gateway may finish a request long after the client stopped waiting for it.
        Seen means asked: a 404 decided before that moment and delivered after it
        proves nothing. Until then a 404 only means "not yet": ask again, without using up
        ``lookups`` (the budget for lookups that fail). After "already taken", a
        404 proves nothing at all.
        """
        loop = asyncio.get_running_loop()
        failures = not_yet = 0
        while True:
            await self.limiter.acquire()
            asked = loop.time()  # the gateway looked no earlier than this
            try:
                with _paced(self.limiter):
                    status = await self.client.payout_status(order_id=item.order_id)
            except (NotFoundError, InvalidRequestError) as exc:
                says_absent = isinstance(exc, NotFoundError) or _says_no_such_payout(exc)
                if says_absent and not item.taken:
                    # What a 404 proves is as of when it was asked, however late it came.
                    wait = item.doubt_since + self.policy.settle - asked
                    if wait <= 0:
                        logger.info(
                            "order_id=%s: gateway has no such payout; sending", item.order_id
                        )
                        return _Verdict.ABSENT, None
                    until_settled = item.doubt_since + self.policy.settle - loop.time()
                    await asyncio.sleep(min(max(until_settled, 0.0), self.policy.backoff(not_yet)))
                    not_yet += 1
                    continue
                if not item.taken:
                    item.last_error = exc  # not proof of absence: keep looking
            except (APIError, TransportError) as exc:
                item.last_error = exc
                if isinstance(exc, RateLimitError):
                    self.limiter.pause(self.policy.pause_after(exc.retry_after))
            else:
                if status.amount is not None and status.amount != item.request.amount:
                    item.last_error = _AmountMismatch(
                        item.order_id, status.amount, item.request.amount
                    )
                    return _Verdict.UNDETERMINED, None
                return _Verdict.EXISTS, status
            failures += 1
            if failures >= self.policy.lookups:
                return _Verdict.UNDETERMINED, None
            await asyncio.sleep(self.policy.backoff(failures - 1))

    async def _created(
        self,
        item: _Item,
        response: PayoutCreated | PayoutStatusResponse | None,
        park: Callable[[], None],
    ) -> BatchResult:
        if not self.wait.enabled:
            return item.result(Outcome.CREATED, response=response)
        park()  # the send slot is free: waiting does not hold up the batch
        client = self.client
        payout_id = item.payout_id

        async def fetch() -> PayoutStatusResponse:
            with _paced(self.limiter):
                if payout_id is not None:
                    return await client.payout_status(id=payout_id)
                return await client.payout_status(order_id=item.order_id)

        final: PayoutStatusResponse | None = None
        try:
            async with aclosing(
                poll_until_final(
                    fetch,
                    what=f"payout order_id={item.order_id}",
                    timeout=self.wait.timeout,
                    interval=self.wait.interval,
                    max_interval=self.wait.max_interval,
                    slots=client.status_slots,
                    throttle=self.limiter.acquire,
                )
            ) as changes:
                async for status in changes:
                    final = status
        except PollingTimeoutError as exc:
            last = exc.last_status if isinstance(exc.last_status, PayoutStatusResponse) else None
            return item.result(Outcome.CREATED, response=last or response, error=exc)
        assert final is not None
        await self._note(item, Outcome(final.payment_status.value))
        return item.result(Outcome(final.payment_status.value), response=final)


def _changed_body(item: _Item, earlier: Outcome) -> BatchResult:
    """This row was not sent: its order_id was journaled before with another body."""
    if earlier in (Outcome.REJECTED, Outcome.NOT_SENT):  # nothing was ever created under it
        return item.result(
            Outcome.REJECTED,
            error=OrderIdConflictError(
                "this order_id was journaled before with a different request body "
                "(likely a bug); use a new order_id or a new journal"
            ),
        )
    # A payout exists, or may, under this order_id with the earlier body: never "rejected"
    # (nothing created), which invites paying it again by hand.
    where = f", payout_id {item.payout_id}" if item.payout_id is not None else ""
    return item.result(
        Outcome.UNKNOWN,
        error=OrderIdConflictError(
            f"this order_id was sent before with a different request body (journal: "
            f"{earlier.value}{where}); this row was not sent. Check that payout before "
            "paying this row under a new order_id"
        ),
    )


@contextlib.contextmanager
def _paced(limiter: RateLimiter) -> Iterator[None]:
    """The client's own retries inside this one call take their turn at ``limiter`` too,
    so a batch's ``rate`` is what the gateway sees. A task started inside the call (by a
    hook, say) inherits the pacing but loses it when the call ends."""
    live = True

    async def pace() -> None:
        if live:
            await limiter.acquire()

    token = RETRY_PACE.set(pace)
    try:
        yield
    finally:
        live = False  # pace() reads it: a task started inside the call may outlive it
        RETRY_PACE.reset(token)


class _Refused(Exception):
    """Internal: the credentials were refused on another item; this one was not sent."""

    def __init__(self, error: AuthenticationError) -> None:
        self.error = error


class _AmountMismatch(AliKassaError):
    def __init__(self, order_id: str, found: Decimal, sent: Decimal) -> None:
        super().__init__(
            f"order_id={order_id!r} exists at the gateway with amount {found}, but this batch "
            f"sends {sent}: check by hand before anything else"
        )


def _detail_of(error: BaseException | None) -> str | None:
    return None if error is None else _detail(error)


# ---------------------------------------------------------------------------
# the scheduler


_END = object()


class _Source:
    """Pulls items one at a time from an iterable or async iterable; keeps its error."""

    def __init__(self, items: Iterable[PayoutItem] | AsyncIterable[PayoutItem]) -> None:
        self._sync = None
        self._async = None
        if isinstance(items, AsyncIterable):
            self._async = aiter(items)
        else:
            self._sync = iter(items)
        self.pulled = 0
        self.exhausted = False
        self.error: BaseException | None = None

    async def next(self) -> object:
        """The next item, or ``_END``."""
        try:
            if self._async is not None:
                item = await anext(self._async)
            else:
                assert self._sync is not None
                item = next(self._sync)
        except (StopIteration, StopAsyncIteration):
            self.exhausted = True
            return _END
        except Exception as exc:  # the caller's generator failed: finish what runs, then raise
            self.exhausted = True
            self.error = exc
            return _END
        self.pulled += 1
        return item

    async def aclose(self) -> None:
        closer = getattr(self._async, "aclose", None)
        if closer is not None:
            await closer()


def _order_id_of(item: object) -> str:
    try:
        value = item.get("order_id") if isinstance(item, Mapping) else getattr(item, "order_id", "")
    except Exception:  # the item is broken; its result says so
        return ""
    return value if isinstance(value, str) else ""


def _open_journal(journal: JournalSpec | None) -> tuple[Journal | None, bool]:
    if journal is None or isinstance(journal, Journal):
        return journal, False
    if isinstance(journal, str) and journal.startswith(("postgresql://", "postgres://")):
        from .pg_journal import PostgresJournal  # extra "postgres"

        return PostgresJournal(journal), True
    return SQLiteJournal(journal), True


async def payouts_batch(
    client: PayoutSender,
    items: Iterable[PayoutItem] | AsyncIterable[PayoutItem],
    *,
    concurrency: int = DEFAULT_CONCURRENCY,
    rate: float | None = None,
    journal: JournalSpec | None = None,
    wait_final: bool = False,
    progress: Callable[[BatchProgress], None] | None = None,
    total: int | None = None,
    wait_timeout: float | None = DEFAULT_TIMEOUT,
    wait_interval: float = DEFAULT_INTERVAL,
    wait_max_interval: float = DEFAULT_MAX_INTERVAL,
    max_waiting: int = DEFAULT_MAX_WAITING,
    reconcile: ReconcilePolicy | None = None,
) -> AsyncGenerator[BatchResult, None]:
    """Create many payouts; yield one :class:`BatchResult` per item as each completes.

    ``concurrency`` payouts are sent at once; ``rate`` caps requests per second
    across the batch (creates and status lookups); ``journal`` (a
    :class:`~alikassa_async.journal.Journal` or a SQLite file path) makes the
    batch resumable; ``wait_final`` reports each payout once final (at most
    ``max_waiting`` waits at once, apart from the ``concurrency`` sends).
    Leaving the loop early cancels the work in flight: use
    ``contextlib.aclosing`` to have that happen at once, and a journal so the
    next run can settle what was interrupted.

    >>> async with aclosing(client.payouts_batch(reqs, journal="payouts.db")) as results:
    ...     async for r in results:
    ...         print(r.order_id, r.outcome)
    """
    _check_positive(concurrency=concurrency, max_waiting=max_waiting)
    if total is None and isinstance(items, Sized):
        total = len(items)
    run_id = uuid.uuid4().hex
    async with _journal_owned_by(journal, run_id) as owned:
        run = _Run(
            client,
            owned,
            RateLimiter(rate),
            reconcile or ReconcilePolicy(),
            _WaitSettings(wait_final, wait_timeout, wait_interval, wait_max_interval),
            concurrency,
            run_id=run_id,
        )
        source = _Source(items)
        scheduler = _Scheduler(
            run, concurrency=concurrency, max_waiting=max_waiting, progress=progress, total=total
        )
        run.span = TELEMETRY.start_span(
            "alikassa.payouts.batch",
            {
                "alikassa.batch.run_id": run_id,
                "alikassa.batch.concurrency": concurrency,
                "alikassa.batch.journal": _journal_kind(owned),
            },
        )
        error: BaseException | None = None
        try:
            while True:
                while scheduler.has_room() and not source.exhausted:
                    raw = await source.next()
                    if raw is _END:
                        break
                    refused = scheduler.admit(raw, source.pulled - 1)
                    if refused is not None:
                        yield refused
                if scheduler.idle:
                    break
                result = await scheduler.next_result()
                if result is not None:
                    yield result
            if source.error is not None:
                raise source.error
        except BaseException as exc:
            error = exc
            raise
        finally:
            await scheduler.stop()
            await source.aclose()
            TELEMETRY.set(
                run.span, **{f"alikassa__batch__{k}": v for k, v in scheduler.counts.items()}
            )
            TELEMETRY.end_span(run.span, None if isinstance(error, GeneratorExit) else error)


def _journal_kind(journal: Journal | None) -> str:
    """What the batch span says of its journal: its kind, never a path or a DSN."""
    return "none" if journal is None else type(journal).__name__


def _check_positive(**values: int) -> None:
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer")


@contextlib.asynccontextmanager
async def _journal_owned_by(spec: JournalSpec | None, run_id: str) -> AsyncIterator[Journal | None]:
    """The journal (opened from a path if need be), owned by ``run_id`` throughout."""
    journal, opened_here = _open_journal(spec)
    if journal is None:
        yield None
        return
    try:
        await journal.acquire(run_id)  # before anything is read or sent
        try:
            yield journal
        finally:
            await journal.release()
    finally:
        if opened_here:
            await journal.aclose()


class _Scheduler:
    """Runs items as tasks: ``concurrency`` sending, ``max_waiting`` parked, results in
    completion order, progress after each. Where the items come from is the caller's."""

    def __init__(
        self,
        run: _Run,
        *,
        concurrency: int,
        max_waiting: int,
        progress: Callable[[BatchProgress], None] | None,
        total: int | None,
    ) -> None:
        self.run = run
        self.concurrency = concurrency
        self.max_waiting = max_waiting
        self.progress = progress
        self.total = total
        self.counts: Counter[str] = Counter()
        self._started = asyncio.get_running_loop().time()
        self._events: asyncio.Queue[tuple[str, asyncio.Task[BatchResult]]] = asyncio.Queue()
        self._sending: set[asyncio.Task[BatchResult]] = set()
        self._waiting: set[asyncio.Task[BatchResult]] = set()
        #: order_id of every unfinished task, and the set of them (duplicates in flight)
        self._order_ids: dict[asyncio.Task[BatchResult], str] = {}
        self._ids: set[str] = set()

    @property
    def idle(self) -> bool:
        return not self._sending and not self._waiting

    def has_room(self) -> bool:
        return len(self._sending) < self.concurrency and len(self._waiting) < self.max_waiting

    def admit(self, raw: object, index: int) -> BatchResult | None:
        """Start ``raw`` as item ``index``, or return its ``rejected`` result."""
        try:
            request = payout_request_from(raw)
        except RequestValidationError as exc:  # this item's problem, not the batch's
            # Reported, not raised: no traceback, whose frames hold the item (card number).
            return self._refused(index, _order_id_of(raw), exc.with_traceback(None))
        if request.order_id in self._ids:
            return self._refused(
                index,
                request.order_id,
                OrderIdConflictError(
                    "this order_id appears more than once in the batch (likely a bug)"
                ),
            )
        self._spawn(_Item(index, request))
        return None

    def _refused(self, index: int, order_id: str, error: RequestValidationError) -> BatchResult:
        """An item refused before it started: its own span and count, like any other."""
        with TELEMETRY.child_span(
            self.run.span, "alikassa.payout.batch_item", {"alikassa.order_id": order_id}
        ) as span:
            TELEMETRY.set(
                span, alikassa__outcome=Outcome.REJECTED.value, error__type=type(error).__name__
            )
        TELEMETRY.count_payout(Outcome.REJECTED.value)
        return self._report(
            BatchResult(index=index, order_id=order_id, outcome=Outcome.REJECTED, error=error)
        )

    def _spawn(self, item: _Item) -> None:
        task: asyncio.Task[BatchResult] | None = None

        def park() -> None:
            assert task is not None
            self._events.put_nowait(("waiting", task))

        task = asyncio.create_task(
            self.run.process(item, park), name=f"payout order_id={item.order_id}"
        )
        task.add_done_callback(self._done)
        TELEMETRY.batch_started(1)
        self._sending.add(task)
        self._order_ids[task] = item.order_id
        self._ids.add(item.order_id)

    def _done(self, task: asyncio.Task[BatchResult]) -> None:
        TELEMETRY.batch_started(-1)
        self._events.put_nowait(("done", task))

    async def next_result(self) -> BatchResult | None:
        """The next finished item's result, or None when only a send slot freed up."""
        kind, task = await self._events.get()
        if kind == "waiting":
            if task in self._sending:
                self._sending.discard(task)
                self._waiting.add(task)
            return None
        if task not in self._order_ids:
            return None  # already handled
        self._sending.discard(task)
        self._waiting.discard(task)
        self._ids.discard(self._order_ids.pop(task))
        return self._report(task.result())  # an unexpected error (journal) ends the batch

    def _report(self, result: BatchResult) -> BatchResult:
        self.counts[result.outcome.value] += 1
        if self.progress is not None:
            elapsed = asyncio.get_running_loop().time() - self._started
            done = sum(self.counts.values())
            self.progress(
                BatchProgress(
                    done=done,
                    total=self.total,
                    counts=dict(self.counts),
                    elapsed=elapsed,
                    rate=done / elapsed if elapsed > 0 else 0.0,
                    in_flight=len(self._sending) + len(self._waiting),
                )
            )
        return result

    async def stop(self) -> None:
        """Cancel what is unfinished and wait until each has journaled where it stands."""
        unfinished = [t for t in self._order_ids if not t.done()]
        for task in unfinished:
            task.cancel()
        if not unfinished:
            return
        await asyncio.gather(*unfinished, return_exceptions=True)
        ids = [self._order_ids[t] for t in unfinished]
        logger.warning(
            "batch stopped with %d payout(s) unfinished; %s",
            len(ids),
            "the journal has them: the next run reconciles them"
            if self.run.journal is not None
            else "without a journal nothing records them: look them up by "
            f"order_id ({', '.join(ids[:20])})",
        )
