"""A store in Redis: many visitors, many processes and hosts, leases for renewal.

Needs the ``redis`` extra (``pip install giosg-visitor[redis]``); redis-py is imported
when a :class:`RedisStore` is created, never when this module is imported.

Keys: ``<prefix>record:<key>`` holds ``VisitorRecord.dumps()`` JSON (one ``SET``, so a
reader sees the old or the new record, never a torn one) and ``<prefix>lock:<key>`` holds
the renewal lease of ``key`` while someone renews it (``SET NX PX``, deleted by a
compare-and-delete script so that a holder only ever deletes its own lease).
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from contextlib import asynccontextmanager
from types import ModuleType
from typing import TYPE_CHECKING, Any, Final, Literal, TypeAlias, final

import anyio
import anyio.to_thread

from giosg_visitor._lifecycle import AsyncResource
from giosg_visitor._redact import redact
from giosg_visitor.errors import (
    ProtocolError,
    StoreConnectionError,
    StoreCorruptError,
    StoreError,
    StoreProtocolError,
    StoreTimeoutError,
    StoreUnavailableError,
)
from giosg_visitor.stores._records import VisitorRecord

from .base import check_key


if TYPE_CHECKING:
    import redis
    import redis.asyncio


__all__ = ["RedisStore"]

logger = logging.getLogger("giosg_visitor.stores.redis")

# Delete the lease only if it still holds our token: after ``lease_seconds`` another
# process may own it, and a plain DEL would let a third one in beside it.
_RELEASE: Final = (
    "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end return 0"
)
# How often a waiting lock(key) retries: fast at first, then at most every 50 ms.
_POLL_FIRST: Final = 0.02
_POLL_MAX: Final = 0.05
# A release that cannot reach Redis gives up after this long: the lease expires anyway.
_RELEASE_TIMEOUT: Final = 5.0
# Longest part of a Redis error message kept in an exception.
_MAX_DETAIL: Final = 300
# Error replies of a server that is there but cannot serve now (loading its data set, a
# read-only replica, out of memory, a busy script, a cluster without quorum).
_UNAVAILABLE_REPLIES: Final = (
    "LOADING",
    "READONLY",
    "OOM",
    "BUSY",
    "MASTERDOWN",
    "MISCONF",
    "NOREPLICAS",
    "TRYAGAIN",
    "CLUSTERDOWN",
)
_INSTALL_HINT: Final = (
    "RedisStore needs redis-py: pip install giosg-visitor[redis] (or pip install redis)"
)


def _import_redis() -> ModuleType:
    try:
        import redis
        import redis.asyncio
        import redis.connection
        import redis.exceptions
    except ImportError as exc:
        raise ImportError(_INSTALL_HINT) from exc
    return redis


def _current_backend() -> Literal["asyncio", "trio"]:
    """The running async library (anyio runs on these two only)."""
    try:
        import sniffio
    except ImportError:  # pragma: no cover - trio depends on sniffio, so this is asyncio
        return "asyncio"
    return "trio" if sniffio.current_async_library() == "trio" else "asyncio"


def _describe(scheme: str, options: dict[str, Any]) -> str:
    """``scheme://host:port/db`` (or ``unix://path?db=N``): never a username or password."""
    db = options.get("db", 0)
    path = options.get("path")
    if path:
        return f"unix://{path}?db={db}"
    host = options.get("host", "localhost")
    port = options.get("port", 6379)
    return f"{scheme}://{host}:{port}/{db}"


def _scheme_of(connection_class: object) -> str:
    name = getattr(connection_class, "__name__", "")
    return "rediss" if "SSL" in name else "redis"


#: How talking to Redis failed: no answer in time, no connection, or an error reply.
_FailureKind: TypeAlias = Literal["timeout", "connection", "reply"]
#: The words of each failure in a message (``Redis at <target> <words>: <detail>``).
_FAILURE_WORDS: Final[Mapping[_FailureKind, str]] = {
    "timeout": "timed out",
    "connection": "could not be reached",
    "reply": "answered with an error",
}


@final
class _RedisLink:
    """Runs Redis commands on the redis-py client that fits the running backend.

    Shared by :class:`RedisStore` and the cluster coordinator, so that both read a URL or
    a client the same way. redis-py's asyncio client works on asyncio only: there
    commands go to a ``redis.asyncio`` client, on trio to the synchronous client in a
    worker thread. From a URL the link makes those clients on first use and closes them
    in :meth:`aclose`; a client passed in is used as it is and left open.

    A failure is raised as ``translate(kind, exc)``, so each owner raises its own error
    types; the owner masks :attr:`password` in what it says.

    Args:
        url_or_client: A Redis URL or a redis-py client.
        owner: The class name the messages of ``TypeError`` and ``RuntimeError`` give.
        socket_timeout: Connect and command timeout, seconds, of a client from the URL.
        translate: Makes the error to raise for a failure of redis-py or the network.
        quiet_close: :meth:`aclose` ignores an error of closing the asyncio client.

    Raises:
        ImportError: redis-py is not installed.
        TypeError: Neither a URL nor a redis-py client.
        ValueError: The URL is not a Redis URL.
    """

    def __init__(
        self,
        url_or_client: object,
        *,
        owner: str,
        socket_timeout: float,
        translate: Callable[[_FailureKind, BaseException], Exception],
        quiet_close: bool = False,
    ) -> None:
        self._redis = redis_module = _import_redis()
        self._owner = owner
        self._socket_timeout = socket_timeout
        self._translate = translate
        self._quiet_close = quiet_close
        #: Set by an owner that is closing: it may still use the clients it has, but no
        #: new one is made.
        self.closed = False
        self._url: str | None = None
        self._async_client: redis.asyncio.Redis | None = None
        self._sync_client: redis.Redis | None = None
        self.password: str | None
        self.target: str
        self.owns_client: bool
        if isinstance(url_or_client, str):
            try:
                options = redis_module.connection.parse_url(url_or_client)
            except ValueError as exc:
                # Without the context: a parse error deep down may quote part of the URL.
                raise ValueError(f"invalid Redis URL: {exc}") from None
            scheme = "rediss" if url_or_client.startswith("rediss:") else "redis"
            self._url = url_or_client
            self.password = options.get("password")
            self.target = _describe(scheme, options)
            self.owns_client = True
        elif isinstance(url_or_client, redis_module.asyncio.Redis | redis_module.Redis):
            pool = url_or_client.connection_pool
            pool_options = dict(pool.connection_kwargs)
            if isinstance(url_or_client, redis_module.asyncio.Redis):
                self._async_client = url_or_client
            else:
                self._sync_client = url_or_client
            self.password = pool_options.get("password")
            self.target = _describe(_scheme_of(pool.connection_class), pool_options)
            self.owns_client = False
        else:
            raise TypeError(
                f"{owner} needs a Redis URL or a redis.asyncio.Redis / redis.Redis client, "
                f"not {type(url_or_client).__name__}"
            )

    async def execute(self, *command: str | int | float | bytes) -> Any:
        """Run one command."""
        if _current_backend() == "asyncio" and self._sync_client is None:
            async_client = self._async_client
            if async_client is None:
                async_client = self._async_client = self._from_url(self._redis.asyncio.Redis)
            with self._map_errors():
                return await async_client.execute_command(*command)
        sync_client = self._sync_client
        if sync_client is None:
            if not self.owns_client:
                raise RuntimeError(
                    "a redis.asyncio.Redis client works on asyncio only; on trio pass a URL "
                    f"or a redis.Redis client to {self._owner}"
                )
            sync_client = self._sync_client = self._from_url(self._redis.Redis)
        client = sync_client
        with self._map_errors():
            return await anyio.to_thread.run_sync(lambda: client.execute_command(*command))

    async def script(
        self, source: str, keys: list[str], args: list[str | int | float | bytes]
    ) -> Any:
        """Run a Lua script (``EVAL``: Redis caches the compiled script by its digest)."""
        return await self.execute("EVAL", source, len(keys), *keys, *args)

    async def aclose(self) -> None:
        """Close the clients this link made (a client passed in stays open)."""
        if not self.owns_client:
            return
        async_client, self._async_client = self._async_client, None
        sync_client, self._sync_client = self._sync_client, None
        with anyio.CancelScope(shield=True):
            if async_client is not None:
                try:
                    await async_client.aclose()
                except Exception:
                    if not self._quiet_close:
                        raise
            if sync_client is not None:
                await anyio.to_thread.run_sync(sync_client.close)

    def _from_url(self, client_class: Any) -> Any:
        if self.closed:
            raise RuntimeError(f"this {self._owner} is closed")
        assert self._url is not None  # a link without a URL was given a client
        return client_class.from_url(
            self._url,
            socket_timeout=self._socket_timeout,
            socket_connect_timeout=self._socket_timeout,
        )

    @contextlib.contextmanager
    def _map_errors(self) -> Iterator[None]:
        exceptions = self._redis.exceptions
        try:
            yield
        except exceptions.TimeoutError as exc:
            raise self._translate("timeout", exc) from exc
        except exceptions.ConnectionError as exc:
            raise self._translate("connection", exc) from exc
        except exceptions.RedisError as exc:
            raise self._translate("reply", exc) from exc
        except TimeoutError as exc:
            raise self._translate("timeout", exc) from exc
        except OSError as exc:
            raise self._translate("connection", exc) from exc


@final
class RedisStore(AsyncResource):
    """Keeps records in Redis; the shared choice for workers on several hosts.

    Each ``save`` is one ``SET`` of the record's JSON, so it is atomic; how durable it is
    depends on the server's persistence settings (RDB/AOF), which are Redis's to give.

    :meth:`lock` is a lease: ``SET <prefix>lock:<key> <token> NX PX <lease>``, retried
    every 20 to 50 ms until it is free, and deleted on exit by a script that compares the
    token first. A holder that crashes keeps the lease until ``lease_seconds`` have passed
    (Redis expires it); a holder that stays inside the block longer than that loses it
    silently, so keep the lease well above the longest renewal.

    Pass a URL (the store then creates its own client and closes it in :meth:`aclose`)
    or a client you own and close yourself:

    * a ``redis.asyncio.Redis`` works on asyncio only;
    * a ``redis.Redis`` (synchronous) works on asyncio and trio, its commands run in
      worker threads;
    * with a URL, the store uses ``redis.asyncio`` on asyncio and the synchronous client
      in worker threads on trio (redis-py has no trio client).

    Failures are typed (each a :class:`~giosg_visitor.StoreError`, the redis-py error
    as ``__cause__``, a password in the URL never in the message): Redis cannot be
    reached, :class:`~giosg_visitor.StoreConnectionError` (also a
    :class:`~giosg_visitor.TransportError`), or does not answer in time,
    :class:`~giosg_visitor.StoreTimeoutError`; it answers that it cannot serve now
    (``LOADING``, ``READONLY``, ``OOM``, ``BUSY``, ...),
    :class:`~giosg_visitor.StoreUnavailableError`; a record that does not decode or a
    key of another type, :class:`~giosg_visitor.StoreCorruptError`; any other refusal
    (``NOPERM``), :class:`~giosg_visitor.StoreProtocolError`. Use a store inside one
    event loop.

    Args:
        url_or_client: A ``redis://``, ``rediss://`` or ``unix://`` URL, or a client.
        prefix: Prepended to every Redis key this store uses.
        lease_seconds: How long a :meth:`lock` survives a holder that died.
        socket_timeout: Connect and command timeout, seconds, for a client created from
            a URL (a ``socket_timeout`` in the URL wins).

    Raises:
        ImportError: redis-py is not installed.
        TypeError: ``url_or_client`` is neither a URL nor a redis-py client.
        ValueError: The URL is not a Redis URL, or an option is out of range.
    """

    def __init__(
        self,
        url_or_client: str | redis.asyncio.Redis | redis.Redis,
        *,
        prefix: str = "giosg_visitor:",
        lease_seconds: float = 30.0,
        socket_timeout: float = 5.0,
    ) -> None:
        _import_redis()  # first: a missing extra is reported before a wrong argument
        if not isinstance(prefix, str):
            raise TypeError(f"prefix must be a str, not {type(prefix).__name__}")
        for name, value in (("lease_seconds", lease_seconds), ("socket_timeout", socket_timeout)):
            if (
                isinstance(value, bool)
                or not isinstance(value, int | float)
                or not math.isfinite(value)
                or value <= 0
            ):
                raise ValueError(f"{name} must be a positive number of seconds")
        self._prefix = prefix
        self._lease = float(lease_seconds)
        self._lease_ms = max(1, math.ceil(self._lease * 1000))
        self._link = _RedisLink(
            url_or_client,
            owner="RedisStore",
            socket_timeout=float(socket_timeout),
            translate=self._translate,
        )
        self._owned: set[tuple[str, str]] = set()
        self._key_locks: dict[str, anyio.Lock] = {}

    @property
    def prefix(self) -> str:
        """The prefix of every Redis key this store uses."""
        return self._prefix

    @property
    def lease_seconds(self) -> float:
        """How long a :meth:`lock` outlives a holder that died."""
        return self._lease

    def record_key(self, key: str) -> str:
        """The Redis key that holds the record of ``key``."""
        return f"{self._prefix}record:{check_key(key)}"

    def lock_key(self, key: str) -> str:
        """The Redis key that holds the renewal lease of ``key`` while it is held."""
        return f"{self._prefix}lock:{check_key(key)}"

    def __repr__(self) -> str:
        return f"<RedisStore {self._link.target} prefix={self._prefix!r}>"

    async def _aopen(self) -> None:
        self._check_open()

    async def aclose(self) -> None:
        """Release the leases this store holds, then close its own client; idempotent.

        A client passed in is left open (it is the caller's). The store cannot be used
        afterwards.
        """
        if self._link.closed:
            return
        self._link.closed = True
        with anyio.CancelScope(shield=True):
            owned, self._owned = sorted(self._owned), set()
            for lock_key, token in owned:
                with contextlib.suppress(StoreError, RuntimeError):
                    await self._release(lock_key, token)
            await self._link.aclose()

    # Store protocol. ---------------------------------------------------------------------

    async def load(self, key: str) -> VisitorRecord | None:
        """Return the record stored under ``key``, or ``None``.

        Raises:
            StoreConnectionError: Redis could not be reached.
            StoreUnavailableError: Redis answered that it cannot serve now.
            StoreCorruptError: The record is malformed, or the key holds another type.
            StoreProtocolError: Redis refused the command.
            RuntimeError: The store is closed, or a ``redis.asyncio`` client is used on trio.
        """
        name = self.record_key(key)
        data = await self._execute("GET", name)
        if data is None:
            return None
        try:
            return VisitorRecord.loads(data)
        except ProtocolError as exc:
            # Model errors name the field, never its value.
            raise StoreCorruptError(f"Redis store {self._link.target} key {name!r}: {exc}") from exc

    async def save(self, key: str, record: VisitorRecord) -> None:
        """Store ``record`` under ``key`` in one atomic ``SET``.

        Raises:
            StoreConnectionError: Redis could not be reached (the old record may or may not
                have been replaced; it is never torn).
            StoreUnavailableError: Redis answered that it cannot serve now (a read-only
                replica, out of memory).
            StoreProtocolError: Redis refused the command.
            RuntimeError: The store is closed, or a ``redis.asyncio`` client is used on trio.
        """
        name = self.record_key(key)
        if not isinstance(record, VisitorRecord):
            raise TypeError(f"expected a VisitorRecord, got {type(record).__name__}")
        await self._execute("SET", name, record.dumps())

    async def delete(self, key: str) -> None:
        """Forget ``key`` (no error if absent).

        Raises:
            StoreConnectionError: Redis could not be reached.
            StoreUnavailableError: Redis answered that it cannot serve now.
            StoreProtocolError: Redis refused the command.
            RuntimeError: The store is closed, or a ``redis.asyncio`` client is used on trio.
        """
        await self._execute("DEL", self.record_key(key))

    @asynccontextmanager
    async def lock(self, key: str) -> AsyncIterator[None]:
        """Hold the renewal lease of ``key`` against every user of this Redis and prefix.

        Not re-entrant. :meth:`save` may be called while it is held. Waiting is
        cancellable; the lease is deleted on exit, on error and on cancellation, if it is
        still ours (after ``lease_seconds`` another holder may have taken it). A failure
        to delete it is logged, not raised: Redis expires it after ``lease_seconds``.

        Raises:
            StoreConnectionError: Redis could not be reached while taking the lease.
            StoreUnavailableError: Redis answered that it cannot serve now.
            StoreProtocolError: Redis refused the command.
            RuntimeError: The store is closed, or a ``redis.asyncio`` client is used on trio.
        """
        lock_key = self.lock_key(key)
        self._check_open()
        local = self._key_locks.get(lock_key)
        if local is None:
            local = self._key_locks[lock_key] = anyio.Lock()
        async with local:
            token = f"{os.getpid()}-{uuid.uuid4().hex}"
            try:
                delay = _POLL_FIRST
                # Recorded before asking: a cancelled SET may still have been applied.
                self._owned.add((lock_key, token))
                while not await self._execute("SET", lock_key, token, "NX", "PX", self._lease_ms):
                    await anyio.sleep(delay)
                    delay = min(delay * 2, _POLL_MAX)
                yield
            finally:
                if (lock_key, token) in self._owned:  # else aclose() released it already
                    self._owned.discard((lock_key, token))
                    await self._release_quietly(lock_key, token)

    # Internals. --------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._link.closed:
            raise RuntimeError("this RedisStore is closed")

    async def _release_quietly(self, lock_key: str, token: str) -> None:
        problem: str | None = None
        with anyio.move_on_after(_RELEASE_TIMEOUT, shield=True) as scope:
            try:
                await self._release(lock_key, token)
            except (StoreError, RuntimeError) as exc:
                problem = type(exc).__name__
        if scope.cancelled_caught:
            problem = f"no answer within {_RELEASE_TIMEOUT:g} s"
        if problem is not None:
            logger.warning(
                "could not release the renewal lease %r (%s); Redis expires it within %g s",
                lock_key,
                problem,
                self._lease,
            )

    async def _release(self, lock_key: str, token: str) -> None:
        await self._execute("EVAL", _RELEASE, 1, lock_key, token, check_open=False)

    async def _execute(self, *command: str | int, check_open: bool = True) -> Any:
        """Run one Redis command on the client that fits the running backend."""
        if check_open:
            self._check_open()
        return await self._link.execute(*command)

    def _translate(self, kind: _FailureKind, exc: BaseException) -> StoreError:
        """The typed error of a failure (see :class:`_RedisLink`)."""
        if kind == "reply":
            return self._reply_error(exc)
        error = StoreTimeoutError if kind == "timeout" else StoreConnectionError
        return error(self._message(_FAILURE_WORDS[kind], exc))

    def _reply_error(self, exc: BaseException) -> StoreError:
        """The typed error for an error reply, by its first word (Redis's error code)."""
        code = (str(exc).split(maxsplit=1) or [""])[0].upper()
        message = self._message(_FAILURE_WORDS["reply"], exc)
        if code in _UNAVAILABLE_REPLIES:
            return StoreUnavailableError(message)
        if code == "WRONGTYPE":
            return StoreCorruptError(message)
        return StoreProtocolError(message)

    def _message(self, what: str, exc: BaseException) -> str:
        detail = str(exc) or type(exc).__name__
        # Redis quotes the arguments of a command it does not know ("with args beginning
        # with: 'key' '{record JSON}'"): a record holds secrets, so that part goes.
        detail = detail.split(", with args beginning with", 1)[0][:_MAX_DETAIL]
        password = self._link.password
        if password:
            detail = detail.replace(password, "***")
        return f"Redis at {self._link.target} {what}: {redact(detail)}"
