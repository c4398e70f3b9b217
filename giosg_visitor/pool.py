"""``VisitorPool``: thousands of visitors in one process, created lazily, closed when idle."""

from __future__ import annotations

import difflib
import logging
from collections.abc import Callable, Generator, Sequence
from contextlib import AbstractAsyncContextManager, AsyncExitStack
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, NoReturn, TypedDict, Unpack, final

import anyio
import anyio.abc
import attrs
import httpx

from ._auth import InvalidSecretPolicy
from ._clock import Clock, SystemClock
from ._facts import SocketStrategy
from ._http import DEFAULT_BASE_URL, USER_AGENT, ResponseLimits, Timeouts
from ._lifecycle import AsyncResource
from ._limiter import DeadlineLimiter, GatedTransport, ShardedTransport, register, unregister
from ._renewal import RenewalPolicy, RetryPolicy
from ._waiter import Waiter
from .errors import ClosedError
from .realtime import ReconnectPolicy
from .stores.base import Store
from .visitor import Visitor, shared_ssl_context


if TYPE_CHECKING:
    from .cluster import ClusterStats, Deliveries, RedisCoordinator
    from .cluster._runtime import ClusterRuntime

__all__ = ["PoolStats", "VisitorOptions", "VisitorPool"]


class VisitorOptions(TypedDict, total=False):
    """The :class:`~giosg_visitor.Visitor` options a pool passes to every visitor.

    The same keywords as ``Visitor(...)`` without those the pool sets itself
    (``store``, ``key``, ``http_client``, ``base_url``, ``clock``); see
    :class:`~giosg_visitor.Visitor` for what each does.
    """

    timeouts: Timeouts | None
    limits: ResponseLimits | None
    renewal: RenewalPolicy | None
    retry: RetryPolicy | None
    on_invalid_secret: InvalidSecretPolicy
    realtime: bool
    socket_strategy: SocketStrategy
    socket_framing: Literal["auto", "raw", "sockjs"]
    socket_hosts: Sequence[str]
    reconnect: ReconnectPolicy | None
    ping_interval: float | None
    ping_timeout: float
    socket_idle_timeout: float | None
    presence_expires_in: int
    rng: Callable[[], float]


_RESERVED = ("store", "key", "http_client", "base_url", "clock")


def _check_options(organization_id: str, base_url: str, options: dict[str, Any]) -> None:
    """Fail at construction, not at the first ``pool.visitor()``: names, then values."""
    known = VisitorOptions.__optional_keys__
    for name in options:
        if name in _RESERVED:
            raise TypeError(f"{name!r} is set by the pool")
        if name not in known:
            close = difflib.get_close_matches(name, sorted(known), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise TypeError(f"VisitorPool got an unknown visitor option {name!r}{hint}")
    # Visitor's own checks (types, choices, URLs) run now; creating one does no I/O.
    Visitor(organization_id, base_url=base_url, **options)


logger = logging.getLogger("giosg_visitor.pool")


@attrs.frozen(kw_only=True)
class PoolStats:
    """A pool's counters (see :meth:`VisitorPool.stats`).

    Attributes:
        open: Visitors open in this pool now.
        started: Visitors started since the pool opened.
        closed_idle: Visitors closed for being idle.
        cluster: This worker's cluster counters (``None`` without a coordinator).
    """

    open: int
    started: int
    closed_idle: int
    cluster: ClusterStats | None = None


@final
class _Entry:
    """One pooled visitor: started by its own host task in the pool's task group."""

    __slots__ = (
        "closed",
        "done",
        "error",
        "finished",
        "key",
        "last_used",
        "ready",
        "users",
        "visitor",
    )

    def __init__(self, key: str, now: float) -> None:
        self.key = key
        self.visitor: Visitor | None = None
        self.error: BaseException | None = None
        # Thousands of entries wait for hours: what waits is as small as it can be.
        #: Set once the visitor started (or failed); dropped then (None: started).
        self.ready: anyio.Event | None = anyio.Event()
        #: Its host waits on this alone until the visitor is to close.
        self.closed = Waiter()
        #: Made when a caller waits for the host to finish; ``done`` once it has.
        self.finished: anyio.Event | None = None
        self.done = False
        self.last_used = now
        self.users = 0

    def mark_ready(self) -> None:
        ready, self.ready = self.ready, None
        if ready is not None:
            ready.set()

    def mark_finished(self) -> None:
        self.done = True
        if self.finished is not None:
            self.finished.set()

    async def wait_finished(self) -> None:
        if not self.done:
            if self.finished is None:
                self.finished = anyio.Event()
            await self.finished.wait()


@final
class VisitorPool(AsyncResource):
    """Many visitors of one organization, keyed by the caller's own user ids.

    Visitors are created on first use (resumed from the store when it knows the key),
    share one ``httpx.AsyncClient`` (one connection pool, one SSL context), start at most
    ``max_concurrent_starts`` at a time (so a restart does not stampede the auth
    endpoint), and are closed after ``idle_timeout`` seconds without use.

    Example:
        >>> async with VisitorPool(ORG_ID, store=SQLiteStore("bridge.db")) as pool:
        ...     async with pool.visitor("whatsapp:+358401234567") as visitor:
        ...         chat = await visitor.start_chat(ROOM_ID)

    Args:
        organization_id: The organization of every visitor.
        store: The shared store (one record per key).
        base_url: The API origin.
        idle_timeout: Seconds without use after which a visitor is closed (``None``: never).
        max_concurrent_starts: How many visitors may be authenticating at once.
        max_connections: Size of the shared HTTP connection pool.
        max_background_requests: How many auth and renewal requests may be in flight at
            once, pool-wide (default: half of ``max_connections``); the rest wait in
            the SDK, the token that must be renewed soonest first, instead of in the
            HTTP library's queue. At most ``max_connections``.
        http_client: Use this client instead of creating one (not closed by the pool).
        clock: Time source (tests pass a ``FakeClock``).
        coordinator: Cluster mode (see :class:`~giosg_visitor.RedisCoordinator`): one
            worker of the cluster holds each active visitor's socket, and
            :meth:`inbound` delivers the operator messages of every active visitor.
            The pool's own visitors then serve REST only (no socket).
        **visitor_options: Passed to every :class:`~giosg_visitor.Visitor`: the keys of
            :class:`VisitorOptions` (``realtime``, ``renewal``, ``retry``, ``timeouts``,
            ``socket_strategy``, ``socket_idle_timeout``, ...). A misspelt or invalid
            option raises here, not at first use.

    Raises:
        TypeError: An unknown visitor option (the message suggests the closest name), or
            one the pool sets itself.
        ValueError: An invalid option value or pool setting.
    """

    def __init__(
        self,
        organization_id: str,
        *,
        store: Store,
        base_url: str = DEFAULT_BASE_URL,
        idle_timeout: float | None = 600.0,
        max_concurrent_starts: int = 20,
        max_connections: int = 100,
        max_background_requests: int | None = None,
        http_client: httpx.AsyncClient | None = None,
        clock: Clock | None = None,
        coordinator: RedisCoordinator | None = None,
        **visitor_options: Unpack[VisitorOptions],
    ) -> None:
        if idle_timeout is not None and idle_timeout <= 0:
            raise ValueError("idle_timeout must be positive (or None)")
        if max_concurrent_starts < 1:
            raise ValueError("max_concurrent_starts must be at least 1")
        if max_background_requests is None:
            max_background_requests = max(1, max_connections // 2)
        elif not 1 <= max_background_requests <= max_connections:
            raise ValueError("max_background_requests must be between 1 and max_connections")
        _check_options(organization_id, base_url, dict(visitor_options))
        self.organization_id = organization_id
        self._store = store
        self._base_url = base_url
        self._idle_timeout = idle_timeout
        self._start_limiter = anyio.CapacityLimiter(max_concurrent_starts)
        self._max_connections = max_connections
        self._max_background = max_background_requests
        self._background: DeadlineLimiter | None = None
        self._shared_client = http_client
        self._client: httpx.AsyncClient | None = None
        self._clock: Clock = clock or SystemClock()
        self._options: dict[str, Any] = dict(visitor_options)
        self._closed = False
        self._entries: dict[str, _Entry] = {}
        self._task_group: anyio.abc.TaskGroup | None = None
        self._stack: AsyncExitStack | None = None
        self._reaper_scope: anyio.CancelScope | None = None
        self.started = 0
        self.closed_idle = 0
        self._coordinator = coordinator
        self._cluster: ClusterRuntime | None = None

    # Lifecycle ----------------------------------------------------------------------------

    async def _aopen(self) -> None:
        if self._stack is not None:
            raise RuntimeError("the pool is already running")
        stack = AsyncExitStack()
        await stack.__aenter__()
        try:
            if self._shared_client is None:
                timeouts: Timeouts = self._options.get("timeouts") or Timeouts()
                ssl_context = await shared_ssl_context()

                def shard(connections: int) -> httpx.AsyncBaseTransport:
                    limits = httpx.Limits(
                        max_connections=connections, max_keepalive_connections=connections
                    )
                    return httpx.AsyncHTTPTransport(verify=ssl_context, limits=limits)

                # No more requests inside httpcore than it has connections: its queue
                # costs (queued requests x connections) on every request; ours is a heap.
                # And small pools: httpcore checks each of a pool's connections per request.
                transport = GatedTransport(
                    ShardedTransport(shard, self._max_connections),
                    self._max_connections,
                    self._clock.monotonic,
                )
                self._client = await stack.enter_async_context(
                    httpx.AsyncClient(
                        timeout=timeouts.httpx_timeout(),
                        transport=transport,
                        follow_redirects=False,
                        headers={"User-Agent": USER_AGENT},
                    )
                )
            else:
                self._client = self._shared_client
            self._tie_background_limit(stack, self._client)
            self._reaper_scope = anyio.CancelScope()
            self._task_group = await stack.enter_async_context(anyio.create_task_group())
            stack.callback(self._close_all)
            if self._idle_timeout is not None:
                self._task_group.start_soon(self._reap_idle, self._idle_timeout)
            if self._coordinator is not None:
                # Left first on exit: leases are handed over while the client still works.
                self._cluster = await stack.enter_async_context(self._cluster_runtime())
        except BaseException:
            await stack.__aexit__(None, None, None)
            raise
        self._stack = stack

    async def aclose(self) -> None:
        """Close every visitor and the shared client."""
        self._closed = True
        stack, self._stack = self._stack, None
        if stack is not None:
            await stack.aclose()

    def _close_all(self) -> None:
        for entry in self._entries.values():
            entry.closed.set()
        # The reaper sleeps forever otherwise; the hosts end on their own.
        if self._reaper_scope is not None:
            self._reaper_scope.cancel()

    # Access ---------------------------------------------------------------------------------

    async def get(self, key: str) -> Visitor:
        """The started visitor for ``key`` (created or resumed on first use).

        Concurrent calls for the same key share one visitor. Prefer :meth:`visitor`,
        which also keeps the visitor from being closed as idle while you use it.

        Raises:
            RuntimeError: The pool is not running.
            GiosgError: The visitor could not start (typed, as from ``Visitor``).
        """
        if self._closed:
            raise ClosedError("the pool is closed: use it inside `async with VisitorPool(...)`")
        if self._task_group is None or self._stack is None:
            raise RuntimeError("use `async with VisitorPool(...)` first")
        entry = self._entries.get(key)
        if entry is None:
            entry = _Entry(key, self._clock.monotonic())
            self._entries[key] = entry
            try:
                await self._task_group.start(self._host, entry)
            except BaseException as exc:
                entry.error = exc
                self._entries.pop(key, None)
                entry.mark_ready()
                raise
            entry.mark_ready()
        else:
            if entry.ready is not None:
                await entry.ready.wait()
            if entry.error is not None:
                raise entry.error
        entry.last_used = self._clock.monotonic()
        assert entry.visitor is not None
        return entry.visitor

    def visitor(self, key: str) -> _Lease:
        """Use the visitor for ``key``; it is not closed as idle while the block runs.

        Use as ``async with pool.visitor(key) as visitor:`` (``await pool.get(key)``
        returns the visitor without that protection).
        """
        return _Lease(self, key)

    def _lease(self, key: str) -> _Entry | None:
        entry = self._entries.get(key)
        if entry is not None:
            entry.users += 1
        return entry

    def _release(self, entry: _Entry | None) -> None:
        if entry is not None:
            entry.users -= 1
            entry.last_used = self._clock.monotonic()

    async def close_visitor(self, key: str) -> None:
        """Close the visitor for ``key`` now (it is resumed from the store on next use)."""
        entry = self._entries.get(key)
        if entry is not None:
            entry.closed.set()
            await entry.wait_finished()

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def keys(self) -> list[str]:
        """The keys of the visitors open now."""
        return list(self._entries)

    # Cluster mode ---------------------------------------------------------------------------

    def inbound(self) -> AbstractAsyncContextManager[Deliveries]:
        """The operator messages of every active visitor of the cluster, to acknowledge.

        Use ``async with pool.inbound() as deliveries: async for d in deliveries: ...;
        await d.ack()``. Each message is acknowledged exactly once across the cluster:
        a delivery left unacknowledged by a worker that died is redelivered to another
        worker after ``redeliver_after``; an acknowledged one is never delivered again.

        Raises:
            RuntimeError: The pool has no coordinator or is not running, or
                ``inbound()`` is already open on it.
        """
        return self._require_cluster().inbound()

    async def activate(self, key: str) -> None:
        """Mark ``key`` active: some worker must own its socket (a started chat does it).

        Use it for a visitor whose chat was started before the cluster mode.
        """
        await self._require_cluster().activate(key)

    def stats(self) -> PoolStats:
        """Counters of this pool (and of its share of the cluster in cluster mode)."""
        return PoolStats(
            open=len(self._entries),
            started=self.started,
            closed_idle=self.closed_idle,
            cluster=self._cluster.stats() if self._cluster is not None else None,
        )

    def _require_cluster(self) -> ClusterRuntime:
        if self._coordinator is None:
            raise RuntimeError(
                "cluster mode needs VisitorPool(..., coordinator=RedisCoordinator())"
            )
        if self._cluster is None:
            raise RuntimeError("use `async with VisitorPool(...)` first")
        return self._cluster

    def _cluster_runtime(self) -> ClusterRuntime:
        from .cluster._runtime import ClusterRuntime

        assert self._coordinator is not None
        return ClusterRuntime(
            self._coordinator, make_visitor=self._owner_visitor, clock=self._clock
        )

    def _owner_visitor(self, key: str) -> Visitor:
        """The visitor that holds ``key``'s socket on its owner (resumed from the store)."""
        return Visitor(
            self.organization_id,
            base_url=self._base_url,
            store=self._store,
            key=key,
            http_client=self._client,
            clock=self._clock,
            **self._options,
        )

    def __repr__(self) -> str:
        return f"<VisitorPool org={self.organization_id} open={len(self._entries)}>"

    # Internals --------------------------------------------------------------------------------

    async def _host(
        self,
        entry: _Entry,
        *,
        task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        """Owns one visitor's lifetime inside the pool's task group (so contexts nest)."""
        try:
            async with AsyncExitStack() as stack:
                async with self._start_limiter:
                    options = self._options
                    if self._coordinator is not None:
                        # Only the owner holds a socket; REST works everywhere.
                        options = {**options, "realtime": False}
                    visitor = Visitor(
                        self.organization_id,
                        base_url=self._base_url,
                        store=self._store,
                        key=entry.key,
                        http_client=self._client,
                        clock=self._clock,
                        **options,
                    )
                    if self._cluster is not None:
                        visitor._chat_started = self._cluster.chat_started
                    entry.visitor = await stack.enter_async_context(visitor)
                self.started += 1
                task_status.started()
                await entry.closed.wait()
        finally:
            if self._entries.get(entry.key) is entry:
                del self._entries[entry.key]
            entry.mark_finished()

    def _tie_background_limit(self, stack: AsyncExitStack, client: httpx.AsyncClient) -> None:
        """Put the pool-wide auth limit on ``client``, where every session looks for it.

        A client shared by two pools keeps the first pool's limit (one limit per
        connection pool, which is what it protects).
        """
        limiter = register(client, self._max_background)
        if limiter is not None:
            self._background = limiter
            stack.callback(unregister, client, limiter)

    async def _reap_idle(self, idle_timeout: float) -> None:
        assert self._reaper_scope is not None
        with self._reaper_scope:
            while True:
                await self._clock.sleep(max(0.05, idle_timeout / 4))
                cutoff = self._clock.monotonic() - idle_timeout
                for entry in list(self._entries.values()):
                    if entry.users == 0 and entry.ready is None and entry.last_used < cutoff:
                        logger.debug("closing idle visitor %s", entry.key)
                        self.closed_idle += 1
                        entry.closed.set()


@final
class _Lease:
    """``async with pool.visitor(key) as visitor``: the visitor, kept open while in use."""

    __slots__ = ("_entry", "_key", "_pool")

    def __init__(self, pool: VisitorPool, key: str) -> None:
        self._pool = pool
        self._key = key
        self._entry: _Entry | None = None

    async def __aenter__(self) -> Visitor:
        visitor = await self._pool.get(self._key)
        self._entry = self._pool._lease(self._key)
        return visitor

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        entry, self._entry = self._entry, None
        self._pool._release(entry)

    if not TYPE_CHECKING:
        # Only at run time: type checkers keep reporting `await pool.visitor(...)` as
        # an error, and the run-time message says what to write instead.
        def __await__(self) -> Generator[Any, None, NoReturn]:
            raise TypeError(
                "pool.visitor(key) is not awaitable: use `async with pool.visitor(key) as "
                "visitor:` (or `visitor = await pool.get(key)`)"
            )
