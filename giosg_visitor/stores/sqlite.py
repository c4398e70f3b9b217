"""A store in one SQLite file: many visitors, several processes, leases for renewal.

Next to ``<path>`` lives an empty file that is never deleted, ``<path>.holders``: on Linux
a process holding a renewal lease also holds a kernel lock on one byte of it (chosen by
the lease's owner token), so that another process can tell a lease whose holder died
(the kernel dropped the byte lock) from one whose holder is alive.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import sqlite3
import struct
import sys
import threading
import time
import uuid
import warnings
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Final, TypeVar, final

import anyio
import anyio.to_thread

from giosg_visitor._lifecycle import AsyncResource
from giosg_visitor.errors import (
    ProtocolError,
    StoreCorruptError,
    StoreError,
    StoreUnavailableError,
)
from giosg_visitor.stores._records import VisitorRecord

from .base import check_key, store_path
from .file import (
    _ensure_private_parent,
    _key_offset,
    _open_no_follow,
    _permission_warning,
    _tighten_mode,
    _uses_ofd_locks,
    unavailable,
)


if sys.platform != "win32":
    import fcntl


__all__ = ["SQLiteStore"]

logger = logging.getLogger("giosg_visitor.stores.sqlite")

_T = TypeVar("_T")

_SCHEMA: Final = (
    "CREATE TABLE IF NOT EXISTS records "
    "(key TEXT PRIMARY KEY, data TEXT NOT NULL, updated_at REAL)",
    "CREATE TABLE IF NOT EXISTS locks (key TEXT PRIMARY KEY, owner TEXT, expires_at REAL)",
)
# Compare-and-set in one statement: take the row if it is absent or its lease has expired.
_TRY_LOCK: Final = (
    "INSERT INTO locks (key, owner, expires_at) VALUES (?, ?, ?) "
    "ON CONFLICT (key) DO UPDATE SET owner = excluded.owner, expires_at = excluded.expires_at "
    "WHERE locks.expires_at IS NULL OR locks.expires_at <= ?"
)
_UNLOCK: Final = "DELETE FROM locks WHERE key = ? AND owner = ?"
_OWNER: Final = "SELECT owner FROM locks WHERE key = ?"
# Take over the lease of a holder known to be dead, only if that holder still has it.
_TAKE_OVER: Final = "UPDATE locks SET owner = ?, expires_at = ? WHERE key = ? AND owner = ?"
# In an owner token: its holder keeps the token's byte of ``<path>.holders`` locked.
_WATCHED: Final = "-watched-"
_SAVE: Final = (
    "INSERT INTO records (key, data, updated_at) VALUES (?, ?, ?) "
    "ON CONFLICT (key) DO UPDATE SET data = excluded.data, updated_at = excluded.updated_at"
)
_CORRUPT_CODES: Final = frozenset({sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB})
# How often a waiting lock(key) retries: fast at first, then at most every 50 ms.
_POLL_FIRST: Final = 0.01
_POLL_MAX: Final = 0.05


# Holder liveness: blocking helpers, run in worker threads only. ---------------------------


def _byte_lock(fd: int, command: int, offset: int) -> bytes:
    # struct flock: l_type, l_whence, l_start, l_len, l_pid (must be 0 for OFD locks).
    request = struct.pack("hhqqi4x", fcntl.F_WRLCK, os.SEEK_SET, offset, 1, 0)
    return fcntl.fcntl(fd, command, request)


@final
class _Beacon:
    """A lease holder's sign of life: an OFD lock on its owner token's byte of a file.

    The kernel drops an open file description lock when the descriptor is closed, also
    when the process dies (SIGKILL, OOM), so a lease row whose byte is unlocked belongs to
    a holder that is gone. The holder lights it before writing its lease row and puts it
    out after deleting the row: a row seen with the byte unlocked is therefore stale.
    """

    def __init__(self, path: str) -> None:
        self._path = path
        self._fd: int | None = None

    def light(self, owner: str) -> bool:
        """Lock the byte of ``owner``; ``False`` (no beacon, plain lease) if that fails."""
        try:
            _ensure_private_parent(self._path)
            self._fd = _open_no_follow(self._path, os.O_RDWR | os.O_CREAT)
            _tighten_mode(self._fd, self._path)
            _byte_lock(self._fd, fcntl.F_OFD_SETLK, _key_offset(owner))
        except OSError:
            self.put_out()
            return False
        return True

    def put_out(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)


def _is_lit(path: str, owner: str) -> bool:
    """Whether the holder of ``owner`` is alive (its byte is locked); ``True`` if unsure."""
    try:
        fd = _open_no_follow(path, os.O_RDONLY)
    except OSError:
        return True
    try:
        answer = _byte_lock(fd, fcntl.F_OFD_GETLK, _key_offset(owner))
    except OSError:
        return True
    finally:
        os.close(fd)
    return bool(struct.unpack("hhqqi4x", answer)[0] != fcntl.F_UNLCK)


@final
class SQLiteStore(AsyncResource):
    """Keeps records in one SQLite database file; the embedded choice for many visitors.

    The standard library's :mod:`sqlite3` runs in worker threads on one connection (WAL
    journal, ``synchronous=FULL``, a busy timeout for writers in other processes). Each
    ``save`` is one atomic statement. The file is created with mode 0600 (SQLite gives its
    ``-wal`` and ``-shm`` files the same mode); a symlink at ``path`` is refused and an
    existing file that other users can access is changed to 0600 with a
    :class:`~giosg_visitor.stores.file.FilePermissionWarning`.

    :meth:`lock` is a lease in the ``locks`` table, shared by every process using the file.
    A holder that stays inside the block longer than ``lease_seconds`` (wall clock) loses
    it silently, so keep the lease well above the longest renewal. On Linux a holder also
    keeps a kernel lock on one byte of ``<path>.holders`` while it holds the lease, and
    the kernel drops that lock when the holder dies: a lease left by a killed process is
    taken over at once, so a restarted process does not wait for it to expire. Elsewhere
    (and if ``<path>.holders`` cannot be created) a holder that crashes keeps the lease
    until ``lease_seconds`` have passed.

    Failures are typed: a database that another process holds locked for longer than
    ``busy_timeout`` (``BEGIN EXCLUSIVE``), a read-only or full disk, an I/O error or a
    symlink at ``path`` raise :class:`~giosg_visitor.StoreUnavailableError`; a file that
    is not a SQLite database or a row that is not a record raise
    :class:`~giosg_visitor.StoreCorruptError`. The original error is the ``__cause__``.

    Use it as ``async with SQLiteStore(path) as store:`` or call :meth:`aclose`. The
    connection opens on first use.

    Args:
        path: The database file (``~`` is expanded; a relative path is made absolute now).
        lease_seconds: How long a :meth:`lock` survives a holder that died.
        busy_timeout: Seconds a statement waits for another process's write to finish.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        lease_seconds: float = 30.0,
        busy_timeout: float = 5.0,
    ) -> None:
        absolute = store_path(path, owner="SQLiteStore")
        for name, value in (("lease_seconds", lease_seconds), ("busy_timeout", busy_timeout)):
            if not isinstance(value, int | float) or not math.isfinite(value) or value <= 0:
                raise ValueError(f"{name} must be a positive number of seconds")
        self._path = absolute
        self._holders_path = f"{self._path}.holders"
        self._lease = float(lease_seconds)
        self._busy_timeout = float(busy_timeout)
        self._db_lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        self._closed = False
        self._owned: set[tuple[str, str]] = set()
        self._loose_mode: int | None = None
        self._key_locks: dict[str, anyio.Lock] = {}

    @property
    def path(self) -> str:
        """The absolute path of the database file."""
        return self._path

    @property
    def lease_seconds(self) -> float:
        """How long a :meth:`lock` outlives a holder that died."""
        return self._lease

    def __repr__(self) -> str:
        return f"<SQLiteStore path={self._path!r}>"

    async def _aopen(self) -> None:
        if self._closed:
            raise RuntimeError("this SQLiteStore is closed")

    async def aclose(self) -> None:
        """Close the connection (see :meth:`close`); idempotent."""
        await anyio.to_thread.run_sync(self.close)

    def close(self) -> None:
        """Close the connection, blocking; idempotent.

        Leases this store still holds are deleted so that other processes need not wait
        for them to expire. The store cannot be used afterwards.
        """
        with self._db_lock:
            self._closed = True
            conn, self._conn = self._conn, None
            if conn is None:
                return
            try:
                if self._owned:
                    with contextlib.suppress(sqlite3.Error):
                        conn.executemany(_UNLOCK, sorted(self._owned))
                    self._owned.clear()
            finally:
                conn.close()

    # Store protocol. ---------------------------------------------------------------------

    async def load(self, key: str) -> VisitorRecord | None:
        """Return the record stored under ``key``, or ``None``.

        Raises:
            StoreCorruptError: The file is not a SQLite database, or the record is malformed.
            StoreUnavailableError: The database is locked, unreadable or cannot be opened.
            RuntimeError: The store is closed.
        """
        key = check_key(key)
        return await self._run(self._load_sync, key)

    async def save(self, key: str, record: VisitorRecord) -> None:
        """Store ``record`` under ``key`` in one atomic, durable statement.

        Raises:
            StoreCorruptError: The file is not a SQLite database.
            StoreUnavailableError: The database is locked, read-only or full (nothing
                was written; the previous record is intact).
            RuntimeError: The store is closed.
        """
        key = check_key(key)
        if not isinstance(record, VisitorRecord):
            raise TypeError(f"expected a VisitorRecord, got {type(record).__name__}")
        data = record.dumps()
        await self._run(lambda conn: conn.execute(_SAVE, (key, data, time.time())))

    async def delete(self, key: str) -> None:
        """Forget ``key`` (no error if absent).

        Raises:
            StoreCorruptError: The file is not a SQLite database.
            StoreUnavailableError: The database is locked, read-only or full.
            RuntimeError: The store is closed.
        """
        key = check_key(key)
        await self._run(lambda conn: conn.execute("DELETE FROM records WHERE key = ?", (key,)))

    @asynccontextmanager
    async def lock(self, key: str) -> AsyncIterator[None]:
        """Hold the renewal lease of ``key`` against every process using this file.

        Not re-entrant. :meth:`save` may be called while it is held. Waiting is
        cancellable; the lease is deleted on exit, on error and on cancellation (if it is
        still ours: after ``lease_seconds`` another holder may have taken it). A failure
        to delete it is logged, not raised: the lease expires after ``lease_seconds``.

        Raises:
            StoreUnavailableError: The database is locked (longer than ``busy_timeout``),
                read-only or cannot be opened while taking the lease.
            StoreCorruptError: The file is not a SQLite database.
        """
        key = check_key(key)
        local = self._key_locks.get(key)
        if local is None:
            local = self._key_locks[key] = anyio.Lock()
        async with local:
            token = uuid.uuid4().hex
            owner = f"{os.getpid()}-{token}"
            watched = f"{os.getpid()}{_WATCHED}{token}"
            beacon = _Beacon(self._holders_path) if _uses_ofd_locks() else None
            try:
                # Lit before the lease row exists, put out after it is gone (finally).
                if beacon is not None and await anyio.to_thread.run_sync(beacon.light, watched):
                    owner = watched
                delay = _POLL_FIRST
                while not await self._run(self._try_lock_sync, key, owner):
                    await anyio.sleep(delay)
                    delay = min(delay * 2, _POLL_MAX)
                yield
            finally:
                with anyio.CancelScope(shield=True):
                    await anyio.to_thread.run_sync(self._unlock_sync, key, owner)
                    if beacon is not None:
                        await anyio.to_thread.run_sync(beacon.put_out)

    # Internals: everything below runs in worker threads unless it is async. ----------------

    async def _run(self, operation: Callable[..., _T], *args: object) -> _T:
        result = await anyio.to_thread.run_sync(self._call, operation, *args)
        loose_mode, self._loose_mode = self._loose_mode, None
        if loose_mode is not None:
            warnings.warn(_permission_warning(self._path, loose_mode), stacklevel=3)
        return result

    def _call(self, operation: Callable[..., _T], *args: object) -> _T:
        with self._db_lock:
            try:
                return operation(self._connection(), *args)
            except StoreError:
                raise
            except sqlite3.Error as exc:
                raise self._typed(exc) from exc
            except OSError as exc:
                raise unavailable(f"SQLite store {self._path!r}", "open", exc) from exc

    def _typed(self, exc: sqlite3.Error) -> StoreError:
        """The typed error for a :mod:`sqlite3` failure.

        SQLite's messages are its own words ("database is locked", "attempt to write a
        readonly database"): they never quote a row, so they may be shown.
        """
        # SQLite's own words ("file is not a database"), never data.
        detail = str(exc) or type(exc).__name__
        if getattr(exc, "sqlite_errorcode", 0) & 0xFF in _CORRUPT_CODES:
            return StoreCorruptError(
                f"SQLite store {self._path!r} is not a valid database ({detail})"
            )
        if isinstance(exc, sqlite3.OperationalError):
            return StoreUnavailableError(f"SQLite store {self._path!r} is unavailable: {detail}")
        return StoreError(f"SQLite store {self._path!r} failed: {detail}")

    def _connection(self) -> sqlite3.Connection:
        if self._closed:
            raise RuntimeError("this SQLiteStore is closed")
        if self._conn is not None:
            return self._conn
        _ensure_private_parent(self._path)
        fd = _open_no_follow(self._path, os.O_RDWR | os.O_CREAT)
        try:
            self._loose_mode = _tighten_mode(fd, self._path)
        finally:
            os.close(fd)
        conn = sqlite3.connect(
            self._path,
            timeout=self._busy_timeout,
            isolation_level=None,  # autocommit: every statement is its own transaction
            check_same_thread=False,  # used from worker threads, one at a time (_db_lock)
        )
        try:
            conn.execute(f"PRAGMA busy_timeout = {int(self._busy_timeout * 1000)}")
            self._initialise(conn)
        except BaseException:
            conn.close()
            raise
        self._conn = conn
        return conn

    def _initialise(self, conn: sqlite3.Connection) -> None:
        """WAL mode and the schema, retried while another process does the same.

        Switching the journal mode needs an exclusive lock, and SQLite answers "database
        is locked" at once (without waiting busy_timeout) when two connections race to
        do it on a new file: two workers starting together would fail.
        """
        deadline = time.monotonic() + self._busy_timeout
        delay = 0.005
        while True:
            try:
                conn.execute("PRAGMA journal_mode = WAL")
                conn.execute("PRAGMA synchronous = FULL")
                for statement in _SCHEMA:
                    conn.execute(statement)
                return
            except sqlite3.OperationalError as exc:
                busy = "locked" in str(exc) or "busy" in str(exc)
                if not busy or time.monotonic() >= deadline:
                    raise
                time.sleep(delay)  # a worker thread, never the event loop
                delay = min(0.1, delay * 2)

    def _load_sync(self, conn: sqlite3.Connection, key: str) -> VisitorRecord | None:
        row = conn.execute("SELECT data FROM records WHERE key = ?", (key,)).fetchone()
        if row is None:
            return None
        try:
            return VisitorRecord.loads(row[0])
        except ProtocolError as exc:
            # Model errors name the field, never its value.
            raise StoreCorruptError(f"SQLite store {self._path!r}: {exc}") from exc

    def _try_lock_sync(self, conn: sqlite3.Connection, key: str, owner: str) -> bool:
        now = time.time()
        acquired = conn.execute(_TRY_LOCK, (key, owner, now + self._lease, now)).rowcount == 1
        if not acquired:
            row = conn.execute(_OWNER, (key,)).fetchone()
            holder = row[0] if row is not None else None
            if (
                isinstance(holder, str)
                and _WATCHED in holder
                and not _is_lit(self._holders_path, holder)
            ):
                # Its holder died inside lock(): waiting out its lease would only delay
                # a restarted process. Taken only if that dead holder still has it.
                update = (owner, now + self._lease, key, holder)
                acquired = conn.execute(_TAKE_OVER, update).rowcount == 1
                if acquired:
                    logger.info("took over the renewal lease of a process that died")
        if acquired:
            self._owned.add((key, owner))
        return acquired

    def _unlock_sync(self, key: str, owner: str) -> None:
        with self._db_lock:
            self._owned.discard((key, owner))
            if self._conn is None:
                return
            try:
                self._conn.execute(_UNLOCK, (key, owner))
            except sqlite3.Error as exc:
                # Raising here would replace the block's own outcome (a renewed token
                # already saved, say); the lease expires by itself.
                logger.warning(
                    "could not release the renewal lease in %r (%s); it expires within %g s",
                    self._path,
                    type(self._typed(exc)).__name__,
                    self._lease,
                )
