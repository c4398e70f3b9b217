"""``VisitorPool``: thousands of visitors in one process, created lazily, closed when idle."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from types import TracebackType
from typing import Any, Self, final

import anyio
import anyio.abc
import httpx

from ._clock import Clock, SystemClock
from ._http import DEFAULT_BASE_URL, USER_AGENT, Timeouts
from ._limiter import DeadlineLimiter, register, unregister
from .stores.base import Store
from .visitor import Visitor


__all__ = ["VisitorPool"]

logger = logging.getLogger("giosg_visitor.pool")


@final
class _Entry:
    """One pooled visitor: started by its own host task in the pool's task group."""

    __slots__ = ("closed", "error", "finished", "key", "last_used", "ready", "users", "visitor")

    def __init__(self, key: str, now: float) -> None:
        self.key = key
        self.visitor: Visitor | None = None
        self.error: BaseException | None = None
        self.ready = anyio.Event()
        self.closed = anyio.Event()
        self.finished = anyio.Event()
        self.last_used = now
        self.users = 0


@final
class VisitorPool:
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
        **visitor_options: Passed to every :class:`~giosg_visitor.Visitor` (``realtime``,
            ``renewal``, ``retry``, ``timeouts``, ...).
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
        **visitor_options: Any,
    ) -> None:
        if idle_timeout is not None and idle_timeout <= 0:
            raise ValueError("idle_timeout must be positive (or None)")
        if max_concurrent_starts < 1:
            raise ValueError("max_concurrent_starts must be at least 1")
        if max_background_requests is None:
            max_background_requests = max(1, max_connections // 2)
        elif not 1 <= max_background_requests <= max_connections:
            raise ValueError("max_background_requests must be between 1 and max_connections")
        for reserved in ("store", "key", "http_client", "base_url", "clock"):
            if reserved in visitor_options:
                raise TypeError(f"{reserved!r} is set by the pool")
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
        self._options = visitor_options
        self._entries: dict[str, _Entry] = {}
        self._task_group: anyio.abc.TaskGroup | None = None
        self._stack: AsyncExitStack | None = None
        self._reaper_scope: anyio.CancelScope | None = None
        self.started = 0
        self.closed_idle = 0

    # Lifecycle ----------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        if self._stack is not None:
            raise RuntimeError("the pool is already running")
        stack = AsyncExitStack()
        await stack.__aenter__()
        try:
            if self._shared_client is None:
                timeouts: Timeouts = self._options.get("timeouts") or Timeouts()
                limits = httpx.Limits(
                    max_connections=self._max_connections,
                    max_keepalive_connections=self._max_connections,
                )
                self._client = await stack.enter_async_context(
                    httpx.AsyncClient(
                        timeout=timeouts.httpx_timeout(),
                        limits=limits,
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
        except BaseException:
            await stack.__aexit__(None, None, None)
            raise
        self._stack = stack
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close every visitor and the shared client."""
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
                entry.ready.set()
                raise
            entry.ready.set()
        else:
            await entry.ready.wait()
            if entry.error is not None:
                raise entry.error
        entry.last_used = self._clock.monotonic()
        assert entry.visitor is not None
        return entry.visitor

    @asynccontextmanager
    async def visitor(self, key: str) -> AsyncIterator[Visitor]:
        """Use the visitor for ``key``; it is not closed as idle while the block runs."""
        visitor = await self.get(key)
        entry = self._entries.get(key)
        if entry is not None:
            entry.users += 1
        try:
            yield visitor
        finally:
            if entry is not None:
                entry.users -= 1
                entry.last_used = self._clock.monotonic()

    async def close_visitor(self, key: str) -> None:
        """Close the visitor for ``key`` now (it is resumed from the store on next use)."""
        entry = self._entries.get(key)
        if entry is not None:
            entry.closed.set()
            await entry.finished.wait()

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def keys(self) -> list[str]:
        """The keys of the visitors open now."""
        return list(self._entries)

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
                    visitor = Visitor(
                        self.organization_id,
                        base_url=self._base_url,
                        store=self._store,
                        key=entry.key,
                        http_client=self._client,
                        clock=self._clock,
                        **self._options,
                    )
                    entry.visitor = await stack.enter_async_context(visitor)
                self.started += 1
                task_status.started()
                await entry.closed.wait()
        finally:
            if self._entries.get(entry.key) is entry:
                del self._entries[entry.key]
            entry.finished.set()

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
                    if entry.users == 0 and entry.ready.is_set() and entry.last_used < cutoff:
                        logger.debug("closing idle visitor %s", entry.key)
                        self.closed_idle += 1
                        entry.closed.set()
