"""The journal on PostgreSQL: one batch shared by many workers, on many machines.

>>> journal = PostgresJournal("postgresql://payouts@db/payroll", payout_cert=cert)
>>> async with journal:
...     await journal.load("payroll-2026-12", requests)       # validated, sealed, enqueued
...     async for result in client.payouts_worker(journal, batch="payroll-2026-12"):
...         print(result.order_id, result.outcome)

:class:`PostgresJournal` implements the same :class:`~alikassa_async.journal.Journal`
protocol as :class:`~alikassa_async.journal.SQLiteJournal` (so
``payouts_batch(..., journal="postgresql://...")`` works), and adds what a
shared batch needs (extra ``postgres``: psycopg 3 and its pool):

- :meth:`PostgresJournal.load` enqueues a batch: bodies sealed with a key only
  the payout certificate can derive (:mod:`alikassa_async._sealing`), a keyed
  digest to refuse a changed body on reload, ``order_id`` unique across every
  batch of the database, all or nothing.
- :meth:`PostgresJournal.claim_items` is the claim: one statement that picks
  rows ``FOR UPDATE SKIP LOCKED`` and marks them with an owner, a fencing
  token and a lease measured on the database clock (``now()``); its commit is
  the durable intent to send.
- Every later write (:meth:`~PostgresJournal.write_outcomes`,
  :meth:`~PostgresJournal.mark_resend`, :meth:`~PostgresJournal.renew`) is
  fenced: ``WHERE token = <my claim> AND owner = <me>``. A worker that lost its
  lease changes nothing.
- A claim of an item whose lease expired carries ``send_horizon``: the
  latest moment, on the database clock, an earlier owner could still have
  sent it. Absence may be concluded only ``settle`` after that.

The schema lives in its own PostgreSQL schema (default ``alikassa``), created
and migrated by the SDK under an advisory lock; ``schema_version`` records
each migration, and an SDK older than the database's schema refuses it with a
:class:`~alikassa_async.journal.JournalError`.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import re
import socket
import time
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Mapping, Sequence
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import attrs

if TYPE_CHECKING:
    import psycopg
    import psycopg_pool

from ._defaults import __version__
from ._encoding import php_json_encode
from ._errors import RequestValidationError
from ._models import PayoutRequest
from ._sealing import BatchSeal, SealError
from ._signing import Certificate
from .journal import (
    JournalError,
    JournalHolder,
    JournalInUseError,
    JournalRecord,
    JournalState,
    OrderIdConflictError,
)
from .services import payout_request_from

__all__ = [
    "SCHEMA_VERSION",
    "BatchStatus",
    "Claim",
    "JournalUnavailableError",
    "LeaseLostError",
    "LoadReport",
    "Outcome",
    "PostgresJournal",
    "ResultRow",
    "is_postgres_dsn",
]

#: the newest schema this SDK knows
SCHEMA_VERSION = 1
_MIGRATION_LOCK = 0x616C696B  # "alik": serialises schema changes across processes
_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
#: states a claim may take an item from (``pending``: never claimed)
PENDING = "pending"
_FINAL_WITH_PAYOUT = ("created", "paid", "cancel", "fail")
#: once an item is in one of these, its sealed body is never needed again: erased
_ERASE = (*_FINAL_WITH_PAYOUT, "rejected")


def _driver() -> tuple[Any, Any]:
    """psycopg and psycopg_pool, imported on first use (they are the ``postgres`` extra)."""
    try:
        import psycopg
        import psycopg_pool
    except ImportError as exc:
        raise ImportError(
            "PostgresJournal needs psycopg 3 and its pool: pip install 'alikassa-async[postgres]'"
        ) from exc
    return psycopg, psycopg_pool


def is_postgres_dsn(spec: object) -> bool:
    """``postgresql://...`` / ``postgres://...``: a journal spec that names a database."""
    return isinstance(spec, str) and spec.startswith(("postgresql://", "postgres://"))


class JournalUnavailableError(JournalError):
    """The database cannot be reached right now; nothing was changed or sent."""


class LeaseLostError(JournalError):
    """This worker no longer owns the item (its lease expired and another took it)."""


def _migrations(schema: str) -> dict[int, list[str]]:
    s = schema
    return {
        1: [
            f"""CREATE TABLE {s}.batches (
                batch text PRIMARY KEY,
                sealed boolean NOT NULL,
                key_check text,
                cert_fingerprint text,
                created_at timestamptz NOT NULL DEFAULT now())""",
            f"""CREATE TABLE {s}.payouts (
                order_id text PRIMARY KEY,
                batch text NOT NULL REFERENCES {s}.batches ON DELETE CASCADE,
                seq bigserial NOT NULL,
                line integer NOT NULL DEFAULT 0,
                service text NOT NULL DEFAULT '',
                amount numeric,
                body_digest text NOT NULL,
                sealed bytea,
                state text NOT NULL,
                owner text,
                token bigint,
                lease_until timestamptz,
                send_horizon timestamptz,
                retry_after timestamptz,
                sends integer NOT NULL DEFAULT 0,
                sent integer NOT NULL DEFAULT 0,
                sent_at timestamptz,
                rounds integer NOT NULL DEFAULT 0,
                payout_id bigint,
                detail text,
                resumed boolean NOT NULL DEFAULT false,
                reconciled boolean NOT NULL DEFAULT false,
                created_at timestamptz NOT NULL DEFAULT now(),
                updated_at timestamptz NOT NULL DEFAULT now())""",
            f"CREATE INDEX payouts_claimable ON {s}.payouts (batch, seq) "
            "WHERE state IN ('pending', 'intent', 'unknown', 'not_sent')",
            f"CREATE INDEX payouts_by_state ON {s}.payouts (batch, state)",
            f"""CREATE TABLE {s}.workers (
                worker text PRIMARY KEY,
                batch text NOT NULL,
                host text NOT NULL,
                pid integer NOT NULL,
                started_at timestamptz NOT NULL DEFAULT now(),
                heartbeat_at timestamptz NOT NULL DEFAULT now())""",
            f"CREATE SEQUENCE {s}.claim_tokens",
        ],
    }


@attrs.frozen
class LoadReport:
    batch: str
    #: rows new to the database
    added: int
    #: rows already loaded with the same body (a reload is a no-op)
    unchanged: int


@attrs.frozen
class Claim:
    """One item this worker now owns (the claim is committed: the durable intent)."""

    order_id: str
    token: int
    seq: int
    line: int
    sealed: bytes | None
    body_digest: str
    #: the state the item was claimed from: ``pending`` (never sent), ``not_sent``, or
    #: ``intent``/``unknown`` (an earlier owner may have sent it: reconcile first)
    previous: str
    sends: int
    #: intended sends that left for the network (``sent < sends``: the last one never did)
    sent: int
    payout_id: int | None
    #: seconds since the latest moment an earlier owner could have sent it (database
    #: clock); ``None`` if no earlier owner can have sent it
    sent_ago: float | None
    #: local ``time.monotonic()`` by which the lease has surely expired (conservative)
    lease_deadline: float

    @property
    def in_doubt(self) -> bool:
        """An earlier owner may have sent it: look it up before any send."""
        if self.previous == "unknown":
            return True
        # An intent whose send never left: every earlier send was proven absent before
        # this intent was recorded (a re-send only follows proven absence).
        return self.previous == "intent" and self.sent >= self.sends


@attrs.frozen
class Outcome:
    """A fenced outcome write: applies only while ``token`` still owns ``order_id``."""

    order_id: str
    token: int
    state: str
    payout_id: int | None = None
    detail: str | None = None
    #: for ``unknown``: the item may be claimed again (to reconcile) after this many seconds
    retry_in: float | None = None
    #: taken over from an earlier owner / settled by a status lookup (for the results)
    resumed: bool = False
    reconciled: bool = False
    #: a credentials refusal (``not_sent``): this claim does not count toward
    #: ``max_rounds``, so workers with a wrong certificate cannot use up an item's rounds
    refund_round: bool = False


@attrs.frozen
class BatchStatus:
    batch: str
    counts: Mapping[str, int]
    total: int
    #: items owned under a live lease right now
    in_flight: int
    #: seconds since the oldest item in doubt (intent/unknown) last changed, if any
    oldest_doubt: float | None
    live_workers: int

    @property
    def done(self) -> bool:
        return not any(self.counts.get(s, 0) for s in (PENDING, "intent"))


@attrs.frozen
class ResultRow:
    line: int
    seq: int
    order_id: str
    state: str
    payout_id: int | None
    sends: int
    detail: str | None
    resumed: bool = False
    reconciled: bool = False


def _redacted(dsn: str) -> str:
    psycopg, _ = _driver()
    try:
        info = psycopg.conninfo.conninfo_to_dict(dsn)
    except psycopg.ProgrammingError:
        return "postgresql://<unparsable dsn>"
    host = info.get("host") or "localhost"
    port = f":{info['port']}" if info.get("port") else ""
    return f"postgresql://{host}{port}/{info.get('dbname') or ''}"


def _version_sql(schema: str) -> str:
    return f"SELECT COALESCE(MAX(version), 0) FROM {schema}.schema_version"


class PostgresJournal:
    """:class:`~alikassa_async.journal.Journal` on PostgreSQL, shareable by many workers.

    ``payout_cert`` is needed to :meth:`load` a batch and to work on one (the
    sealed bodies open only with it). ``batch`` names the batch that the plain
    ``Journal`` protocol (``payouts_batch(journal=...)``) records into.

    >>> async with PostgresJournal(dsn, payout_cert=cert) as journal:
    ...     report = await journal.load("payroll-2026-12", requests)
    """

    def __init__(
        self,
        dsn: str,
        *,
        payout_cert: Certificate | None = None,
        batch: str = "payouts_batch",
        schema: str = "alikassa",
        max_connections: int = 8,
        connect_timeout: float = 5.0,
    ) -> None:
        if not _NAME.match(schema):
            raise JournalError(f"schema must be a lower-case SQL identifier, not {schema!r}")
        self.dsn = dsn
        self.schema = schema
        self.batch = _check_batch(batch)
        self.payout_cert = payout_cert
        self._seals: dict[str, BatchSeal] = {}
        self._psycopg, pool = _driver()
        options: dict[str, Any] = {
            "autocommit": True,
            "connect_timeout": max(int(connect_timeout), 1),
        }
        try:
            given = self._psycopg.conninfo.conninfo_to_dict(dsn)
        except self._psycopg.ProgrammingError:
            # Not psycopg's words: they quote the offending token, which may be the password.
            raise JournalError(
                f"not a PostgreSQL connection string: {_redacted(dsn)} (in a URL, a % in the "
                "password is written %25)"
            ) from None
        # A database host that vanishes without a reset must not hang a worker for the
        # kernel's 15 minutes of retransmissions: probe idle connections (the DSN wins).
        for key, value in (
            ("keepalives", 1),
            ("keepalives_idle", 10),
            ("keepalives_interval", 5),
            ("keepalives_count", 3),
        ):
            if key not in given:
                options[key] = value
        self._pool: psycopg_pool.AsyncConnectionPool[Any] = pool.AsyncConnectionPool(
            dsn,
            min_size=1,
            max_size=max(max_connections, 2),
            open=False,
            kwargs=options,
            configure=self._configure,
            timeout=connect_timeout,
            reconnect_timeout=7 * 24 * 3600.0,
            name="alikassa-journal",
        )
        self._ready = False
        self._closed = False
        self._open_lock = asyncio.Lock()
        self._lock_conn: psycopg.AsyncConnection[Any] | None = None
        self._owned_since: float | None = None

    def __repr__(self) -> str:
        return f"PostgresJournal({_redacted(self.dsn)!r}, schema={self.schema!r})"

    async def __aenter__(self) -> PostgresJournal:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    @staticmethod
    async def _configure(conn: psycopg.AsyncConnection[Any]) -> None:
        # Commits guard sends: a DBA's synchronous_commit=off would make an intent
        # vanish on a server crash after the payout left. Force it on for our sessions.
        cur = await conn.execute("SHOW synchronous_commit")
        row = await cur.fetchone()
        if row is not None and row[0] == "off":
            await conn.execute("SET synchronous_commit = on")

    # -- opening, schema ----------------------------------------------------------

    async def open(self) -> None:
        """Connect and create or migrate the schema (idempotent)."""
        if self._closed:
            raise JournalError(f"journal {self!r} is closed")
        async with self._open_lock:
            if self._ready:
                return
            try:
                await self._pool.open(wait=True, timeout=self._pool.timeout)
            except self._psycopg.OperationalError as exc:
                raise JournalUnavailableError(
                    f"cannot connect to {_redacted(self.dsn)}: {exc}"
                ) from None
            except _driver()[1].PoolTimeout as exc:
                raise JournalUnavailableError(
                    f"cannot connect to {_redacted(self.dsn)}: {exc}"
                ) from None
            await self._migrate()
            self._ready = True

    async def _migrate(self) -> None:
        s = self.schema
        migrations = _migrations(s)
        async with _Connection(self, opening=True) as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
            await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {s}")
            await conn.execute(
                f"CREATE TABLE IF NOT EXISTS {s}.schema_version (version integer PRIMARY KEY,"
                " sdk text NOT NULL, migrated_at timestamptz NOT NULL DEFAULT now())"
            )
            cur = await conn.execute(_version_sql(s))
            row = await cur.fetchone()
            current = int(row[0]) if row else 0
            if current > SCHEMA_VERSION:
                raise JournalError(
                    f"the journal schema {s!r} in {_redacted(self.dsn)} is version {current}, "
                    f"but this alikassa-async knows only up to {SCHEMA_VERSION}: upgrade "
                    "alikassa-async on this machine (nothing was changed)"
                )
            for version in range(current + 1, SCHEMA_VERSION + 1):
                for statement in migrations[version]:
                    await conn.execute(statement)
                await conn.execute(
                    f"INSERT INTO {s}.schema_version (version, sdk) VALUES (%s, %s)",
                    (version, f"alikassa-async {__version__}"),
                )

    async def schema_version(self) -> int:
        async with self._connection() as conn:
            cur = await conn.execute(_version_sql(self.schema))
            row = await cur.fetchone()
            return int(row[0]) if row else 0

    async def aclose(self) -> None:
        if self._closed:
            return
        await self.release()
        self._closed = True
        await self._pool.close()

    def _connection(self) -> _Connection:
        if self._closed:
            raise JournalError(f"journal {self!r} is closed")
        return _Connection(self)

    async def _ensure_open(self) -> None:
        if not self._ready:
            await self.open()

    # -- the batch key -------------------------------------------------------------

    def seal_for(self, batch: str) -> BatchSeal:
        seal = self._seals.get(batch)
        if seal is None:
            if self.payout_cert is None:
                raise JournalError(
                    "this needs the payout certificate: "
                    "PostgresJournal(dsn, payout_cert=Certificate.from_dir(...))"
                )
            seal = self._seals[batch] = BatchSeal.derive(self.payout_cert, batch)
        return seal

    async def _register_batch(
        self, conn: psycopg.AsyncConnection[Any], batch: str, seal: BatchSeal | None
    ) -> None:
        """Create the batch row, or check that ``seal`` is the key it was sealed with."""
        s = self.schema
        cert = self.payout_cert
        await conn.execute(
            f"INSERT INTO {s}.batches (batch, sealed, key_check, cert_fingerprint) "
            "VALUES (%s, %s, %s, %s) ON CONFLICT (batch) DO NOTHING",
            (
                batch,
                seal is not None,
                None if seal is None else seal.key_check,
                None if cert is None or seal is None else cert.fingerprint,
            ),
        )
        await self._check_batch_key(conn, batch, seal)

    async def _check_batch_key(
        self, conn: psycopg.AsyncConnection[Any], batch: str, seal: BatchSeal | None
    ) -> None:
        cur = await conn.execute(
            f"SELECT sealed, key_check, cert_fingerprint FROM {self.schema}.batches "
            "WHERE batch = %s",
            (batch,),
        )
        row = await cur.fetchone()
        if row is None:
            raise JournalError(f"no batch {batch!r} in {_redacted(self.dsn)}: load it first")
        sealed, key_check, fingerprint = row
        if seal is None:
            return
        if not sealed:
            raise JournalError(
                f"batch {batch!r} was recorded by payouts_batch(), not loaded "
                "with load(): it has no payout bodies to work on"
            )
        if key_check != seal.key_check:
            mine = self.payout_cert.fingerprint if self.payout_cert else "?"
            raise SealError(
                f"batch {batch!r} was loaded with another payout certificate (fingerprint "
                f"{fingerprint}); this one is {mine}"
            )

    # -- loading a batch -----------------------------------------------------------

    async def load(
        self,
        batch: str,
        items: Iterable[PayoutRequest | Mapping[str, Any]]
        | AsyncIterable[PayoutRequest | Mapping[str, Any]],
    ) -> LoadReport:
        """Validate every item, then enqueue them all (or nothing) as ``batch``.

        Loading the same items again is a no-op; an ``order_id`` already in the
        database with a different body, or in another batch, refuses the whole
        load (:class:`~alikassa_async.journal.OrderIdConflictError`). Invalid
        items refuse it with a :class:`~alikassa_async._errors.RequestValidationError`
        naming each item's position.
        """

        async def numbered() -> AsyncIterator[tuple[int, object]]:
            index = 0
            if isinstance(items, AsyncIterable):
                async for item in items:
                    index += 1
                    yield index, item
            else:
                for item in items:
                    index += 1
                    yield index, item

        return await self.load_numbered(batch, numbered())

    async def load_numbered(
        self, batch: str, items: AsyncIterable[tuple[int, object]]
    ) -> LoadReport:
        """:meth:`load` of ``(line, item)`` pairs (the CLI passes CSV line numbers)."""
        batch = _check_batch(batch)
        await self._ensure_open()
        seal = self.seal_for(batch)
        s = self.schema
        problems: dict[str, list[str]] = {}
        seen: dict[str, int] = {}
        async with self._connection() as conn, conn.transaction():
            await self._register_batch(conn, batch, seal)
            await conn.execute(
                "CREATE TEMP TABLE incoming (order_id text, line integer, service text, "
                "amount numeric, body_digest text, sealed bytea) ON COMMIT DROP"
            )
            cur = conn.cursor()
            async with cur.copy("COPY incoming FROM STDIN") as copy:
                async for line, item in items:
                    try:
                        request = payout_request_from(item)
                    except RequestValidationError as exc:
                        if len(problems) < 1000:
                            problems[f"line {line}"] = [
                                f"{field}: {'; '.join(m)}" for field, m in exc.errors.items()
                            ]
                        continue
                    first = seen.setdefault(request.order_id, line)
                    if first != line:
                        problems[f"line {line}"] = [
                            f"order_id: {request.order_id!r} already used on line {first}"
                        ]
                        continue
                    body = php_json_encode(request.to_wire())
                    await copy.write_row(
                        (
                            request.order_id,
                            line,
                            request.service,
                            request.amount,
                            seal.digest(body),
                            seal.seal(request.order_id, body),
                        )
                    )
            if problems:
                raise RequestValidationError(problems)  # rolls the whole load back
            # One load at a time checks and inserts (the rows were copied in parallel): a
            # load still in progress elsewhere would otherwise be invisible to the check,
            # and its rows skipped below as "already loaded" whatever their body.
            await conn.execute("SELECT pg_advisory_xact_lock(%s)", (self._load_lock_key(),))
            cur = await conn.execute(
                f"SELECT i.order_id, p.batch FROM incoming i JOIN {s}.payouts p "
                "USING (order_id) WHERE p.batch <> %s OR p.body_digest <> i.body_digest "
                "ORDER BY i.line LIMIT 20",
                (batch,),
            )
            conflicts = await cur.fetchall()
            if conflicts:
                described = "; ".join(
                    f"{order_id!r} is in batch {other!r}"
                    if other != batch
                    else f"{order_id!r} was loaded before with a different body"
                    for order_id, other in conflicts
                )
                raise OrderIdConflictError(
                    f"{described} (an order_id is unique across all batches); nothing was loaded"
                )
            cur = await conn.execute(
                f"INSERT INTO {s}.payouts (order_id, batch, line, service, amount, "
                "body_digest, sealed, state) SELECT order_id, %s, line, service, amount, "
                "body_digest, sealed, %s FROM incoming ORDER BY line "
                "ON CONFLICT (order_id) DO NOTHING",
                (batch, PENDING),
            )
            added = cur.rowcount
            cur = await conn.execute("SELECT count(*) FROM incoming")
            row = await cur.fetchone()
            total = int(row[0]) if row else 0
        return LoadReport(batch=batch, added=added, unchanged=total - added)

    def _load_lock_key(self) -> int:
        digest = hashlib.sha256(f"{self.schema}/load".encode()).digest()
        return int.from_bytes(digest[:8], "big", signed=True)

    def open_claim(self, batch: str, claim: Claim) -> PayoutRequest:
        """The request a claim stands for, unsealed and checked against its digest."""
        if claim.sealed is None:
            raise SealError(f"order_id={claim.order_id!r} has no sealed body any more")
        seal = self.seal_for(batch)
        body = seal.open(claim.order_id, claim.sealed)
        if seal.digest(body) != claim.body_digest:
            raise SealError(f"order_id={claim.order_id!r}: body does not match its digest")
        return request_from_body(body)

    # -- workers ---------------------------------------------------------------------

    async def check_batch(self, batch: str) -> None:
        """Refuse early when ``batch`` does not exist or was sealed with another certificate."""
        await self._ensure_open()
        seal = self.seal_for(batch)
        async with self._connection() as conn:
            await self._check_batch_key(conn, batch, seal)

    async def heartbeat(self, worker: str, batch: str, *, live_within: float) -> int:
        """Record that ``worker`` is alive; the number of live workers of ``batch``
        (heartbeat within ``live_within`` seconds, database clock), itself included."""
        s = self.schema
        async with self._connection() as conn:
            await conn.execute(
                f"INSERT INTO {s}.workers (worker, batch, host, pid) VALUES (%s, %s, %s, %s) "
                "ON CONFLICT (worker) DO UPDATE SET heartbeat_at = now()",
                (worker, batch, socket.gethostname()[:100], os.getpid()),
            )
            cur = await conn.execute(
                f"SELECT count(*) FROM {s}.workers WHERE batch = %s AND "
                "heartbeat_at > now() - make_interval(secs => %s)",
                (batch, live_within),
            )
            row = await cur.fetchone()
            # workers that died long ago (SIGKILL leaves their row behind)
            await conn.execute(
                f"DELETE FROM {s}.workers WHERE batch = %s AND worker NOT LIKE 'run:%%' AND "
                "heartbeat_at < now() - make_interval(secs => %s)",
                (batch, 100 * live_within),
            )
            return max(int(row[0]) if row else 1, 1)

    async def leave(self, worker: str) -> None:
        async with self._connection() as conn:
            await conn.execute(f"DELETE FROM {self.schema}.workers WHERE worker = %s", (worker,))

    async def claim_items(
        self, batch: str, worker: str, limit: int, *, lease: float, max_rounds: int
    ) -> list[Claim]:
        """Claim up to ``limit`` items: never-claimed ones, expired leases (to reconcile),
        ``unknown`` ones whose retry time came (at most ``max_rounds`` times each), and
        ``not_sent`` ones. One committed statement; rows other workers hold are skipped."""
        s = self.schema
        before = time.monotonic()
        async with self._connection() as conn:
            cur = await conn.execute(
                f"""WITH picked AS (
                    SELECT order_id, state AS was FROM {s}.payouts
                    WHERE batch = %(batch)s AND (
                        state = 'pending'
                        OR (state = 'intent' AND lease_until < now())
                        OR (state IN ('unknown', 'not_sent') AND retry_after <= now()
                            AND rounds < %(rounds)s))
                    ORDER BY seq LIMIT %(limit)s
                    FOR UPDATE SKIP LOCKED)
                UPDATE {s}.payouts p SET
                    owner = %(worker)s, token = nextval('{s}.claim_tokens'),
                    send_horizon = CASE WHEN picked.was IN ('intent', 'unknown')
                        THEN GREATEST(p.send_horizon, p.lease_until) ELSE p.send_horizon END,
                    lease_until = now() + make_interval(secs => %(lease)s),
                    sends = CASE WHEN picked.was IN ('pending', 'not_sent')
                        THEN p.sends + 1 ELSE p.sends END,
                    rounds = CASE WHEN picked.was IN ('unknown', 'not_sent')
                        THEN p.rounds + 1 ELSE p.rounds END,
                    state = 'intent', retry_after = NULL, updated_at = now()
                FROM picked WHERE p.order_id = picked.order_id
                RETURNING p.order_id, p.token, p.seq, p.line, p.sealed, p.body_digest,
                    picked.was, p.sends, p.sent, p.payout_id,
                    EXTRACT(EPOCH FROM (now() - p.send_horizon))::float8""",
                {
                    "batch": batch,
                    "worker": worker,
                    "limit": limit,
                    "lease": lease,
                    "rounds": max_rounds,
                },
            )
            rows = await cur.fetchall()
        deadline = before + lease  # now() was taken after `before`: the lease ends later
        claims = [
            Claim(
                order_id=r[0],
                token=r[1],
                seq=r[2],
                line=r[3],
                sealed=r[4],
                body_digest=r[5],
                previous=r[6],
                sends=r[7],
                sent=r[8],
                payout_id=r[9],
                sent_ago=None
                if r[6] not in ("intent", "unknown") or r[10] is None
                else max(float(r[10]), 0.0),
                lease_deadline=deadline,
            )
            for r in rows
        ]
        claims.sort(key=lambda c: c.seq)
        return claims

    async def renew(
        self, worker: str, claims: Sequence[tuple[str, int]], *, lease: float
    ) -> tuple[set[int], float]:
        """Extend the live leases of ``claims`` (order_id, token); (tokens still this
        worker's, local deadline)."""
        if not claims:
            return set(), time.monotonic() + lease
        before = time.monotonic()
        async with self._connection() as conn:
            cur = await conn.execute(
                # Only a live lease is extended: one that ran out (or that a stopping worker
                # ended) stays ended. Rows already settled are still this worker's.
                f"UPDATE {self.schema}.payouts SET lease_until = CASE WHEN state = 'intent' "
                "THEN now() + make_interval(secs => %(lease)s) ELSE lease_until END "
                "WHERE order_id = ANY(%(ids)s) AND token = ANY(%(tokens)s) "
                "AND owner = %(worker)s AND (state <> 'intent' OR lease_until > now()) "
                "RETURNING token",
                {"lease": lease, "worker": worker, **_pairs(claims)},
            )
            renewed = {int(r[0]) for r in await cur.fetchall()}
        return renewed, before + lease

    async def release_owned(self, worker: str, batch: str) -> int:
        """End now the leases of every item ``worker`` owns in ``batch`` (a worker that
        stopped and whose sends have all ended, including claims whose answer it never
        read); the number released.

        The release takes a new token: a fenced write the server started before it and
        finishes after it (its ``now()`` still inside the old lease) then matches nothing,
        so no late sent mark can renew what was released."""
        async with self._connection() as conn:
            cur = await conn.execute(
                f"UPDATE {self.schema}.payouts SET lease_until = now(), "
                f"token = nextval('{self.schema}.claim_tokens') WHERE batch = %s "
                "AND state = 'intent' AND owner = %s AND lease_until > now()",
                (batch, worker),
            )
            return cur.rowcount

    async def mark_resend(self, worker: str, order_id: str, token: int, *, lease: float) -> float:
        """The durable intent of a re-send (after proven absence): fenced; renews the lease.
        Returns the new local lease deadline; raises :class:`LeaseLostError` if not owned."""
        before = time.monotonic()
        async with self._connection() as conn:
            cur = await conn.execute(
                f"UPDATE {self.schema}.payouts SET state = 'intent', sends = sends + 1, "
                "lease_until = now() + make_interval(secs => %s), updated_at = now() "
                "WHERE order_id = %s AND token = %s AND owner = %s AND lease_until > now()",
                (lease, order_id, token, worker),
            )
            if cur.rowcount != 1:
                raise LeaseLostError(f"order_id={order_id!r} is no longer owned by this worker")
        return before + lease

    async def write_group(
        self,
        worker: str,
        sent: Sequence[tuple[str, int]],
        outcomes: Sequence[Outcome],
        *,
        lease: float,
    ) -> tuple[set[int], set[str], float]:
        """:meth:`mark_sent` and :meth:`write_outcomes` in one transaction (one commit)."""
        before = time.monotonic()
        if not sent or not outcomes:
            async with self._connection() as conn:
                marked = await self._mark_sent(conn, worker, sent, lease)
                applied = await self._write_outcomes(conn, worker, outcomes)
            return marked, applied, before + lease
        # One statement, one round trip, one commit. (No row is in both parts: an item's
        # outcome is written only after its send, whose mark came back first.)
        async with self._connection() as conn:
            cur = await conn.execute(
                f"WITH marked AS ({self._mark_sql()}), done AS ({self._outcomes_sql()}) "
                "SELECT 'm', token::text FROM marked UNION ALL SELECT 'o', order_id FROM done",
                {
                    **self._mark_params(worker, sent, lease),
                    **self._outcome_params(worker, outcomes),
                },
            )
            rows = await cur.fetchall()
        return (
            {int(v) for k, v in rows if k == "m"},
            {v for k, v in rows if k == "o"},
            before + lease,
        )

    def _mark_sql(self) -> str:
        return (
            f"UPDATE {self.schema}.payouts SET sent = sends, sent_at = now(), "
            "lease_until = now() + make_interval(secs => %(lease)s), updated_at = now() "
            "WHERE order_id = ANY(%(sent_ids)s) AND token = ANY(%(sent)s) "
            "AND owner = %(worker)s AND state = 'intent' AND lease_until > now() "
            "RETURNING token"
        )

    @staticmethod
    def _mark_params(
        worker: str, claims: Sequence[tuple[str, int]], lease: float
    ) -> dict[str, Any]:
        pairs = _pairs(claims)
        return {"lease": lease, "sent_ids": pairs["ids"], "sent": pairs["tokens"], "worker": worker}

    async def mark_sent(
        self, worker: str, tokens: Sequence[tuple[str, int]], *, lease: float
    ) -> tuple[set[int], float]:
        """Record that the intended sends of ``tokens`` leave now (fenced), renewing their
        leases; (tokens marked, local lease deadline). Awaited before the bytes leave:
        an intent without this mark was provably never sent."""
        before = time.monotonic()
        async with self._connection() as conn:
            marked = await self._mark_sent(conn, worker, tokens, lease)
        return marked, before + lease

    async def _mark_sent(
        self,
        conn: psycopg.AsyncConnection[Any],
        worker: str,
        tokens: Sequence[tuple[str, int]],
        lease: float,
    ) -> set[int]:
        if not tokens:
            return set()
        cur = await conn.execute(self._mark_sql(), self._mark_params(worker, tokens, lease))
        return {int(r[0]) for r in await cur.fetchall()}

    async def write_outcomes(self, worker: str, outcomes: Sequence[Outcome]) -> set[str]:
        """Apply fenced outcome writes in one transaction; the order_ids that applied.

        An item that reached a state where it can never be sent again has its
        sealed body erased in the same write. ``unknown`` releases the item with
        its lease ended now, so the next claim's ``send_horizon`` is this moment.
        """
        async with self._connection() as conn:
            return await self._write_outcomes(conn, worker, outcomes)

    async def _write_outcomes(
        self, conn: psycopg.AsyncConnection[Any], worker: str, outcomes: Sequence[Outcome]
    ) -> set[str]:
        if not outcomes:
            return set()
        cur = await conn.execute(self._outcomes_sql(), self._outcome_params(worker, outcomes))
        return {r[0] for r in await cur.fetchall()}

    def _outcomes_sql(self) -> str:
        return f"""UPDATE {self.schema}.payouts p SET
                state = v.state, payout_id = COALESCE(v.payout_id, p.payout_id),
                detail = v.detail,
                sealed = CASE WHEN v.state = ANY(%(erase)s) THEN NULL ELSE p.sealed END,
                lease_until = now(),
                retry_after = CASE WHEN v.retry_in IS NULL THEN NULL
                    ELSE now() + make_interval(secs => v.retry_in) END,
                resumed = p.resumed OR v.resumed, reconciled = v.reconciled,
                rounds = CASE WHEN v.refund THEN GREATEST(p.rounds - 1, 0) ELSE p.rounds END,
                updated_at = now()
            FROM unnest(%(ids)s::text[], %(tokens)s::bigint[], %(states)s::text[],
                        %(payouts)s::bigint[], %(details)s::text[], %(retry)s::float8[],
                        %(resumed)s::boolean[], %(reconciled)s::boolean[],
                        %(refund)s::boolean[])
                 AS v(order_id, token, state, payout_id, detail, retry_in, resumed,
                      reconciled, refund)
            WHERE p.order_id = v.order_id AND p.token = v.token AND p.owner = %(worker)s
            RETURNING p.order_id"""

    @staticmethod
    def _outcome_params(worker: str, outcomes: Sequence[Outcome]) -> dict[str, Any]:
        return {
            "erase": list(_ERASE),
            "worker": worker,
            "ids": [o.order_id for o in outcomes],
            "tokens": [o.token for o in outcomes],
            "states": [o.state for o in outcomes],
            "payouts": [o.payout_id for o in outcomes],
            "details": [o.detail for o in outcomes],
            "retry": [o.retry_in for o in outcomes],
            "resumed": [o.resumed for o in outcomes],
            "reconciled": [o.reconciled for o in outcomes],
            "refund": [o.refund_round for o in outcomes],
        }

    async def pending_later(self, batch: str, *, max_rounds: int) -> float | None:
        """Nothing claimable now: seconds until something may be (a lease ending, an
        ``unknown`` retry coming due), or ``None`` when the batch has nothing left."""
        async with self._connection() as conn:
            cur = await conn.execute(
                f"""SELECT EXTRACT(EPOCH FROM (MIN(CASE
                        WHEN state = 'pending' THEN now()
                        WHEN state = 'intent' THEN lease_until
                        ELSE retry_after END) - now()))::float8, count(*)
                    FROM {self.schema}.payouts WHERE batch = %s AND (
                        state IN ('pending', 'intent') OR (state IN ('unknown', 'not_sent')
                        AND retry_after IS NOT NULL AND rounds < %s))""",
                (batch, max_rounds),
            )
            row = await cur.fetchone()
        if row is None or not row[1]:
            return None
        return max(float(row[0] or 0.0), 0.0)

    # -- reports -----------------------------------------------------------------------

    async def status(self, batch: str, *, live_within: float = 10.0) -> BatchStatus:
        await self._ensure_open()
        s = self.schema
        async with self._connection() as conn:
            cur = await conn.execute(
                f"SELECT state, count(*) FROM {s}.payouts WHERE batch = %s GROUP BY state", (batch,)
            )
            counts = {state: int(n) for state, n in await cur.fetchall()}
            cur = await conn.execute(
                f"""SELECT count(*) FILTER (WHERE state = 'intent' AND lease_until > now()),
                        EXTRACT(EPOCH FROM (now() - MIN(updated_at) FILTER (
                            WHERE state IN ('intent', 'unknown'))))::float8
                    FROM {s}.payouts WHERE batch = %s""",
                (batch,),
            )
            row = await cur.fetchone()
            cur = await conn.execute(
                f"SELECT count(*) FROM {s}.workers WHERE batch = %s AND "
                "heartbeat_at > now() - make_interval(secs => %s)",
                (batch, live_within),
            )
            workers = await cur.fetchone()
        if not counts:
            async with self._connection() as conn:
                await self._check_batch_key(conn, batch, None)
        in_flight, oldest = row or (0, None)
        return BatchStatus(
            batch=batch,
            counts=counts,
            total=sum(counts.values()),
            in_flight=int(in_flight or 0),
            oldest_doubt=None if oldest is None else float(oldest),
            live_workers=int(workers[0]) if workers else 0,
        )

    async def results(self, batch: str) -> AsyncIterator[ResultRow]:
        """Every item of ``batch`` in load order, streamed."""
        await self._ensure_open()
        async with self._connection() as conn:
            await self._check_batch_key(conn, batch, None)
            async with conn.transaction(), conn.cursor(name="alikassa_results") as cur:
                await cur.execute(
                    f"SELECT line, seq, order_id, state, payout_id, sends, detail, resumed, "
                    f"reconciled FROM {self.schema}.payouts WHERE batch = %s ORDER BY seq",
                    (batch,),
                )
                async for r in cur:
                    yield ResultRow(
                        line=r[0],
                        seq=r[1],
                        order_id=r[2],
                        state=r[3],
                        payout_id=r[4],
                        sends=r[5],
                        detail=r[6],
                        resumed=r[7],
                        reconciled=r[8],
                    )

    # -- the Journal protocol (payouts_batch with journal="postgresql://...") --------------
    #
    # One payouts_batch run owns the protocol ``batch`` at a time: a session advisory
    # lock held on a connection of its own. A holder that dies (SIGKILL) loses its
    # connection, and with it the lock. Shared batches use leases per item instead.

    def _lock_key(self) -> int:
        digest = hashlib.sha256(f"{self.schema}/{self.batch}".encode()).digest()
        return int.from_bytes(digest[:8], "big", signed=True)

    async def acquire(self, run_id: str) -> None:
        await self._ensure_open()
        if self._lock_conn is not None:
            self._owned_since = time.monotonic()
            return
        psycopg = self._psycopg
        try:
            conn = await psycopg.AsyncConnection.connect(
                self.dsn, autocommit=True, connect_timeout=max(int(self._pool.timeout), 1)
            )
        except psycopg.OperationalError as exc:
            raise JournalUnavailableError(
                f"cannot connect to {_redacted(self.dsn)}: {exc}"
            ) from None
        holder = JournalHolder.this_process(run_id)
        try:
            cur = await conn.execute("SELECT pg_try_advisory_lock(%s)", (self._lock_key(),))
            row = await cur.fetchone()
            if not (row and row[0]):
                other = await self._holder()
                raise JournalInUseError(
                    f"batch {self.batch!r} in {_redacted(self.dsn)} is in use by "
                    f"{other.describe() if other else 'another process'}; nothing was sent",
                    other,
                )
            await conn.execute(
                f"INSERT INTO {self.schema}.workers (worker, batch, host, pid) "
                "VALUES (%s, %s, %s, %s) ON CONFLICT (worker) DO NOTHING",
                ("run:" + run_id, self.batch, holder.host[:100], holder.pid),
            )
        except BaseException:
            await conn.close()
            raise
        self._lock_conn = conn
        self._owned_since = time.monotonic()

    async def _holder(self) -> JournalHolder | None:
        async with self._connection() as conn:
            cur = await conn.execute(
                f"SELECT worker, pid, host, EXTRACT(EPOCH FROM started_at)::float8 "
                f"FROM {self.schema}.workers WHERE batch = %s AND worker LIKE 'run:%%' "
                "ORDER BY started_at DESC LIMIT 1",
                (self.batch,),
            )
            row = await cur.fetchone()
        if row is None:
            return None
        return JournalHolder(run_id=row[0][4:], pid=row[1], host=row[2], since=row[3])

    async def release(self) -> None:
        conn, self._lock_conn = self._lock_conn, None
        self._owned_since = None
        if conn is None:
            return
        with contextlib.suppress(Exception):
            await conn.execute(
                f"DELETE FROM {self.schema}.workers WHERE batch = %s AND "
                "worker LIKE 'run:%%' AND pid = %s",
                (self.batch, os.getpid()),
            )
        await conn.close()

    async def claim(self, order_id: str, body_hash: str, run_id: str) -> JournalRecord | None:
        await self._ensure_open()
        s = self.schema
        async with self._connection() as conn, conn.transaction():
            await self._register_batch(conn, self.batch, None)
            cur = await conn.execute(
                f"INSERT INTO {s}.payouts (order_id, batch, body_digest, state, owner, token, "
                f"sends) VALUES (%s, %s, %s, 'intent', %s, nextval('{s}.claim_tokens'), 1) "
                "ON CONFLICT (order_id) DO NOTHING RETURNING token",
                (order_id, self.batch, body_hash, run_id),
            )
            if (await cur.fetchone()) is not None:
                return None
            # Every earlier owner had ended when this one took over (the lock says so):
            # their sends could be in flight until then, not later.
            owned = self._owned_since
            record = await self._get(
                conn, order_id, 0.0 if owned is None else time.monotonic() - owned
            )
            assert record is not None
            if record.body_hash == body_hash and record.run_id != run_id:
                await conn.execute(
                    f"UPDATE {s}.payouts SET owner = %s WHERE order_id = %s", (run_id, order_id)
                )
            return record

    async def record_send(self, order_id: str) -> None:
        async with self._connection() as conn:
            await conn.execute(
                f"UPDATE {self.schema}.payouts SET state = 'intent', sends = sends + 1, "
                "updated_at = now() WHERE order_id = %s",
                (order_id,),
            )

    async def record_sent(self, order_id: str) -> None:
        async with self._connection() as conn:
            await conn.execute(
                f"UPDATE {self.schema}.payouts SET sent = sends, sent_at = now(), "
                "updated_at = now() WHERE order_id = %s",
                (order_id,),
            )

    async def record_outcome(
        self,
        order_id: str,
        state: JournalState,
        *,
        payout_id: int | None = None,
        detail: str | None = None,
    ) -> None:
        state = JournalState(state)
        async with self._connection() as conn:
            await conn.execute(
                f"UPDATE {self.schema}.payouts SET state = %s, "
                "payout_id = COALESCE(%s, payout_id), detail = %s, updated_at = now(), "
                "sealed = CASE WHEN %s = ANY(%s) THEN NULL ELSE sealed END "
                "WHERE order_id = %s",
                (state.value, payout_id, detail, state.value, list(_ERASE), order_id),
            )

    async def get(self, order_id: str) -> JournalRecord | None:
        await self._ensure_open()
        async with self._connection() as conn:
            return await self._get(conn, order_id)

    async def _get(
        self, conn: psycopg.AsyncConnection[Any], order_id: str, idle_for: float = 0.0
    ) -> JournalRecord | None:
        cur = await conn.execute(
            f"SELECT order_id, body_digest, state, payout_id, sends, sent, "
            f"EXTRACT(EPOCH FROM sent_at)::float8, COALESCE(owner, ''), "
            f"EXTRACT(EPOCH FROM updated_at)::float8, detail FROM {self.schema}.payouts "
            "WHERE order_id = %s",
            (order_id,),
        )
        row = await cur.fetchone()
        if row is None:
            return None
        state = JournalState.INTENT if row[2] == PENDING else JournalState(row[2])
        return JournalRecord(
            order_id=row[0],
            body_hash=row[1],
            state=state,
            payout_id=row[3],
            sends=row[4],
            sent=row[5],
            sent_at=row[6],
            run_id=row[7],
            updated_at=row[8],
            detail=row[9],
            idle_for=idle_for,
        )

    async def counts(self) -> dict[JournalState, int]:
        """Records of this journal's protocol ``batch`` in each state."""
        status = await self.status(self.batch)
        return {
            JournalState.INTENT if k == PENDING else JournalState(k): n
            for k, n in status.counts.items()
        }


class _Connection:
    """``async with journal._connection() as conn``: a pooled connection, with
    connection failures turned into :class:`JournalUnavailableError`."""

    def __init__(self, journal: PostgresJournal, *, opening: bool = False) -> None:
        self._journal = journal
        self._opening = opening
        self._cm: Any = None

    async def __aenter__(self) -> psycopg.AsyncConnection[Any]:
        if not self._journal._ready and not self._opening:
            await self._journal.open()
        task = asyncio.current_task()
        cancels = task.cancelling() if task is not None else 0
        try:
            self._cm = self._journal._pool.connection()
            conn: psycopg.AsyncConnection[Any] = await self._cm.__aenter__()
        except _driver()[1].PoolTimeout as exc:
            raise JournalUnavailableError(
                f"no connection to {_redacted(self._journal.dsn)}: {exc}"
            ) from None
        if task is not None and task.cancelling() > cancels:
            # The pool waits with asyncio.wait_for, which on 3.11 drops a cancellation that
            # comes as a connection does: the caller was cancelled (a SIGTERM) and must
            # see it, not carry on as if nothing happened.
            await self._cm.__aexit__(None, None, None)
            raise asyncio.CancelledError
        return conn

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: Any
    ) -> None:
        await self._cm.__aexit__(exc_type, exc, tb)
        psycopg = self._journal._psycopg
        task = asyncio.current_task()
        if isinstance(exc, psycopg.Error) and task is not None and task.cancelling():
            # psycopg may answer a cancelled task with QueryCanceled: it is a cancellation,
            # not a database outage (which a worker would wait out, ignoring its SIGTERM)
            raise asyncio.CancelledError
        if isinstance(exc, psycopg.OperationalError):
            raise JournalUnavailableError(
                f"lost the connection to {_redacted(self._journal.dsn)}: "
                f"{' '.join(str(exc).split())[:200]}"
            ) from None
        if isinstance(exc, psycopg.Error):
            raise JournalError(
                f"journal statement failed: {' '.join(str(exc).split())[:300]}"
            ) from None


def _pairs(claims: Sequence[tuple[str, int]]) -> dict[str, list[Any]]:
    """(order_id, token) pairs as the two arrays the fenced statements match on: the
    primary key finds the rows, the token (unique per claim) fences them."""
    return {"ids": [order_id for order_id, _ in claims], "tokens": [token for _, token in claims]}


def _check_batch(batch: str) -> str:
    if not isinstance(batch, str) or not batch.strip() or len(batch) > 200:
        raise JournalError("batch must be a non-empty name of at most 200 characters")
    return batch


def request_from_body(body: bytes) -> PayoutRequest:
    """The :class:`PayoutRequest` whose ``to_wire()`` encodes to exactly ``body``."""
    wire = json.loads(body)
    fields = {k: v for k, v in wire.items() if k not in ("service", "order_id", "amount")}
    request = PayoutRequest(
        service=wire["service"],
        order_id=wire["order_id"],
        amount=Decimal(wire["amount"]),
        fields=fields,
    )
    if php_json_encode(request.to_wire()) != body:
        raise SealError(
            f"order_id={request.order_id!r}: the stored body does not rebuild to the same bytes"
        )
    return request
