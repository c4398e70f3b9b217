"""A pool-wide limit on background requests, served earliest deadline first.

Thousands of visitors sharing one HTTP connection pool must not all hand their auth and
renewal requests to the HTTP library at once: httpcore keeps waiting requests in a list
and walks all of it against every connection whenever a connection frees up, so each
pass costs (queued requests x connections) and a queue of thousands eats the process.
:class:`DeadlineLimiter` keeps the requests in a heap instead and lets at most
``capacity`` through at a time (fewer than the connection pool holds, so the HTTP
library's own queue stays short); the waiter whose token must be renewed soonest goes
first, so a renewal that waits still finishes before its token's hard deadline.

The limit belongs to the connection pool it protects: :func:`register` ties a limiter to
an ``httpx.AsyncClient`` (``VisitorPool`` does this for its client), and every visitor
session using that client finds it with :func:`limiter_for`.

Auth and renewal requests take a slot themselves. Other requests the SDK makes on its
own (presence refreshes, a chat's state read again after the socket reconnected) run
inside :func:`background`, and the visitor's ``httpx.Auth`` takes a slot for them while
the request is on the wire, never while it waits for a renewal (which needs a slot of its
own: holding one while waiting for it could leave every slot waiting on another).
"""

from __future__ import annotations

import functools
import heapq
import itertools
import math
import weakref
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from contextvars import ContextVar
from typing import Final, final

import anyio
import anyio.lowlevel
import httpx


__all__ = [
    "DeadlineLimiter",
    "GatedTransport",
    "ShardedTransport",
    "background",
    "background_deadline",
    "limiter_for",
    "register",
    "unregister",
]


@final
class _Waiter:
    __slots__ = ("granted", "wake")

    def __init__(self) -> None:
        self.wake = anyio.Event()
        self.granted = False


@final
class DeadlineLimiter:
    """At most ``capacity`` holders at once; waiters are admitted by earliest deadline.

    Deadlines are plain numbers on whatever clock the callers share (the visitors'
    monotonic clock); only their order matters. Ties go first come, first served.
    Waiting is cancellable; a slot handed to a waiter that was cancelled meanwhile goes
    on to the next one.

    Args:
        capacity: How many holders at once (at least 1).
    """

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.capacity = capacity
        self._in_use = 0
        self._heap: list[tuple[float, int, _Waiter]] = []
        self._order = itertools.count()
        #: The most holders and the most waiters seen at once (for tests and stats).
        self.max_in_use = 0
        self.max_waiting = 0
        #: Slots granted in all.
        self.granted = 0

    @property
    def in_use(self) -> int:
        """Holders now."""
        return self._in_use

    @property
    def waiting(self) -> int:
        """Waiters now (cancelled ones leave the heap lazily and are not counted)."""
        return sum(1 for _, _, waiter in self._heap if not waiter.wake.is_set())

    @asynccontextmanager
    async def slot(self, deadline: float) -> AsyncIterator[None]:
        """Hold one slot for the block; wait first (earliest ``deadline`` first) if full."""
        await self._acquire(deadline)
        try:
            yield
        finally:
            self._release()

    async def acquire(self, deadline: float) -> None:
        """Take one slot (waiting, earliest ``deadline`` first); :meth:`release` it after."""
        await self._acquire(deadline)

    def release(self) -> None:
        """Give back a slot taken with :meth:`acquire`."""
        self._release()

    async def _acquire(self, deadline: float) -> None:
        heap = self._heap
        while heap and heap[0][2].wake.is_set():
            heapq.heappop(heap)  # cancelled waiters at the front
        if self._in_use < self.capacity and not heap:
            self._grant()
            try:
                # A checkpoint like any other acquire, so a loop of acquires yields.
                await anyio.lowlevel.checkpoint()
            except BaseException:
                self._release()
                raise
            return
        waiter = _Waiter()
        heapq.heappush(heap, (deadline, next(self._order), waiter))
        self.max_waiting = max(self.max_waiting, len(heap))
        try:
            await waiter.wake.wait()
        except BaseException:
            if waiter.granted:
                # Handed a slot just as we were cancelled: pass it on.
                self._release()
            else:
                # Still in the heap: setting the event marks it as gone (skipped lazily).
                waiter.wake.set()
            raise

    def _grant(self) -> None:
        self._in_use += 1
        self.granted += 1
        self.max_in_use = max(self.max_in_use, self._in_use)

    def _release(self) -> None:
        self._in_use -= 1
        while self._heap:
            _, _, waiter = heapq.heappop(self._heap)
            if waiter.wake.is_set():
                continue  # cancelled while waiting
            self._grant()
            waiter.granted = True
            waiter.wake.set()
            return

    def __repr__(self) -> str:
        return f"<DeadlineLimiter {self._in_use}/{self.capacity} waiting={len(self._heap)}>"


_BACKGROUND: ContextVar[float | None] = ContextVar("giosg_visitor_background", default=None)


@contextmanager
def background(deadline: float) -> Iterator[None]:
    """Mark the requests of this block as the SDK's own background work.

    A visitor's requests made inside the block wait for a slot of its pool's limit (if
    its client has one), ranked by ``deadline`` (on the visitor's monotonic clock: when
    the work must be done by, e.g. when a room presence would lapse).
    """
    mark = _BACKGROUND.set(deadline)
    try:
        yield
    finally:
        _BACKGROUND.reset(mark)


def background_deadline() -> float | None:
    """The deadline of the enclosing :func:`background` block, if any."""
    return _BACKGROUND.get()


_BY_CLIENT: weakref.WeakKeyDictionary[httpx.AsyncClient, DeadlineLimiter] = (
    weakref.WeakKeyDictionary()
)


def register(client: httpx.AsyncClient, capacity: int) -> DeadlineLimiter | None:
    """Tie a new limiter to ``client``; ``None`` if it has one already (that one applies)."""
    if client in _BY_CLIENT:
        return None
    limiter = _BY_CLIENT[client] = DeadlineLimiter(capacity)
    return limiter


def unregister(client: httpx.AsyncClient, limiter: DeadlineLimiter) -> None:
    """Untie ``limiter`` from ``client`` (if it is still the one tied to it)."""
    if _BY_CLIENT.get(client) is limiter:
        del _BY_CLIENT[client]


def limiter_for(client: httpx.AsyncClient) -> DeadlineLimiter | None:
    """The limiter tied to ``client``, if any."""
    return _BY_CLIENT.get(client)


@final
class _ReleasingStream(httpx.AsyncByteStream):
    """A response body that gives its gate slot back once it is closed (read or not)."""

    __slots__ = ("_inner", "_release")

    def __init__(self, inner: httpx.AsyncByteStream, release: Callable[[], None]) -> None:
        self._inner = inner
        self._release: Callable[[], None] | None = release

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self._inner:
            yield chunk

    async def aclose(self) -> None:
        try:
            await self._inner.aclose()
        finally:
            release, self._release = self._release, None
            if release is not None:
                release()


@final
class GatedTransport(httpx.AsyncBaseTransport):
    """Lets at most ``capacity`` requests into ``inner`` at once; the rest wait here.

    httpcore's pool walks its whole queue of waiting requests against every connection
    whenever a request arrives or a connection frees up, so a queue that grows with the
    number of visitors makes every request dearer. With ``capacity`` at most the number of
    connections, a request admitted here finds a connection (or opens one) at once; the
    waiters wait in a heap instead: the SDK's background requests by their deadline, all
    others by arrival plus their pool timeout (which still raises ``httpx.PoolTimeout``
    when it passes, as httpcore's own queue would). A slot is held until the response
    body is closed, as the connection is.

    Args:
        inner: The transport with the connection pool.
        capacity: Requests inside ``inner`` at once (the pool's ``max_connections``).
        now: The clock background deadlines are on (the visitors' monotonic clock).
    """

    def __init__(
        self, inner: httpx.AsyncBaseTransport, capacity: int, now: Callable[[], float]
    ) -> None:
        self._inner = inner
        self._now = now
        self.gate = DeadlineLimiter(capacity)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Wait for a slot (up to the request's pool timeout), then send."""
        timeouts = request.extensions.get("timeout") or {}
        pool_timeout = timeouts.get("pool")
        deadline = background_deadline()
        if deadline is None:
            deadline = self._now() + (pool_timeout if pool_timeout is not None else 0.0)
        gate = self.gate
        with anyio.move_on_after(math.inf if pool_timeout is None else pool_timeout) as wait:
            await gate.acquire(deadline)
        if wait.cancelled_caught:
            raise httpx.PoolTimeout("no connection became free within the pool timeout")
        try:
            response = await self._inner.handle_async_request(request)
        except BaseException:
            gate.release()
            raise
        if response.is_closed or not isinstance(response.stream, httpx.AsyncByteStream):
            # Already read whole (a response built from bytes): nothing holds a connection.
            gate.release()
        else:
            response.stream = _ReleasingStream(response.stream, gate.release)
        return response

    async def aclose(self) -> None:
        """Close the inner transport."""
        await self._inner.aclose()


#: Connections per shard of a :class:`ShardedTransport`.
SHARD_SIZE: Final = 10


@final
class ShardedTransport(httpx.AsyncBaseTransport):
    """Several small connection pools in place of one large one, for the same connections.

    httpcore checks every connection of its pool on every request and every release (is
    it expired: a peer-name lookup and a readability poll each; is it idle), so the
    bookkeeping of one request grows with the pool's size: with 100 connections it was a
    quarter of a pool's CPU while 1,000 visitors started. ``k`` pools of ``size / k``
    connections hold as many connections and check ``k`` times fewer per request.

    A request goes to the shard with the fewest requests in flight (the first of those,
    so the busiest shards' kept-alive connections are reused first); it counts as in
    flight until its response body is closed, as its connection is held. Behind a
    :class:`GatedTransport` of the same capacity, a shard with a free connection always
    exists for an admitted request.

    Args:
        make: Builds one shard's transport for a number of connections.
        connections: Connections in all.
        shard_size: Connections per shard (the last may have fewer).
    """

    __slots__ = ("_busy", "_shards")

    def __init__(
        self,
        make: Callable[[int], httpx.AsyncBaseTransport],
        connections: int,
        *,
        shard_size: int = SHARD_SIZE,
    ) -> None:
        if connections < 1 or shard_size < 1:
            raise ValueError("connections and shard_size must be at least 1")
        sizes = [shard_size] * (connections // shard_size)
        if connections % shard_size:
            sizes.append(connections % shard_size)
        self._shards = [make(size) for size in sizes]
        self._busy = [0] * len(sizes)

    def __len__(self) -> int:
        """The number of shards."""
        return len(self._shards)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Send through the least busy shard."""
        busy = self._busy
        index = busy.index(min(busy))
        busy[index] += 1
        release = functools.partial(self._release, index)
        try:
            response = await self._shards[index].handle_async_request(request)
        except BaseException:
            release()
            raise
        if response.is_closed or not isinstance(response.stream, httpx.AsyncByteStream):
            release()
        else:
            response.stream = _ReleasingStream(response.stream, release)
        return response

    def _release(self, index: int) -> None:
        self._busy[index] -= 1

    async def aclose(self) -> None:
        """Close every shard (each even if another fails to)."""
        errors: list[BaseException] = []
        for shard in self._shards:
            try:
                await shard.aclose()
            except Exception as exc:
                errors.append(exc)
        if errors:
            raise errors[0]
