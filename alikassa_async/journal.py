"""A crash-safe record of which payouts a batch has sent, for resuming without paying twice.

>>> async with SQLiteJournal("payouts.db") as journal:
...     async for result in client.payouts_batch(requests, journal=journal):
...         ...

Before a payout is sent, its *intent* — ``order_id`` plus the SHA-256 of the
exact request body bytes — is committed to disk; after the answer, its
outcome. A batch re-run with the same journal skips what was created,
reconciles what was in doubt and refuses an ``order_id`` whose body changed
(see :mod:`alikassa_async._batch`). Only hashes are stored: card numbers and
phones never reach the journal file.

Each send is recorded twice: its *intent* (before the rate limiter) and the
moment it *left* (after the limiter, right before the bytes are handed to the
network). An intent that never left is not in doubt: a re-run sends it at once.

One owner at a time: a batch run calls :meth:`Journal.acquire` before it
touches anything, and a second process asking for a journal in use gets
:class:`JournalInUseError` naming the holder (pid, host, since when). The
SQLite journal holds an exclusive ``flock`` on ``<path>.lock``, which the
kernel releases when its process dies (even by SIGKILL), so a crashed run
never blocks the next; it needs a local file system (``flock`` over NFS is not
reliable). The PostgreSQL journal applies the same idea per item (an owner and
a lease on each row) instead of per file.

:class:`SQLiteJournal` uses the standard library's ``sqlite3`` on one
dedicated thread (WAL, ``synchronous=FULL``), so the event loop never blocks
on disk. Writes that arrive together share one commit (group commit), so a
batch of thousands pays for far fewer fsyncs than payouts.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import queue
import socket
import sqlite3
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Protocol, TypeVar, runtime_checkable

import attrs

from ._encoding import php_json_encode
from ._errors import JournalError, JournalInUseError, OrderIdConflictError
from ._models import PayoutRequest
from ._outcome import Outcome

__all__ = [
    "Journal",
    "JournalError",
    "JournalHolder",
    "JournalInUseError",
    "JournalRecord",
    "JournalState",
    "OrderIdConflictError",
    "SQLiteJournal",
    "body_hash",
]

T = TypeVar("T")

_SCHEMA_VERSION = 2
_MAX_GROUP = 256  # operations per commit


#: what the journal knows about one ``order_id``: the batch's own outcome enum
#: (``INTENT``: about to be sent, or sent with no answer recorded)
JournalState = Outcome


@attrs.frozen
class JournalHolder:
    """The batch run that owns a journal (or an item of it)."""

    run_id: str
    pid: int
    host: str
    #: wall-clock time (``time.time()``) it took ownership
    since: float

    @classmethod
    def this_process(cls, run_id: str) -> JournalHolder:
        return cls(run_id=run_id, pid=os.getpid(), host=socket.gethostname(), since=time.time())

    def describe(self) -> str:
        when = datetime.fromtimestamp(self.since, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
        return f"pid {self.pid} on host {self.host} since {when} (run {self.run_id})"


@attrs.frozen
class JournalRecord:
    order_id: str
    #: SHA-256 (hex) of the exact request body bytes that were (to be) sent
    body_hash: str
    state: JournalState
    #: AliKassa's payout id, once known
    payout_id: int | None = None
    #: how many sends were intended, over all runs
    sends: int = 0
    #: how many of those left for the network (``sent < sends``: the last one never did)
    sent: int = 0
    #: wall-clock time the last send left, if any did
    sent_at: float | None = None
    #: seconds (by the journal's clock) since an earlier owner could last have had a send
    #: of this order_id in flight: the settle period for a 404 counts from then. 0 when
    #: that cannot be told (then it counts from now)
    idle_for: float = 0.0
    #: the batch run that last claimed it
    run_id: str = ""
    #: wall-clock time (``time.time()``) of the last change
    updated_at: float = 0.0
    #: a short, secret-free note on the last outcome
    detail: str | None = None

    @property
    def last_send_left(self) -> bool:
        """The latest intended send may have reached the gateway."""
        return self.sends > 0 and self.sent >= self.sends


def body_hash(request: PayoutRequest) -> str:
    """SHA-256 (hex) of the exact body ``create_payout`` sends for ``request``."""
    return hashlib.sha256(php_json_encode(request.to_wire())).hexdigest()


@runtime_checkable
class Journal(Protocol):
    """Where a batch records intents and outcomes. Every write is durable when awaited."""

    async def acquire(self, run_id: str) -> None:
        """Make ``run_id`` (this process) the journal's one owner until :meth:`release`;
        raise :class:`JournalInUseError` naming the holder if another live run owns it."""
        ...

    async def release(self) -> None:
        """Give up ownership (also done by ``aclose``)."""
        ...

    async def claim(self, order_id: str, body_hash: str, run_id: str) -> JournalRecord | None:
        """Record the intent to send a new ``order_id`` (one send) and return ``None``; or,
        if the ``order_id`` is known, return its record as it was. A known record with
        the same ``body_hash`` is marked as claimed by ``run_id`` (so a second occurrence
        in the same run is recognised); one with a different hash is left untouched."""
        ...

    async def record_send(self, order_id: str) -> None:
        """Record the intent to send a known ``order_id`` again."""
        ...

    async def record_sent(self, order_id: str) -> None:
        """Record that the intended send is leaving now (after the rate limiter)."""
        ...

    async def record_outcome(
        self,
        order_id: str,
        state: JournalState,
        *,
        payout_id: int | None = None,
        detail: str | None = None,
    ) -> None:
        """Record what the send (or a status lookup) established."""
        ...

    async def get(self, order_id: str) -> JournalRecord | None: ...

    async def counts(self) -> dict[JournalState, int]:
        """Number of records in each state."""
        ...

    async def aclose(self) -> None: ...


_SELECT_ONE = (
    "SELECT order_id, body_hash, state, payout_id, sends, sent, sent_at, run_id, "
    "updated_at, detail FROM payouts WHERE order_id = ?"
)


def _record(row: tuple[Any, ...], idle_for: float = 0.0) -> JournalRecord:
    order_id, digest, state, payout_id, sends, sent, sent_at, run_id, updated_at, detail = row
    return JournalRecord(
        order_id=order_id,
        body_hash=digest,
        state=JournalState(state),
        payout_id=payout_id,
        sends=sends,
        sent=sent,
        sent_at=sent_at,
        run_id=run_id,
        updated_at=updated_at,
        detail=detail,
        idle_for=idle_for,
    )


class _Op:
    __slots__ = ("fn", "future", "loop")

    def __init__(
        self,
        fn: Callable[[sqlite3.Connection], Any],
        future: asyncio.Future[Any],
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self.fn = fn
        self.future = future
        self.loop = loop

    def resolve(self, value: Any = None, error: BaseException | None = None) -> None:
        def deliver() -> None:
            if self.future.done():  # the awaiting task was cancelled
                return
            if error is not None:
                self.future.set_exception(error)
            else:
                self.future.set_result(value)

        try:
            self.loop.call_soon_threadsafe(deliver)
        except RuntimeError:  # that loop is closed; nobody is waiting any more
            pass


class SQLiteJournal:
    """:class:`Journal` on a SQLite file (or ``":memory:"``), off the event loop.

    >>> journal = SQLiteJournal("payouts.db")
    >>> async for r in client.payouts_batch(items, journal=journal): ...
    >>> await journal.aclose()
    """

    def __init__(
        self, path: str | os.PathLike[str] = ":memory:", *, busy_timeout: float = 30.0
    ) -> None:
        self.path = os.fspath(path)
        self._busy_timeout = busy_timeout
        self._lock: _FileLock | None = None  # while this journal is the owner
        self._file_lock: _FileLock | None = None  # its descriptor outlives ownership
        #: monotonic time this journal became the owner (every earlier run had ended)
        self._owned_since: float | None = None
        self._ops: queue.SimpleQueue[_Op | None] = queue.SimpleQueue()
        self._closed = False
        self._thread = threading.Thread(target=self._serve, name="alikassa-journal", daemon=True)
        self._thread.start()

    def __repr__(self) -> str:
        return f"SQLiteJournal({self.path!r})"

    async def __aenter__(self) -> SQLiteJournal:
        await self._submit(lambda conn: None)  # surfaces open errors now
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # -- the Journal protocol --------------------------------------------

    async def acquire(self, run_id: str) -> None:
        if self._closed:
            raise JournalError(f"journal {self.path!r} is closed")
        if self._lock is None and self.path != ":memory:":
            await self._submit(lambda conn: None)  # the file exists (or its error is raised)
            lock = self._file_lock = self._file_lock or _FileLock(self.path)
            await asyncio.to_thread(lock.acquire, JournalHolder.this_process(run_id))
            self._lock = lock
        self._owned_since = time.monotonic()  # a wall-clock step must not age a doubt

    async def release(self) -> None:
        lock, self._lock = self._lock, None
        self._owned_since = None
        if lock is not None:
            lock.release()

    async def claim(self, order_id: str, body_hash: str, run_id: str) -> JournalRecord | None:
        owned_since = self._owned_since

        def op(conn: sqlite3.Connection) -> JournalRecord | None:
            row = conn.execute(_SELECT_ONE, (order_id,)).fetchone()
            if row is None:
                now = time.time()
                conn.execute(
                    "INSERT INTO payouts (order_id, body_hash, state, sends, run_id, "
                    "created_at, updated_at) VALUES (?, ?, ?, 1, ?, ?, ?)",
                    (order_id, body_hash, JournalState.INTENT.value, run_id, now, now),
                )
                return None
            # Every earlier owner had ended when this one took over: their sends could
            # be in flight until then, not later.
            idle = 0.0 if owned_since is None else max(time.monotonic() - owned_since, 0.0)
            record = _record(row, idle)
            if record.body_hash == body_hash and record.run_id != run_id:
                conn.execute("UPDATE payouts SET run_id = ? WHERE order_id = ?", (run_id, order_id))
            return record

        return await self._submit(op)

    async def record_send(self, order_id: str) -> None:
        def op(conn: sqlite3.Connection) -> None:
            conn.execute(
                "UPDATE payouts SET state = ?, sends = sends + 1, updated_at = ? "
                "WHERE order_id = ?",
                (JournalState.INTENT.value, time.time(), order_id),
            )

        await self._submit(op)

    async def record_sent(self, order_id: str) -> None:
        def op(conn: sqlite3.Connection) -> None:
            now = time.time()
            conn.execute(
                "UPDATE payouts SET sent = sends, sent_at = ?, updated_at = ? WHERE order_id = ?",
                (now, now, order_id),
            )

        await self._submit(op)

    async def record_outcome(
        self,
        order_id: str,
        state: JournalState,
        *,
        payout_id: int | None = None,
        detail: str | None = None,
    ) -> None:
        state = JournalState(state)

        def op(conn: sqlite3.Connection) -> None:
            conn.execute(
                "UPDATE payouts SET state = ?, payout_id = COALESCE(?, payout_id), "
                "detail = ?, updated_at = ? WHERE order_id = ?",
                (state.value, payout_id, detail, time.time(), order_id),
            )

        await self._submit(op)

    async def get(self, order_id: str) -> JournalRecord | None:
        def op(conn: sqlite3.Connection) -> JournalRecord | None:
            row = conn.execute(_SELECT_ONE, (order_id,)).fetchone()
            return None if row is None else _record(row)

        return await self._submit(op)

    async def counts(self) -> dict[JournalState, int]:
        def op(conn: sqlite3.Connection) -> dict[JournalState, int]:
            rows = conn.execute("SELECT state, COUNT(*) FROM payouts GROUP BY state")
            return {JournalState(state): n for state, n in rows}

        return await self._submit(op)

    async def aclose(self) -> None:
        """Finish pending writes, close the database and stop the thread."""
        if self._closed:
            return
        await self.release()
        self._closed = True
        done = asyncio.get_running_loop().create_future()
        self._ops.put(_Op(lambda conn: None, done, asyncio.get_running_loop()))
        self._ops.put(None)
        try:
            await done
        except JournalError:
            pass  # it never opened; there is nothing to flush
        await asyncio.to_thread(self._thread.join)
        if self._file_lock is not None:
            self._file_lock.close()  # SQLite has closed: now the descriptor may go

    # -- the worker thread -------------------------------------------------

    async def _submit(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        if self._closed:
            raise JournalError(f"journal {self.path!r} is closed")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._ops.put(_Op(fn, future, loop))
        return await future

    def _open(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=self._busy_timeout, isolation_level=None)
        try:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version > _SCHEMA_VERSION:
                raise JournalError(
                    f"journal {self.path!r} was written by a newer version (schema {version})"
                )
            conn.execute("PRAGMA journal_mode=WAL")
            # FULL: a commit is on disk (WAL fsynced) before the send it guards.
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("BEGIN IMMEDIATE")
            conn.execute(
                "CREATE TABLE IF NOT EXISTS payouts ("
                " order_id TEXT PRIMARY KEY, body_hash TEXT NOT NULL, state TEXT NOT NULL,"
                " payout_id INTEGER, sends INTEGER NOT NULL DEFAULT 0,"
                " sent INTEGER NOT NULL DEFAULT 0, sent_at REAL, run_id TEXT NOT NULL,"
                " created_at REAL NOT NULL, updated_at REAL NOT NULL, detail TEXT)"
            )
            if version == 1:
                # Schema 1 did not record departures: take every intended send as gone.
                conn.execute("ALTER TABLE payouts ADD COLUMN sent INTEGER NOT NULL DEFAULT 0")
                conn.execute("ALTER TABLE payouts ADD COLUMN sent_at REAL")
                conn.execute("UPDATE payouts SET sent = sends")
            conn.execute(f"PRAGMA user_version = {_SCHEMA_VERSION}")
            conn.execute("COMMIT")
        except BaseException:
            conn.close()
            raise
        return conn

    def _serve(self) -> None:
        conn: sqlite3.Connection | None = None
        open_error: BaseException | None = None
        try:
            conn = self._open()
        except (sqlite3.Error, OSError, JournalError) as exc:
            open_error = (
                exc
                if isinstance(exc, JournalError)
                else JournalError(f"cannot open journal {self.path!r}: {exc}")
            )
        try:
            while True:
                op = self._ops.get()
                stop = op is None
                group: list[_Op] = [] if op is None else [op]
                while not stop and len(group) < _MAX_GROUP:
                    try:
                        more = self._ops.get_nowait()
                    except queue.Empty:
                        break
                    if more is None:
                        stop = True
                    else:
                        group.append(more)
                if group:
                    if conn is None:
                        for item in group:
                            item.resolve(error=open_error)
                    else:
                        self._run_group(conn, group)
                if stop:
                    return
        finally:
            if conn is not None:
                conn.close()

    @staticmethod
    def _run_group(conn: sqlite3.Connection, group: list[_Op]) -> None:
        """Run ``group`` in one transaction; if one op fails, run each on its own."""
        try:
            conn.execute("BEGIN IMMEDIATE")
            results = [op.fn(conn) for op in group]
            conn.execute("COMMIT")
        except Exception as exc:  # sqlite3.Error, or a bug in one op: never kill the thread
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            if len(group) == 1:
                group[0].resolve(error=JournalError(f"journal write failed: {exc}"))
                return
            for op in group:
                SQLiteJournal._run_group(conn, [op])
            return
        for op, value in zip(group, results, strict=True):
            op.resolve(value)


class _FileLock:
    """An exclusive ``flock`` on the database file itself, and on a sidecar that names
    the holder.

    The lock is on the file, not on a name: a symlink, a hard link or another mount path
    of the same journal meets it, and deleting the sidecar does not lift it. The kernel
    drops it when the holding process dies, however it dies, so a SIGKILLed run never
    blocks the next one. (``flock`` is independent of SQLite's own ``fcntl`` locks on
    Linux; the descriptor stays open until SQLite has closed, because closing any
    descriptor of a file drops the process's ``fcntl`` locks on it.)
    """

    def __init__(self, database: str) -> None:
        self.database = database
        self.path = os.path.realpath(database) + ".lock"
        self._fd: int | None = None
        self._file_fd: int | None = None

    def acquire(self, holder: JournalHolder) -> None:
        import fcntl  # POSIX only, like the guarantee it gives

        if self._file_fd is None:
            try:
                self._file_fd = os.open(self.database, os.O_RDONLY)
            except OSError as exc:
                raise JournalError(f"cannot open the journal {self.database!r}: {exc}") from None
        self._lock(fcntl, self._file_fd)
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            fcntl.flock(self._file_fd, fcntl.LOCK_UN)
            raise JournalError(f"cannot create the journal lock {self.path!r}: {exc}") from None
        try:
            self._lock(fcntl, fd, holder_fd=fd)  # an older SDK locks only this one
        except BaseException:
            os.close(fd)
            fcntl.flock(self._file_fd, fcntl.LOCK_UN)
            raise
        record = json.dumps(attrs.asdict(holder)).encode()
        os.ftruncate(fd, 0)
        os.pwrite(fd, record, 0)
        self._fd = fd

    def _lock(self, fcntl: Any, fd: int, *, holder_fd: int | None = None) -> None:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            other = _read_holder(holder_fd) if holder_fd is not None else self._holder()
            who = other.describe() if other is not None else "another process"
            raise JournalInUseError(
                f"journal {self.database!r} is in use by {who}; one journal "
                "serves one batch run at a time, and nothing was sent",
                other,
            ) from None
        except OSError as exc:
            raise JournalError(f"cannot lock the journal {self.database!r}: {exc}") from None

    def _holder(self) -> JournalHolder | None:
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except OSError:
            return None  # the sidecar was deleted: the holder is unknown, its lock stands
        try:
            return _read_holder(fd)
        finally:
            os.close(fd)

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.ftruncate(fd, 0)
            os.close(fd)  # closing the descriptor drops the flock
        if self._file_fd is not None:
            import fcntl

            fcntl.flock(self._file_fd, fcntl.LOCK_UN)

    def close(self) -> None:
        """After SQLite has closed the database (see the class docstring)."""
        self.release()
        fd, self._file_fd = self._file_fd, None
        if fd is not None:
            os.close(fd)


def _read_holder(fd: int) -> JournalHolder | None:
    try:
        data = json.loads(os.pread(fd, 4096, 0) or b"null")
        return JournalHolder(
            run_id=str(data["run_id"]),
            pid=int(data["pid"]),
            host=str(data["host"]),
            since=float(data["since"]),
        )
    except (OSError, ValueError, TypeError, KeyError):
        return None  # written half-way, or by something else
